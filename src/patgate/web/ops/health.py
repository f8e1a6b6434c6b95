"""Liveness and readiness: ``/_patgate/healthz`` and ``/_patgate/readyz``."""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from patgate.errors import StoreUnavailableError
from patgate.store.base import Store

ops_log = structlog.get_logger("patgate.ops")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def readyz_handler(store: Store) -> Any:
    async def readyz(request: web.Request) -> web.Response:
        try:
            await store.ping()
        except StoreUnavailableError as exc:
            # SECURITY: internal addresses disclosed; the error names the
            # store's host and port (or file): the log gets it, not the answer.
            ops_log.warning("store_unavailable", error=str(exc), probe="readyz")
            return web.json_response(
                {"status": "unavailable", "reason": "store unavailable"}, status=503
            )
        return web.json_response({"status": "ready"})

    return readyz
