"""``patgate token``: create, list, show, edit, regenerate, copy, revoke (and
remove, purge, renew from :mod:`patgate.cli.lifecycle`)."""

from __future__ import annotations

import argparse
from typing import Any

from patgate.cli import remote
from patgate.cli.lifecycle import add_lifecycle_commands, expiry_changes
from patgate.cli.output import (
    add_output_options,
    print_json,
    print_new_value,
    print_token_details,
    print_tokens,
    token_summary,
)
from patgate.cli.runner import EXIT_OK, ArgumentParser, add_leaf, run_with_service
from patgate.cli.suggest import apply_suggestion, token_suggest
from patgate.durations import (
    format_time,
    parse_duration,
    parse_expiry_time,
    parse_moment,
)
from patgate.errors import UsageError
from patgate.models import TokenRecord
from patgate.service import Actor, Revoked, TokenService


def token_create(args: argparse.Namespace) -> int:
    session = remote.remote_session(args)
    if session is not None:  # patgate login: through the API, as that user
        return remote.token_create(args, session)
    if not args.user:
        raise UsageError("the following arguments are required: -u/--user")

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
            canary=args.canary,
            observe=_duration_or_none(args.observe),
        )

    record, value = run_with_service(args, work)
    title = f"created {'canary ' if record.canary else ''}{token_summary(record)}"
    print_new_value(args, record, value, record.created_at, title)
    return EXIT_OK


def token_list(args: argparse.Namespace) -> int:
    session = remote.remote_session(args)
    if session is not None:  # patgate login: through the API, as that user
        return remote.token_list(args, session)

    async def work(
        service: TokenService, actor: Actor
    ) -> tuple[list[TokenRecord], float]:
        expiring = parse_duration(args.expiring) if args.expiring else None
        return await service.list_tokens(actor, args.user, expiring), service.now()

    records, now = run_with_service(args, work)
    if args.json:
        print_json([record.to_public(now) for record in records])
    else:
        print_tokens(records, now)
    return EXIT_OK


def token_show(args: argparse.Namespace) -> int:
    session = remote.remote_session(args)
    if session is not None:  # patgate login: through the API, as that user
        return remote.token_show(args, session)

    async def work(service: TokenService, actor: Actor) -> tuple[TokenRecord, float]:
        return await service.get_token(actor, args.id), service.now()

    record, now = run_with_service(args, work)
    if args.json:
        print_json(record.to_public(now))
    else:
        print_token_details(record, now)
    return EXIT_OK


def token_edit(args: argparse.Namespace) -> int:
    if args.apply_suggestion:
        if _edit_changes(args, 0.0):
            raise UsageError("--apply-suggestion takes no other change")
        return apply_suggestion(args)

    async def work(
        service: TokenService, actor: Actor
    ) -> tuple[TokenRecord, TokenRecord, float]:
        now = service.now()
        changes = _edit_changes(args, now)
        if not changes:
            raise UsageError("nothing to change: give at least one option")
        before = await service.get_token(actor, args.id)
        return before, await service.edit_token(actor, args.id, **changes), now

    before, record, now = run_with_service(args, work)
    if args.json:
        print_json(record.to_public(now))
        return EXIT_OK
    print(f"updated {token_summary(record)}")
    for name, old, new in changed_fields(before, record, now):
        print(f"  {name}: {old} -> {new}")
    return EXIT_OK


def changed_fields(
    before: TokenRecord, after: TokenRecord, now: float
) -> list[tuple[str, str, str]]:
    """Each public field an edit changed, with its old and new value as shown."""
    old, new = before.to_public(now), after.to_public(now)
    return [
        (name, _shown(old[name]), _shown(new[name]))
        for name in new
        if name != "updated_at" and old[name] != new[name]
    ]


def _shown(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) or "none"
    return str(value)


def _edit_changes(args: argparse.Namespace, now: float) -> dict[str, Any]:
    """The ``edit_token`` arguments the options ask for, nothing else."""
    changes: dict[str, Any] = {}
    if args.name is not None:
        changes["name"] = args.name
    if args.scope:
        changes["scopes"] = args.scope
    if args.project is not None:
        changes["project"] = args.project or None
    return {**changes, **expiry_changes(args, now), **_limit_changes(args)}


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
    if args.no_observe:
        changes["observe"] = None
    elif args.observe:
        changes["observe"] = parse_duration(args.observe)
    return changes


def token_regenerate(args: argparse.Namespace) -> int:
    session = remote.remote_session(args)
    if session is not None:  # patgate login: through the API, as that user
        return remote.token_regenerate(args, session)

    async def work(service: TokenService, actor: Actor) -> tuple[TokenRecord, str]:
        grace = _duration_or_none(args.grace)
        return await service.regenerate_token(
            actor, args.id, grace, activate_on_use=args.activate_on_use
        )

    record, value = run_with_service(args, work)
    if record.activate_on_use:
        old = "the old value works until the new one is first used"
    elif record.previous_hash_until is not None:
        old = f"the old value works until {format_time(record.previous_hash_until)}"
    else:
        old = "the old value no longer works"
    title = f"regenerated {token_summary(record)}; {old}"
    print_new_value(args, record, value, record.updated_at, title)
    return EXIT_OK


def token_copy(args: argparse.Namespace) -> int:
    async def work(service: TokenService, actor: Actor) -> tuple[TokenRecord, str]:
        return await service.copy_token(actor, args.id)

    record, value = run_with_service(args, work)
    title = f"copied {args.id} to {token_summary(record)}"
    print_new_value(args, record, value, record.created_at, title)
    return EXIT_OK


def token_revoke(args: argparse.Namespace) -> int:
    session = remote.remote_session(args)
    if session is not None:  # patgate login: through the API, as that user
        if args.before is not None:
            raise UsageError("--before acts on the store: give --config or --store")
        return remote.token_revoke(args, session)
    if args.before is not None:
        return _revoke_before(args)
    if args.user or args.all_users:
        raise UsageError("--user and --all-users need --before TIME")
    if not args.ids:
        raise UsageError("give token ids, or --before TIME with --user or --all-users")

    async def work(service: TokenService, actor: Actor) -> Revoked:
        return await service.revoke_tokens(actor, args.ids)

    revoked = run_with_service(args, work)
    for token_id in revoked.ids:
        if token_id in revoked.already:
            print(f"{token_id} was already revoked")
        else:
            print(f"revoked {token_id}")
    return EXIT_OK


def _revoke_before(args: argparse.Namespace) -> int:
    if args.ids:
        raise UsageError("give token ids or --before, not both")
    if bool(args.user) == bool(args.all_users):
        raise UsageError("--before needs --user LOGIN or --all-users")

    async def work(service: TokenService, actor: Actor) -> tuple[list[str], float]:
        before = parse_moment(args.before, service.now())
        return await service.revoke_before(actor, before, args.user), before

    revoked, before = run_with_service(args, work)
    whose = f"of {args.user}" if args.user else "of every user"
    if args.json:
        print_json({"revoked": revoked, "count": len(revoked)})
        return EXIT_OK
    for token_id in revoked:
        print(f"revoked {token_id}")
    print(f"revoked {len(revoked)} tokens {whose} created before {format_time(before)}")
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
    observe = parser.add_mutually_exclusive_group()
    observe.add_argument(
        "--observe",
        metavar="DURATION",
        help="note what the token is used for, this long (7d): see token suggest",
    )
    rate = parser.add_mutually_exclusive_group()
    rate.add_argument(
        "--rate-limit", type=_positive_int, metavar="N", help="requests per minute"
    )
    if edit:
        lifetime.add_argument(
            "--no-max-lifetime", action="store_true", help="drop the lifetime cap"
        )
        ips.add_argument("--any-ip", action="store_true", help="drop the IP limit")
        observe.add_argument(
            "--no-observe", action="store_true", help="stop observing the token"
        )
        parser.add_argument(
            "--apply-suggestion",
            action="store_true",
            help="narrow the token to its suggestion (token suggest); never widens",
        )
        rate.add_argument(
            "--no-rate-limit", action="store_true", help="drop the rate limit"
        )


def add_token_commands(commands: argparse._SubParsersAction[ArgumentParser]) -> None:
    group = commands.add_parser("token", help="manage tokens")
    sub = group.add_subparsers(dest="token_command", metavar="ACTION", required=True)

    create = add_leaf(sub, "create", token_create, "create a token for a user")
    create.add_argument(
        "-u",
        "--user",
        metavar="LOGIN",
        help="the owner (after patgate login: yourself unless given)",
    )
    _add_token_settings(create, edit=False)
    create.add_argument(
        "--canary",
        action="store_true",
        help="a trap: refused like an unknown token, every use reported",
    )
    add_output_options(create, quiet=True)
    _add_password_stdin(create)

    listing = add_leaf(sub, "list", token_list, "list tokens (never their values)")
    listing.add_argument("-u", "--user", metavar="LOGIN", help="only this owner's")
    listing.add_argument(
        "--expiring",
        metavar="DURATION",
        help="only active tokens that expire within DURATION (7d), soonest first",
    )
    add_output_options(listing, quiet=False)

    show = add_leaf(sub, "show", token_show, "show one token")
    show.add_argument("id", metavar="ID")
    add_output_options(show, quiet=False)

    edit = add_leaf(sub, "edit", token_edit, "change a token's settings")
    edit.add_argument("id", metavar="ID")
    _add_token_settings(edit, edit=True)
    add_output_options(edit, quiet=False)

    suggestion = add_leaf(
        sub,
        "suggest",
        token_suggest,
        "the least scopes covering what an observed token did",
    )
    suggestion.add_argument("id", metavar="ID")
    add_output_options(suggestion, quiet=False)

    regenerate = add_leaf(
        sub, "regenerate", token_regenerate, "a new value for the same token"
    )
    regenerate.add_argument("id", metavar="ID")
    regenerate.add_argument(
        "--grace",
        metavar="DURATION",
        help="keep the old value working this long (default: it dies at once)",
    )
    regenerate.add_argument(
        "--activate-on-use",
        action="store_true",
        help="keep the old value working until the new one is first used",
    )
    add_output_options(regenerate, quiet=True)
    _add_password_stdin(regenerate)

    copy = add_leaf(sub, "copy", token_copy, "a new token with the same settings")
    copy.add_argument("id", metavar="ID")
    add_output_options(copy, quiet=True)

    revoke = add_leaf(
        sub, "revoke", token_revoke, "revoke tokens: by id, or all created before"
    )
    revoke.add_argument("ids", nargs="*", metavar="ID")
    revoke.add_argument(
        "--before",
        metavar="TIME",
        help="revoke every token created before TIME (ISO date-time, or now)",
    )
    whose = revoke.add_mutually_exclusive_group()
    whose.add_argument("-u", "--user", metavar="LOGIN", help="with --before: whose")
    whose.add_argument(
        "--all-users", action="store_true", help="with --before: everyone's"
    )
    revoke.add_argument("--json", action="store_true", help="print JSON")
    _add_password_stdin(revoke)

    add_lifecycle_commands(sub)


def _add_password_stdin(parser: ArgumentParser) -> None:
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="after patgate login: the password confirming this change, from stdin",
    )
