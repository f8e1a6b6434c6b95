"""``patgate token remove | purge | renew``: a token's end, and its renewal."""

from __future__ import annotations

import argparse
from typing import Any

from patgate.cli.output import (
    add_output_options,
    print_json,
    print_new_value,
    print_tokens,
    token_summary,
)
from patgate.cli.runner import EXIT_OK, ArgumentParser, add_leaf, run_with_service
from patgate.durations import parse_duration, parse_expiry_time
from patgate.models import TokenRecord
from patgate.service import Actor, Purge, TokenService


def token_remove(args: argparse.Namespace) -> int:
    async def work(service: TokenService, actor: Actor) -> list[TokenRecord]:
        return await service.remove_tokens(actor, args.ids)

    for record in run_with_service(args, work):
        print(f"removed {record.id}")
    return EXIT_OK


def token_purge(args: argparse.Namespace) -> int:
    purge = Purge(
        revoked=args.revoked,
        expired=args.expired,
        older_than=parse_duration(args.older_than) if args.older_than else None,
        owner=args.user,
    )

    async def work(
        service: TokenService, actor: Actor
    ) -> tuple[list[TokenRecord], float]:
        dead = await service.purge_tokens(actor, purge, dry_run=args.dry_run)
        return dead, service.now()

    dead, now = run_with_service(args, work)
    if args.json:
        print_json([record.to_public(now) for record in dead])
        return EXIT_OK
    verb = "would purge" if args.dry_run else "purged"
    if dead:
        print_tokens(dead, now)
    print(f"{verb} {len(dead)} token{'' if len(dead) == 1 else 's'}")
    return EXIT_OK


def token_renew(args: argparse.Namespace) -> int:
    async def work(service: TokenService, actor: Actor) -> tuple[TokenRecord, str]:
        return await service.renew_token(
            actor, args.id, **expiry_changes(args, service.now())
        )

    record, value = run_with_service(args, work)
    title = f"renewed {token_summary(record)}; the old value no longer works"
    print_new_value(args, record, value, record.updated_at, title)
    return EXIT_OK


def expiry_changes(args: argparse.Namespace, now: float) -> dict[str, Any]:
    """``token edit``'s and ``token renew``'s expiry options, as service arguments."""
    changes: dict[str, Any] = {}
    if args.expires:
        changes.update(expires_at=parse_expiry_time(args.expires, now), sliding=None)
    elif args.sliding:
        changes.update(expires_at=None, sliding=parse_duration(args.sliding))
    elif args.never:
        changes.update(expires_at=None, sliding=None)
    if args.no_max_lifetime:
        changes["max_lifetime"] = None
    elif getattr(args, "max_lifetime", None):  # renew has no --max-lifetime
        changes["max_lifetime"] = parse_duration(args.max_lifetime)
    return changes


def add_lifecycle_commands(sub: argparse._SubParsersAction[ArgumentParser]) -> None:
    remove = add_leaf(
        sub, "remove", token_remove, "revoke tokens and delete them from every list"
    )
    remove.add_argument("ids", nargs="+", metavar="ID")

    purge = add_leaf(sub, "purge", token_purge, "delete revoked and/or expired tokens")
    purge.add_argument("--revoked", action="store_true", help="revoked tokens")
    purge.add_argument("--expired", action="store_true", help="expired tokens")
    purge.add_argument(
        "--older-than",
        metavar="DURATION",
        help="only those revoked or expired at least this long ago (30d)",
    )
    purge.add_argument("-u", "--user", metavar="LOGIN", help="only this owner's")
    purge.add_argument(
        "--dry-run", action="store_true", help="list them, delete nothing"
    )
    add_output_options(purge, quiet=False)

    renew = add_leaf(
        sub,
        "renew",
        token_renew,
        "a new expiry and a new value (default: the same expiry model from now)",
    )
    renew.add_argument("id", metavar="ID")
    expiry = renew.add_mutually_exclusive_group()
    expiry.add_argument(
        "-e", "--expires", metavar="DURATION|DATE", help="hard expiry: 30d or a date"
    )
    expiry.add_argument(
        "-a", "--sliding", metavar="DURATION", help="sliding expiry window"
    )
    expiry.add_argument("--never", action="store_true", help="never expire")
    renew.add_argument(
        "--no-max-lifetime", action="store_true", help="drop the lifetime cap"
    )
    add_output_options(renew, quiet=True)
