"""Status conditions: set one without losing its lastTransitionTime when nothing changed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

READY = "Ready"
ISSUING = "Issuing"


def rfc3339(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def find(conditions: Sequence[Mapping[str, Any]] | None, kind: str) -> Mapping[str, Any] | None:
    for cond in conditions or ():
        if cond.get("type") == kind:
            return cond
    return None


def set_condition(
    conditions: Sequence[Mapping[str, Any]] | None,
    kind: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """Return a new list with condition ``kind`` set; lastTransitionTime moves only when status flips."""
    value = "True" if status else "False"
    previous = find(conditions, kind)
    transition = previous.get("lastTransitionTime") if previous and previous.get("status") == value else None
    updated = {
        "type": kind,
        "status": value,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": transition or rfc3339(now),
    }
    out = [dict(c) for c in conditions or () if c.get("type") != kind]
    out.append(updated)
    out.sort(key=lambda c: str(c.get("type")))
    return out


def set_conditions(
    conditions: Sequence[Mapping[str, Any]] | None,
    updates: Sequence[tuple[str, bool, str, str]],
    generation: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """Apply several ``(type, status, reason, message)`` updates with :func:`set_condition`."""
    out: Sequence[Mapping[str, Any]] | None = conditions
    for kind, status, reason, message in updates:
        out = set_condition(out, kind, status, reason, message, generation, now)
    return [dict(c) for c in out or ()]
