"""The reference decision service: the smallest aiohttp app nginx can ask.

Issue 13 measured nginx ``auth_request`` to "a minimal aiohttp decision stub"
and set patgate's decision endpoint against that. This is that stub, so that
every run measures it next to patgate (``fwd-stub``) and shows what this
machine allows a Python decision service: it checks nothing but that an
``Authorization`` header is there, and answers 200 with fixed identity headers
and the original URI (the shipped nginx config forwards ``X-Patgate-Uri``), or
401 with a Bearer challenge. Never a gateway: a bench reference only.

    python bench/decision_stub.py --listen 127.0.0.1:8082
"""

from __future__ import annotations

from aiohttp import web

from upstream import serve_from_command_line

DECISION_PATH = "/_patgate/auth"


async def decide(request: web.Request) -> web.Response:
    if "Authorization" not in request.headers:
        return web.Response(status=401, headers={"WWW-Authenticate": "Bearer"})
    headers = {
        "X-Patgate-User": "bench",
        "X-Patgate-Token-Id": "stub",
        "X-Patgate-Scopes": "api:read",
        "X-Patgate-Uri": request.headers.get("X-Original-URI", "/"),
    }
    return web.Response(status=200, headers=headers)


def create_app() -> web.Application:
    app = web.Application()
    app.router.add_route("*", DECISION_PATH, decide)
    return app


def main() -> None:
    serve_from_command_line(create_app, __doc__.splitlines()[0], "127.0.0.1:8082")


if __name__ == "__main__":
    main()
