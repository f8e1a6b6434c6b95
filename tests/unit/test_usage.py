"""Usage coalescing: counts are never lost, a stale expiry move is never kept.

The security rule (issue 11, finding 7): a pending expiry move computed from
a token's settings at some version must not survive an edit of the token.
Uses of several versions coalesce to the move of the newest one; a change
notice (``discard_expiry``) drops the move; a failed batch merged back
(``restore``) competes by version like any other use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from patgate.models import SeenIp, Usage
from patgate.usage import MAX_PENDING_IPS, UsageRecorder

NOW = 1_800_000_000.0
TOKENS = ("tokenAAA", "tokenBBB")


def test_uses_coalesce_to_one_usage_with_the_furthest_move():
    usage = UsageRecorder()
    usage.note("tokenAAA", NOW, "192.0.2.1", NOW + 60, 3)
    usage.note("tokenAAA", NOW + 2, "192.0.2.2", NOW + 62, 3)
    usage.note("tokenAAA", NOW + 1, "192.0.2.3", NOW + 61, 3)
    seen = (
        SeenIp("192.0.2.1", NOW, NOW),
        SeenIp("192.0.2.3", NOW + 1, NOW + 1),
        SeenIp("192.0.2.2", NOW + 2, NOW + 2),
    )
    assert usage.drain() == [
        Usage("tokenAAA", NOW + 2, "192.0.2.2", 3, NOW + 62, 3, seen)
    ]
    assert usage.drain() == []


def test_the_addresses_seen_between_drains_with_first_and_last_use():
    usage = UsageRecorder()
    for i in range(MAX_PENDING_IPS + 2):
        usage.note("tokenAAA", NOW + i, f"192.0.2.{i}", None)
    usage.note("tokenAAA", NOW + 100, "192.0.2.3", None)
    (drained,) = usage.drain()
    by_ip = {s.ip: s for s in drained.ips}
    assert len(by_ip) == MAX_PENDING_IPS
    assert "192.0.2.0" not in by_ip  # the least recently seen went first
    assert by_ip["192.0.2.3"] == SeenIp("192.0.2.3", NOW + 3, NOW + 100)
    # A failed batch merged back keeps its addresses.
    usage.restore([drained])
    usage.note("tokenAAA", NOW + 101, "198.51.100.9", None)
    (again,) = usage.drain()
    assert "198.51.100.9" in {s.ip for s in again.ips}
    assert len(again.ips) == MAX_PENDING_IPS


def test_a_newer_version_replaces_the_move_of_an_older_one():
    """One-hour window at version 1, then edited to a hard expiry (version 2)."""
    usage = UsageRecorder()
    usage.note("tokenAAA", NOW, None, NOW + 3600, 1)
    usage.note("tokenAAA", NOW + 1, None, None, 2)
    assert usage.drain() == [Usage("tokenAAA", NOW + 1, None, 2, None, 2)]


def test_a_late_use_of_an_older_version_moves_nothing():
    """A request decided on the old grant may be noted after a newer one."""
    usage = UsageRecorder()
    usage.note("tokenAAA", NOW, None, NOW + 10, 2)
    usage.note("tokenAAA", NOW + 1, None, NOW + 3600, 1)
    assert usage.drain() == [Usage("tokenAAA", NOW + 1, None, 2, NOW + 10, 2)]


def test_a_change_notice_drops_the_pending_move_and_keeps_the_count():
    usage = UsageRecorder()
    usage.note("tokenAAA", NOW, "192.0.2.1", NOW + 3600, 1)
    usage.note("tokenBBB", NOW, "192.0.2.1", NOW + 3600, 1)
    usage.discard_expiry("tokenAAA")
    usage.discard_expiry("unknown1")  # no pending usage: nothing to do
    # In-flight requests decided on the old grant still finish afterwards.
    usage.note("tokenAAA", NOW + 1, "192.0.2.2", NOW + 3601, 1)
    ips_a = (SeenIp("192.0.2.1", NOW, NOW), SeenIp("192.0.2.2", NOW + 1, NOW + 1))
    ips_b = (SeenIp("192.0.2.1", NOW, NOW),)
    ips_a2 = (ips_a[0], SeenIp("192.0.2.2", NOW + 1, NOW + 2))
    assert usage.pending("tokenAAA") == Usage(
        "tokenAAA", NOW + 1, "192.0.2.2", 2, None, 1, ips_a
    )
    assert usage.pending("tokenBBB") == Usage(
        "tokenBBB", NOW, "192.0.2.1", 1, NOW + 3600, 1, ips_b
    )
    # The grant read after the edit slides again.
    usage.note("tokenAAA", NOW + 2, "192.0.2.2", NOW + 12, 2)
    assert usage.pending("tokenAAA") == Usage(
        "tokenAAA", NOW + 2, "192.0.2.2", 3, NOW + 12, 2, ips_a2
    )


def test_a_failed_batch_merged_back_after_an_edit_loses_to_the_new_version():
    usage = UsageRecorder()
    usage.note("tokenAAA", NOW, None, NOW + 3600, 1)
    batch = usage.drain()  # the write of this batch fails...
    usage.note("tokenAAA", NOW + 5, None, NOW + 15, 2)  # ...and the token is edited
    usage.restore(batch)
    assert usage.drain() == [Usage("tokenAAA", NOW + 5, None, 2, NOW + 15, 2)]


def test_the_recorder_is_bounded():
    usage = UsageRecorder(max_tokens=1)
    usage.note("tokenAAA", NOW, None, None)
    usage.note("tokenBBB", NOW, None, None)
    assert [u.token_id for u in usage.drain()] == ["tokenAAA"]


# The property: random uses, change notices, failed and good flushes.


@dataclass
class Pending:
    """What the model knows of one token's uses since its last write."""

    noted: list[tuple[int, float | None]] = field(default_factory=list)
    count: int = 0
    # A notice means the token changed after every version seen so far:
    # moves computed at those versions (noted before or after it) are stale.
    stale_upto: int = -1

    def add(self, version: int, expires_at: float | None, count: int) -> None:
        self.noted.append((version, expires_at))
        self.count += count


use = st.tuples(
    st.just("note"),
    st.sampled_from(TOKENS),
    st.integers(0, 2),
    st.one_of(st.none(), st.integers(1, 50).map(lambda s: NOW + s)),
)
notice = st.tuples(st.just("discard"), st.sampled_from(TOKENS))
operations = st.lists(
    st.one_of(
        use,
        use,
        notice,
        st.just(("fail",)),  # a flush whose write fails: drained, held
        st.just(("restore",)),  # ...and merged back
        st.just(("flush",)),  # a flush that writes
    ),
    max_size=40,
)


@settings(max_examples=500, derandomize=True)
@given(operations)
def test_no_written_usage_carries_a_stale_move(ops):
    """For every usage written:

    - ``count`` is every use noted since its last write (restores included);
    - ``version`` is the newest version among those uses;
    - its move (``expires_at``) is the furthest one noted at that version,
      and there is none if a notice reached the token at that version or a
      newer one (the token changed after it).
    """
    usage = UsageRecorder()
    model: dict[str, Pending] = {}
    failed: list[list[Usage]] = []
    clock = NOW
    for op in [*ops, ("flush",)]:
        clock += 1
        if op[0] == "note":
            _, token, version, expires_at = op
            usage.note(token, clock, None, expires_at, version)
            model.setdefault(token, Pending()).add(version, expires_at, 1)
        elif op[0] == "discard":
            usage.discard_expiry(op[1])
            pending = model.get(op[1])
            if pending is not None:
                newest = max(version for version, _ in pending.noted)
                pending.stale_upto = max(pending.stale_upto, newest)
        elif op[0] == "fail":
            failed.append(usage.drain())
            model = {}
        elif op[0] == "restore" and failed:
            batch = failed.pop()
            usage.restore(batch)
            for written in batch:
                model.setdefault(written.token_id, Pending()).add(
                    written.version, written.expires_at, written.count
                )
        elif op[0] == "flush":
            for written in usage.drain():
                check_written(written, model.pop(written.token_id))
            assert not model, "uses noted but not written"


def check_written(written: Usage, pending: Pending) -> None:
    assert written.count == pending.count
    assert written.version == max(version for version, _ in pending.noted)
    moves = [
        expires_at
        for version, expires_at in pending.noted
        if version == written.version and expires_at is not None
    ]
    if written.version <= pending.stale_upto:
        assert written.expires_at is None, "a move from before a notice"
    elif not moves:
        assert written.expires_at is None, "a move from another version"
    else:
        assert written.expires_at == max(moves), "a move lost or not the furthest"


_uses = st.lists(
    st.tuples(
        st.sampled_from(["tokA", "tokB"]),
        st.floats(min_value=0, max_value=100),
        st.sampled_from([None, "10.0.0.1", "10.0.0.2", "::1"]),
        st.one_of(st.none(), st.floats(min_value=100, max_value=200)),
        st.integers(min_value=0, max_value=3),
    ),
    max_size=30,
)


@given(_uses)
def test_note_merges_as_a_usage_of_one_use_would(uses) -> None:
    """``note`` is the per-request fast path of merging ``Usage(..., 1, ...)``."""
    fast, reference = UsageRecorder(), UsageRecorder()
    for token_id, now, ip, expires_at, version in uses:
        fast.note(token_id, now, ip, expires_at, version)
        reference.restore([Usage(token_id, now, ip, 1, expires_at, version)])
    assert fast.drain() == reference.drain()
