"""A tiny API to stand behind patgate in the demo: it echoes who called it.

GET /api/hello → {"hello": <X-Patgate-User>, "token_id": ..., "scopes": ...}
Any other path under /api/ or /public/ echoes method, path and identity.
"""

from __future__ import annotations

import argparse

from aiohttp import web


async def echo(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "hello": request.headers.get("X-Patgate-User", "anonymous"),
            "token_id": request.headers.get("X-Patgate-Token-Id"),
            "scopes": request.headers.get("X-Patgate-Scopes"),
            "method": request.method,
            "path": request.raw_path,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
