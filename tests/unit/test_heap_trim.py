"""observability.heap: the C heap is trimmed once after a burst or a scrape, never once per request, and
the real glibc call gives resident memory back."""

from __future__ import annotations

import asyncio
import ctypes
from pathlib import Path

import pytest

from mtls_operator.observability.heap import HeapTrimmer


def test_requests_before_the_delay_make_one_trim_after_it() -> None:
    calls: list[int] = []

    def fake(pad: int) -> int:
        calls.append(pad)
        return 1

    async def scenario() -> None:
        heap = HeapTrimmer(delay=0.05, trim=fake)
        for _ in range(5):
            heap.soon()
        assert calls == []  # not before the delay: the response is still being sent
        await asyncio.sleep(0.2)
        assert calls == [0] and heap.trims == 1
        heap.soon()
        await asyncio.sleep(0.2)
        assert calls == [0, 0] and heap.trims == 2

    asyncio.run(scenario())


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_trimming_gives_freed_heap_memory_back_to_the_system() -> None:
    try:
        ctypes.CDLL(None).malloc_trim  # noqa: B018
    except AttributeError:
        pytest.skip("not glibc")
    heap = HeapTrimmer()
    heap.now()
    # 40 MB of 700-byte buffers (above pymalloc's 512: from glibc's heap), every other one freed, then
    # all but the last: the free chunks sit below a live one, where glibc alone never gives them back.
    held = [bytearray(700) for _ in range(60_000)]
    tail = bytearray(700)
    del held
    before = _rss_kib()
    heap.now()
    after = _rss_kib()
    assert heap.trims == 2
    assert before - after > 20_000, (before, after)
    del tail
