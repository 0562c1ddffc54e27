"""Retry pacing for failed issuance: short first, doubling, capped (30 s, 1 m, 2 m, ... 1 h)."""

from __future__ import annotations

from datetime import datetime, timedelta

DEFAULT_BASE = timedelta(seconds=30)
DEFAULT_CAP = timedelta(hours=1)


def retry_delay(failures: int, base: timedelta = DEFAULT_BASE, cap: timedelta = DEFAULT_CAP) -> timedelta:
    """The wait after ``failures`` consecutive failures (1 -> base)."""
    if failures <= 0:
        return timedelta(0)
    exponent = min(failures - 1, 30)
    delay: timedelta = base * (2**exponent)
    return min(cap, delay)


def next_attempt(
    failures: int, last_failure: datetime | None, base: timedelta = DEFAULT_BASE, cap: timedelta = DEFAULT_CAP
) -> datetime | None:
    if failures <= 0 or last_failure is None:
        return None
    return last_failure + retry_delay(failures, base, cap)
