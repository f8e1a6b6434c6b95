"""The ``patgate`` command line: parse arguments, call the service, print.

``patgate [--config PATH] [--store URL] COMMAND``. Exit 0 on success, 1 when
refused, not found or the store is down, 2 on a usage error, 130 on Ctrl-C;
every failure is one line on stderr, never a traceback.

Each command group is added by one function in :data:`COMMANDS`; a leaf parser
sets ``handler``, a function of the parsed arguments that returns the exit
code. The CLI works on the store directly, so it acts as an admin; the tokens
it makes are ``created_by`` ``cli:<OS user>`` (never a login, which cannot
hold ``:``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, NoReturn, TypeVar

from patgate import __version__
from patgate.config import (
    CONFIG_ENV,
    DEFAULT_CONFIG_PATH,
    STORE_ENV,
    Config,
    load_config,
    parse_config,
)
from patgate.durations import (
    format_duration,
    format_time,
    parse_duration,
    parse_expiry_time,
)
from patgate.errors import (
    PatgateError,
    StoreUnavailableError,
    UsageError,
)
from patgate.logs import configure_logging, redact_text
from patgate.models import ExpiryModel, TokenRecord, User
from patgate.service import Actor, TokenService
from patgate.store import open_store

T = TypeVar("T")
Handler = Callable[[argparse.Namespace], int]

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
SHOWN_ONCE = "This value is shown only once: store it now."


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (raised, not printed)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


# running commands


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
        return EXIT_USAGE if isinstance(err, UsageError) else EXIT_REFUSED
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
    _add_global_options(parser, default=None)
    commands = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", required=True
    )
    for add_commands in COMMANDS:
        add_commands(commands)
    return parser


def _add_global_options(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=default,
        help="gateway.yaml (default: $PATGATE_CONFIG or ./gateway.yaml)",
    )
    parser.add_argument(
        "--store",
        metavar="URL",
        default=default,
        help="store URL, overriding the config's (sqlite:///x.db, redis://h:p/0)",
    )


def _leaf(
    group: argparse._SubParsersAction[ArgumentParser],
    name: str,
    handler: Handler,
    help_text: str,
) -> ArgumentParser:
    """A command parser that also accepts the global options after its name."""
    parser = group.add_parser(name, help=help_text, description=help_text)
    _add_global_options(parser, default=argparse.SUPPRESS)
    parser.set_defaults(handler=handler)
    return parser


def _load_for_store(args: argparse.Namespace) -> Config:
    """The config for a store command, warning once if the pepper is empty.

    Without any config file, ``--store`` (or ``$PATGATE_STORE``) alone is
    enough: the defaults (prefix ``pgt``, no scope sets) apply.
    """
    no_file = (
        args.config is None
        and not os.environ.get(CONFIG_ENV)
        and not os.path.exists(DEFAULT_CONFIG_PATH)
    )
    if no_file and (args.store or os.environ.get(STORE_ENV)):
        config = parse_config("", os.environ, os.getcwd())
    else:
        config = load_config(args.config)
    if not config.pepper.value:
        args.warnings = (
            f"the pepper is empty: set ${config.pepper_env} to a long random value"
            " (token hashes depend on it; keep it the same for every process)",
        )
    return config


def _cli_actor() -> Actor:
    try:
        name = getpass.getuser()
    except (OSError, KeyError, ImportError):
        name = "unknown"
    return Actor(login=f"cli:{name}", admin=True)


def run_with_service(
    args: argparse.Namespace, work: Callable[[TokenService, Actor], Awaitable[T]]
) -> T:
    """Open the store of the config, run ``work`` with a service, close the store."""
    config = _load_for_store(args)
    configure_logging(
        level=os.environ.get("PATGATE_LOG_LEVEL", "warning"), stream=sys.stderr
    )

    async def run() -> T:
        store = open_store(args.store or config.store)
        try:
            service = TokenService(
                store,
                prefix=config.token_prefix,
                pepper=config.pepper.value,
                scope_sets=config.scope_sets,
            )
            return await work(service, _cli_actor())
        finally:
            await store.close()

    return asyncio.run(run())


# output


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def print_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    table = [list(header), *[list(row) for row in rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        print("  ".join(cells).rstrip())


def describe_expiry(record: TokenRecord) -> str:
    if record.expiry is ExpiryModel.NEVER:
        return "never"
    when = format_time(record.expires_at) or "?"
    if record.expiry is ExpiryModel.SLIDING and record.sliding_window:
        return f"{when} (sliding {format_duration(record.sliding_window)})"
    return when


def print_tokens(records: Sequence[TokenRecord], now: float) -> None:
    print_table(
        ("ID", "NAME", "OWNER", "SCOPES", "EXPIRES", "LAST USED", "STATUS"),
        (
            (
                r.id,
                r.name or "-",
                r.owner,
                ",".join(r.scopes),
                describe_expiry(r),
                format_time(r.last_used_at) or "never",
                r.status_at(now).value,
            )
            for r in records
        ),
    )


def print_token_details(record: TokenRecord, now: float) -> None:
    public = record.to_public(now)
    width = max(len(key) for key in public)
    for key, value in public.items():
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        shown = "-" if value is None or value == "" else str(value)
        print(f"{key.ljust(width)}  {shown}")


def print_new_value(
    args: argparse.Namespace, record: TokenRecord, value: str, now: float, title: str
) -> None:
    """The value, exactly once: alone (-q), in JSON (--json) or for people."""
    if args.quiet:
        print(value)
    elif args.json:
        print_json({**record.to_public(now), "token": value})
    else:
        print(title)
        print(value)
        print(SHOWN_ONCE)


def print_users(users: Sequence[User]) -> None:
    print_table(
        ("LOGIN", "ADMIN", "STATUS", "SCOPES", "PASSWORD", "CREATED"),
        (
            (
                u.login,
                "yes" if u.admin else "no",
                "disabled" if u.disabled else "active",
                ",".join(u.scopes),
                "set" if u.password_hash else "none",
                format_time(u.created_at) or "-",
            )
            for u in users
        ),
    )


def _token_summary(record: TokenRecord) -> str:
    return (
        f"token {record.id} for {record.owner}"
        f" (scopes {','.join(record.scopes)}, expires {describe_expiry(record)})"
    )


def _add_output_options(parser: argparse.ArgumentParser, quiet: bool) -> None:
    group = parser.add_mutually_exclusive_group()
    if quiet:
        group.add_argument(
            "-q", "--quiet", action="store_true", help="print only the token value"
        )
    group.add_argument("--json", action="store_true", help="print JSON")


# config


def config_check(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    store = _hide_password(args.store or config.store)
    print(f"ok: {len(config.routes)} routes, store {store}")
    for warning in config.warnings:
        print(f"warning: {warning}")
    return EXIT_OK


def _hide_password(url: str) -> str:
    # SECURITY: a Redis URL may carry a password; never print it.
    return re.sub(r"//([^/@:]*):[^/@]*@", r"//\1:***@", url)


def add_config_commands(commands: argparse._SubParsersAction[ArgumentParser]) -> None:
    group = commands.add_parser("config", help="check the configuration")
    sub = group.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    _leaf(sub, "check", config_check, "load the config and report what it holds")


# users


def read_password_line() -> str:
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise UsageError("no password on standard input")
    return password


def prompt_password() -> str:
    """The new password: from a prompt on a terminal, else one line of stdin."""
    if not sys.stdin.isatty():
        return read_password_line()
    first = getpass.getpass("New password: ")
    if getpass.getpass("Repeat it: ") != first:
        raise UsageError("the passwords do not match")
    return first


def user_add(args: argparse.Namespace) -> int:
    password = read_password_line() if args.password_stdin else None

    async def work(service: TokenService, actor: Actor) -> User:
        return await service.add_user(
            actor,
            args.login,
            admin=args.admin,
            scopes=args.scope or (),
            password=password,
        )

    user = run_with_service(args, work)
    login_note = "set" if password else "none (cannot log in to the API)"
    print(
        f"created user {user.login} (admin {'yes' if user.admin else 'no'},"
        f" scopes {','.join(user.scopes)}, password {login_note})"
    )
    return EXIT_OK


def user_list(args: argparse.Namespace) -> int:
    async def work(service: TokenService, actor: Actor) -> list[User]:
        return await service.list_users(actor)

    users = run_with_service(args, work)
    if args.json:
        print_json([user.to_public() for user in users])
    else:
        print_users(users)
    return EXIT_OK


def user_passwd(args: argparse.Namespace) -> int:
    password = read_password_line() if args.password_stdin else prompt_password()

    async def work(service: TokenService, actor: Actor) -> User:
        return await service.set_password(actor, args.login, password)

    run_with_service(args, work)
    print(f"changed the password of {args.login}")
    return EXIT_OK


def user_disable(args: argparse.Namespace) -> int:
    async def work(service: TokenService, actor: Actor) -> User:
        return await service.disable_user(actor, args.login)

    run_with_service(args, work)
    print(f"disabled user {args.login} and all of their tokens")
    return EXIT_OK


def user_enable(args: argparse.Namespace) -> int:
    async def work(service: TokenService, actor: Actor) -> User:
        return await service.enable_user(actor, args.login)

    run_with_service(args, work)
    print(f"enabled user {args.login}")
    return EXIT_OK


def add_user_commands(commands: argparse._SubParsersAction[ArgumentParser]) -> None:
    group = commands.add_parser("user", help="manage users")
    sub = group.add_subparsers(dest="user_command", metavar="ACTION", required=True)

    add = _leaf(sub, "add", user_add, "create a user")
    add.add_argument("login", metavar="LOGIN")
    add.add_argument("--admin", action="store_true", help="may manage everyone")
    add.add_argument(
        "-s",
        "--scope",
        action="append",
        metavar="SCOPE",
        help="what the user may grant (repeatable; @set names a scope set; default *)",
    )
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from one line of stdin (without it the user"
        " cannot log in to the API)",
    )

    listing = _leaf(sub, "list", user_list, "list users")
    listing.add_argument("--json", action="store_true", help="print JSON")

    passwd = _leaf(sub, "passwd", user_passwd, "set a user's password")
    passwd.add_argument("login", metavar="LOGIN")
    passwd.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from one line of stdin (the default when stdin"
        " is not a terminal)",
    )

    for name, handler, text in (
        ("disable", user_disable, "stop a user and all of their tokens"),
        ("enable", user_enable, "let a disabled user in again"),
    ):
        _leaf(sub, name, handler, text).add_argument("login", metavar="LOGIN")


# tokens


def token_create(args: argparse.Namespace) -> int:
    async def work(service: TokenService, actor: Actor) -> tuple[TokenRecord, str]:
        now = service.now()
        return await service.create_token(
            actor,
            args.user,
            name=args.name or "",
            scopes=args.scope or (),
            expires_at=parse_expiry_time(args.expires, now) if args.expires else None,
            sliding=parse_duration(args.sliding) if args.sliding else None,
            max_lifetime=_duration_or_none(args.max_lifetime),
            allowed_cidrs=args.ip or (),
            project=args.project,
            rate_limit=args.rate_limit,
        )

    record, value = run_with_service(args, work)
    title = f"created {_token_summary(record)}"
    print_new_value(args, record, value, record.created_at, title)
    return EXIT_OK


def token_list(args: argparse.Namespace) -> int:
    async def work(
        service: TokenService, actor: Actor
    ) -> tuple[list[TokenRecord], float]:
        return await service.list_tokens(actor, args.user), service.now()

    records, now = run_with_service(args, work)
    if args.json:
        print_json([record.to_public(now) for record in records])
    else:
        print_tokens(records, now)
    return EXIT_OK


def token_show(args: argparse.Namespace) -> int:
    async def work(service: TokenService, actor: Actor) -> tuple[TokenRecord, float]:
        return await service.get_token(actor, args.id), service.now()

    record, now = run_with_service(args, work)
    if args.json:
        print_json(record.to_public(now))
    else:
        print_token_details(record, now)
    return EXIT_OK


def token_edit(args: argparse.Namespace) -> int:
    async def work(service: TokenService, actor: Actor) -> tuple[TokenRecord, float]:
        now = service.now()
        changes = _edit_changes(args, now)
        if not changes:
            raise UsageError("nothing to change: give at least one option")
        return await service.edit_token(actor, args.id, **changes), now

    record, now = run_with_service(args, work)
    if args.json:
        print_json(record.to_public(now))
    else:
        print(f"updated {_token_summary(record)}")
    return EXIT_OK


def _edit_changes(args: argparse.Namespace, now: float) -> dict[str, Any]:
    """The ``edit_token`` arguments the options ask for, nothing else."""
    changes: dict[str, Any] = {}
    if args.name is not None:
        changes["name"] = args.name
    if args.scope:
        changes["scopes"] = args.scope
    if args.project is not None:
        changes["project"] = args.project or None
    return {**changes, **_expiry_changes(args, now), **_limit_changes(args)}


def _expiry_changes(args: argparse.Namespace, now: float) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if args.expires:
        changes.update(expires_at=parse_expiry_time(args.expires, now), sliding=None)
    elif args.sliding:
        changes.update(expires_at=None, sliding=parse_duration(args.sliding))
    elif args.never:
        changes.update(expires_at=None, sliding=None)
    if args.no_max_lifetime:
        changes["max_lifetime"] = None
    elif args.max_lifetime:
        changes["max_lifetime"] = parse_duration(args.max_lifetime)
    return changes


def _limit_changes(args: argparse.Namespace) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if args.any_ip:
        changes["allowed_cidrs"] = ()
    elif args.ip:
        changes["allowed_cidrs"] = args.ip
    if args.no_rate_limit:
        changes["rate_limit"] = None
    elif args.rate_limit is not None:
        changes["rate_limit"] = args.rate_limit
    return changes


def token_regenerate(args: argparse.Namespace) -> int:
    async def work(service: TokenService, actor: Actor) -> tuple[TokenRecord, str]:
        grace = _duration_or_none(args.grace)
        return await service.regenerate_token(actor, args.id, grace)

    record, value = run_with_service(args, work)
    if record.previous_hash_until is not None:
        old = f"the old value works until {format_time(record.previous_hash_until)}"
    else:
        old = "the old value no longer works"
    title = f"regenerated {_token_summary(record)}; {old}"
    print_new_value(args, record, value, record.updated_at, title)
    return EXIT_OK


def token_copy(args: argparse.Namespace) -> int:
    async def work(service: TokenService, actor: Actor) -> tuple[TokenRecord, str]:
        return await service.copy_token(actor, args.id)

    record, value = run_with_service(args, work)
    title = f"copied {args.id} to {_token_summary(record)}"
    print_new_value(args, record, value, record.created_at, title)
    return EXIT_OK


def token_revoke(args: argparse.Namespace) -> int:
    async def work(service: TokenService, actor: Actor) -> list[str]:
        return await service.revoke_tokens(actor, args.ids)

    for token_id in run_with_service(args, work):
        print(f"revoked {token_id}")
    return EXIT_OK


def _duration_or_none(text: str | None) -> int | None:
    return parse_duration(text) if text else None


def _positive_int(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}")
    return number


def _add_token_settings(parser: argparse.ArgumentParser, *, edit: bool) -> None:
    """The options shared by ``token create`` and ``token edit``."""
    parser.add_argument("-n", "--name", metavar="NAME", help="a description")
    parser.add_argument(
        "-s",
        "--scope",
        action="append",
        metavar="SCOPE",
        help="a scope (repeatable; @set names a scope set)"
        + ("; replaces the token's scopes" if edit else "; default *"),
    )
    expiry = parser.add_mutually_exclusive_group()
    expiry.add_argument(
        "-e",
        "--expires",
        metavar="DURATION|DATE",
        help="hard expiry: after a duration (20d) or at an ISO date",
    )
    expiry.add_argument(
        "-a",
        "--sliding",
        metavar="DURATION",
        help="sliding expiry: each use moves it to now + DURATION",
    )
    if edit:
        expiry.add_argument("--never", action="store_true", help="never expire")
    lifetime = parser.add_mutually_exclusive_group()
    lifetime.add_argument(
        "--max-lifetime",
        metavar="DURATION",
        help="the token never lives longer than this after its creation",
    )
    ips = parser.add_mutually_exclusive_group()
    ips.add_argument(
        "--ip",
        action="append",
        metavar="CIDR",
        help="accept the token only from these networks (repeatable)",
    )
    parser.add_argument("--project", metavar="P", help="a project label")
    rate = parser.add_mutually_exclusive_group()
    rate.add_argument(
        "--rate-limit", type=_positive_int, metavar="N", help="requests per minute"
    )
    if edit:
        lifetime.add_argument(
            "--no-max-lifetime", action="store_true", help="drop the lifetime cap"
        )
        ips.add_argument("--any-ip", action="store_true", help="drop the IP limit")
        rate.add_argument(
            "--no-rate-limit", action="store_true", help="drop the rate limit"
        )


def add_token_commands(commands: argparse._SubParsersAction[ArgumentParser]) -> None:
    group = commands.add_parser("token", help="manage tokens")
    sub = group.add_subparsers(dest="token_command", metavar="ACTION", required=True)

    create = _leaf(sub, "create", token_create, "create a token for a user")
    create.add_argument(
        "-u", "--user", required=True, metavar="LOGIN", help="the owner"
    )
    _add_token_settings(create, edit=False)
    _add_output_options(create, quiet=True)

    listing = _leaf(sub, "list", token_list, "list tokens (never their values)")
    listing.add_argument("-u", "--user", metavar="LOGIN", help="only this owner's")
    _add_output_options(listing, quiet=False)

    show = _leaf(sub, "show", token_show, "show one token")
    show.add_argument("id", metavar="ID")
    _add_output_options(show, quiet=False)

    edit = _leaf(sub, "edit", token_edit, "change a token's settings")
    edit.add_argument("id", metavar="ID")
    _add_token_settings(edit, edit=True)
    _add_output_options(edit, quiet=False)

    regenerate = _leaf(
        sub, "regenerate", token_regenerate, "a new value for the same token"
    )
    regenerate.add_argument("id", metavar="ID")
    regenerate.add_argument(
        "--grace",
        metavar="DURATION",
        help="keep the old value working this long (default: it dies at once)",
    )
    _add_output_options(regenerate, quiet=True)

    copy = _leaf(sub, "copy", token_copy, "a new token with the same settings")
    copy.add_argument("id", metavar="ID")
    _add_output_options(copy, quiet=True)

    revoke = _leaf(sub, "revoke", token_revoke, "revoke one or more tokens")
    revoke.add_argument("ids", nargs="+", metavar="ID")


# serve


def serve_command(args: argparse.Namespace) -> int:
    """Run the gateway until SIGTERM; SIGHUP reloads the config file."""
    from patgate.web.server import serve

    configure_logging(
        level=os.environ.get("PATGATE_LOG_LEVEL", "info"),
        stream=sys.stderr,
        cache_loggers=True,
    )

    def load() -> Config:
        config = load_config(args.config)
        changes: dict[str, Any] = {}
        if args.store:
            changes["store"] = args.store
        if args.listen:
            host, port = parse_listen(args.listen)
            changes.update(listen_host=host, listen_port=port)
        if args.workers:
            changes["workers"] = args.workers
        return dataclasses.replace(config, **changes) if changes else config

    return serve(load)


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"invalid --listen {text!r}: expected host:port")
    return host.strip("[]") or "127.0.0.1", int(port)


def add_serve_commands(commands: argparse._SubParsersAction[ArgumentParser]) -> None:
    serve = _leaf(commands, "serve", serve_command, "run the gateway")
    serve.add_argument(
        "--listen", metavar="HOST:PORT", help="override the config's listen address"
    )
    serve.add_argument(
        "--workers", type=int, metavar="N", help="override the config's workers"
    )


COMMANDS: tuple[Callable[[argparse._SubParsersAction[ArgumentParser]], None], ...] = (
    add_serve_commands,
    add_config_commands,
    add_user_commands,
    add_token_commands,
)
"""One function per command group; each adds its parsers to the subparsers."""
