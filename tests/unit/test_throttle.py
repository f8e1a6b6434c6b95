"""The throttles, with the clock passed in: failed auth per IP, password checks.

``FailureThrottle`` is pure. ``LoginThrottle`` counts through a store's
``take_rate``; here a real SQLite file, so the shared counter is the one the
gateway uses, and time is whatever the test says.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from patgate.errors import StoreUnavailableError
from patgate.store import Store, open_store
from patgate.throttle import FailureThrottle, LoginThrottle, ThrottledError

T0 = 1_800_000_000.0  # a window boundary for a 60 s window (divisible by 60)


# FailureThrottle


def test_failures_under_the_limit_leave_the_key_free():
    throttle = FailureThrottle(limit=3)
    for second in range(2):
        throttle.note_failure("10.0.0.1", T0 + second)
    assert throttle.retry_after("10.0.0.1", T0 + 2) == 0.0


def test_the_limit_refuses_for_the_rest_of_the_window_then_frees():
    throttle = FailureThrottle(limit=3, window=60)
    for second in range(3):
        throttle.note_failure("10.0.0.1", T0 + second)
    assert throttle.retry_after("10.0.0.1", T0 + 10) == pytest.approx(50.0)
    assert throttle.retry_after("10.0.0.2", T0 + 10) == 0.0
    assert throttle.retry_after("10.0.0.1", T0 + 60) == 0.0
    # The window ended: the next failure starts a new count.
    throttle.note_failure("10.0.0.1", T0 + 61)
    assert throttle.retry_after("10.0.0.1", T0 + 62) == 0.0


def test_a_zero_limit_never_throttles():
    throttle = FailureThrottle(limit=0)
    for second in range(100):
        throttle.note_failure("10.0.0.1", T0 + second / 100)
    assert throttle.retry_after("10.0.0.1", T0 + 1) == 0.0


def test_forget_clears_a_key():
    throttle = FailureThrottle(limit=1)
    throttle.note_failure("k", T0)
    assert throttle.retry_after("k", T0) > 0
    throttle.forget("k")
    assert throttle.retry_after("k", T0) == 0.0


def test_the_table_stays_bounded_dropping_ended_windows_first():
    throttle = FailureThrottle(limit=1, window=60, max_keys=3)
    throttle.note_failure("old", T0)
    throttle.note_failure("a", T0 + 100)
    throttle.note_failure("b", T0 + 100)
    throttle.note_failure("c", T0 + 101)  # full: "old" has ended, it goes
    assert throttle.retry_after("old", T0 + 101) == 0.0
    for key in ("a", "b", "c"):
        assert throttle.retry_after(key, T0 + 101) > 0
    throttle.note_failure("d", T0 + 102)  # nothing ended: the oldest goes
    assert throttle.retry_after("a", T0 + 102) == 0.0
    assert throttle.retry_after("d", T0 + 102) > 0


# LoginThrottle


@pytest.fixture
async def counter(tmp_path) -> AsyncIterator[Store]:
    store = open_store(f"sqlite:///{tmp_path}/patgate.db")
    try:
        yield store
    finally:
        await store.close()


async def checks(throttle: LoginThrottle, key: str, now: float, count: int) -> None:
    for _ in range(count):
        async with throttle.check(key, now):
            pass


async def test_each_check_is_reserved_before_it_runs_and_never_refunded(counter):
    throttle = LoginThrottle(counter, limit=3, window=60)
    with pytest.raises(RuntimeError):
        async with throttle.check("10.0.0.1", T0):
            raise RuntimeError("the password check failed")  # still counted
    await checks(throttle, "10.0.0.1", T0 + 1, 2)
    with pytest.raises(ThrottledError) as refused:
        await checks(throttle, "10.0.0.1", T0 + 2, 1)
    assert refused.value.reason == "over_limit"
    assert refused.value.retry_after == pytest.approx(58.0)
    await checks(throttle, "10.0.0.2", T0 + 2, 3)  # another address: its own
    await checks(throttle, "10.0.0.1", T0 + 60, 3)  # a new window


async def test_an_address_over_its_budget_is_refused_without_the_store(counter):
    throttle = LoginThrottle(counter, limit=1, window=60)
    await checks(throttle, "10.0.0.1", T0, 1)
    with pytest.raises(ThrottledError):
        await checks(throttle, "10.0.0.1", T0 + 1, 1)
    await counter.close()  # from now on any store call would fail
    with pytest.raises(ThrottledError):
        await checks(throttle, "10.0.0.1", T0 + 2, 1)
    with pytest.raises(StoreUnavailableError):
        await checks(throttle, "10.0.0.9", T0 + 2, 1)


async def test_budgets_are_shared_through_the_store(counter, tmp_path):
    """Two processes (two throttles, two store instances) draw on one budget."""
    other = open_store(f"sqlite:///{tmp_path}/patgate.db")
    try:
        first = LoginThrottle(counter, limit=4)
        second = LoginThrottle(other, limit=4)
        await checks(first, "10.0.0.1", T0, 2)
        await checks(second, "10.0.0.1", T0 + 1, 2)
        with pytest.raises(ThrottledError):
            await checks(first, "10.0.0.1", T0 + 2, 1)
    finally:
        await other.close()


async def test_at_most_two_checks_per_address_run_at_once(counter):
    throttle = LoginThrottle(counter, limit=100, concurrent=2)
    inside = asyncio.Event()
    release = asyncio.Event()
    entered = 0

    async def slow_check() -> None:
        nonlocal entered
        async with throttle.check("10.0.0.1", T0):
            entered += 1
            if entered == 2:
                inside.set()
            await release.wait()

    running = [asyncio.create_task(slow_check()) for _ in range(2)]
    await inside.wait()
    with pytest.raises(ThrottledError) as refused:
        await checks(throttle, "10.0.0.1", T0, 1)
    assert refused.value.reason == "concurrent"
    await checks(throttle, "10.0.0.2", T0, 1)  # other addresses are not held up
    release.set()
    await asyncio.gather(*running)
    await checks(throttle, "10.0.0.1", T0, 1)  # the slots are free again


async def test_a_zero_limit_checks_everything(counter):
    throttle = LoginThrottle(counter, limit=0)
    await checks(throttle, "10.0.0.1", T0, 50)
