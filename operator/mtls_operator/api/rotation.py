"""The persisted state of a CA rotation (``status.rotation`` of an issuer). The machine that moves it is
:mod:`mtls_operator.policy.ca_rotation`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any


class Phase(StrEnum):
    STABLE = "Stable"
    NEW_CA_GENERATED = "NewCAGenerated"
    BUNDLES_OVERLAP = "BundlesOverlap"
    CONSUMERS_RESTARTED = "ConsumersRestarted"
    LEAVES_REISSUED = "LeavesReissued"
    OLD_CA_DROPPED = "OldCADropped"


@dataclass(frozen=True, slots=True)
class RotationState:
    """What is persisted (in the issuer's status) between reconciles."""

    phase: Phase = Phase.STABLE
    old_ca_fingerprint: str | None = None  # the CA in use before (or, when Stable, the current one)
    new_ca_fingerprint: str | None = None  # the CA being rotated to
    started_at: datetime | None = None  # when the rotation left Stable
    phase_since: datetime | None = None
    overlap_since: datetime | None = None  # when both roots were first seen in every bundle
    leaves_total: int = 0
    leaves_moved: int = 0  # leaves signed by the new CA
    longest_leaf_lifetime: timedelta = timedelta(0)
    last_request: str | None = None  # the rotate request token (mtls.dev/rotate-requested-at) acted on


# ---------------------------------------------------------------------------------------------------------
# Persistence in status.rotation


def to_status(state: RotationState) -> dict[str, Any]:
    """``status.rotation`` of the issuer: camelCase, times as RFC 3339 whole seconds, lifetime in seconds."""

    def when(t: datetime | None) -> str | None:
        return None if t is None else t.replace(microsecond=0).isoformat().replace("+00:00", "Z")

    doc: dict[str, Any] = {
        "phase": str(state.phase),
        "oldCAFingerprint": state.old_ca_fingerprint,
        "newCAFingerprint": state.new_ca_fingerprint,
        "startedAt": when(state.started_at),
        "phaseSince": when(state.phase_since),
        "overlapSince": when(state.overlap_since),
        "leavesTotal": state.leaves_total,
        "leavesMoved": state.leaves_moved,
        "longestLeafLifetimeSeconds": int(state.longest_leaf_lifetime.total_seconds()),
        "lastRequest": state.last_request,
    }
    return {k: v for k, v in doc.items() if v is not None}


def from_status(raw: Mapping[str, Any] | None) -> RotationState:
    """The inverse of :func:`to_status`; anything unreadable starts from a fresh ``Stable`` state."""
    if not raw:
        return RotationState()
    try:

        def when(key: str) -> datetime | None:
            value = raw.get(key)
            return None if value is None else datetime.fromisoformat(str(value).replace("Z", "+00:00"))

        return RotationState(
            phase=Phase(raw.get("phase", Phase.STABLE)),
            old_ca_fingerprint=raw.get("oldCAFingerprint"),
            new_ca_fingerprint=raw.get("newCAFingerprint"),
            started_at=when("startedAt"),
            phase_since=when("phaseSince"),
            overlap_since=when("overlapSince"),
            leaves_total=int(raw.get("leavesTotal", 0)),
            leaves_moved=int(raw.get("leavesMoved", 0)),
            longest_leaf_lifetime=timedelta(seconds=int(raw.get("longestLeafLifetimeSeconds", 0))),
            last_request=str(raw["lastRequest"]) if raw.get("lastRequest") else None,
        )
    except (ValueError, TypeError):
        return RotationState()
