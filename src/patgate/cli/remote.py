"""``patgate login URL``: token commands through a gateway's REST API, as a user.

Without a login the CLI works on the store as an admin (it needs the config
and the pepper, so it runs beside the gateway). After ``patgate login URL``
it acts through the REST API as the user who logged in, from any machine:
``token list``, ``show``, ``create``, ``regenerate`` and ``revoke`` send
the session cookie, and every change is confirmed with the password (asked
each time, as the page asks), so a stolen session file can read but never
mint or revoke. ``patgate logout`` ends the session on the server and
deletes the file; ``--store`` or ``--config`` act on the store again.

The session lives in one 0600 file (``$PATGATE_SESSION_FILE``, default
``$XDG_CONFIG_HOME/patgate/session.json``): the API's URL, the login, the
session cookie and its CSRF token. Never a password, never a token value.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

from patgate.cli.output import (
    print_json,
    print_new_public,
    print_public_token,
    print_public_tokens,
)
from patgate.cli.runner import EXIT_OK, EXIT_REFUSED, ArgumentParser, add_leaf
from patgate.errors import PatgateError, StoreUnavailableError, UsageError
from patgate.tokens import looks_like_token_id

SESSION_FILE_ENV = "PATGATE_SESSION_FILE"
API = "/_patgate/api/v1"
CSRF_HEADER = "X-Patgate-CSRF"
TIMEOUT = aiohttp.ClientTimeout(total=30)


class RemoteError(PatgateError):
    """The API refused, in its own words (exit 1)."""


class UnreachableError(StoreUnavailableError):
    """The gateway did not answer (exit 3: try again later)."""


@dataclass(frozen=True)
class RemoteSession:
    url: str
    login: str
    cookie_name: str
    cookie: str
    csrf: str


def session_file() -> Path:
    explicit = os.environ.get(SESSION_FILE_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "patgate" / "session.json"


def load_session() -> RemoteSession | None:
    path = session_file()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return RemoteSession(
            **{key: str(data[key]) for key in RemoteSession.__dataclass_fields__}
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(
            f"{path} is not a patgate session: delete it or run patgate logout"
        ) from None


def save_session(session: RemoteSession) -> Path:
    """Write the session file atomically, readable by its owner only (0600)."""
    path = session_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".session-")
    try:
        os.fchmod(descriptor, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            json.dump(asdict(session), stream)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def remote_session(args: argparse.Namespace) -> RemoteSession | None:
    """The logged-in session these token commands go through, if any.

    An explicit ``--store`` or ``--config`` means the store itself.
    """
    if getattr(args, "store", None) or getattr(args, "config", None):
        return None
    return load_session()


def normalise_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"not an http(s) URL: {url!r}")
    return url.removesuffix(API).removesuffix("/_patgate")


async def call(
    session: RemoteSession | None,
    method: str,
    url: str,
    body: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], aiohttp.ClientResponse]:
    """One API call; an error answer becomes one line, never a traceback."""
    headers = {"Accept": "application/json"}
    cookies = {}
    if session is not None:
        headers[CSRF_HEADER] = session.csrf
        cookies[session.cookie_name] = session.cookie
    try:
        async with (
            aiohttp.ClientSession(timeout=TIMEOUT, cookies=cookies) as client,
            # SECURITY: never follow a redirect: the cookie, the CSRF token
            # and (307/308) a body with the password would go along.
            client.request(
                method, url, json=body, headers=headers, allow_redirects=False
            ) as response,
        ):
            text = await response.text()
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        reason = type(exc).__name__ if isinstance(exc, TimeoutError) else str(exc)
        raise UnreachableError(f"cannot reach {url}: {reason}") from None
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {"value": data}
    if 300 <= response.status < 400:
        raise RemoteError(
            f"{response.status}: the gateway redirects; log in to the URL it"
            " names (nothing was sent there)"
        )
    if response.status >= 400:
        message = data.get("message") or data.get("error") or response.reason
        if response.status == 401 and session is not None:
            message = f"{message} (patgate login {session.url})"
        raise RemoteError(f"{response.status}: {message}")
    return data, response


def _read_password(args: argparse.Namespace, prompt: str) -> str:
    if getattr(args, "password_stdin", False) or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(prompt)
    if not password:
        raise UsageError("no password given")
    return password


def login_command(args: argparse.Namespace) -> int:
    url = normalise_url(args.url)
    login = args.user or (
        input("Login: ").strip() if sys.stdin.isatty() else getpass.getuser()
    )
    password = _read_password(args, f"Password for {login} at {url}: ")

    async def work() -> RemoteSession:
        data, response = await call(
            None, "POST", f"{url}{API}/session", {"login": login, "password": password}
        )
        for name, morsel in response.cookies.items():
            if name.endswith("patgate_session") and morsel.value:
                csrf = data.get("csrf")
                if not isinstance(csrf, str):
                    break
                return RemoteSession(url, login, name, morsel.value, csrf)
        raise RemoteError(f"{url} answered the login without a session")

    path = save_session(asyncio.run(work()))
    print(f"logged in to {url} as {login} (session in {path})")
    return EXIT_OK


def logout_command(args: argparse.Namespace) -> int:
    session = load_session()
    if session is None:
        print("not logged in")
        return EXIT_OK
    try:
        asyncio.run(call(session, "DELETE", f"{session.url}{API}/session", {}))
        ended = "the session has ended on the server"
    except (RemoteError, UnreachableError) as exc:
        ended = f"the server was not told ({exc})"
    session_file().unlink(missing_ok=True)
    print(f"logged out of {session.url}: {ended}")
    return EXIT_OK


def token_list(args: argparse.Namespace, session: RemoteSession) -> int:
    query = f"?owner={args.user}" if args.user else ""
    data, _ = asyncio.run(call(session, "GET", f"{session.url}{API}/tokens{query}"))
    tokens = data.get("tokens", [])
    if args.json:
        print_json(tokens)
    else:
        print_public_tokens(tokens)
    return EXIT_OK


def token_show(args: argparse.Namespace, session: RemoteSession) -> int:
    data, _ = asyncio.run(
        call(session, "GET", f"{session.url}{API}/tokens/{_token_id(args.id)}")
    )
    if args.json:
        print_json(data)
    else:
        print_public_token(data)
    return EXIT_OK


def token_create(args: argparse.Namespace, session: RemoteSession) -> int:
    body: dict[str, Any] = {"name": args.name or "", "scopes": args.scope or []}
    if args.user and args.user != session.login:
        body["owner"] = args.user
    if args.expires:
        body["expires_at"] = args.expires
    if args.sliding:
        body["sliding"] = args.sliding
    if args.max_lifetime:
        body["max_lifetime"] = args.max_lifetime
    if args.ip:
        body["allowed_cidrs"] = args.ip
    if args.project:
        body["project"] = args.project
    if args.rate_limit is not None:
        body["rate_limit"] = args.rate_limit
    if getattr(args, "observe", None):
        body["observe"] = args.observe
    body["password"] = _read_password(args, f"Password for {session.login}: ")
    data, _ = asyncio.run(call(session, "POST", f"{session.url}{API}/tokens", body))
    _print_value(args, data, "created token")
    return EXIT_OK


def token_regenerate(args: argparse.Namespace, session: RemoteSession) -> int:
    body: dict[str, Any] = {
        "password": _read_password(args, f"Password for {session.login}: ")
    }
    if getattr(args, "grace", None):
        body["grace"] = args.grace
    url = f"{session.url}{API}/tokens/{_token_id(args.id)}/regenerate"
    data, _ = asyncio.run(call(session, "POST", url, body))
    _print_value(args, data, "regenerated token")
    return EXIT_OK


def token_revoke(args: argparse.Namespace, session: RemoteSession) -> int:
    body = {
        "ids": [_token_id(i) for i in args.ids],
        "password": _read_password(args, f"Password for {session.login}: "),
    }
    data, _ = asyncio.run(
        call(session, "POST", f"{session.url}{API}/tokens/revoke", body)
    )
    for token_id in data.get("revoked", []):
        print(f"revoked {token_id}")
    for token_id in data.get("already_revoked", []):
        print(f"{token_id} was already revoked")
    return (
        EXIT_OK if data.get("revoked") or data.get("already_revoked") else EXIT_REFUSED
    )


def _print_value(args: argparse.Namespace, data: dict[str, Any], title: str) -> None:
    value = str(data.pop("token", ""))
    print_new_public(
        args, data, value, f"{title} {data.get('id')} for {data.get('owner')}"
    )


def _token_id(value: str) -> str:
    """A token id goes into a URL: nothing else (above all no token value)."""
    if not looks_like_token_id(value):
        # SECURITY: never echo what may be a token value.
        raise UsageError("not a token id (8 letters and digits, as token list shows)")
    return value


def add_session_commands(commands: argparse._SubParsersAction[ArgumentParser]) -> None:
    login = add_leaf(
        commands, "login", login_command, "act through a gateway's API as a user"
    )
    login.add_argument(
        "url", metavar="URL", help="the gateway (or its manage: listener)"
    )
    login.add_argument("-u", "--user", metavar="LOGIN", help="your login")
    login.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )
    add_leaf(commands, "logout", logout_command, "end the session of patgate login")
