"""Running one command: parsers, exit codes, and a service over the store.

A leaf parser (:func:`add_leaf`) sets ``handler``, a function of the parsed
arguments that returns the exit code; :func:`run_with_service` loads the
config, opens its store and runs the handler's work with a
:class:`~patgate.service.TokenService` and the CLI's admin
:class:`~patgate.service.Actor`, ``cli:<OS user>``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

from patgate.config import (
    CONFIG_ENV,
    DEFAULT_CONFIG_PATH,
    STORE_ENV,
    Config,
    load_config,
    parse_config,
    parse_store,
)
from patgate.errors import UsageError
from patgate.logs import configure_logging
from patgate.pepper import bind_pepper, empty_pepper_warning, with_file_pepper
from patgate.service import Actor, TokenService
from patgate.store import open_store
from patgate.webhooks import Publisher

T = TypeVar("T")
Handler = Callable[[argparse.Namespace], int]

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_STORE_DOWN = 3
EXIT_INTERRUPTED = 130


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (raised, not printed)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def add_global_options(parser: argparse.ArgumentParser, default: Any) -> None:
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


def add_leaf(
    group: argparse._SubParsersAction[ArgumentParser],
    name: str,
    handler: Handler,
    help_text: str,
) -> ArgumentParser:
    """A command parser that also accepts the global options after its name."""
    parser = group.add_parser(name, help=help_text, description=help_text)
    add_global_options(parser, default=argparse.SUPPRESS)
    parser.set_defaults(handler=handler)
    return parser


def _load_for_store(args: argparse.Namespace) -> Config:
    """The config for a store command, with the pepper of its pepper file.

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
    if args.store:
        store = parse_store(args.store, "--store", os.getcwd())
        config = dataclasses.replace(config, store=store)
    return with_file_pepper(config)


def _cli_actor() -> Actor:
    try:
        name = getpass.getuser()
    except (OSError, KeyError, ImportError):
        name = "unknown"
    return Actor(login=f"cli:{name}", admin=True)


def run_with_service(
    args: argparse.Namespace, work: Callable[[TokenService, Actor], Awaitable[T]]
) -> T:
    """Open the store of the config, run ``work`` with a service, close the store.

    The pepper is checked against the store's fingerprint first: a command
    under another pepper than the store's tokens changes nothing.
    """
    config = _load_for_store(args)
    configure_logging(
        level=os.environ.get("PATGATE_LOG_LEVEL", "warning"), stream=sys.stderr
    )

    async def run() -> T:
        store = open_store(config.store)
        try:
            bound = await bind_pepper(config, store)
            if not bound.pepper.value:
                # Printed once, after success (main): a failure is one line.
                args.warnings = (empty_pepper_warning(bound),)
            service = TokenService(
                store,
                prefix=bound.token_prefix,
                pepper=bound.pepper.value,
                scope_sets=bound.scope_sets,
                publisher=Publisher(store, bound.webhooks),
            )
            return await work(service, _cli_actor())
        finally:
            await store.close()

    return asyncio.run(run())
