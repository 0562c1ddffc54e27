"""A level-based work queue, as controller-runtime's: keys not events, coalesced, never processed twice
at once, with delayed adds served by one timer task (10k waiting renewals are 10k heap entries, not tasks).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import sys
from collections.abc import Awaitable, Callable, Hashable
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from mtls_operator.controllers.clock import SYSTEM_CLOCK, Clock
from mtls_operator.k8s.api import ApiError

K = TypeVar("K", bound=Hashable)
logger = logging.getLogger(__name__)
_SMALL_SET = sys.getsizeof(set(range(64)))


class WorkQueue(Generic[K]):
    def __init__(
        self,
        handler: Callable[[K], Awaitable[None]],
        *,
        workers: int = 8,
        name: str = "queue",
        on_idle: Callable[[], None] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        retry_after: timedelta = timedelta(seconds=30),
    ) -> None:
        self._handler = handler
        self._clock = clock
        self._retry_after = retry_after
        self._on_idle = on_idle
        self._workers = workers
        self._name = name
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._pending: set[K] = set()  # queued and not yet picked up
        self._active: set[K] = set()  # being processed
        self._dirty: set[K] = set()  # re-added while active: run once more afterwards
        self._delayed: list[tuple[float, int, K]] = []  # (monotonic due, seq, key)
        self._due: dict[K, float] = {}  # the earliest due time wanted per key
        self._seq = 0
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.processed = 0

    def start(self) -> None:
        for i in range(self._workers):
            self._tasks.append(asyncio.create_task(self._work(), name=f"{self._name}-worker-{i}"))
        self._tasks.append(asyncio.create_task(self._timer(), name=f"{self._name}-timer"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def __len__(self) -> int:
        return len(self._pending) + len(self._active)

    @property
    def waiting(self) -> int:
        return len(self._due)

    @property
    def busy(self) -> int:
        return len(self._active)

    def add(self, key: K) -> None:
        if key in self._active:
            self._dirty.add(key)
            return
        if key in self._pending:
            return
        self._pending.add(key)
        self._queue.put_nowait(key)

    def add_at(self, key: K, when: datetime) -> None:
        """Process ``key`` at wall-clock ``when`` (or at once if that has passed)."""
        delay = (when - self._clock.now()).total_seconds()
        if delay <= 0:
            self.add(key)
            return
        due = self._clock.monotonic() + delay
        current = self._due.get(key)
        if current is not None:
            if current <= due:
                return
            del self._due[key]  # so that the dict and the new heap entry hold one key object
        self._due[key] = due
        self._seq += 1
        heapq.heappush(self._delayed, (due, self._seq, key))
        self._drop_stale()
        self._wakeup.set()

    def forget(self, key: K) -> None:
        if self._due.pop(key, None) is not None:
            self._drop_stale()

    def _drop_stale(self) -> None:
        """Heap entries whose key now waits for another time (or none) are skipped when they come due,
        but a renewal is months away: rebuild the heap once they outnumber the live ones, so that it
        holds at most 1.25 entries per waiting key instead of one per schedule ever made (each rebuild drops
        at least a fifth of the heap, so its cost is spread over the schedules that made them)."""
        if len(self._delayed) > len(self._due) + len(self._due) // 4 + 64:
            self._delayed = [e for e in self._delayed if self._due.get(e[2]) == e[0]]
            heapq.heapify(self._delayed)

    def due_at(self, key: K) -> float | None:
        """The monotonic time ``key`` is waiting for, if it is waiting."""
        return self._due.get(key)

    def release_due(self) -> None:
        """Move every delayed key whose time has come to the queue."""
        now = self._clock.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            due, _, key = heapq.heappop(self._delayed)
            if self._due.get(key) == due:
                del self._due[key]
                self.add(key)

    async def _timer(self) -> None:
        while True:
            self.release_due()
            now = self._clock.monotonic()
            timeout = self._delayed[0][0] - now if self._delayed else None
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=min(timeout, 60.0) if timeout else 60.0)
            except TimeoutError:
                pass

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            self._pending.discard(key)
            self._active.add(key)
            try:
                await self._handler(key)
            except asyncio.CancelledError:
                raise
            except ApiError as exc:
                # Expected now and then (a namespace being deleted, a webhook, RBAC): one line, no trace.
                logger.warning(
                    "API error while processing %s (%s); it is retried in %ds.",
                    key,
                    exc,
                    self._retry_after.total_seconds(),
                )
                self._active.discard(key)
                self.add_at(key, self._clock.now() + self._retry_after)
            except Exception:
                logger.exception(
                    "Unexpected error while processing %s; it is retried in %ds.",
                    key,
                    self._retry_after.total_seconds(),
                )
                self._active.discard(key)
                self.add_at(key, self._clock.now() + self._retry_after)
            finally:
                self._active.discard(key)
                self.processed += 1
            if key in self._dirty:
                self._dirty.discard(key)
                self.add(key)
            if not self._pending and not self._active:
                self._shrink()
                if self._on_idle is not None:
                    self._on_idle()

    def _shrink(self) -> None:
        """A set keeps the table its largest size needed (a burst of 10k keys: ~0.5 MB each) after it is
        emptied: drained, the queue starts again from small ones."""
        if sys.getsizeof(self._pending) > _SMALL_SET:
            self._pending = set()
        if not self._dirty and sys.getsizeof(self._dirty) > _SMALL_SET:
            self._dirty = set()
