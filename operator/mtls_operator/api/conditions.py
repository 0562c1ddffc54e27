"""Status conditions: set one without losing its lastTransitionTime when nothing changed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

READY = "Ready"
ISSUING = "Issuing"


def rfc3339(moment: datetime | None) -> str | None:
    """``moment`` as RFC 3339 in UTC, whole seconds (a naive time is taken as UTC)."""
    if moment is None:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(value: Any) -> datetime | None:
    """An aware datetime from RFC 3339 text; a time without an offset is taken as UTC. None when unset or
    unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


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


@dataclass(frozen=True, slots=True)
class Condition:
    """One status condition, parsed."""

    type: str
    status: bool
    reason: str
    message: str
    observed_generation: int = 0
    last_transition_time: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "status": "True" if self.status else "False",
            "reason": self.reason,
            "message": self.message,
            "observedGeneration": self.observed_generation,
            "lastTransitionTime": self.last_transition_time,
        }


def parse_conditions(raw: Any) -> tuple[Condition, ...]:
    """A status' ``conditions`` list as frozen values; malformed entries are dropped."""
    out: list[Condition] = []
    for item in raw if isinstance(raw, list) else ():
        if not isinstance(item, Mapping) or not isinstance(item.get("type"), str):
            continue
        try:
            generation = int(item.get("observedGeneration") or 0)
        except (TypeError, ValueError, OverflowError):
            generation = 0
        out.append(
            Condition(
                type=item["type"],
                status=item.get("status") == "True",
                reason=str(item.get("reason") or ""),
                message=str(item.get("message") or ""),
                observed_generation=generation,
                last_transition_time=item.get("lastTransitionTime")
                if isinstance(item.get("lastTransitionTime"), str)
                else None,
            )
        )
    return tuple(sorted(out, key=lambda c: c.type))


def get(conditions: Sequence[Condition], kind: str) -> Condition | None:
    for condition in conditions:
        if condition.type == kind:
            return condition
    return None


def put(
    conditions: Sequence[Condition],
    kind: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> tuple[Condition, ...]:
    """``conditions`` with ``kind`` set; its lastTransitionTime moves only when its status flips."""
    previous = get(conditions, kind)
    transition = previous.last_transition_time if previous is not None and previous.status == status else None
    updated = Condition(kind, status, str(reason), message, generation, transition or rfc3339(now))
    return tuple(sorted([*(c for c in conditions if c.type != kind), updated], key=lambda c: c.type))


def drop(conditions: Sequence[Condition], kind: str) -> tuple[Condition, ...]:
    """``conditions`` without ``kind`` (a condition that no longer applies)."""
    return tuple(c for c in conditions if c.type != kind)


def as_list(conditions: Sequence[Condition]) -> list[dict[str, Any]]:
    return [c.as_dict() for c in conditions]
