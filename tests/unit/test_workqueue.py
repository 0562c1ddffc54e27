"""controllers.workqueue with a fake clock: keys are coalesced, never processed twice at once, delayed adds
wait on one heap that release_due() empties as time passes, and failures come back after retry_after."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest
from tests.unit.core_fakes import run, settle, turns

from mtls_operator.controllers.clock import FakeClock
from mtls_operator.controllers.workqueue import WorkQueue
from mtls_operator.k8s.api import ApiError


class Handler:
    """Records every call; a key in ``hold`` blocks until released; a key in ``fail`` raises."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.running: set[str] = set()
        self.overlaps = 0
        self.hold: dict[str, asyncio.Event] = {}
        self.fail: dict[str, BaseException] = {}

    async def __call__(self, key: str) -> None:
        if key in self.running:
            self.overlaps += 1
        self.running.add(key)
        self.calls.append(key)
        try:
            gate = self.hold.get(key)
            if gate is not None:
                await gate.wait()
            failure = self.fail.get(key)
            if failure is not None:
                raise failure
        finally:
            self.running.discard(key)


@asynccontextmanager
async def started(
    handler: Handler, clock: FakeClock, *, workers: int = 4, on_idle: Callable[[], None] | None = None
) -> AsyncIterator[WorkQueue[str]]:
    queue: WorkQueue[str] = WorkQueue(
        handler, workers=workers, clock=clock, on_idle=on_idle, retry_after=timedelta(seconds=45)
    )
    queue.start()
    try:
        yield queue
    finally:
        await queue.stop()


def idle(queue: WorkQueue[str]) -> Callable[[], bool]:
    return lambda: len(queue) == 0


def test_adding_a_key_many_times_before_it_runs_processes_it_once() -> None:
    async def scenario() -> None:
        handler, clock = Handler(), FakeClock()
        async with started(handler, clock) as queue:
            for _ in range(3):
                queue.add("a")
            queue.add("b")
            assert len(queue) == 2
            await settle(idle(queue))
            await turns()
            assert sorted(handler.calls) == ["a", "b"]
            assert queue.processed == 2

    run(scenario())


def test_a_key_added_while_it_runs_runs_once_more_afterwards_never_twice_at_once() -> None:
    async def scenario() -> None:
        handler, clock = Handler(), FakeClock()
        gate = handler.hold["a"] = asyncio.Event()
        async with started(handler, clock) as queue:
            queue.add("a")
            await settle(lambda: queue.busy == 1)
            for _ in range(3):
                queue.add("a")  # three events while it runs: one more run
            await turns()
            assert handler.calls == ["a"]
            del handler.hold["a"]
            gate.set()
            await settle(lambda: len(handler.calls) == 2 and len(queue) == 0)
            await turns()
            assert handler.calls == ["a", "a"] and handler.overlaps == 0

    run(scenario())


@pytest.mark.parametrize(
    "offset",
    [
        pytest.param(-60.0, id="a time in the past runs now"),
        pytest.param(0.0, id="the current time runs now"),
    ],
)
def test_add_at_a_time_that_has_come_runs_now(offset: float) -> None:
    async def scenario() -> None:
        handler, clock = Handler(), FakeClock()
        async with started(handler, clock) as queue:
            queue.add_at("a", clock.now() + timedelta(seconds=offset))
            assert queue.waiting == 0 and len(queue) == 1
            await settle(lambda: handler.calls == ["a"])

    run(scenario())


def test_a_delayed_key_waits_until_release_due_finds_its_time_has_come() -> None:
    async def scenario() -> None:
        handler, clock = Handler(), FakeClock()
        async with started(handler, clock) as queue:
            queue.add_at("a", clock.now() + timedelta(seconds=10))
            queue.add_at("b", clock.now() + timedelta(seconds=20))
            assert queue.waiting == 2 and queue.due_at("a") == clock.monotonic() + 10
            clock.advance(9.5)
            queue.release_due()
            await turns()
            assert handler.calls == [] and queue.waiting == 2
            clock.advance(0.5)
            queue.release_due()
            await settle(lambda: handler.calls == ["a"])
            assert queue.waiting == 1 and queue.due_at("a") is None
            clock.advance(10)
            queue.release_due()
            await settle(lambda: handler.calls == ["a", "b"])
            assert queue.waiting == 0

    run(scenario())


@pytest.mark.parametrize(
    ("first", "second", "due"),
    [
        pytest.param(20, 10, 10, id="an earlier time replaces a later one"),
        pytest.param(10, 20, 10, id="a later time does not postpone an earlier one"),
    ],
)
def test_a_key_waits_for_the_earliest_time_asked(first: int, second: int, due: int) -> None:
    async def scenario() -> None:
        handler, clock = Handler(), FakeClock()
        async with started(handler, clock) as queue:
            start = clock.monotonic()
            queue.add_at("a", clock.now() + timedelta(seconds=first))
            queue.add_at("a", clock.now() + timedelta(seconds=second))
            assert queue.waiting == 1 and queue.due_at("a") == start + due
            clock.advance(due)
            queue.release_due()
            await settle(lambda: handler.calls == ["a"])
            clock.advance(60)
            queue.release_due()
            await turns()
            assert handler.calls == ["a"]  # the replaced time does not run it again

    run(scenario())


def test_forget_drops_a_delayed_key() -> None:
    async def scenario() -> None:
        handler, clock = Handler(), FakeClock()
        async with started(handler, clock) as queue:
            queue.add_at("a", clock.now() + timedelta(seconds=10))
            queue.forget("a")
            assert queue.waiting == 0 and queue.due_at("a") is None
            clock.advance(60)
            queue.release_due()
            await turns()
            assert handler.calls == []

    run(scenario())


def test_a_key_forgotten_and_scheduled_again_runs_once_at_the_new_time() -> None:
    async def scenario() -> None:
        handler, clock = Handler(), FakeClock()
        async with started(handler, clock) as queue:
            queue.add_at("a", clock.now() + timedelta(seconds=10))
            queue.forget("a")
            queue.add_at("a", clock.now() + timedelta(seconds=10))
            clock.advance(10)
            queue.release_due()
            await settle(lambda: handler.calls == ["a"])
            await turns()
            assert handler.calls == ["a"]

    run(scenario())


def test_rescheduled_keys_leave_no_stale_entries_behind_and_each_runs_once_at_its_latest_time() -> None:
    """Every renewal moved earlier leaves its old heap entry behind (skipped when it comes due): the heap
    is rebuilt once they outnumber the live ones, so it stays about one entry per waiting key; fails if
    stale entries pile up (memory months long) or if the rebuild loses or duplicates a key."""

    async def scenario() -> None:
        handler, clock = Handler(), FakeClock()
        async with started(handler, clock) as queue:
            keys = [f"k{i}" for i in range(200)]
            for step in range(10, 0, -1):  # each key moved earlier nine times
                for key in keys:
                    queue.add_at(key, clock.now() + timedelta(seconds=100 + step))
            queue.add_at("gone", clock.now() + timedelta(seconds=50))
            queue.forget("gone")
            assert queue.waiting == 200
            assert len(queue._delayed) <= 200 + 50 + 64
            clock.advance(100)
            queue.release_due()
            await turns()
            assert handler.calls == []
            clock.advance(1)
            queue.release_due()
            await settle(lambda: len(handler.calls) == 200)
            clock.advance(3600)
            queue.release_due()
            await turns()
            assert sorted(handler.calls) == sorted(keys)

    run(scenario())


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(ApiError(503, "ServiceUnavailable", "etcd"), id="an API error"),
        pytest.param(RuntimeError("bug"), id="an unexpected error"),
    ],
)
def test_a_failed_key_is_retried_after_retry_after(error: BaseException) -> None:
    async def scenario() -> None:
        handler, clock = Handler(), FakeClock()
        handler.fail["a"] = error
        async with started(handler, clock) as queue:
            start = clock.monotonic()
            queue.add("a")
            await settle(lambda: handler.calls == ["a"] and len(queue) == 0)
            assert queue.waiting == 1 and queue.due_at("a") == start + 45
            del handler.fail["a"]
            clock.advance(44)
            queue.release_due()
            await turns()
            assert handler.calls == ["a"]
            clock.advance(1)
            queue.release_due()
            await settle(lambda: handler.calls == ["a", "a"] and len(queue) == 0)
            assert queue.waiting == 0 and queue.processed == 2

    run(scenario())


def test_a_failure_does_not_postpone_an_earlier_scheduled_look() -> None:
    async def scenario() -> None:
        handler, clock = Handler(), FakeClock()
        handler.fail["a"] = RuntimeError("bug")
        async with started(handler, clock) as queue:
            start = clock.monotonic()
            queue.add_at("a", clock.now() + timedelta(seconds=5))
            queue.add("a")
            await settle(lambda: handler.calls == ["a"] and len(queue) == 0)
            assert queue.due_at("a") == start + 5

    run(scenario())


def test_on_idle_is_called_when_the_queue_drains() -> None:
    async def scenario() -> None:
        handler, clock = Handler(), FakeClock()
        drained: list[int] = []
        async with started(handler, clock, on_idle=lambda: drained.append(len(handler.calls))) as queue:
            queue.add("a")
            queue.add("b")
            await settle(lambda: len(queue) == 0 and bool(drained))
            assert drained[-1] == 2

    run(scenario())


def test_stop_cancels_a_key_being_processed() -> None:
    async def scenario() -> None:
        handler, clock = Handler(), FakeClock()
        handler.hold["a"] = asyncio.Event()
        queue: WorkQueue[str] = WorkQueue(handler, workers=1, clock=clock)
        queue.start()
        queue.add("a")
        await settle(lambda: queue.busy == 1)
        await asyncio.wait_for(queue.stop(), timeout=5)
        assert handler.running == set()

    run(scenario())
