"""Giving the C heap's free memory back to the system after a burst (glibc's ``malloc_trim``).

A burst of work (10k issuances, a renewal storm, a scrape of 10k certificates) leaves the C heap with
megabytes of free chunks between live ones. glibc gives back only the top of its heap by itself, so an
idle operator would keep them as resident memory for as long as it runs (~11 MB at 10k certificates,
docs/benchmarks.md). ``malloc_trim(0)`` returns every free page (madvise); it takes about a millisecond.
Without glibc (musl, macOS) this is a no-op.

Nothing here changes what the operator does, only what it keeps resident.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        import ctypes  # imported on first use: 0.7 MB the operator needs only here

        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


class HeapTrimmer:
    """Trims the C heap once, ``delay`` seconds after it is asked to (when the burst or the response is
    done); asking again before then does not add a trim. ``trim`` stands in for glibc's (tests)."""

    def __init__(self, delay: float = 1.0, trim: Callable[[int], int] | None = None) -> None:
        self.delay = delay
        self.trims = 0
        self._pending = False
        self._trim = trim
        self._loaded = trim is not None

    def soon(self) -> None:
        """Trim ``delay`` seconds from now (needs a running event loop)."""
        if self._pending:
            return
        self._pending = True
        asyncio.get_running_loop().call_later(self.delay, self.now)

    def now(self) -> None:
        self._pending = False
        if not self._loaded:
            self._trim, self._loaded = _load_malloc_trim(), True
        if self._trim is None:
            return
        self._trim(0)
        self.trims += 1


# One for the process: the C heap is the process's.
HEAP = HeapTrimmer()
