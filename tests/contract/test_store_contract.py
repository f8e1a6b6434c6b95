"""One conformance suite for every Store adapter (SPEC.md section 5).

Every test that takes ``store`` or ``store_url`` runs unchanged on SQLite and
on Redis. The tests at the end need adapter-specific set-up (a broken file, a
Redis outage, Redis command statistics) and say which adapter in their name.
Real servers and real files throughout; time is passed in, never slept on
beyond what a poll or a subscription needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sqlite3
import time
from pathlib import Path

import pytest
import redis

from patgate.errors import (
    ConflictError,
    NotFoundError,
    StoreUnavailableError,
    UsageError,
)
from patgate.events import WEBHOOK_LEASE, Delivery, DeliveryAttempt
from patgate.models import (
    MAX_OBSERVED,
    Change,
    ChangeKind,
    ExpiryModel,
    Observed,
    SeenIp,
    TokenRecord,
    TokenStatus,
    Usage,
    UsageNews,
)
from patgate.store import Store, open_store
from tests.conftest import RedisServer, free_port
from tests.factories import NOW, make_token, make_user

# SPEC.md section 3: an edit made anywhere reaches every gateway within this.
PROPAGATION_BOUND = {"sqlite": 1.0, "redis": 0.1}


def adapter(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "redis"


def every_field_token(**overrides: object) -> TokenRecord:
    """A token with every optional field set to something that round-trips."""
    fields: dict[str, object] = {
        "name": "CI deploy (eu)",
        "scopes": ("files:read", "node:/dav/projects/alpha:rw", "env:*"),
        "project": "eu-west-1",
        "expiry": ExpiryModel.SLIDING,
        "expires_at": NOW + 3600.125,
        "sliding_window": 3600,
        "max_lifetime": 30 * 86400,
        "created_by": "root",
        "updated_at": NOW + 0.5,
        "last_used_at": NOW - 10.25,
        "last_used_ip": "2001:db8::1",
        "use_count": 7,
        "allowed_cidrs": ("10.0.0.0/8", "2001:db8::/32"),
        "rate_limit": 120,
        "previous_hash": bytes(range(32)),
        "previous_hash_until": NOW + 60.0,
        "canary": True,
        "retired_hashes": (bytes(range(1, 33)), bytes(range(2, 34))),
        "activate_on_use": True,
        "last_ips": (SeenIp("192.0.2.9", NOW - 99.5, NOW - 11.25),),
        "observe_until": NOW + 7 * 86400.25,
    }
    fields.update(overrides)
    record, _ = make_token(**fields)
    return record


async def with_owner(store: Store, login: str = "alice") -> None:
    await store.create_user(make_user(login))


# users


async def test_ping(store):
    await store.ping()


async def test_user_round_trip(store):
    user = make_user(
        "alice",
        password_hash="$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
        scopes=("files:read", "node:/dav/alpha:rw"),
        admin=True,
        created_at=NOW + 0.125,
        updated_at=NOW + 0.5,
    )
    plain = make_user("bob")
    await store.create_user(user)
    await store.create_user(plain)
    assert await store.get_user("alice") == user
    assert await store.get_user("bob") == plain
    assert await store.get_user("carol") is None


async def test_list_users_by_login(store):
    for login in ("carol", "alice", "bob"):
        await store.create_user(make_user(login))
    assert [user.login for user in await store.list_users()] == [
        "alice",
        "bob",
        "carol",
    ]


async def test_create_user_twice_is_a_conflict_and_keeps_the_first(store):
    first = make_user("alice", admin=True)
    await store.create_user(first)
    with pytest.raises(ConflictError, match="alice"):
        await store.create_user(make_user("alice", scopes=("files:read",)))
    assert await store.get_user("alice") == first
    assert len(await store.list_users()) == 1


async def test_update_user_replaces_it(store):
    await store.create_user(make_user("alice", password_hash="old"))
    changed = make_user(
        "alice",
        password_hash=None,
        scopes=("files:read",),
        disabled=True,
        updated_at=NOW + 60,
    )
    await store.update_user(changed)
    assert await store.get_user("alice") == changed


async def test_update_missing_user_is_not_found(store):
    with pytest.raises(NotFoundError, match="bob"):
        await store.update_user(make_user("bob"))
    assert await store.get_user("bob") is None
    assert await store.list_users() == []


# tokens


async def test_token_round_trip_with_every_field(store):
    await with_owner(store)
    record = every_field_token()
    await store.create_token(record)
    assert await store.get_token(record.id) == record


async def test_token_round_trip_with_defaults(store):
    await with_owner(store)
    record, _ = make_token()
    await store.create_token(record)
    stored = await store.get_token(record.id)
    assert stored == record
    assert stored is not None
    assert stored.expires_at is None
    assert stored.previous_hash is None


async def test_get_unknown_token_is_none(store):
    assert await store.get_token("Unknown1") is None


async def test_create_token_twice_is_a_conflict_and_keeps_the_first(store):
    await with_owner(store)
    first, _ = make_token(id="SameId01", name="first")
    second, _ = make_token(id="SameId01", name="second")
    await store.create_token(first)
    with pytest.raises(ConflictError, match="SameId01"):
        await store.create_token(second)
    assert await store.get_token("SameId01") == first
    assert await store.list_tokens() == [first]


async def test_create_token_for_unknown_owner_is_not_found(store):
    record, _ = make_token(owner="ghost")
    with pytest.raises(NotFoundError, match="ghost"):
        await store.create_token(record)
    assert await store.get_token(record.id) is None


async def test_list_tokens_by_owner_and_all_oldest_first(store):
    await with_owner(store, "alice")
    await with_owner(store, "bob")
    a2, _ = make_token("alice", now=NOW + 2)
    b1, _ = make_token("bob", now=NOW + 1)
    a0, _ = make_token("alice", now=NOW)
    for record in (a2, b1, a0):
        await store.create_token(record)
    assert await store.list_tokens("alice") == [a0, a2]
    assert await store.list_tokens("bob") == [b1]
    assert await store.list_tokens("carol") == []
    assert await store.list_tokens() == [a0, b1, a2]


async def test_update_token_writes_settings_and_keeps_usage(store):
    await with_owner(store)
    record = every_field_token()
    await store.create_token(record)
    await store.record_usage([Usage(record.id, NOW + 100, "192.0.2.7", 5)])
    # A management edit built from a stale read: usage fields are old, and it
    # clears every optional setting.
    edited = record.with_changes(
        token_hash=b"\x01" * 32,
        name="renamed",
        scopes=("files:read",),
        project=None,
        expiry=ExpiryModel.HARD,
        expires_at=NOW + 7200.0,
        sliding_window=None,
        max_lifetime=None,
        updated_at=NOW + 200,
        allowed_cidrs=(),
        rate_limit=None,
        status=TokenStatus.REVOKED,
        previous_hash=None,
        previous_hash_until=None,
        use_count=0,
        last_used_at=None,
        last_used_ip=None,
    )
    await store.update_token(edited)
    assert await store.get_token(record.id) == edited.with_changes(
        use_count=record.use_count + 5,
        last_used_at=NOW + 100,
        last_used_ip="192.0.2.7",
        version=record.version + 1,  # every management write counts
    )


async def test_update_token_keeps_owner_and_creation(store):
    await with_owner(store)
    record, _ = make_token()
    await store.create_token(record)
    await store.update_token(
        record.with_changes(owner="mallory", created_at=0.0, created_by="mallory")
    )
    assert await store.get_token(record.id) == record.with_changes(version=1)
    assert await store.list_tokens("mallory") == []


async def test_every_update_token_adds_one_to_the_version_whatever_it_says(
    store, store_url
):
    await with_owner(store)
    record, _ = make_token()
    await store.create_token(record)
    other = open_store(store_url)  # another process edits too
    try:
        # The version in the record is ignored: a stale or forged one neither
        # rewinds nor skips the count.
        await store.update_token(record.with_changes(name="a", version=0))
        await other.update_token(record.with_changes(name="b", version=99))
        await asyncio.gather(
            *(
                (store if i % 2 else other).update_token(
                    record.with_changes(name=f"{i}")
                )
                for i in range(8)
            )
        )
    finally:
        await other.close()
    stored = await store.get_token(record.id)
    assert stored is not None
    assert stored.version == 10


async def test_update_missing_token_is_not_found_and_creates_nothing(store):
    record, _ = make_token()
    with pytest.raises(NotFoundError, match=record.id):
        await store.update_token(record)
    assert await store.get_token(record.id) is None
    assert await store.list_tokens() == []


async def test_delete_token_removes_it_from_everything_and_answers_it(store):
    await with_owner(store)
    record = every_field_token()
    kept, _ = make_token(now=NOW + 1)
    await store.create_token(record)
    await store.create_token(kept)
    deleted = await store.delete_token(record.id)
    assert deleted is not None
    assert deleted.with_changes(version=0) == record
    assert await store.get_token(record.id) is None
    assert await store.resolve(record.id) is None
    assert await store.list_tokens("alice") == [kept]
    assert await store.list_tokens() == [kept]
    # Removing twice is removing once; an unknown id is no error.
    assert await store.delete_token(record.id) is None
    # The id is free again, as if it never existed.
    await store.create_token(record)
    assert await store.get_token(record.id) is not None


async def test_a_deletion_is_a_change_notice(store, store_url):
    other = open_store(store_url)
    listener = ChangeListener(store)
    try:
        await listener.until_listening()
        await other.create_user(make_user("alice"))
        record, _ = make_token()
        await other.create_token(record)
        await other.delete_token(record.id)
        await listener.wait_for(Change(ChangeKind.TOKEN, record.id))
    finally:
        await listener.stop()
        await other.close()


# resolve


async def test_resolve_returns_the_token_and_its_owner(store):
    owner = make_user("alice", scopes=("files:*",), admin=True)
    await store.create_user(owner)
    record = every_field_token()
    await store.create_token(record)
    grant = await store.resolve(record.id)
    assert grant is not None
    assert grant.token == record
    assert grant.owner == owner


async def test_resolve_unknown_token_is_none(store):
    await with_owner(store)
    assert await store.resolve("Unknown1") is None


async def test_resolve_sees_the_owner_as_it_is_now(store):
    await with_owner(store)
    record, _ = make_token()
    await store.create_token(record)
    disabled = make_user("alice", disabled=True, scopes=("files:read",))
    await store.update_user(disabled)
    grant = await store.resolve(record.id)
    assert grant is not None
    assert grant.owner == disabled


# usage


async def test_record_usage_adds_counts_and_keeps_the_latest_use(store):
    await with_owner(store)
    record, _ = make_token()
    await store.create_token(record)
    await store.record_usage([Usage(record.id, NOW + 10, "192.0.2.1", 3)])
    # An older use flushed late (another replica) adds its count only.
    await store.record_usage([Usage(record.id, NOW + 5, "192.0.2.2", 2)])
    stored = await store.get_token(record.id)
    assert stored is not None
    assert (stored.use_count, stored.last_used_at, stored.last_used_ip) == (
        5,
        NOW + 10,
        "192.0.2.1",
    )
    # A newer use without a known address moves the time, keeps the address.
    await store.record_usage(
        [
            Usage(record.id, NOW + 20, None, 1),
            Usage(record.id, NOW + 15, "192.0.2.3", 4),
        ]
    )
    stored = await store.get_token(record.id)
    assert stored is not None
    assert (stored.use_count, stored.last_used_at, stored.last_used_ip) == (
        10,
        NOW + 20,
        "192.0.2.1",
    )


async def test_record_usage_batch_covers_several_tokens(store):
    await with_owner(store)
    records = [make_token(now=NOW + i)[0] for i in range(5)]
    for record in records:
        await store.create_token(record)
    await store.record_usage(
        [
            Usage(r.id, NOW + 50 + i, f"192.0.2.{i}", i + 1)
            for i, r in enumerate(records)
        ]
    )
    for i, record in enumerate(await store.list_tokens()):
        assert record.use_count == i + 1
        assert record.last_used_at == NOW + 50 + i
        assert record.last_used_ip == f"192.0.2.{i}"


async def test_sliding_expiry_only_moves_forward(store):
    await with_owner(store)
    sliding, _ = make_token(
        expiry=ExpiryModel.SLIDING, expires_at=NOW + 100.0, sliding_window=100
    )
    never, _ = make_token(now=NOW + 1)
    await store.create_token(sliding)
    await store.create_token(never)

    async def expires_at(token_id: str) -> float | None:
        stored = await store.get_token(token_id)
        assert stored is not None
        return stored.expires_at

    await store.record_usage([Usage(sliding.id, NOW + 1, None, 1, NOW + 50.0)])
    assert await expires_at(sliding.id) == NOW + 100.0
    await store.record_usage([Usage(sliding.id, NOW + 2, None, 1, NOW + 200.5)])
    assert await expires_at(sliding.id) == NOW + 200.5
    await store.record_usage([Usage(sliding.id, NOW + 3, None, 1, None)])
    assert await expires_at(sliding.id) == NOW + 200.5
    # A token that never expires is never given an end by a usage write.
    await store.record_usage([Usage(never.id, NOW + 3, None, 1, NOW + 300.0)])
    assert await expires_at(never.id) is None


async def sliding_token(store: Store, expires_in: float = 100.0) -> TokenRecord:
    await with_owner(store)
    record, _ = make_token(
        expiry=ExpiryModel.SLIDING,
        expires_at=NOW + expires_in,
        sliding_window=int(expires_in),
    )
    await store.create_token(record)
    return record


async def stored(store: Store, token_id: str) -> TokenRecord:
    record = await store.get_token(token_id)
    assert record is not None
    return record


@pytest.mark.parametrize(
    "edit",
    [
        {"expiry": ExpiryModel.HARD, "expires_at": NOW + 10.0, "sliding_window": None},
        {"expires_at": NOW + 10.0, "sliding_window": 10},
        {"expires_at": NOW + 10.0, "max_lifetime": 10},
        {"status": TokenStatus.REVOKED},
        {"token_hash": b"\x02" * 32},
        {"name": "renamed"},
    ],
    ids=["hard", "shorter-window", "max-lifetime", "revoke", "regenerate", "rename"],
)
async def test_usage_from_before_an_edit_never_moves_the_expiry(store, edit):
    """A slide computed from the old settings is stale after any edit."""
    record = await sliding_token(store)
    edited = record.with_changes(**edit)
    await store.update_token(edited)
    await store.record_usage(
        [Usage(record.id, NOW + 5, "192.0.2.9", 3, NOW + 3600.0, record.version)]
    )
    after = await stored(store, record.id)
    assert after.expires_at == edited.expires_at
    # The uses themselves still count.
    assert (after.use_count, after.last_used_at) == (3, NOW + 5)
    assert after.last_used_ip == "192.0.2.9"


async def test_usage_at_the_current_version_moves_the_expiry(store):
    record = await sliding_token(store)
    await store.update_token(record.with_changes(expires_at=NOW + 10.0))
    current = await stored(store, record.id)
    await store.record_usage(
        [
            Usage(record.id, NOW + 5, None, 1, NOW + 3600.0, current.version - 1),
            Usage(record.id, NOW + 6, None, 1, NOW + 15.0, current.version),
        ]
    )
    assert (await stored(store, record.id)).expires_at == NOW + 15.0


async def test_usage_writes_racing_edits_never_undo_an_edit(store, store_url):
    """Edits from one instance, stale usage flushes from another, interleaved.

    Whatever the order, the last expiry written is an edit's: a usage computed
    at version 0 lands either before an edit (which overwrites it) or after
    (and is refused).
    """
    record = await sliding_token(store)
    other = open_store(store_url)
    try:
        await asyncio.gather(
            *(
                other.record_usage(
                    [Usage(record.id, NOW + i, None, 1, NOW + 9000.0 + i, 0)]
                )
                for i in range(20)
            ),
            *(
                store.update_token(record.with_changes(expires_at=NOW + 10.0 + i))
                for i in range(10)
            ),
        )
    finally:
        await other.close()
    after = await stored(store, record.id)
    assert after.expires_at is not None
    assert after.expires_at < NOW + 20.0
    assert (after.use_count, after.version) == (20, 10)


async def test_usage_of_an_unknown_token_leaves_no_ghost(store):
    await with_owner(store)
    record, _ = make_token()
    await store.create_token(record)
    await store.record_usage(
        [
            Usage("Unknown1", NOW, "192.0.2.1", 1, NOW + 100),
            Usage(record.id, NOW, "192.0.2.2", 2),
        ]
    )
    assert await store.get_token("Unknown1") is None
    assert await store.resolve("Unknown1") is None
    assert [r.id for r in await store.list_tokens()] == [record.id]
    stored = await store.get_token(record.id)
    assert stored is not None
    assert stored.use_count == 2


async def test_empty_usage_batch_is_a_no_op(store):
    await store.record_usage([])


async def test_concurrent_writers_lose_nothing(store, store_url):
    """Usage flushes from one process and edits from another interleave."""
    await with_owner(store)
    record, _ = make_token()
    await store.create_token(record)
    other = open_store(store_url)
    try:
        await asyncio.gather(
            *(
                store.record_usage([Usage(record.id, NOW + i, None, 1)])
                for i in range(20)
            ),
            *(
                other.update_token(record.with_changes(name=f"edit {i}"))
                for i in range(10)
            ),
        )
    finally:
        await other.close()
    stored = await store.get_token(record.id)
    assert stored is not None
    assert stored.use_count == 20
    assert stored.last_used_at == NOW + 19
    assert stored.name.startswith("edit ")


# change notices


class ChangeListener:
    """Runs ``store.changes()`` in a task and timestamps what arrives."""

    def __init__(self, store: Store) -> None:
        self.arrivals: asyncio.Queue[tuple[float, Change]] = asyncio.Queue()
        self.task = asyncio.create_task(self._listen(store))

    async def _listen(self, store: Store) -> None:
        async for change in store.changes():
            self.arrivals.put_nowait((time.perf_counter(), change))

    async def next(self, within: float) -> tuple[float, Change]:
        """The next notice; raises what the listener raised, or TimeoutError."""
        getter = asyncio.ensure_future(self.arrivals.get())
        await asyncio.wait(
            {getter, self.task}, timeout=within, return_when=asyncio.FIRST_COMPLETED
        )
        if getter.done():
            return getter.result()
        getter.cancel()
        if self.task.done():
            self.task.result()
            raise AssertionError("changes() ended while the store was open")
        raise TimeoutError

    async def wait_for(self, wanted: Change, within: float = 3.0) -> float:
        """When ``wanted`` arrived (skipping other notices)."""
        deadline = time.perf_counter() + within
        while True:
            arrived, change = await self.next(deadline - time.perf_counter())
            if change == wanted:
                return arrived

    async def until_listening(self) -> None:
        """Wait for the iterator's first item, LISTENING: from then on every
        notice arrives (an async iterator subscribes only once it runs)."""
        _, first = await self.next(within=5.0)
        assert first == Change(ChangeKind.LISTENING, "")

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, StoreUnavailableError):
            await self.task


@pytest.mark.timing
async def test_changes_by_another_instance_arrive_within_the_spec_bound(
    store, store_url, record_property
):
    bound = PROPAGATION_BOUND[adapter(store_url)]
    other = open_store(store_url)  # a second connection: another process
    listener = ChangeListener(store)
    try:
        await listener.until_listening()
        await other.create_user(make_user("alice"))
        record, _ = make_token()
        await other.create_token(record)
        # Usage writes are not changes: no notice for them precedes the next.
        await other.record_usage([Usage(record.id, NOW, None, 1)])

        latencies = []
        for write, notice in (
            (
                other.update_token(record.with_changes(status=TokenStatus.REVOKED)),
                Change(ChangeKind.TOKEN, record.id),
            ),
            (
                other.update_user(make_user("alice", disabled=True)),
                Change(ChangeKind.USER, "alice"),
            ),
            (
                other.update_token(record.with_changes(name="renamed")),
                Change(ChangeKind.TOKEN, record.id),
            ),
        ):
            started = time.perf_counter()
            await write
            latencies.append(await listener.wait_for(notice) - started)
    finally:
        await listener.stop()
        await other.close()
    record_property("change_latencies_s", latencies)
    print(f"{adapter(store_url)} change latencies: {latencies}")
    assert max(latencies) < bound


async def test_changes_iterator_ends_when_the_store_closes(store_url):
    opened = open_store(store_url)
    listener = ChangeListener(opened)
    await listener.until_listening()
    await opened.close()
    await asyncio.wait_for(listener.task, timeout=2.0)
    assert listener.task.exception() is None


# A socket the cancel race drops is ignored (pyproject.toml): a listener
# that runs on is what this checks.
async def test_cancelling_a_changes_consumer_always_ends_it(store_url):
    """Whenever the cancel lands (connecting, subscribing, polling), it wins.

    Python 3.11's asyncio.wait_for, which redis-py uses to send, drops a
    cancellation that lands as the send completes; a listener loop that
    missed its cancel would keep a gateway from shutting down.
    """
    loop = asyncio.get_running_loop()
    for step in range(60):
        opened = open_store(store_url)

        async def consume(opened: Store = opened) -> None:
            async for _ in opened.changes():
                pass

        task = asyncio.create_task(consume())
        loop.call_later(step * 0.00005, task.cancel)
        done, _ = await asyncio.wait({task}, timeout=2.0)
        await opened.close()
        assert done, f"changes() ignored a cancel {step * 50} us after it started"
        assert task.cancelled()
    gc.collect()  # any socket the race dropped is reported here, not later


# rate limits


async def test_take_rate_counts_a_fixed_window(store):
    window_start = 1_800_000_000  # divisible by 60
    now = window_start + 45.5
    for _ in range(3):
        assert (await store.take_rate("token:A", 3, 60, now)).allowed
    refused = await store.take_rate("token:A", 3, 60, now + 1)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(60 - 46.5)
    assert (await store.take_rate("token:B", 3, 60, now)).allowed
    assert (await store.take_rate("token:A", 3, 60, window_start + 60)).allowed


async def test_take_rate_keeps_windows_of_different_lengths_apart(store):
    now = 1_800_000_000 + 10.0
    assert (await store.take_rate("ip:192.0.2.1", 1, 60, now)).allowed
    assert not (await store.take_rate("ip:192.0.2.1", 1, 60, now)).allowed
    hourly = await store.take_rate("ip:192.0.2.1", 1, 3600, now)
    assert hourly.allowed
    refused = await store.take_rate("ip:192.0.2.1", 1, 3600, now)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(3600 - now % 3600)


async def test_take_rate_is_shared_by_every_store_instance(store, store_url):
    """Two instances are two processes (SQLite) or two replicas (Redis)."""
    now = 1_800_000_000 + 30.0
    other = open_store(store_url)
    try:
        verdicts = [
            await (store if i % 2 else other).take_rate("token:S", 5, 60, now)
            for i in range(12)
        ]
        # Concurrent hits from both are counted once each, none lost.
        racing = await asyncio.gather(
            *(
                (store if i % 2 else other).take_rate("token:R", 7, 60, now)
                for i in range(30)
            )
        )
    finally:
        await other.close()
    assert [v.allowed for v in verdicts] == [True] * 5 + [False] * 7
    assert sum(v.allowed for v in racing) == 7
    assert all(v.retry_after == pytest.approx(30.0) for v in racing if not v.allowed)


# settings


async def test_a_setting_is_absent_until_claimed(store):
    assert await store.get_setting("pepper_fingerprint") is None
    assert await store.claim_setting("pepper_fingerprint", "abc") == "abc"
    assert await store.get_setting("pepper_fingerprint") == "abc"


async def test_the_first_claim_of_a_setting_wins(store, store_url):
    other = open_store(store_url)
    try:
        claims = await asyncio.gather(
            *(
                (store if i % 2 else other).claim_setting("fingerprint", f"v{i}")
                for i in range(10)
            )
        )
        assert len(set(claims)) == 1
        assert await store.claim_setting("fingerprint", "later") == claims[0]
        assert await other.get_setting("fingerprint") == claims[0]
    finally:
        await other.close()


async def test_settings_are_apart_from_each_other(store):
    await store.claim_setting("a", "1")
    assert await store.claim_setting("b", "2") == "2"
    assert await store.get_setting("a") == "1"


# page sessions ended by a logout


async def test_a_session_is_live_until_revoked(store):
    assert await store.session_revoked("c2Vzc2lvbi0x") is False
    await store.revoke_session("c2Vzc2lvbi0x", time.time() + 3600)
    assert await store.session_revoked("c2Vzc2lvbi0x") is True
    assert await store.session_revoked("c2Vzc2lvbi0y") is False


async def test_a_revoked_session_is_seen_by_every_process(store, store_url):
    other = open_store(store_url)
    try:
        await other.revoke_session("b3RoZXItcHJvY2Vzcw", time.time() + 3600)
        assert await store.session_revoked("b3RoZXItcHJvY2Vzcw") is True
    finally:
        await other.close()


async def test_revoking_a_session_twice_is_no_error(store):
    await store.revoke_session("dHdpY2U", time.time() + 60)
    await store.revoke_session("dHdpY2U", time.time() + 7200)
    assert await store.session_revoked("dHdpY2U") is True


async def test_revoked_sessions_outlive_a_reopen(store_url):
    first = open_store(store_url)
    await first.revoke_session("ZHVyYWJsZQ", time.time() + 3600)
    await first.close()
    second = open_store(store_url)
    try:
        assert await second.session_revoked("ZHVyYWJsZQ") is True
    finally:
        await second.close()


async def test_a_session_already_expired_is_not_recorded(store):
    # It cannot be used anyway; nothing needs to remember it.
    await store.revoke_session("ZXhwaXJlZA", time.time() - 1)
    assert await store.session_revoked("ZXhwaXJlZA") is False


# durability and failure


async def test_data_survives_close_and_reopen(store_url):
    first = open_store(store_url)
    user = make_user("alice")
    record = every_field_token()
    await first.create_user(user)
    await first.create_token(record)
    await first.close()
    second = open_store(store_url)
    try:
        assert await second.get_user("alice") == user
        assert await second.get_token(record.id) == record
    finally:
        await second.close()


async def test_a_closed_store_refuses_calls(store_url):
    opened = open_store(store_url)
    await opened.ping()
    await opened.close()
    with pytest.raises(StoreUnavailableError, match="closed"):
        await opened.get_user("alice")


def test_open_store_refuses_unknown_urls():
    with pytest.raises(UsageError, match=r"'postgres'.*sqlite:///") as raised:
        open_store("postgres://admin:hunter2@db/patgate")
    assert "hunter2" not in str(raised.value)
    with pytest.raises(UsageError, match="no scheme"):
        open_store("./patgate.db")
    with pytest.raises(UsageError, match="sqlite:////absolute"):
        open_store("sqlite://host/patgate.db")


def unreachable_urls(tmp_path: Path) -> dict[str, str]:
    not_a_database = tmp_path / "not-a-database.db"
    not_a_database.write_bytes(b"precious data that is not SQLite " * 100)
    return {
        "redis-closed-port": f"redis://:hunter2@127.0.0.1:{free_port()}/0",
        "sentinel-closed-port": (
            f"redis+sentinel://u:hunter2@127.0.0.1:{free_port()}/svc/0"
            "?sentinel_password=hunter2"
        ),
        "cluster-closed-port": (
            f"redis+cluster://u:hunter2@127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
        ),
        "sqlite-missing-directory": f"sqlite:///{tmp_path}/missing/patgate.db",
        "sqlite-path-is-a-directory": f"sqlite:///{tmp_path}",
        "sqlite-not-a-database": f"sqlite:///{not_a_database}",
    }


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("redis-closed-port", "127.0.0.1:"),
        ("sentinel-closed-port", "127.0.0.1:"),
        ("cluster-closed-port", "127.0.0.1:"),
        ("sqlite-missing-directory", "directory .* does not exist"),
        ("sqlite-path-is-a-directory", "unable to open"),
        ("sqlite-not-a-database", "not a database"),
    ],
)
async def test_unreachable_store_is_unavailable_not_empty(tmp_path, case, reason):
    url = unreachable_urls(tmp_path)[case]
    before = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    opened = open_store(url)
    try:
        started = time.perf_counter()
        for call in (
            lambda: opened.ping(),
            lambda: opened.get_token("Unknown1"),
            lambda: opened.resolve("Unknown1"),
            lambda: opened.create_user(make_user()),
            lambda: opened.record_usage([Usage("Unknown1", NOW, None, 1)]),
            lambda: opened.revoke_session("c2Vzc2lvbg", time.time() + 60),
            lambda: opened.session_revoked("c2Vzc2lvbg"),
        ):
            with pytest.raises(StoreUnavailableError, match=reason) as raised:
                await call()
            assert "hunter2" not in str(raised.value)
        assert time.perf_counter() - started < 5.0
    finally:
        await opened.close()
    assert {p: p.read_bytes() for p in before} == before  # nothing overwritten


async def test_sqlite_locked_beyond_busy_timeout_is_unavailable_then_recovers(
    tmp_path,
):
    from patgate.store.sqlite import SQLiteStore

    path = tmp_path / "patgate.db"
    opened = SQLiteStore(path, busy_timeout=0.2)
    await opened.create_user(make_user("alice"))
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreUnavailableError, match=r"patgate\.db: .*locked"):
            await opened.create_user(make_user("bob"))
        blocker.execute("ROLLBACK")
        await opened.create_user(make_user("bob"))
        assert [u.login for u in await opened.list_users()] == ["alice", "bob"]
    finally:
        blocker.close()
        await opened.close()


async def test_sqlite_prunes_old_change_rows(tmp_path):
    from patgate.store.sqlite import SQLiteStore

    path = tmp_path / "patgate.db"
    opened = SQLiteStore(path, change_retention=0.0)
    try:
        await opened.create_user(make_user("alice"))
        for attempt in range(3):
            await opened.update_user(make_user("alice", updated_at=NOW + attempt))
    finally:
        await opened.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT kind, key FROM changes").fetchall()
    assert rows == [("user", "alice")]


async def test_sqlite_prunes_ended_rate_windows(tmp_path):
    from patgate.store.sqlite import RATE_PRUNE_INTERVAL, SQLiteStore

    path = tmp_path / "patgate.db"
    opened = SQLiteStore(path)
    now = 1_800_000_000 + 1.0
    try:
        for i in range(50):
            await opened.take_rate(f"ip:192.0.2.{i}", 5, 60, now)
        await opened.take_rate("token:live", 5, 3600, now)
        later = now + RATE_PRUNE_INTERVAL
        await opened.take_rate("token:new", 5, 60, later)
    finally:
        await opened.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT key FROM rates ORDER BY key").fetchall()
        synchronous = conn.execute("PRAGMA synchronous").fetchone()[0]
    assert rows == [("token:live",), ("token:new",)]
    assert synchronous == 2  # FULL: the store's own writes stay durable


async def test_sqlite_upgrades_a_version_2_file_in_place(tmp_path):
    """A file from before migration 3 gets the version column, the rate table
    and every later migration."""
    from patgate.store.sqlite import MIGRATIONS, SQLiteStore

    path = tmp_path / "patgate.db"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        for migration in MIGRATIONS[:2]:
            for statement in migration:
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 2")
        conn.execute(
            "INSERT INTO users VALUES ('alice', NULL, '[\"*\"]', 0, 0, 0.0, 0.0)"
        )
    opened = SQLiteStore(path)
    try:
        assert await opened.get_user("alice") is not None
        record, _ = make_token()
        await opened.create_token(record)
        await opened.update_token(record.with_changes(name="renamed"))
        assert (await stored(opened, record.id)).version == 1
        assert (await opened.take_rate("token:x", 1, 60, NOW)).allowed
        await opened.revoke_session("dXBncmFkZWQ", time.time() + 60)  # migration 4
        assert await opened.session_revoked("dXBncmFkZWQ")
    finally:
        await opened.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        assert version == len(MIGRATIONS)


async def test_redis_outage_is_reported_and_recovered_without_reopening(
    redis_server: RedisServer, redis_url: str
):
    opened = open_store(redis_url)
    listener = ChangeListener(opened)
    try:
        await listener.until_listening()
        await opened.create_user(make_user("alice"))
        redis_server.stop()
        started = time.perf_counter()
        where = f"127.0.0.1:{redis_server.port}"
        for call in (
            lambda: opened.ping(),
            lambda: opened.get_user("alice"),
            lambda: opened.resolve("Unknown1"),
            lambda: opened.update_user(make_user("alice")),
            lambda: opened.record_usage([Usage("Unknown1", NOW, None, 1)]),
            lambda: opened.take_rate("ip:192.0.2.1", 10, 60, NOW),
        ):
            with pytest.raises(StoreUnavailableError, match=where):
                await call()
        with pytest.raises(StoreUnavailableError, match=where):
            await listener.next(within=2.0)
        assert time.perf_counter() - started < 3.0
    finally:
        await listener.stop()
        redis_server.start()
    try:
        # The same store object: no re-creation. The restarted server has
        # neither the data nor the scripts (--save ""), so this also covers
        # reloading every script.
        await opened.ping()
        await opened.create_user(make_user("bob"))
        record, _ = make_token("bob")
        await opened.create_token(record)
        await opened.record_usage([Usage(record.id, NOW, None, 2)])
        grant = await opened.resolve(record.id)
        assert grant is not None
        assert grant.token.use_count == 2
        assert (await opened.take_rate("ip:192.0.2.1", 10, 60, NOW)).allowed
        listener = ChangeListener(opened)
        await listener.until_listening()
        await opened.update_token(record.with_changes(status=TokenStatus.REVOKED))
        await listener.wait_for(Change(ChangeKind.TOKEN, record.id))
    finally:
        await listener.stop()
        await opened.close()


async def test_redis_subscription_that_stops_answering_is_reported(
    redis_server: RedisServer, redis_url: str
):
    """A silent drop (no FIN, no RST) must not leave a gateway deaf to changes.

    CLIENT PAUSE makes the server ignore every client for a while, as a
    black-holed network would.
    """
    from patgate.store.redis import RedisStore

    opened = RedisStore.from_url(redis_url, liveness_interval=0.2)
    listener = ChangeListener(opened)
    try:
        await listener.until_listening()
        with redis_server.client_sync() as admin:
            admin.execute_command("CLIENT", "PAUSE", 1500, "ALL")
        paused = time.perf_counter()
        with pytest.raises(StoreUnavailableError, match="stopped answering"):
            await listener.next(within=1.4)
        assert time.perf_counter() - paused < 1.0
    finally:
        await listener.stop()
        await opened.close()
    # CLIENT UNPAUSE would wait for the pause too; leave the server as found.
    await asyncio.sleep(max(0.0, paused + 1.5 - time.perf_counter()))


def command_calls(client: redis.Redis) -> dict[str, int]:
    """Commands run since the last reset, without our own INFO and reset."""
    stats = client.info("commandstats")
    client.config_resetstat()
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if name not in ("cmdstat_info", "cmdstat_config|resetstat")
    }


async def test_redis_resolve_is_one_command_and_a_usage_batch_one_evalsha(
    redis_server: RedisServer, redis_url: str
):
    opened = open_store(redis_url)
    admin = redis_server.client_sync()
    try:
        await with_owner(opened)
        records = [make_token(now=NOW + i)[0] for i in range(50)]
        for record in records:
            await opened.create_token(record)
        usages = [Usage(r.id, NOW + 10, "192.0.2.1", 1) for r in records]
        # Warm up: connection made, scripts loaded.
        await opened.resolve(records[0].id)
        await opened.record_usage(usages)
        await opened.take_rate("token:x", 5, 60, NOW)
        command_calls(admin)

        await opened.resolve(records[0].id)
        # The script's own HGET and HGETALLs are counted too; the client sent
        # one EVALSHA and nothing else.
        assert command_calls(admin) == {"evalsha": 1, "hget": 1, "hgetall": 2}

        await opened.record_usage([*usages, Usage("Unknown1", NOW + 10, None, 1)])
        calls = command_calls(admin)
        # One EVALSHA of the usage script for the batch, and one per token of
        # the last-addresses script (one key each: Cluster-safe), pipelined.
        assert calls.pop("evalsha") == 1 + len(usages) + 1
        assert calls.pop("exists") == len(usages) + 1
        assert set(calls) <= {"hincrby", "hget", "hset", "hexists"}

        await opened.take_rate("token:x", 5, 60, NOW)
        assert command_calls(admin) == {"evalsha": 1, "incr": 1}
    finally:
        admin.close()
        await opened.close()


async def test_sqlite_prunes_revoked_sessions_once_expired(tmp_path):
    url = f"sqlite:///{tmp_path}/patgate.db"
    opened = open_store(url)
    try:
        await opened.revoke_session("c2hvcnQ", time.time() + 0.2)
        await opened.revoke_session("bG9uZw", time.time() + 3600)
        await asyncio.sleep(0.3)
        await opened.revoke_session("bmV4dA", time.time() + 3600)
    finally:
        await opened.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "patgate.db")) as conn:
        kept = {row[0] for row in conn.execute("SELECT id FROM revoked_sessions")}
    assert kept == {"bG9uZw", "bmV4dA"}


async def test_redis_forgets_a_revoked_session_when_it_would_expire(
    redis_url, redis_server: RedisServer
):
    opened = open_store(redis_url)
    db = int(redis_url.rpartition("/")[2])
    try:
        await opened.revoke_session("dHRs", time.time() + 90.5)
        with redis_server.client_sync(db) as admin:
            (key,) = admin.keys("patgate:session:*")
            assert 90 <= admin.ttl(key) <= 92
    finally:
        await opened.close()


# last addresses, and what a usage write finds new


async def test_usage_keeps_the_last_five_addresses_and_reports_news_once(store):
    await with_owner(store)
    record, _ = make_token()
    await store.create_token(record)
    first = [SeenIp("192.0.2.1", NOW, NOW + 1), SeenIp("192.0.2.2", NOW, NOW)]
    news = await store.record_usage(
        [Usage(record.id, NOW + 1, "192.0.2.1", 2, ips=tuple(first))]
    )
    assert sorted(news, key=lambda n: (n.kind, n.ip or "")) == [
        UsageNews(record.id, "alice", "first_use", "192.0.2.1"),
        UsageNews(record.id, "alice", "new_ip", "192.0.2.1"),
        UsageNews(record.id, "alice", "new_ip", "192.0.2.2"),
    ]
    later = tuple(
        SeenIp(f"198.51.100.{i}", NOW + 10 + i, NOW + 10 + i) for i in range(4)
    )
    again = (SeenIp("192.0.2.1", NOW + 50, NOW + 60),)
    news = await store.record_usage(
        [Usage(record.id, NOW + 60, "192.0.2.1", 5, ips=later + again)]
    )
    assert {n.ip for n in news} == {s.ip for s in later}
    assert all(n.kind == "new_ip" for n in news)
    stored = await store.get_token(record.id)
    assert stored is not None
    assert [s.ip for s in stored.last_ips] == [
        "198.51.100.0",
        "198.51.100.1",
        "198.51.100.2",
        "198.51.100.3",
        "192.0.2.1",
    ]
    assert stored.last_ips[-1] == SeenIp("192.0.2.1", NOW, NOW + 60)
    # Known addresses again: no news; an unknown id: none either.
    news = await store.record_usage(
        [
            Usage(record.id, NOW + 70, "192.0.2.1", 1, ips=again),
            Usage("Unknown1", NOW, "192.0.2.1", 1, ips=again),
        ]
    )
    assert news == []


# the webhook outbox


def delivery(number: int, next_at: float = NOW) -> Delivery:
    return Delivery(
        f"evt_{number}.0",
        f"evt_{number}",
        "token.created",
        "http://127.0.0.1:9/hook",
        f'{{"n": {number}}}',
        next_at,
    )


async def test_the_lease_has_one_holder_until_it_expires(store):
    assert await store.take_lease(WEBHOOK_LEASE, "a", 0.3, NOW)
    assert not await store.take_lease(WEBHOOK_LEASE, "b", 0.3, NOW + 0.1)
    assert await store.take_lease(WEBHOOK_LEASE, "a", 0.3, NOW + 0.1)  # renewed
    await asyncio.sleep(0.45)
    assert await store.take_lease(WEBHOOK_LEASE, "b", 0.3, NOW + 0.6)
    assert not await store.take_lease(WEBHOOK_LEASE, "a", 0.3, NOW + 0.6)


async def test_outbox_deliveries_are_due_in_order_retried_and_logged(store):
    await store.enqueue_deliveries(
        [delivery(2, NOW + 5), delivery(1), delivery(3, NOW + 100)]
    )
    await store.enqueue_deliveries([delivery(1, NOW + 1000)])  # a known id is kept
    assert [d.id for d in await store.due_deliveries(NOW + 10, 10)] == [
        "evt_1.0",
        "evt_2.0",
    ]
    assert [d.id for d in await store.due_deliveries(NOW + 10, 1)] == ["evt_1.0"]
    assert await store.take_lease(WEBHOOK_LEASE, "me", 30, NOW)
    failed = DeliveryAttempt(
        "evt_1.0",
        "evt_1",
        "token.created",
        "http://127.0.0.1:9/hook",
        1,
        NOW + 1,
        False,
        500,
        "HTTP 500",
        False,
    )
    # Another holder cannot finish it.
    assert not await store.finish_delivery(failed, NOW + 50, "someone-else")
    assert await store.finish_delivery(failed, NOW + 50, "me")
    due = await store.due_deliveries(NOW + 60, 10)
    assert [(d.id, d.attempts, d.next_at) for d in due] == [
        ("evt_2.0", 0, NOW + 5),
        ("evt_1.0", 1, NOW + 50),
    ]
    assert due[1].body == '{"n": 1}'
    ok = DeliveryAttempt(
        "evt_1.0",
        "evt_1",
        "token.created",
        "http://127.0.0.1:9/hook",
        2,
        NOW + 51,
        True,
        204,
    )
    assert await store.finish_delivery(ok, None, "me")
    assert not await store.finish_delivery(ok, None, "me")  # gone: nothing twice
    assert [d.id for d in await store.due_deliveries(NOW + 60, 10)] == ["evt_2.0"]
    assert await store.delivery_log(10) == [ok, failed]
    assert await store.delivery_log(1) == [ok]


# observed tokens (observe, then suggest)


def seen(pattern: str, count: int = 1, at: float = NOW, method: str = "GET"):
    return Observed("files", method, pattern, count, at)


async def test_observed_requests_add_up_and_are_kept_apart_per_token(store):
    await with_owner(store)
    one, _ = make_token(id="Observe1", observe_until=NOW + 60)
    two, _ = make_token(id="Observe2")
    await store.create_token(one)
    await store.create_token(two)
    assert await store.observed(one.id) == []
    await store.record_observed(
        [
            Usage(one.id, NOW, None, 3, observed=(seen("/dav/a", 2, NOW),)),
            Usage(two.id, NOW, None, 1, observed=(seen("/dav/b", 1, NOW),)),
            Usage(two.id, NOW, None, 1),  # nothing observed: nothing written
            Usage("Unknown1", NOW, None, 1, observed=(seen("/dav/x"),)),
        ]
    )
    await store.record_observed(
        [
            Usage(
                one.id,
                NOW + 5,
                None,
                2,
                observed=(
                    seen("/dav/a", 3, NOW + 5),
                    seen("/dav/a", 1, NOW + 4, method="PUT"),
                ),
            )
        ]
    )
    assert await store.observed(one.id) == [
        Observed("files", "PUT", "/dav/a", 1, NOW + 4),
        Observed("files", "GET", "/dav/a", 5, NOW + 5),
    ]
    assert await store.observed(two.id) == [seen("/dav/b")]
    assert await store.observed("Unknown1") == []
    assert (await store.get_token(one.id)).observe_until == NOW + 60


async def test_a_deleted_token_takes_its_observations_along(store):
    await with_owner(store)
    record, _ = make_token(id="Observe4", observe_until=NOW + 60)
    await store.create_token(record)
    await store.record_observed(
        [Usage(record.id, NOW, None, 1, observed=(seen("/dav/a"),))]
    )
    assert await store.observed(record.id) == [seen("/dav/a")]
    await store.delete_token(record.id)
    assert await store.observed(record.id) == []
    # A token made again under the id starts with nothing observed.
    await store.create_token(record)
    assert await store.observed(record.id) == []


async def test_observed_requests_keep_the_most_recently_seen(store):
    await with_owner(store)
    record, _ = make_token(id="Observe3")
    await store.create_token(record)
    batch = tuple(seen(f"/dav/p{i}", 1, NOW + i) for i in range(MAX_OBSERVED + 20))
    await store.record_observed([Usage(record.id, NOW, None, 1, observed=batch)])
    await store.record_observed(
        [Usage(record.id, NOW, None, 1, observed=(seen("/dav/p0", 1, NOW + 999),))]
    )
    kept = await store.observed(record.id)
    assert len(kept) == MAX_OBSERVED
    # p0 was dropped by the first write: it comes back as new.
    assert kept[-1] == Observed("files", "GET", "/dav/p0", 1, NOW + 999)
    assert {s.pattern for s in kept[:-1]} == {
        f"/dav/p{i}" for i in range(21, MAX_OBSERVED + 20)
    }


async def test_observe_until_is_a_setting_an_edit_changes(store):
    await with_owner(store)
    record, _ = make_token(id="Observe4")
    await store.create_token(record)
    await store.update_token(record.with_changes(observe_until=NOW + 10))
    assert (await store.get_token(record.id)).observe_until == NOW + 10
    await store.update_token(record.with_changes(observe_until=None))
    assert (await store.get_token(record.id)).observe_until is None
