"""The ``patgate`` command line: parse arguments, call the service, print.

``patgate [--config PATH] [--store URL] COMMAND``. Exit 0 on success, 1 when
refused or not found (or the config is broken), 2 on a usage error, 3 when the
store cannot be reached (try again later), 130 on Ctrl-C; every failure is
one line on stderr, never a traceback.

Each command group is added by one function in :data:`COMMANDS`; a leaf parser
sets ``handler``, a function of the parsed arguments that returns the exit
code. The CLI works on the store directly, so it acts as an admin (unless
``patgate login`` sent token commands through the API,
:mod:`~patgate.cli.remote`); the tokens
it makes are ``created_by`` ``cli:<OS user>`` (never a login, which cannot
hold ``:``).

This module owns :func:`main` and the parser; the rest of the package:
:mod:`~patgate.cli.runner` (exit codes, leaf parsers, the service over the
store), :mod:`~patgate.cli.output` (tables and JSON), and one module per
command group: :mod:`~patgate.cli.serve` (``serve``, ``config check``),
:mod:`~patgate.cli.users`, :mod:`~patgate.cli.tokens` and
:mod:`~patgate.cli.explain`. Every name the CLI
had before it became a package is importable from here.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from patgate import __version__
from patgate.cli.explain import add_explain_commands, explain_command
from patgate.cli.output import (
    SHOWN_ONCE,
    describe_expiry,
    print_json,
    print_new_value,
    print_table,
    print_token_details,
    print_tokens,
    print_users,
)
from patgate.cli.remote import add_session_commands
from patgate.cli.runner import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_STORE_DOWN,
    EXIT_USAGE,
    ArgumentParser,
    Handler,
    add_global_options,
    run_with_service,
)
from patgate.cli.serve import (
    add_config_commands,
    add_serve_commands,
    config_check,
    parse_listen,
    serve_command,
)
from patgate.cli.tokens import (
    add_token_commands,
    token_copy,
    token_create,
    token_edit,
    token_list,
    token_regenerate,
    token_revoke,
    token_show,
)
from patgate.cli.users import (
    add_user_commands,
    prompt_password,
    read_password_line,
    user_add,
    user_disable,
    user_enable,
    user_list,
    user_passwd,
)
from patgate.cli.webhooks import add_webhook_commands
from patgate.errors import PatgateError, StoreUnavailableError, UsageError
from patgate.logs import redact_text

__all__ = [
    "COMMANDS",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_STORE_DOWN",
    "EXIT_USAGE",
    "SHOWN_ONCE",
    "ArgumentParser",
    "Handler",
    "add_config_commands",
    "add_explain_commands",
    "add_serve_commands",
    "add_token_commands",
    "add_user_commands",
    "build_parser",
    "config_check",
    "describe_expiry",
    "explain_command",
    "main",
    "parse_listen",
    "print_json",
    "print_new_value",
    "print_table",
    "print_token_details",
    "print_tokens",
    "print_users",
    "prompt_password",
    "read_password_line",
    "run_with_service",
    "serve_command",
    "token_copy",
    "token_create",
    "token_edit",
    "token_list",
    "token_regenerate",
    "token_revoke",
    "token_show",
    "user_add",
    "user_disable",
    "user_enable",
    "user_list",
    "user_passwd",
]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit code is returned, never raised."""
    try:
        args = build_parser().parse_args(argv)
        code = int(args.handler(args))
        sys.stdout.flush()  # a closed pipe fails here, not at exit
        # Warnings only after success: a failure is exactly one line.
        for warning in getattr(args, "warnings", ()) if code == EXIT_OK else ():
            print(f"warning: {warning}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        _print_error("interrupted")
        return EXIT_INTERRUPTED
    except PatgateError as err:
        _print_error(_describe(err))
        return _exit_code(err)
    except SystemExit as done:  # --help and --version
        return done.code if isinstance(done.code, int) else EXIT_OK
    except BrokenPipeError:
        # The reader went away (``| head``): point stdout at /dev/null so the
        # flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_REFUSED
    except Exception as err:
        _print_error(f"internal error: {type(err).__name__}: {err}")
        return EXIT_REFUSED


def _exit_code(err: PatgateError) -> int:
    if isinstance(err, UsageError):
        return EXIT_USAGE
    if isinstance(err, StoreUnavailableError):
        return EXIT_STORE_DOWN
    return EXIT_REFUSED


def _describe(err: PatgateError) -> str:
    message = str(err) or type(err).__name__
    if isinstance(err, StoreUnavailableError) and not message.startswith("store"):
        return f"store unavailable: {message}"
    return message


def _print_error(message: str) -> None:
    # SECURITY: a token value in an error message must not reach the terminal
    # log; and one line only, so scripts can read the reason.
    line = " ".join(redact_text(message).split())
    print(f"error: {line}", file=sys.stderr)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="patgate", description="Personal access token gateway."
    )
    parser.add_argument("--version", action="version", version=__version__)
    add_global_options(parser, default=None)
    commands = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", required=True
    )
    for add_commands in COMMANDS:
        add_commands(commands)
    return parser


COMMANDS: tuple[Callable[[argparse._SubParsersAction[ArgumentParser]], None], ...] = (
    add_serve_commands,
    add_config_commands,
    add_user_commands,
    add_token_commands,
    add_session_commands,
    add_explain_commands,
    add_webhook_commands,
)
"""One function per command group; each adds its parsers to the subparsers."""
