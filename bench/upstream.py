"""The benchmark's upstream: the smallest aiohttp app that the proxies forward to.

- ``GET /api/hello`` answers a fixed 38-byte JSON body (the request-rate case);
- ``PUT|POST /upload`` reads the body as it streams in, counts it and answers
  ``{"received": N}`` (nothing is kept, so the upstream's memory stays flat);
- ``GET /download?size=N`` streams N zero bytes in 256 KiB chunks, with a
  Content-Length, so a proxy that buffers the whole body shows it in its RSS.

Runs on uvloop when it is installed. No access log: its cost is not what we measure.

    python bench/upstream.py --listen 127.0.0.1:8081
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from collections.abc import Callable, Coroutine

from aiohttp import web

HELLO_BODY = b'{"message":"hello, world","id":123456}'
assert len(HELLO_BODY) == 38
CHUNK = 256 * 1024
ZEROS = memoryview(bytes(CHUNK))


async def hello(request: web.Request) -> web.Response:
    return web.Response(body=HELLO_BODY, content_type="application/json")


async def upload(request: web.Request) -> web.Response:
    received = 0
    async for chunk in request.content.iter_any():
        received += len(chunk)
    return web.json_response({"received": received})


async def download(request: web.Request) -> web.StreamResponse:
    try:
        size = int(request.query.get("size", "0"))
    except ValueError:
        raise web.HTTPBadRequest(text="size must be an integer") from None
    if size < 0:
        raise web.HTTPBadRequest(text="size must not be negative")
    response = web.StreamResponse()
    response.content_type = "application/octet-stream"
    response.content_length = size
    await response.prepare(request)
    left = size
    while left > 0:
        step = min(left, CHUNK)
        await response.write(ZEROS[:step])
        left -= step
    await response.write_eof()
    return response


def create_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/api/hello", hello)
    app.router.add_put("/upload", upload)
    app.router.add_post("/upload", upload)
    app.router.add_get("/download", download)
    return app


def parse_listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


async def serve(app: web.Application, listen: str, loop_name: str) -> None:
    """Serve until SIGTERM or SIGINT, then close cleanly."""
    host, port = parse_listen(listen)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=1024).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    event = {"event": "listening", "listen": f"{host}:{port}", "loop": loop_name}
    print(json.dumps(event), flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run_fast(main: Callable[[str], Coroutine[object, object, None]]) -> None:
    """Run ``main(loop_name)`` on uvloop when it is installed, else on asyncio."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main("asyncio"))
    else:
        uvloop.run(main("uvloop"))


def serve_from_command_line(
    make_app: Callable[[], web.Application], description: str, listen: str
) -> None:
    """``--listen host:port`` (default ``listen``), then serve ``make_app()``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--listen", default=listen, help="host:port")
    args = parser.parse_args()
    run_fast(lambda loop_name: serve(make_app(), args.listen, loop_name))


def main() -> None:
    serve_from_command_line(create_app, __doc__.splitlines()[0], "127.0.0.1:8081")


if __name__ == "__main__":
    main()
