"""``patgate token suggest ID`` and ``token edit ID --apply-suggestion``.

The suggestion is read against the routes of the config (``--config``), as
the gateway reads requests: see :mod:`patgate.observe`.
"""

from __future__ import annotations

import argparse

from patgate.cli.output import print_json
from patgate.cli.runner import EXIT_OK, run_with_service
from patgate.config import load_config
from patgate.durations import format_time
from patgate.gate import Rules
from patgate.models import Observed, TokenRecord
from patgate.observe import Suggestion, suggestion_json
from patgate.routing import Router
from patgate.service import Actor, TokenService


def _router(args: argparse.Namespace) -> Router:
    """The routes as the gateway matches them (one way to build them: Rules)."""
    return Rules.from_config(load_config(args.config)).router


def token_suggest(args: argparse.Namespace) -> int:
    router = _router(args)

    async def work(
        service: TokenService, actor: Actor
    ) -> tuple[TokenRecord, Suggestion, float]:
        record, found = await service.suggestion(actor, args.id, router)
        return record, found, service.now()

    record, found, now = run_with_service(args, work)
    if args.json:
        print_json(suggestion_json(record, found, now))
        return EXIT_OK
    print_suggestion(record, found, now)
    return EXIT_OK


def print_suggestion(record: TokenRecord, found: Suggestion, now: float) -> None:
    if record.observing(now):
        state = f"observed until {format_time(record.observe_until)}"
    elif record.observe_until is not None:
        state = f"observed until {format_time(record.observe_until)} (ended)"
    else:
        state = "not observed now"
    print(f"token {record.id} ({state}); holds {', '.join(record.scopes)}")
    if found.empty:
        print("nothing observed on the configured routes: no suggestion")
        return
    print(f"suggested scopes: {' '.join(found.granted) or '(none needed)'}")
    for covered in (*found.scopes, *found.nodes):
        print(f"  {covered.scope} covers:")
        _print_requests(covered.requests)
    if found.unscoped:
        print("  no scope needed for:")
        _print_requests(found.unscoped)
    if found.unknown:
        print("  on routes no longer configured (ignored):")
        _print_requests(found.unknown)


def _print_requests(requests: tuple[Observed, ...]) -> None:
    for seen in requests:
        times = "time" if seen.count == 1 else "times"
        print(
            f"    {seen.method} {seen.pattern} ({seen.route}, {seen.count} {times},"
            f" last {format_time(seen.last_seen)})"
        )


def apply_suggestion(args: argparse.Namespace) -> int:
    router = _router(args)

    async def work(
        service: TokenService, actor: Actor
    ) -> tuple[TokenRecord, TokenRecord, float]:
        before = await service.get_token(actor, args.id)
        after = await service.apply_suggestion(actor, args.id, router)
        return before, after, service.now()

    before, after, now = run_with_service(args, work)
    if args.json:
        print_json(after.to_public(now))
        return EXIT_OK
    print(
        f"narrowed {after.id}: {', '.join(before.scopes)} -> {', '.join(after.scopes)}"
    )
    return EXIT_OK
