"""Go-style durations ("2160h", "1h30m", "90s"), as cert-manager's `duration` and `renewBefore` use."""

from __future__ import annotations

import re
from datetime import timedelta

_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class DurationError(ValueError):
    """A duration string that Go's time.ParseDuration would also refuse."""


def parse_duration(text: str) -> timedelta:
    """Parse a non-negative Go duration string such as ``"2160h"`` or ``"1h30m"``."""
    value = text.strip()
    if value in ("0", ""):
        if value == "":
            raise DurationError("an empty string is not a duration")
        return timedelta(0)
    pos = 0
    seconds = 0.0
    while pos < len(value):
        match = _PART.match(value, pos)
        if match is None:
            raise DurationError(f"{text!r} is not a duration such as 2160h, 90m or 1h30m")
        seconds += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """Format a whole-second duration the way Go prints it ("1h2m3s", "0s")."""
    total = int(delta.total_seconds())
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    out = ""
    if hours:
        out += f"{hours}h"
    if minutes or (hours and seconds):
        out += f"{minutes}m"
    if seconds or not out:
        out += f"{seconds}s"
    return out
