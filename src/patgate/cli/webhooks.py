"""``patgate webhook``: the delivery log of the life-cycle webhooks."""

from __future__ import annotations

import argparse

from patgate.cli.output import add_output_options, print_json, print_table
from patgate.cli.runner import EXIT_OK, ArgumentParser, add_leaf, run_with_service
from patgate.durations import format_time
from patgate.events import DeliveryAttempt
from patgate.service import Actor, TokenService


def webhook_deliveries(args: argparse.Namespace) -> int:
    async def work(service: TokenService, actor: Actor) -> list[DeliveryAttempt]:
        return await service.delivery_log(actor, args.limit)

    attempts = run_with_service(args, work)
    if args.json:
        print_json([attempt.to_public() for attempt in attempts])
        return EXIT_OK
    print_table(
        ("AT", "EVENT", "TYPE", "URL", "TRY", "RESULT"),
        (
            (
                format_time(a.at) or "-",
                a.event_id,
                a.event_type,
                a.url,
                str(a.attempt),
                _result(a),
            )
            for a in attempts
        ),
    )
    return EXIT_OK


def _result(attempt: DeliveryAttempt) -> str:
    if attempt.ok:
        return f"delivered ({attempt.status})"
    reason = attempt.error or f"HTTP {attempt.status}"
    return f"gave up: {reason}" if attempt.final else f"will retry: {reason}"


def _limit(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise argparse.ArgumentTypeError(f"expected 1 to 1000, not {text!r}")
    return int(text)


def add_webhook_commands(commands: argparse._SubParsersAction[ArgumentParser]) -> None:
    group = commands.add_parser("webhook", help="life-cycle webhooks")
    sub = group.add_subparsers(dest="webhook_command", metavar="ACTION", required=True)
    deliveries = add_leaf(
        sub,
        "deliveries",
        webhook_deliveries,
        "the last delivery attempts, newest first",
    )
    deliveries.add_argument(
        "-n", "--limit", type=_limit, default=50, metavar="N", help="how many (50)"
    )
    add_output_options(deliveries, quiet=False)
