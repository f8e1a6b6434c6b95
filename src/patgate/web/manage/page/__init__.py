"""The token web page at ``/_patgate/``: three static files and their headers.

The page is a small vanilla-JS app (``index.html``, ``app.js``, ``app.css``)
that talks to the management API with the session of
:mod:`patgate.web.manage.page.session`. It is served with a strict
Content-Security-Policy (scripts and styles from this origin only, nothing
inline, no framing), ``Referrer-Policy: no-referrer`` and ``no-store``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources

from aiohttp import web

PAGE_PATH = "/_patgate/"
STATIC_PATH = "/_patgate/static/"

# SECURITY: script injection and clickjacking; only this origin's files run,
# no inline script or style, no plugins, and no page may frame this one.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}
Handler = Callable[[web.Request], Awaitable[web.Response]]
_FILES = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "app.css": "text/css",
}


def add_page_routes(app: web.Application) -> None:
    """Serve the page; the files are read once, here."""
    package = resources.files(__package__)
    bodies = {name: (package / name).read_bytes() for name in _FILES}
    app.router.add_get(PAGE_PATH.rstrip("/"), _to_page)
    app.router.add_get(PAGE_PATH, _file(bodies["index.html"], _FILES["index.html"]))
    for name in ("app.js", "app.css"):
        app.router.add_get(STATIC_PATH + name, _file(bodies[name], _FILES[name]))


def _file(body: bytes, content_type: str) -> Handler:
    async def serve(request: web.Request) -> web.Response:
        return web.Response(
            body=body,
            content_type=content_type,
            charset="utf-8",
            headers=PAGE_HEADERS,
        )

    return serve


async def _to_page(request: web.Request) -> web.Response:
    raise web.HTTPPermanentRedirect(PAGE_PATH)
