"""Keeping a gateway's view of the store true while it serves.

- Change notices (:func:`listen_for_changes`): every edit or revocation made
  anywhere drops the matching cache entries and re-checks the open streams
  of that token or owner; while the feed is down nothing cached is trusted
  alone, and when it is back every entry is confirmed again.
- Usage writes (:func:`flush_usage`): the coalesced ``last_used``/sliding
  expiry writes go to the store once per ``usage_flush_interval``.

  The news a usage write found (a token's first use, a new client address)
  becomes events.
- Incidents (:func:`handle_incidents`): what the gate queued on its request
  path (canary uses, rotation reuse, activate-on-use values first used) is
  acted on here, off that path, so a refusal takes no longer for them.

All run as ``cleanup_ctx`` tasks of the app (:func:`change_listener`,
:func:`usage_flusher`, :func:`incident_worker`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import structlog
from aiohttp import web

from patgate.cache import GrantCache
from patgate.errors import StoreUnavailableError
from patgate.events import Event
from patgate.gate import ACTIVATE, Gate
from patgate.models import Change, ChangeKind, Usage
from patgate.web.gateway.streams import StreamRegistry
from patgate.web.keys import CACHE, CONFIG, GATE, SERVICE, STORE, STREAMS

log = structlog.get_logger("patgate.gateway")


# How long start-up waits for the change feed's first answer (it listens, or
# the store is unreachable); beyond a connect timeout, only a hung store.
FIRST_ANSWER_WAIT = 5.0


async def change_listener(app: web.Application) -> AsyncIterator[None]:
    """Run :func:`listen_for_changes` for the app's life.

    Start-up waits until the feed listens (or has failed once, leaving the
    cache suspended), so no request is served, and cached, before a notice
    could reach this process.
    """
    settled = asyncio.Event()
    task = asyncio.create_task(listen_for_changes(app, settled))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(settled.wait(), FIRST_ANSWER_WAIT)
    yield
    await stop_task(task)


async def stop_task(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait for its end, cancelling again if it shrugs one off.

    On Python 3.11 ``asyncio.wait_for`` (redis-py connects with it) swallows a
    cancellation that lands as the connection completes (CPython gh-86296),
    and the listener would then run forever and hang shutdown.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def listen_for_changes(
    app: web.Application, settled: asyncio.Event | None = None
) -> None:
    """Apply change notices to the cache and open streams; reconnect forever.

    Notices sent while the feed was down are lost, so after a reconnect every
    cache entry must be confirmed by the store again and every open stream
    re-checked, but only once the new subscription listens (the store's
    ``LISTENING`` item): a lookup made before that could read a record that a
    notice then missed would have dropped. ``settled`` is set once the feed
    first listens or fails.
    """
    settled = settled or asyncio.Event()
    store, cache, gate, streams = app[STORE], app[CACHE], app[GATE], app[STREAMS]
    delay = 0.05
    reconnecting = False
    while True:
        try:
            if reconnecting:
                await store.ping()
            async for change in store.changes():
                delay = 0.05
                if change.kind is ChangeKind.LISTENING:
                    # Whatever was cached before this may predate a missed
                    # notice.
                    cache.resume()
                    if reconnecting:
                        await streams.revalidate(gate, streams.all())
                        log.info("change_feed_reconnected")
                        reconnecting = False
                    settled.set()
                    continue
                await apply_change(change, cache, gate, streams)
        except StoreUnavailableError as exc:
            if not reconnecting:
                log.warning("change_feed_lost", error=str(exc))
                # Deaf to revocations: ask the store on every request until
                # the feed is back; the cache is only the outage fallback.
                cache.suspend()
            reconnecting = True
            settled.set()
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


async def apply_change(
    change: Change, cache: GrantCache, gate: Gate, streams: StreamRegistry
) -> None:
    if change.kind is ChangeKind.TOKEN:
        cache.drop_token(change.key)
        # SECURITY: a pending slide computed from the old settings would undo
        # a shortened expiry (the store also refuses it by version).
        gate.usage.discard_expiry(change.key)
    else:
        cache.drop_owner(change.key)
    affected = streams.affected(change)
    if affected:
        cancelled = await streams.revalidate(gate, affected)
        if cancelled:
            log.info("streams_closed", change=change.encode(), count=cancelled)


async def usage_flusher(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_flush_usage_forever(app))
    yield
    await stop_task(task)
    await flush_usage(app)


async def _flush_usage_forever(app: web.Application) -> None:
    interval = app[CONFIG].usage_flush_interval
    while True:
        await asyncio.sleep(interval)
        await flush_usage(app)


async def flush_usage(app: web.Application) -> None:
    usage = app[GATE].usage
    batch = usage.drain()
    if not batch:
        return
    try:
        news = await app[STORE].record_usage(batch)
    except StoreUnavailableError:
        usage.restore(batch)
        return
    try:
        await app[STORE].record_observed(batch)
    except StoreUnavailableError:
        # The uses are written; only the observations wait for the next flush.
        usage.restore([_only_observed(u) for u in batch if u.observed])
    if news:
        await app[SERVICE].usage_news(news)


def _only_observed(usage: Usage) -> Usage:
    """The observations of ``usage`` alone: no use to count again."""
    return Usage(
        usage.token_id, usage.used_at, None, 0, None, usage.version, (), usage.observed
    )


async def incident_worker(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_handle_incidents_forever(app))
    yield
    await stop_task(task)
    await handle_incidents(app)


async def _handle_incidents_forever(app: web.Application) -> None:
    incidents = app[GATE].incidents
    while True:
        await incidents.ready.wait()
        if not await handle_incidents(app):
            await asyncio.sleep(1.0)  # the store is down: retry soon


async def handle_incidents(app: web.Application) -> bool:
    """Act on every queued incident; False (kept for later) if the store is down."""
    gate = app[GATE]
    pending = gate.incidents.drain()
    for number, event in enumerate(pending):
        try:
            await _handle(app, event)
        except StoreUnavailableError as exc:
            log.warning("incidents_delayed", error=str(exc), count=len(pending))
            for later in pending[number:]:
                gate.incidents.emit(later)
            return False
    return True


async def _handle(app: web.Application, event: Event) -> None:
    service, data = app[SERVICE], event.data
    token_id = str(data["token_id"])
    if event.type == ACTIVATE:
        try:
            await service.activate_rotation(token_id)
        finally:
            app[GATE].activation_done(token_id)
    elif event.type == "canary.used":
        await service.canary_used(
            token_id,
            data.get("owner"),
            ip=data.get("ip"),
            method=str(data.get("method")),
            path=str(data.get("path")),
            user_agent=data.get("user_agent"),
        )
    else:
        policy = app[CONFIG].rotation_reuse
        await service.rotation_reused(token_id, policy, ip=data.get("ip"))
