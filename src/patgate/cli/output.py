"""What the CLI prints: tables for people, JSON for scripts, new token values once."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from patgate.durations import format_duration, format_time
from patgate.models import ExpiryModel, TokenRecord, User

SHOWN_ONCE = "This value is shown only once: store it now."


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


TOKEN_COLUMNS = ("ID", "NAME", "OWNER", "SCOPES", "EXPIRES", "LAST USED", "STATUS")


def print_tokens(records: Sequence[TokenRecord], now: float) -> None:
    print_public_tokens([record.to_public(now) for record in records])


def print_public_tokens(tokens: Sequence[Mapping[str, Any]]) -> None:
    """The token table, from the JSON view (the store's or the API's)."""
    print_table(
        TOKEN_COLUMNS,
        (
            (
                str(t["id"]),
                t["name"] or "-",
                str(t["owner"]),
                ",".join(t["scopes"]),
                public_expiry(t),
                t["last_used_at"] or "never",
                str(t["status"]),
            )
            for t in tokens
        ),
    )


def public_expiry(token: Mapping[str, Any]) -> str:
    """:func:`describe_expiry`, from the JSON view."""
    if token["expiry"] == ExpiryModel.NEVER.value:
        return "never"
    when = token["expires_at"] or "?"
    if token["expiry"] == ExpiryModel.SLIDING.value and token["sliding_window"]:
        return f"{when} (sliding {token['sliding_window']})"
    return str(when)


def print_token_details(record: TokenRecord, now: float) -> None:
    print_public_token(record.to_public(now))


def print_public_token(token: Mapping[str, Any]) -> None:
    """One token, a field a line, from the JSON view."""
    public = dict(token)
    width = max(len(key) for key in public)
    last_ips = public.pop("last_ips", None) or []
    for key, value in public.items():
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        shown = "-" if value is None or value == "" else str(value)
        print(f"{key.ljust(width)}  {shown}")
    # The last distinct client addresses, the most recent first.
    print(f"{'last_ips'.ljust(width)}  {'-' if not last_ips else ''}".rstrip())
    for seen in last_ips:
        print(f"  {seen['ip']}  first {seen['first_seen']}  last {seen['last_seen']}")


def print_new_value(
    args: argparse.Namespace, record: TokenRecord, value: str, now: float, title: str
) -> None:
    print_new_public(args, record.to_public(now), value, title)


def print_new_public(
    args: argparse.Namespace, token: Mapping[str, Any], value: str, title: str
) -> None:
    """The value, exactly once: alone (-q), in JSON (--json) or for people."""
    if args.quiet:
        print(value)
    elif args.json:
        print_json({**token, "token": value})
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


def token_summary(record: TokenRecord) -> str:
    return (
        f"token {record.id} for {record.owner}"
        f" (scopes {','.join(record.scopes)}, expires {describe_expiry(record)})"
    )


def add_output_options(parser: argparse.ArgumentParser, quiet: bool) -> None:
    group = parser.add_mutually_exclusive_group()
    if quiet:
        group.add_argument(
            "-q", "--quiet", action="store_true", help="print only the token value"
        )
    group.add_argument("--json", action="store_true", help="print JSON")
