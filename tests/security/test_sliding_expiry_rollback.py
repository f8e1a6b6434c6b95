"""A usage write undoing an edit (issue 11, finding 7).

The attack: a sliding token with a one-hour window is in use; its owner (or
an admin) cuts it short, to expire in seconds. The gateway still holds the
pending usage of the last use, whose slid expiry (an hour on) was written
back by the next flush: the token kept working.

The class: a coalesced usage write must never move the expiry of a token
whose settings changed since the use it records, whatever the change (a hard
expiry, a shorter window, a lower ``max_lifetime``), wherever it was made
(this gateway, another replica, the CLI in another process), and whenever
the write happens (before or after the change notice, or as a failed batch
merged back). Stopped in the stores (``record_usage`` moves ``expires_at``
only at the settings ``version`` the slide was computed from, atomically),
in ``usage.UsageRecorder`` (a notice drops the pending move; older versions
lose to newer ones) and in ``cache.GrantCache`` (no slide from an old
version lands on a new grant).

Real gateways on both stores; windows of seconds, so every test is short.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from patgate.models import ExpiryModel, TokenRecord
from patgate.store import Store
from patgate.web.gateway.sync import flush_usage
from patgate.web.keys import CACHE, GATE
from tests.factories import make_token
from tests.gateway_harness import (
    ADMIN,
    Gateway,
    RecordingUpstream,
    gateway_yaml,
    route_yaml,
)
from tests.processes import PEPPER, ProcessGroup, StoreAdmin, poll
from tests.security.conftest import StartGateway, bearer, send_raw
from tests.security.conftest import request as http_request

ROUTE = """\
  - name: api
    prefix: /api/
    upstream: {upstream}
"""
HARNESS_PEPPER = b"test-pepper"  # tests.gateway_harness.start_gateway's
# How long the edited token has left; long enough for the flush and the
# notice to land first (SQLite polls its change log every 0.2 s).
CUT_TO = 2.0
FLUSH_OFTEN = "usage_flush_interval: 0.2"


async def used_hour_token(
    store: Store, pepper: bytes, owner: str = "alice"
) -> tuple[TokenRecord, str]:
    """A sliding one-hour token, last moved ten minutes ago: any use slides it."""
    now = time.time()
    record, value = make_token(
        owner,
        pepper=pepper,
        now=now - 600,
        expiry=ExpiryModel.SLIDING,
        sliding_window=3600,
        expires_at=now + 3000,
    )
    await store.create_token(record)
    return record, value


# Each edit cuts the token to about CUT_TO seconds from now.
EDITS: dict[str, Callable[[TokenRecord], dict[str, Any]]] = {
    "hard-expiry": lambda _: {"expires_at": time.time() + CUT_TO},
    "shorter-window": lambda _: {"sliding": int(CUT_TO)},
    "lower-max-lifetime": lambda record: {
        "max_lifetime": int(time.time() + CUT_TO - record.created_at)
    },
}


async def status_of(gateway: Gateway, value: str) -> int:
    (response,) = await send_raw(gateway, http_request("/api/x", bearer(value)))
    return response.status


async def flushed(store: Store, token_id: str, uses: int) -> TokenRecord:
    async def written() -> TokenRecord | None:
        record = await store.get_token(token_id)
        assert record is not None
        return record if record.use_count >= uses else None

    return await poll(written, within=5, what="the usage flush")


async def until(moment: float) -> None:
    await poll(lambda: time.time() >= moment, within=CUT_TO + 5, interval=0.05)


@pytest.mark.parametrize("edit", list(EDITS))
async def test_pending_slide_never_undoes_an_edit_made_on_another_replica(
    make_gateway: StartGateway,
    upstream: RecordingUpstream,
    store_url: str,
    edit: str,
) -> None:
    routes = ROUTE.format(upstream=upstream.url)
    serving = await make_gateway(store_url, routes, extra=FLUSH_OFTEN)
    editing = await make_gateway(store_url, routes, extra=FLUSH_OFTEN)
    await serving.add_user("alice")
    record, value = await used_hour_token(serving.store, HARNESS_PEPPER)
    assert await status_of(serving, value) == 200  # slides it an hour on

    edited = await editing.service.edit_token(ADMIN, record.id, **EDITS[edit](record))
    assert edited.expires_at is not None
    assert edited.expires_at < time.time() + CUT_TO + 1
    stored = await flushed(serving.store, record.id, uses=1)
    assert stored.expires_at == edited.expires_at

    await until(edited.expires_at)
    # The serving replica's cache held the slid expiry: it must not serve it.
    assert await status_of(serving, value) == 401
    assert await status_of(editing, value) == 401
    stored = await flushed(serving.store, record.id, uses=1)
    assert stored.expires_at == edited.expires_at
    assert len(upstream.requests) == 1


async def test_failed_flush_merged_back_after_an_edit_cannot_undo_it(
    make_gateway: StartGateway, upstream: RecordingUpstream, store_url: str
) -> None:
    """The batch's write fails, the edit and its notice land, the batch is
    merged back and written at the next flush."""
    gateway = await make_gateway(
        store_url, ROUTE.format(upstream=upstream.url), extra="usage_flush_interval: 60"
    )
    await gateway.add_user("alice")
    record, value = await used_hour_token(gateway.store, HARNESS_PEPPER)
    assert await status_of(gateway, value) == 200
    gate, cache = gateway.app[GATE], gateway.app[CACHE]
    assert len(cache) == 1
    batch = gate.usage.drain()  # this write fails...

    edited = await gateway.service.edit_token(
        ADMIN, record.id, expires_at=time.time() + CUT_TO
    )
    await poll(lambda: len(cache) == 0, within=2, what="the change notice")
    gate.usage.restore(batch)  # ...and is merged back
    await flush_usage(gateway.app)

    stored = await flushed(gateway.store, record.id, uses=1)
    assert edited.expires_at is not None
    assert stored.expires_at == edited.expires_at
    await until(edited.expires_at)
    assert await status_of(gateway, value) == 401


async def test_cli_edit_is_not_undone_by_a_serving_process(
    gateways: ProcessGroup, upstream: RecordingUpstream, store_url: str, client
) -> None:
    """The attack as reported: ``patgate serve`` holds the use, another
    process (the CLI, here its service) cuts the token short."""
    admin = StoreAdmin(store_url)
    try:
        await admin.user("alice")
        record, value = await used_hour_token(admin.store, PEPPER.encode())
        gateway = await gateways.start(
            gateway_yaml(
                store_url, route_yaml("api", "/api/", upstream.url), FLUSH_OFTEN
            )
        )
        headers = {"Authorization": f"Bearer {value}"}

        async def status() -> int:
            async with client.get(gateway.url + "/api/x", headers=headers) as reply:
                return reply.status

        assert await status() == 200
        edited = await admin.service.edit_token(
            ADMIN, record.id, expires_at=time.time() + CUT_TO
        )
        stored = await flushed(admin.store, record.id, uses=1)
        assert edited.expires_at is not None
        assert stored.expires_at == edited.expires_at
        await until(edited.expires_at)
        assert await status() == 401
        assert (await admin.get(record.id)).expires_at == edited.expires_at
    finally:
        await admin.close()
