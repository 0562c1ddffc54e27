"""CA rotation with overlap, as a pure state machine.

Replacing a CA without breaking mutual TLS needs every relying party to trust the new CA *before* any peer
presents a certificate from it, and to keep trusting the old CA until no certificate from it can still be
presented. The phases:

``Stable`` -> ``NewCAGenerated`` -> ``BundlesOverlap`` (bundles hold old + new) -> ``ConsumersRestarted``
-> ``LeavesReissued`` -> ``OldCADropped`` -> ``Stable``.

:func:`advance` is level-based: it moves on only when the observations show that the previous phase's work
is done, and returns the actions to (re)do now; every action is idempotent, so running it again after a
crash is harmless. The old CA is dropped from the bundles only when every leaf is on the new CA **and** the
longest leaf lifetime has passed since the new CA entered the bundles (a leaf issued by the old CA just
before the overlap began, and copied somewhere the operator cannot see, has then expired).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from mtls_operator.api.rotation import Phase, RotationState, from_status, to_status

__all__ = [
    "Phase",
    "RotationAction",
    "RotationObservations",
    "RotationState",
    "advance",
    "due_for_rotation",
    "from_status",
    "next_check",
    "to_status",
]


class RotationAction(StrEnum):
    GENERATE_NEW_CA = "GenerateNewCA"  # create the next CA and persist it (staged, not yet issuing)
    PUBLISH_BUNDLES_WITH_BOTH = "PublishBundlesWithBoth"  # trust bundles := old + new root
    RESTART_CONSUMERS = "RestartConsumers"  # stamp workloads with the current bundle's fingerprint
    ISSUE_FROM_NEW_CA = "IssueFromNewCA"  # the issuer signs with the new CA from now on
    REISSUE_LEAVES = "ReissueLeaves"  # re-issue every leaf still signed by the old CA
    PUBLISH_BUNDLES_WITH_NEW_ONLY = "PublishBundlesWithNewOnly"  # trust bundles := new root
    RETIRE_OLD_CA = "RetireOldCA"  # archive or delete the old CA's key; the new CA becomes "current"


@dataclass(frozen=True, slots=True)
class RotationObservations:
    """What the gather step saw, all as of ``now``. "Bundles" are every trust bundle the issuer publishes
    (ConfigMaps) and the ``ca.crt`` its leaves carry."""

    current_ca_fingerprint: str | None = None  # the CA the issuer signs with now; None if not known
    rotation_due: bool = False  # due_for_rotation(...) or a manual request
    staged_ca_fingerprint: str | None = None  # the persisted next CA, if one exists
    bundles_published_with_both: bool = False  # every bundle holds the old and the new root
    bundles_published_with_new_only: bool = False  # every bundle holds the new root and not the old
    consumers_restarted: bool = False  # every consumer runs with the bundle as published now
    leaves_on_new_ca: int = 0
    leaves_total: int = 0
    longest_leaf_lifetime: timedelta = timedelta(0)  # the longest spec.duration among the issuer's leaves


def due_for_rotation(
    ca_not_before: datetime, ca_not_after: datetime, renew_before: timedelta, now: datetime
) -> bool:
    """Whether a CA valid from ``ca_not_before`` to ``ca_not_after`` should start rotating at ``now``:
    ``renew_before`` ahead of its expiry, but never before it became valid."""
    return now >= max(ca_not_before, ca_not_after - renew_before)


def rotation_window_problem(
    ca_duration: timedelta, renew_before: timedelta, longest_leaf_lifetime: timedelta
) -> str | None:
    """Why a CA lifetime and renewBefore cannot rotate safely (None when they can): the overlap must
    outlast the longest leaf, so renewBefore must exceed it, and must be shorter than the CA's lifetime."""
    if renew_before >= ca_duration:
        return "renewBefore must be shorter than the CA's duration, or the CA rotates as soon as it exists"
    if renew_before <= longest_leaf_lifetime:
        return (
            "renewBefore must be longer than the longest certificate duration the issuer signs "
            f"({longest_leaf_lifetime}), or the old CA expires before its last leaf can be replaced"
        )
    return None


def drop_allowed_at(state: RotationState) -> datetime | None:
    """The earliest time the old CA may leave the bundles (the time half of the guard), once known."""
    if state.overlap_since is None:
        return None
    return state.overlap_since + state.longest_leaf_lifetime


def _signing_with_new(state: RotationState, o: RotationObservations) -> bool:
    """Whether the issuer signs with the new CA (unknown counts as yes: the leaf counts decide)."""
    return o.current_ca_fingerprint is None or o.current_ca_fingerprint == state.new_ca_fingerprint


def _enter(state: RotationState, phase: Phase, now: datetime, **changes: Any) -> RotationState:
    return replace(state, phase=phase, phase_since=now, **changes)


def advance(
    state: RotationState, observations: RotationObservations, now: datetime
) -> tuple[RotationState, tuple[RotationAction, ...]]:
    """One step of the rotation: the next state and the actions to perform now. At most one transition per
    call; call again after acting (or at :func:`next_check`)."""
    o = observations
    counts: Mapping[str, Any] = {
        "leaves_total": o.leaves_total,
        "leaves_moved": o.leaves_on_new_ca,
        "longest_leaf_lifetime": max(state.longest_leaf_lifetime, o.longest_leaf_lifetime),
    }
    if state.phase is Phase.STABLE:
        if o.current_ca_fingerprint is not None:
            state = replace(state, old_ca_fingerprint=o.current_ca_fingerprint)
        staged = o.staged_ca_fingerprint
        if staged is not None and staged != state.old_ca_fingerprint:
            # The next CA exists (created by an earlier GenerateNewCA, perhaps before a crash): go on.
            new = _enter(
                state,
                Phase.NEW_CA_GENERATED,
                now,
                new_ca_fingerprint=staged,
                started_at=now,
                overlap_since=None,
                **counts,
            )
            return new, (RotationAction.PUBLISH_BUNDLES_WITH_BOTH,)
        if o.rotation_due:
            return state, (RotationAction.GENERATE_NEW_CA,)
        return state, ()

    if state.phase is Phase.NEW_CA_GENERATED:
        if not o.bundles_published_with_both:
            return replace(state, **counts), (RotationAction.PUBLISH_BUNDLES_WITH_BOTH,)
        new = _enter(state, Phase.BUNDLES_OVERLAP, now, overlap_since=now, **counts)
        return new, (RotationAction.RESTART_CONSUMERS,)

    if state.phase is Phase.BUNDLES_OVERLAP:
        if not o.bundles_published_with_both:  # someone shrank a bundle: publish again before going on
            return replace(state, **counts), (
                RotationAction.PUBLISH_BUNDLES_WITH_BOTH,
                RotationAction.RESTART_CONSUMERS,
            )
        if not o.consumers_restarted:
            return replace(state, **counts), (RotationAction.RESTART_CONSUMERS,)
        new = _enter(state, Phase.CONSUMERS_RESTARTED, now, **counts)
        return new, (RotationAction.ISSUE_FROM_NEW_CA, RotationAction.REISSUE_LEAVES)

    if state.phase is Phase.CONSUMERS_RESTARTED:
        if o.leaves_on_new_ca < o.leaves_total or not _signing_with_new(state, o):
            return replace(state, **counts), (RotationAction.ISSUE_FROM_NEW_CA, RotationAction.REISSUE_LEAVES)
        return _enter(state, Phase.LEAVES_REISSUED, now, **counts), ()

    if state.phase is Phase.LEAVES_REISSUED:
        if o.leaves_on_new_ca < o.leaves_total:  # a leaf appeared on (or went back to) the old CA
            new = _enter(state, Phase.CONSUMERS_RESTARTED, now, **counts)
            return new, (RotationAction.ISSUE_FROM_NEW_CA, RotationAction.REISSUE_LEAVES)
        updated = replace(state, **counts)
        allowed_at = drop_allowed_at(updated)
        if allowed_at is None or now < allowed_at:
            return updated, ()
        return _enter(updated, Phase.OLD_CA_DROPPED, now), (RotationAction.PUBLISH_BUNDLES_WITH_NEW_ONLY,)

    # Phase.OLD_CA_DROPPED
    if not _signing_with_new(state, o):  # the switch was undone: sign with the new CA again first
        return replace(state, **counts), (RotationAction.ISSUE_FROM_NEW_CA,)
    if not o.bundles_published_with_new_only:
        return replace(state, **counts), (RotationAction.PUBLISH_BUNDLES_WITH_NEW_ONLY,)
    stable = RotationState(
        phase=Phase.STABLE,
        old_ca_fingerprint=state.new_ca_fingerprint,
        phase_since=now,
        leaves_total=o.leaves_total,
        leaves_moved=o.leaves_on_new_ca,
        last_request=state.last_request,
    )
    return stable, (RotationAction.RETIRE_OLD_CA, RotationAction.RESTART_CONSUMERS)


def next_check(state: RotationState) -> datetime | None:
    """When to call :func:`advance` again without a new observation (the overlap guard's time), if ever."""
    if state.phase is Phase.LEAVES_REISSUED:
        return drop_allowed_at(state)
    return None
