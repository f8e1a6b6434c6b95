"""The gate's usage and cache writes around an edit, with the clock injected.

A real SQLite store in ``tmp_path`` stands behind the gate; what a change
notice does to a gateway (``web.gateway.sync.apply_change``) is done by hand here,
step by step, so each step of the race can be placed where the test wants it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from patgate.cache import GrantCache
from patgate.config import RouteConfig
from patgate.extract import Credential
from patgate.gate import Gate, RequestView
from patgate.models import ExpiryModel, TokenRecord
from patgate.routing import CompiledRoute
from patgate.store.sqlite import SQLiteStore
from patgate.throttle import FailureThrottle
from patgate.usage import UsageRecorder
from tests.factories import NOW, make_token, make_user

PEPPER = b"gate-test-pepper"
ANY_TOKEN = CompiledRoute(
    RouteConfig(name="api", prefix="/", upstream="http://127.0.0.1:1")
)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path) -> AsyncIterator[SQLiteStore]:
    opened = SQLiteStore(tmp_path / "patgate.db")
    await opened.create_user(make_user())
    try:
        yield opened
    finally:
        await opened.close()


def new_gate(store: SQLiteStore, clock: Clock) -> Gate:
    cache = GrantCache(
        max_entries=100, ttl=30, negative_ttl=5, max_stale=60, clock=clock
    )
    return Gate(
        store=store,
        cache=cache,
        usage=UsageRecorder(),
        throttle=FailureThrottle(100),
        prefix="pgt",
        pepper=PEPPER,
        clock=clock,
    )


async def sliding_token(store: SQLiteStore) -> tuple[TokenRecord, str]:
    """A one-hour sliding token last moved a minute ago: a use slides it."""
    record, value = make_token(
        pepper=PEPPER,
        expiry=ExpiryModel.SLIDING,
        sliding_window=3600,
        expires_at=NOW + 3540,
        created_at=NOW - 60,
    )
    await store.create_token(record)
    return record, value


def view(value: str) -> RequestView:
    return RequestView("GET", "/x", "192.0.2.1", Credential(value, "bearer"))


async def stored(store: SQLiteStore, token_id: str) -> TokenRecord:
    record = await store.get_token(token_id)
    assert record is not None
    return record


def notice(gate: Gate, token_id: str) -> None:
    """What a token change notice does to this gateway."""
    gate.cache.drop_token(token_id)
    gate.usage.discard_expiry(token_id)


async def test_each_use_notes_the_version_its_slide_was_computed_from(store):
    clock = Clock()
    gate = new_gate(store, clock)
    record, value = await sliding_token(store)
    assert (await gate.authorize(ANY_TOKEN, view(value))).allowed
    pending = gate.usage.pending(record.id)
    assert pending is not None
    assert (pending.expires_at, pending.version) == (NOW + 3600, 0)

    await store.update_token(record.with_changes(name="renamed"))
    notice(gate, record.id)
    clock.now += 5
    assert (await gate.authorize(ANY_TOKEN, view(value))).allowed
    pending = gate.usage.pending(record.id)
    assert pending is not None
    assert (pending.expires_at, pending.version, pending.count) == (NOW + 3605, 1, 2)


@pytest.mark.parametrize("notice_arrives", [True, False])
async def test_a_failed_flush_retried_after_an_edit_cannot_extend_the_token(
    store, notice_arrives
):
    """The batch is drained, its write fails, the token is edited to expire
    in 10 s, the batch is merged back and written: the token still dies at
    the edited time. Without the notice (feed down) the store's version check
    alone must hold."""
    clock = Clock()
    gate = new_gate(store, clock)
    record, value = await sliding_token(store)
    assert (await gate.authorize(ANY_TOKEN, view(value))).allowed
    batch = gate.usage.drain()  # the write of this batch fails
    edited = record.with_changes(expiry=ExpiryModel.HARD, expires_at=NOW + 10)
    await store.update_token(edited)
    if notice_arrives:
        notice(gate, record.id)
    else:
        gate.cache.expire_all()  # the feed came back: everything is re-checked
    gate.usage.restore(batch)
    await store.record_usage(gate.usage.drain())
    after = await stored(store, record.id)
    assert (after.expires_at, after.use_count) == (NOW + 10, 1)
    clock.now += 10
    decision = await gate.authorize(ANY_TOKEN, view(value))
    assert (decision.allowed, decision.reason) == (False, "expired")


async def test_a_fetch_racing_a_change_notice_serves_its_request_only(store):
    """The store may have been read before the edit whose notice comes in
    while the read is on its way back: the grant is not cached, or the old
    record would be served for a whole ttl after the notice."""
    gate = new_gate(store, Clock())
    record, value = await sliding_token(store)
    request = asyncio.create_task(gate.authorize(ANY_TOKEN, view(value)))
    await asyncio.sleep(0)  # the request now waits on store.resolve
    notice(gate, record.id)
    assert (await request).allowed  # concurrent with the edit: either is right
    assert len(gate.cache) == 0
    assert (await gate.authorize(ANY_TOKEN, view(value))).allowed
    assert len(gate.cache) == 1


async def test_a_cancelled_lookup_does_not_strand_those_waiting_on_it(store):
    """Concurrent misses share one store call; when its caller is cancelled
    (a client gone), the others ask the store themselves instead of hanging."""
    gate = new_gate(store, Clock())
    _, value = await sliding_token(store)
    leader = asyncio.create_task(gate.authorize(ANY_TOKEN, view(value)))
    await asyncio.sleep(0)  # the leader now waits on store.resolve
    follower = asyncio.create_task(gate.authorize(ANY_TOKEN, view(value)))
    await asyncio.sleep(0)  # the follower now waits on the leader's call
    leader.cancel()
    async with asyncio.timeout(5):
        assert (await follower).allowed
    assert leader.cancelled()


async def test_a_waiter_cancelled_with_the_lookup_it_waits_on_stays_cancelled(store):
    """Its own cancellation is not taken for the lookup's: it does not go on
    to ask the store itself."""
    gate = new_gate(store, Clock())
    _, value = await sliding_token(store)
    leader = asyncio.create_task(gate.authorize(ANY_TOKEN, view(value)))
    await asyncio.sleep(0)
    follower = asyncio.create_task(gate.authorize(ANY_TOKEN, view(value)))
    await asyncio.sleep(0)
    leader.cancel()
    follower.cancel()
    async with asyncio.timeout(5):
        await asyncio.wait({leader, follower})
    assert leader.cancelled()
    assert follower.cancelled()
