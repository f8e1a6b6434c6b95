"""The commands about the gateway itself: ``serve`` and ``config check``."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import urllib.request
from typing import Any

from patgate.cli.runner import EXIT_OK, ArgumentParser, add_leaf
from patgate.config import Config, load_config, parse_store
from patgate.config.lint import lint_config
from patgate.errors import PatgateError, UsageError
from patgate.logs import AccessLog, configure_logging
from patgate.pepper import empty_pepper_warning, pepper_file, with_file_pepper
from patgate.storeurl import hide_password


def serve_command(args: argparse.Namespace) -> int:
    """Run the gateway until SIGTERM; SIGHUP reloads the config file."""
    from patgate.web.server import serve

    level = os.environ.get("PATGATE_LOG_LEVEL", "info")
    configure_logging(level=level, stream=sys.stderr, cache_loggers=True)

    def load() -> Config:
        config = load_config(args.config)
        changes: dict[str, Any] = {}
        if args.store:
            changes["store"] = parse_store(args.store, "--store", os.getcwd())
        if args.listen:
            host, port = parse_listen(args.listen)
            changes.update(listen_host=host, listen_port=port)
        if args.workers:
            changes["workers"] = args.workers
        if changes:
            config = dataclasses.replace(config, **changes)
        return with_file_pepper(config)

    return serve(load, access_log=AccessLog.for_level(level, sys.stderr))


def _worker_count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1024:
        raise argparse.ArgumentTypeError(f"expected 1 to 1024, not {text!r}")
    return int(text)


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"invalid --listen {text!r}: expected host:port")
    return host.strip("[]") or "127.0.0.1", int(port)


def healthcheck_command(args: argparse.Namespace) -> int:
    """Ask the local gateway's healthz (a container's HEALTHCHECK); 0 if healthy."""
    config = load_config(args.config)
    # With ops: {listen: ...}, healthz is served there and not on `listen`.
    host, port = config.ops_listen or (config.listen_host, config.listen_port)
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1" if host != "::" else "::1"
    url = f"http://{_url_host(host)}:{port}/_patgate/healthz"
    try:
        # A 4xx/5xx answer raises HTTPError, an OSError.
        with urllib.request.urlopen(url, timeout=args.timeout):
            return EXIT_OK
    except (OSError, ValueError) as exc:
        raise PatgateError(f"unhealthy: {url}: {exc}") from None


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def add_serve_commands(commands: argparse._SubParsersAction[ArgumentParser]) -> None:
    check = add_leaf(
        commands, "healthcheck", healthcheck_command, "ask the local gateway's healthz"
    )
    check.add_argument(
        "--timeout", type=float, default=2.0, metavar="SECONDS", help="default 2"
    )
    serve = add_leaf(commands, "serve", serve_command, "run the gateway")
    serve.add_argument(
        "--listen", metavar="HOST:PORT", help="override the config's listen address"
    )
    serve.add_argument(
        "--workers",
        type=_worker_count,
        metavar="N",
        help="override the config's workers (1-1024)",
    )


def config_check(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.store:
        config = dataclasses.replace(
            config, store=parse_store(args.store, "--store", os.getcwd())
        )
    config = with_file_pepper(config)
    print(f"ok: {len(config.routes)} routes, store {hide_password(config.store)}")
    print(f"pepper: {_describe_pepper(config)}")
    warnings = [*config.warnings, *map(str, lint_config(config))]
    if not config.pepper.value and pepper_file(config) is None:
        warnings.append(empty_pepper_warning(config))
    for warning in warnings:
        print(f"warning: {warning}")
    if args.strict and warnings:
        count = f"{len(warnings)} warning{'s' if len(warnings) > 1 else ''}"
        raise PatgateError(f"{count} (--strict)")
    return EXIT_OK


def _describe_pepper(config: Config) -> str:
    if config.pepper.value:
        return f"from {config.pepper_origin}"
    path = pepper_file(config)
    if path is not None:
        return f"none yet; a new store generates one into {path}"
    return "none"


def add_config_commands(commands: argparse._SubParsersAction[ArgumentParser]) -> None:
    group = commands.add_parser("config", help="check the configuration")
    sub = group.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = add_leaf(
        sub, "check", config_check, "load the config and report what it holds"
    )
    check.add_argument(
        "--strict", action="store_true", help="exit 1 when there is any warning (CI)"
    )
