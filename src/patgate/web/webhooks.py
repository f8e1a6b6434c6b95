"""Delivering the webhook outbox: one replica at a time, each event once.

Every gateway process runs :func:`webhook_deliverer`; it works while
``webhooks:`` is configured (a SIGHUP reload may add or drop it). Each poll
it tries to take (or renew) the store's ``webhooks`` lease; the holder POSTs
the due deliveries one by one, renewing the lease before each, and records
each attempt with
``Store.finish_delivery``, which only the lease holder may do. A holder that
dies mid-delivery stops renewing: after ``webhook_delivery.lease`` another
replica takes over and sends what was never finished (so an endpoint may see
an event again only if the holder died between its answer and the record;
the event id is the receiver's key for that).

A failed attempt (no answer, or not 2xx) is retried after ``first_retry``
seconds, doubling up to ``max_retry``, until ``attempts`` were made. The
lease holder also scans for tokens about to expire
(``IncidentOperations.scan_expiry``) every ``expiry_scan`` seconds.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator

import aiohttp
import structlog
from aiohttp import web

from patgate.config import Config
from patgate.errors import StoreUnavailableError
from patgate.events import WEBHOOK_LEASE, Delivery, DeliveryAttempt
from patgate.web.gateway.sync import stop_task
from patgate.web.keys import CONFIG, SERVICE, STORE
from patgate.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    retry_delay,
    sign,
    url_for_log,
)

log = structlog.get_logger("patgate.webhooks")
BATCH = 20
USER_AGENT = "patgate-webhooks"


def lease_holder() -> str:
    """This process's name on the lease: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


async def webhook_deliverer(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(deliver_forever(app, lease_holder()))
    yield
    await stop_task(task)


async def deliver_forever(app: web.Application, holder: str) -> None:
    """Deliver while ``webhooks:`` is configured (a reload may add or drop it)."""
    next_scan = 0.0
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        while True:
            config = app[CONFIG]
            options = config.webhook_delivery
            if not config.webhooks:
                await asyncio.sleep(options.poll)
                continue
            try:
                now = time.time()
                store = app[STORE]
                if await store.take_lease(WEBHOOK_LEASE, holder, options.lease, now):
                    if now >= next_scan:
                        await app[SERVICE].scan_expiry(config.expiry_warnings)
                        next_scan = now + options.expiry_scan
                    await deliver_due(app, http, holder)
            except StoreUnavailableError as exc:
                log.warning("webhook_store_unavailable", error=str(exc))
            await asyncio.sleep(options.poll)


async def deliver_due(
    app: web.Application, http: aiohttp.ClientSession, holder: str
) -> int:
    """Send what is due while the lease is held; answers how many were tried."""
    config, store = app[CONFIG], app[STORE]
    options = config.webhook_delivery
    tried = 0
    for delivery in await store.due_deliveries(time.time(), BATCH):
        if not await store.take_lease(
            WEBHOOK_LEASE, holder, options.lease, time.time()
        ):
            break  # another replica took over
        attempt = await post(config, http, delivery)
        final = attempt.ok or attempt.attempt >= options.attempts
        retry_at = None if final else attempt.at + retry_delay(attempt.attempt, options)
        finished = DeliveryAttempt(
            attempt.delivery_id,
            attempt.event_id,
            attempt.event_type,
            attempt.url,
            attempt.attempt,
            attempt.at,
            attempt.ok,
            attempt.status,
            attempt.error,
            final,
        )
        if not await store.finish_delivery(finished, retry_at, holder):
            break
        log.info(
            "webhook_delivered" if attempt.ok else "webhook_failed",
            delivery_id=delivery.id,
            url=url_for_log(delivery.url),
            status=attempt.status,
            error=attempt.error or None,
            attempt=attempt.attempt,
            final=final,
        )
        tried += 1
    return tried


async def post(
    config: Config, http: aiohttp.ClientSession, delivery: Delivery
) -> DeliveryAttempt:
    """One signed POST of ``delivery``; the attempt as the log keeps it."""
    number = delivery.attempts + 1
    now = time.time()

    def attempt(ok: bool, status: int | None, error: str) -> DeliveryAttempt:
        return DeliveryAttempt(
            delivery.id,
            delivery.event_id,
            delivery.event_type,
            delivery.url,
            number,
            now,
            ok,
            status,
            error,
        )

    hook = next((h for h in config.webhooks if h.url == delivery.url), None)
    if hook is None:
        return attempt(False, None, "the endpoint is no longer configured")
    body = delivery.body.encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        EVENT_HEADER: delivery.event_type,
        EVENT_ID_HEADER: delivery.event_id,
        DELIVERY_HEADER: delivery.id,
        SIGNATURE_HEADER: sign(hook.secret.value, int(now), body),
    }
    try:
        async with http.post(
            delivery.url,
            data=body,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=config.webhook_delivery.timeout),
        ) as response:
            await response.read()
            ok = 200 <= response.status < 300
            return attempt(ok, response.status, "" if ok else f"HTTP {response.status}")
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return attempt(False, None, type(exc).__name__)
