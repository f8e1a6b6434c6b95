"""``patgate explain METHOD URL``: what the gateway does with a request, and why.

The route, the canonical path and forwarded URL, the credential sources, the
scopes needed, and whether a token passes (``--token-id`` reads the token
from the store; ``--scopes`` makes one up). Exit 0 when the request would be
forwarded, 1 when it would be refused. The work is :mod:`patgate.explain`,
over the same pipeline as the proxy.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
import time

from patgate.cli.output import print_json
from patgate.cli.runner import (
    EXIT_OK,
    EXIT_REFUSED,
    ArgumentParser,
    add_leaf,
    run_with_service,
)
from patgate.config import load_config
from patgate.errors import NotFoundError, UsageError
from patgate.explain import Explanation, explain_request, grant_of_scopes
from patgate.gate import Rules
from patgate.models import TokenGrant
from patgate.scopes import expand_scopes
from patgate.service import Actor, TokenService


def explain_command(args: argparse.Namespace) -> int:
    if args.token_id is not None and args.scopes is not None:
        raise UsageError("give --token-id or --scopes, not both")
    client_ip = _client_ip(args.client)
    if args.token_id is not None:
        grant, rules = _from_store(args)
    else:
        config = load_config(args.config)
        rules = Rules.from_config(config)
        grant = None
        if args.scopes is not None:
            scopes = expand_scopes(_split(args.scopes), config.scope_sets)
            grant = grant_of_scopes(scopes, time.time())
    explanation = explain_request(
        rules,
        args.method,
        args.url,
        grant=grant,
        token=args.token_id,
        client_ip=client_ip,
        now=time.time(),
    )
    if args.json:
        print_json(explanation.to_json())
    else:
        print_explanation(explanation)
    return EXIT_OK if explanation.forwards else EXIT_REFUSED


def _from_store(args: argparse.Namespace) -> tuple[TokenGrant, Rules]:
    async def work(service: TokenService, actor: Actor) -> TokenGrant:
        record = await service.get_token(actor, args.token_id)
        grant = await service.store.resolve(record.id)
        if grant is None:
            raise NotFoundError(f"no token {args.token_id}")
        return grant

    grant = run_with_service(args, work)
    rules = Rules.from_config(load_config(args.config))
    return grant, rules


def _split(values: list[str]) -> list[str]:
    """``-s a b``, ``-s a,b`` and ``-s "a b"`` alike."""
    return [part for value in values for part in value.replace(",", " ").split()]


def _client_ip(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise UsageError(f"invalid --from {text!r}: expected an IP address") from None


def print_explanation(explanation: Explanation) -> None:
    rows: list[tuple[str, str]] = []
    if explanation.route is not None:
        route = f"{explanation.route} (prefix {explanation.prefix}"
        route += ", auth: none)" if explanation.auth == "none" else ")"
        rows.append(("route", route))
        rows.append(("path", explanation.path or ""))
    if explanation.forwarded is not None:
        rows.append(("upstream URL", explanation.forwarded))
    if explanation.credentials:
        rows.append(("credentials", "; ".join(explanation.credentials)))
    if explanation.auth == "token":
        rows.append(("scopes needed", " and ".join(explanation.needed) or "none"))
        if len(explanation.accepted) > 1:
            rows.append(("or any of", ", ".join(explanation.accepted[1:])))
    if explanation.token is not None:
        rows.append(("token", explanation.token))
        rows.append(("token scopes", ", ".join(explanation.held) or "-"))
    rows.append(("answer", str(explanation.status)))
    rows.append(("verdict", explanation.why))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        sys.stdout.write(f"{name + ':':<{width + 1}} {value}{os.linesep}")


def add_explain_commands(commands: argparse._SubParsersAction[ArgumentParser]) -> None:
    parser = add_leaf(
        commands,
        "explain",
        explain_command,
        "what the gateway does with a request, and why",
    )
    parser.add_argument("method", metavar="METHOD", help="GET, PUT, PROPFIND, ...")
    parser.add_argument(
        "url", metavar="URL", help="http://host/path?query, or /path?query"
    )
    token = parser.add_mutually_exclusive_group()
    token.add_argument(
        "--token-id", metavar="ID", help="check this token (read from the store)"
    )
    token.add_argument(
        "--scopes",
        "-s",
        nargs="+",
        metavar="SCOPE",
        help="check a token holding these scopes (and @sets)",
    )
    parser.add_argument(
        "--from",
        dest="client",
        metavar="IP",
        help="the client address (for tokens bound to addresses)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
