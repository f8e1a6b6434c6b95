"""``patgate user``: add, list, passwd, disable, enable."""

from __future__ import annotations

import argparse
import getpass
import sys

from patgate.cli.output import print_json, print_users
from patgate.cli.runner import EXIT_OK, ArgumentParser, add_leaf, run_with_service
from patgate.errors import UsageError
from patgate.models import User
from patgate.service import Actor, TokenService


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


def user_scopes(args: argparse.Namespace) -> int:
    async def work(service: TokenService, actor: Actor) -> User:
        return await service.set_user_scopes(actor, args.login, args.scope)

    user = run_with_service(args, work)
    print(f"user {user.login} may now grant {', '.join(user.scopes)}")
    return EXIT_OK


def user_admin(args: argparse.Namespace) -> int:
    async def work(service: TokenService, actor: Actor) -> User:
        return await service.set_admin(actor, args.login, args.state == "on")

    user = run_with_service(args, work)
    print(f"user {user.login} is {'an admin' if user.admin else 'not an admin'}")
    return EXIT_OK


def add_user_commands(commands: argparse._SubParsersAction[ArgumentParser]) -> None:
    group = commands.add_parser("user", help="manage users")
    sub = group.add_subparsers(dest="user_command", metavar="ACTION", required=True)

    add = add_leaf(sub, "add", user_add, "create a user")
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

    listing = add_leaf(sub, "list", user_list, "list users")
    listing.add_argument("--json", action="store_true", help="print JSON")

    passwd = add_leaf(sub, "passwd", user_passwd, "set a user's password")
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
        add_leaf(sub, name, handler, text).add_argument("login", metavar="LOGIN")

    scopes = add_leaf(
        sub,
        "scopes",
        user_scopes,
        "replace what a user may grant (their * tokens follow)",
    )
    scopes.add_argument("login", metavar="LOGIN")
    scopes.add_argument(
        "-s", "--scope", action="append", required=True, metavar="SCOPE",
        help="a scope or @set (repeatable)",
    )  # fmt: skip

    admin = add_leaf(sub, "admin", user_admin, "grant or take the admin flag")
    admin.add_argument("login", metavar="LOGIN")
    admin.add_argument("state", choices=("on", "off"))
