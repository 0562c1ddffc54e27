"""policy.ca_rotation: every transition of the CA rotation, the guard on dropping the old CA, and the
renewal trigger."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from mtls_operator.policy.ca_rotation import (
    Phase,
    RotationAction,
    RotationObservations,
    RotationState,
    advance,
    drop_allowed_at,
    due_for_rotation,
    from_status,
    next_check,
    rotation_window_problem,
    to_status,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
T0 = NOW - timedelta(days=2)  # when the rotation started
OVERLAP = NOW - timedelta(days=1)  # when both roots were first in every bundle
LEAF_LIFE = timedelta(hours=24)
A = RotationAction


def st(phase: Phase, **changes: object) -> RotationState:
    base = RotationState(
        phase=phase,
        old_ca_fingerprint="old",
        new_ca_fingerprint=None if phase is Phase.STABLE else "new",
        started_at=None if phase is Phase.STABLE else T0,
        phase_since=T0,
        overlap_since=(
            OVERLAP
            if phase
            in (Phase.BUNDLES_OVERLAP, Phase.CONSUMERS_RESTARTED, Phase.LEAVES_REISSUED, Phase.OLD_CA_DROPPED)
            else None
        ),
        leaves_total=3,
        leaves_moved=0,
        longest_leaf_lifetime=LEAF_LIFE,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def obs(**changes: object) -> RotationObservations:
    base = RotationObservations(
        current_ca_fingerprint=None, leaves_total=3, leaves_on_new_ca=0, longest_leaf_lifetime=LEAF_LIFE
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("state", "seen", "phase", "actions"),
    [
        pytest.param(st(Phase.STABLE), obs(), Phase.STABLE, (), id="stays stable while the CA is not due"),
        pytest.param(
            st(Phase.STABLE),
            obs(rotation_due=True),
            Phase.STABLE,
            (A.GENERATE_NEW_CA,),
            id="asks for a new CA when the CA is due, and stays stable until it exists",
        ),
        pytest.param(
            st(Phase.STABLE),
            obs(rotation_due=True, staged_ca_fingerprint="new"),
            Phase.NEW_CA_GENERATED,
            (A.PUBLISH_BUNDLES_WITH_BOTH,),
            id="moves to NewCAGenerated once the staged CA is seen and publishes both roots",
        ),
        pytest.param(
            st(Phase.STABLE),
            obs(staged_ca_fingerprint="new"),
            Phase.NEW_CA_GENERATED,
            (A.PUBLISH_BUNDLES_WITH_BOTH,),
            id="resumes a rotation whose new CA was persisted before a crash",
        ),
        pytest.param(
            st(Phase.STABLE),
            obs(staged_ca_fingerprint="old"),
            Phase.STABLE,
            (),
            id="a staged CA equal to the current one is no rotation",
        ),
        pytest.param(
            st(Phase.NEW_CA_GENERATED),
            obs(),
            Phase.NEW_CA_GENERATED,
            (A.PUBLISH_BUNDLES_WITH_BOTH,),
            id="keeps publishing both roots until every bundle holds them",
        ),
        pytest.param(
            st(Phase.NEW_CA_GENERATED),
            obs(bundles_published_with_both=True),
            Phase.BUNDLES_OVERLAP,
            (A.RESTART_CONSUMERS,),
            id="enters the overlap once every bundle holds both roots and restarts consumers",
        ),
        pytest.param(
            st(Phase.BUNDLES_OVERLAP),
            obs(bundles_published_with_both=True),
            Phase.BUNDLES_OVERLAP,
            (A.RESTART_CONSUMERS,),
            id="waits in the overlap until every consumer runs with the new bundle",
        ),
        pytest.param(
            st(Phase.BUNDLES_OVERLAP),
            obs(bundles_published_with_both=False, consumers_restarted=True),
            Phase.BUNDLES_OVERLAP,
            (A.PUBLISH_BUNDLES_WITH_BOTH, A.RESTART_CONSUMERS),
            id="republishes a bundle that lost a root during the overlap",
        ),
        pytest.param(
            st(Phase.BUNDLES_OVERLAP),
            obs(bundles_published_with_both=True, consumers_restarted=True),
            Phase.CONSUMERS_RESTARTED,
            (A.ISSUE_FROM_NEW_CA, A.REISSUE_LEAVES),
            id="switches issuing to the new CA only after consumers trust it",
        ),
        pytest.param(
            st(Phase.CONSUMERS_RESTARTED),
            obs(leaves_on_new_ca=2),
            Phase.CONSUMERS_RESTARTED,
            (A.ISSUE_FROM_NEW_CA, A.REISSUE_LEAVES),
            id="keeps re-issuing while a leaf is still on the old CA",
        ),
        pytest.param(
            st(Phase.CONSUMERS_RESTARTED),
            obs(leaves_on_new_ca=3),
            Phase.LEAVES_REISSUED,
            (),
            id="moves to LeavesReissued once every leaf is on the new CA",
        ),
        pytest.param(
            st(Phase.CONSUMERS_RESTARTED, overlap_since=NOW - timedelta(hours=1)),
            obs(leaves_on_new_ca=3),
            Phase.LEAVES_REISSUED,
            (),
            id="reaches LeavesReissued even before the overlap lasted a leaf lifetime",
        ),
        pytest.param(
            st(Phase.CONSUMERS_RESTARTED),
            obs(leaves_on_new_ca=3, current_ca_fingerprint="old"),
            Phase.CONSUMERS_RESTARTED,
            (A.ISSUE_FROM_NEW_CA, A.REISSUE_LEAVES),
            id="does not count leaves as moved while the issuer still signs with the old CA",
        ),
        pytest.param(
            st(Phase.OLD_CA_DROPPED),
            obs(leaves_on_new_ca=3, bundles_published_with_new_only=True, current_ca_fingerprint="old"),
            Phase.OLD_CA_DROPPED,
            (A.ISSUE_FROM_NEW_CA,),
            id="does not return to Stable while the issuer signs with the old CA",
        ),
        pytest.param(
            st(Phase.LEAVES_REISSUED, overlap_since=NOW - timedelta(hours=23)),
            obs(leaves_on_new_ca=3),
            Phase.LEAVES_REISSUED,
            (),
            id="keeps the old CA until the longest leaf lifetime has passed since the overlap began",
        ),
        pytest.param(
            st(Phase.LEAVES_REISSUED, overlap_since=NOW - timedelta(hours=24)),
            obs(leaves_on_new_ca=3),
            Phase.OLD_CA_DROPPED,
            (A.PUBLISH_BUNDLES_WITH_NEW_ONLY,),
            id="drops the old CA when every leaf moved and the longest leaf lifetime passed",
        ),
        pytest.param(
            st(Phase.LEAVES_REISSUED, overlap_since=NOW - timedelta(hours=30)),
            obs(leaves_on_new_ca=3, longest_leaf_lifetime=timedelta(hours=48)),
            Phase.LEAVES_REISSUED,
            (),
            id="a longer leaf lifetime seen later extends the overlap",
        ),
        pytest.param(
            st(Phase.LEAVES_REISSUED, overlap_since=NOW - timedelta(days=30)),
            obs(leaves_on_new_ca=3, leaves_total=4),
            Phase.CONSUMERS_RESTARTED,
            (A.ISSUE_FROM_NEW_CA, A.REISSUE_LEAVES),
            id="goes back to re-issuing when a leaf on the old CA appears, however long the overlap",
        ),
        pytest.param(
            st(Phase.OLD_CA_DROPPED),
            obs(leaves_on_new_ca=3, bundles_published_with_both=True),
            Phase.OLD_CA_DROPPED,
            (A.PUBLISH_BUNDLES_WITH_NEW_ONLY,),
            id="keeps publishing the new root alone until every bundle shows it",
        ),
        pytest.param(
            st(Phase.OLD_CA_DROPPED),
            obs(leaves_on_new_ca=3, bundles_published_with_new_only=True),
            Phase.STABLE,
            (A.RETIRE_OLD_CA, A.RESTART_CONSUMERS),
            id="returns to Stable on the new CA, retiring the old one",
        ),
    ],
)
def test_transitions(
    state: RotationState, seen: RotationObservations, phase: Phase, actions: tuple[RotationAction, ...]
) -> None:
    new_state, got = advance(state, seen, NOW)
    assert new_state.phase is phase
    assert got == actions
    if phase is not state.phase:
        assert new_state.phase_since == NOW
    else:
        assert new_state.phase_since == state.phase_since


def test_the_old_ca_is_never_dropped_while_a_leaf_is_on_it() -> None:
    """The guard: however long the overlap, a leaf on the old CA keeps the old root in the bundles."""
    state = st(Phase.CONSUMERS_RESTARTED, overlap_since=NOW - timedelta(days=365))
    for moved in range(3):
        new_state, actions = advance(state, obs(leaves_on_new_ca=moved), NOW)
        assert new_state.phase is Phase.CONSUMERS_RESTARTED
        assert A.PUBLISH_BUNDLES_WITH_NEW_ONLY not in actions


def test_a_whole_rotation_end_to_end() -> None:
    state = RotationState()
    clock = NOW
    steps = [
        (obs(rotation_due=True, current_ca_fingerprint="old"), Phase.STABLE),
        (
            obs(rotation_due=True, current_ca_fingerprint="old", staged_ca_fingerprint="new"),
            Phase.NEW_CA_GENERATED,
        ),
        (obs(bundles_published_with_both=True), Phase.BUNDLES_OVERLAP),
        (obs(bundles_published_with_both=True, consumers_restarted=True), Phase.CONSUMERS_RESTARTED),
        (
            obs(bundles_published_with_both=True, consumers_restarted=True, leaves_on_new_ca=3),
            Phase.LEAVES_REISSUED,
        ),
    ]
    for seen, phase in steps:
        state, _ = advance(state, seen, clock)
        assert state.phase is phase
        clock += timedelta(minutes=5)
    assert state.old_ca_fingerprint == "old"
    assert state.new_ca_fingerprint == "new"
    assert state.started_at == NOW + timedelta(minutes=5)
    assert state.overlap_since == NOW + timedelta(minutes=10)
    assert state.leaves_moved == 3
    assert next_check(state) == state.overlap_since + LEAF_LIFE

    done = obs(leaves_on_new_ca=3, bundles_published_with_both=True)
    state, _ = advance(state, done, clock)
    assert state.phase is Phase.LEAVES_REISSUED  # the overlap has not lasted a leaf lifetime yet
    when = next_check(state)
    assert when is not None
    state, actions = advance(state, done, when)
    assert (state.phase, actions) == (Phase.OLD_CA_DROPPED, (A.PUBLISH_BUNDLES_WITH_NEW_ONLY,))
    state, actions = advance(state, obs(leaves_on_new_ca=3, bundles_published_with_new_only=True), when)
    assert state == RotationState(
        phase=Phase.STABLE, old_ca_fingerprint="new", phase_since=when, leaves_total=3, leaves_moved=3
    )
    assert next_check(state) is None
    # The retired CA's staged Secret is now the current CA: no new rotation starts from it.
    state, actions = advance(state, obs(current_ca_fingerprint="new", staged_ca_fingerprint="new"), when)
    assert (state.phase, actions) == (Phase.STABLE, ())


def test_advance_is_idempotent_when_nothing_changes() -> None:
    for phase in Phase:
        state = st(phase)
        once, actions = advance(state, obs(), NOW)
        twice, again = advance(once, obs(), NOW)
        if once.phase is state.phase:
            assert (twice, again) == (once, actions)


def test_drop_allowed_at_needs_the_overlap_start() -> None:
    assert drop_allowed_at(st(Phase.NEW_CA_GENERATED)) is None
    assert drop_allowed_at(st(Phase.LEAVES_REISSUED)) == OVERLAP + LEAF_LIFE


@pytest.mark.parametrize(
    ("now", "due"),
    [
        pytest.param(NOW, False, id="not due long before expiry"),
        pytest.param(NOW + timedelta(days=335), True, id="due exactly renewBefore ahead of expiry"),
        pytest.param(NOW + timedelta(days=334, hours=23), False, id="not due an hour before that"),
        pytest.param(NOW + timedelta(days=400), True, id="due once expired"),
    ],
)
def test_due_for_rotation(now: datetime, due: bool) -> None:
    assert due_for_rotation(NOW, NOW + timedelta(days=365), timedelta(days=30), now) is due


def test_due_for_rotation_never_before_the_ca_is_valid() -> None:
    assert not due_for_rotation(NOW, NOW + timedelta(days=1), timedelta(days=30), NOW - timedelta(hours=1))
    assert due_for_rotation(NOW, NOW + timedelta(days=1), timedelta(days=30), NOW)


@pytest.mark.parametrize(
    ("renew_before", "problem"),
    [
        pytest.param(timedelta(days=30), None, id="renewBefore longer than every leaf is safe"),
        pytest.param(
            timedelta(days=90), "renewBefore must be longer than", id="renewBefore equal to a leaf is not"
        ),
        pytest.param(
            timedelta(days=365), "renewBefore must be shorter than", id="renewBefore of the whole CA"
        ),
    ],
)
def test_rotation_window_problem(renew_before: timedelta, problem: str | None) -> None:
    leaf = timedelta(days=90) if renew_before == timedelta(days=90) else timedelta(days=7)
    found = rotation_window_problem(timedelta(days=365), renew_before, leaf)
    assert (found is None) if problem is None else (found is not None and found.startswith(problem))


@pytest.mark.parametrize("phase", list(Phase))
def test_status_round_trip(phase: Phase) -> None:
    state = st(phase, leaves_moved=2)
    doc = to_status(state)
    assert doc["phase"] == str(phase)
    assert from_status(doc) == state


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(None, id="no status"),
        pytest.param({}, id="empty status"),
        pytest.param({"phase": "Sideways"}, id="unknown phase"),
        pytest.param({"phase": "Stable", "startedAt": "yesterday"}, id="unreadable time"),
    ],
)
def test_unreadable_status_starts_stable(raw: dict[str, object] | None) -> None:
    assert from_status(raw) == RotationState()


# ---------------------------------------------------------------------------------------------------------
# Invariants over arbitrary observation sequences

observation = hst.builds(
    RotationObservations,
    current_ca_fingerprint=hst.sampled_from(["old", "new", None]),
    rotation_due=hst.booleans(),
    staged_ca_fingerprint=hst.sampled_from([None, "new", "old"]),
    bundles_published_with_both=hst.booleans(),
    bundles_published_with_new_only=hst.booleans(),
    consumers_restarted=hst.booleans(),
    leaves_on_new_ca=hst.integers(0, 4),
    leaves_total=hst.integers(0, 4),
    longest_leaf_lifetime=hst.sampled_from([timedelta(hours=1), LEAF_LIFE, timedelta(hours=48)]),
)


@settings(max_examples=300, deadline=None)
@given(steps=hst.lists(hst.tuples(observation, hst.integers(0, 36 * 3600)), max_size=40))
def test_the_old_root_leaves_only_after_every_leaf_moved_and_a_leaf_lifetime(
    steps: list[tuple[RotationObservations, int]],
) -> None:
    """Whatever the world reports, the old root is dropped only when every leaf was on the new CA and the
    longest leaf lifetime seen so far had passed since the overlap began; new-CA leaves are issued only
    after consumers were restarted with both roots; phases advance one step at a time."""
    order = list(Phase)
    state, clock = RotationState(), NOW
    for seen, seconds in steps:
        clock += timedelta(seconds=seconds)
        before = state
        state, actions = advance(state, seen, clock)
        if A.PUBLISH_BUNDLES_WITH_NEW_ONLY in actions and before.phase is Phase.LEAVES_REISSUED:
            assert seen.leaves_on_new_ca >= seen.leaves_total
            assert before.overlap_since is not None
            assert clock >= before.overlap_since + max(
                before.longest_leaf_lifetime, seen.longest_leaf_lifetime
            )
        if A.ISSUE_FROM_NEW_CA in actions and before.phase is Phase.BUNDLES_OVERLAP:
            assert seen.consumers_restarted and seen.bundles_published_with_both
        if state.phase is not before.phase:
            step = (order.index(state.phase) - order.index(before.phase)) % len(order)
            assert step == 1 or (before.phase, state.phase) == (
                Phase.LEAVES_REISSUED,
                Phase.CONSUMERS_RESTARTED,
            )
