"""policy.status: the status documents of a certificate, as pure functions of (old status, decision, now),
and the merge patch between two of them."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.unit.core_fakes import leaf_facts

from mtls_operator.api import conditions as cond
from mtls_operator.api.certificate_spec import parse_certificate_spec
from mtls_operator.api.conditions import Condition
from mtls_operator.api.constants import ConditionType, Reason
from mtls_operator.api.errors import Violation
from mtls_operator.api.models import KeyAlgorithm
from mtls_operator.api.objects import CertificateStatus, IssuerStatus, RolloutRecord
from mtls_operator.api.tls import SecretFacts
from mtls_operator.policy.status import (
    RolloutBlock,
    blocked_status,
    failure_status,
    post_quantum,
    ready_of,
    ready_status,
    rollout_conditions,
    status_patch,
    waiting_status,
)

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)  # when the old status was written
NOW = T0 + timedelta(hours=2)
T0S, NOWS = cond.rfc3339(T0), cond.rfc3339(NOW)
SPEC = parse_certificate_spec({"secretName": "web-tls", "issuerRef": {"name": "mesh"}, "commonName": "web"})
MLDSA_SPEC = parse_certificate_spec(
    {
        "secretName": "web-tls",
        "issuerRef": {"name": "mesh"},
        "commonName": "web",
        "privateKey": {"algorithm": "MLDSA", "size": 65},
    }
)
LEAF = leaf_facts(NOW - timedelta(minutes=1), NOW + timedelta(days=90))
FACTS = SecretFacts(LEAF, True, True, True, True, False, frozenset({"cafp"}))
RENEW_AT = NOW + timedelta(days=60)
TRIGGER = Violation(Reason.RENEWAL_DUE, "Renewal time 2026-11-24T13:00:00+00:00 has come.")
BUDGET = Violation(Reason.ISSUANCE_BUDGET_EXCEEDED, "The certificate was issued too often lately.")
BROKEN = Violation(Reason.ISSUER_NOT_READY, "MTLSIssuer demo/mesh is not ready.")
LOOP = RolloutBlock(Reason.ROLLOUT_LOOP_GUARD, "Deployment web was restarted 6 times in the last hour.")


def c(
    kind: str, status: bool, reason: str, message: str = "m", generation: int = 1, at: str | None = T0S
) -> Condition:
    return Condition(kind, status, reason, message, generation, at)


READY_BEFORE = c(
    ConditionType.READY, True, Reason.UP_TO_DATE, "The certificate is up to date and valid until X."
)
ISSUING_BEFORE = c(ConditionType.ISSUING, False, Reason.UP_TO_DATE, "No issuance is needed.")
GOOD_BEFORE = CertificateStatus(conditions=(ISSUING_BEFORE, READY_BEFORE), revision=2, fingerprint="old")
FAILING_BEFORE = CertificateStatus(
    conditions=(
        c(ConditionType.ISSUING, True, Reason.ISSUER_NOT_READY, "Attempt 2 failed."),
        c(ConditionType.READY, False, Reason.ISSUER_NOT_READY),
    ),
    revision=2,
    failed_attempts=2,
    last_failure_time=T0,
    next_attempt_time=T0 + timedelta(minutes=1),
    rollouts=(RolloutRecord("Deployment", "web", "old", T0S or ""),),
)


EMPTY = CertificateStatus()


def ready(old: CertificateStatus = EMPTY, **changes: Any) -> CertificateStatus:
    args: dict[str, Any] = {
        "spec": SPEC,
        "generation": 3,
        "facts": FACTS,
        "revision": 3,
        "renewal_time": RENEW_AT,
        "issuer_fingerprint": "cafp",
        "chain": (KeyAlgorithm.ECDSA,),
        "fulfilled": (None, None),
        "block": None,
        "now": NOW,
    }
    args.update(changes)
    return ready_status(old, **args)


def get(status: CertificateStatus, kind: str) -> Condition:
    found = cond.get(status.conditions, kind)
    assert found is not None, f"no {kind} condition in {status.conditions}"
    return found


# ---------------------------------------------------------------------------------------------------------
# ready_status


def test_ready_status_from_nothing_fills_every_field_from_the_secret_and_the_plan() -> None:
    new = ready(fulfilled=("renew-1", "revoke-1"))
    assert get(new, ConditionType.READY) == Condition(
        ConditionType.READY,
        True,
        Reason.UP_TO_DATE,
        f"The certificate is up to date and valid until {cond.rfc3339(LEAF.not_after)}.",
        3,
        NOWS,
    )
    assert get(new, ConditionType.ISSUING) == Condition(
        ConditionType.ISSUING, False, Reason.UP_TO_DATE, "No issuance is needed.", 3, NOWS
    )
    assert [x.type for x in new.conditions] == [ConditionType.ISSUING, ConditionType.READY]
    assert (new.not_before, new.not_after, new.renewal_time) == (LEAF.not_before, LEAF.not_after, RENEW_AT)
    assert (new.serial_number, new.fingerprint, new.revision) == ("0a", "leaffp", 3)
    assert (new.algorithm, new.secret_name, new.issuer_fingerprint) == ("ECDSA-P256", "web-tls", "cafp")
    assert (new.handled_renew, new.handled_revoke) == ("renew-1", "revoke-1")


@pytest.mark.parametrize(
    ("old", "ready_at", "issuing_at"),
    [
        pytest.param(GOOD_BEFORE, T0S, T0S, id="a certificate that stays ready keeps both transition times"),
        pytest.param(
            FAILING_BEFORE,
            NOWS,
            NOWS,
            id="a certificate that becomes ready moves both transition times to now",
        ),
        pytest.param(
            CertificateStatus(conditions=(c(ConditionType.READY, True, Reason.UP_TO_DATE),)),
            T0S,
            NOWS,
            id="a missing Issuing condition is added now while Ready keeps its time",
        ),
    ],
)
def test_ready_status_moves_last_transition_time_only_when_a_condition_flips(
    old: CertificateStatus, ready_at: str, issuing_at: str
) -> None:
    new = ready(old)
    assert get(new, ConditionType.READY).last_transition_time == ready_at
    assert get(new, ConditionType.ISSUING).last_transition_time == issuing_at


def test_ready_status_after_failures_clears_the_failure_fields_and_the_rollout_records() -> None:
    new = ready(FAILING_BEFORE)
    assert (new.failed_attempts, new.last_failure_time, new.next_attempt_time) == (0, None, None)
    assert new.rollouts == ()


@pytest.mark.parametrize(
    ("old_revision", "revision", "expected"),
    [
        pytest.param(2, 3, 3, id="a new revision is recorded"),
        pytest.param(5, 3, 5, id="the revision never goes back (a Secret restored from an old backup)"),
    ],
)
def test_ready_status_revision(old_revision: int, revision: int, expected: int) -> None:
    assert ready(replace(GOOD_BEFORE, revision=old_revision), revision=revision).revision == expected


@pytest.mark.parametrize(
    ("refreshed", "message"),
    [
        pytest.param(
            False,
            f"Issued revision 3 because: {TRIGGER.message}",
            id="an issuance names its trigger in the Issuing condition",
        ),
        pytest.param(
            True,
            f"Updated ca.crt of revision 3 because: {TRIGGER.message}",
            id="a ca.crt refresh says it updated ca.crt, not that it issued",
        ),
    ],
)
def test_ready_status_issuing_trigger(refreshed: bool, message: str) -> None:
    new = ready(GOOD_BEFORE, trigger=TRIGGER, refreshed=refreshed)
    issuing = get(new, ConditionType.ISSUING)
    assert (issuing.status, issuing.reason, issuing.message) == (False, Reason.RENEWAL_DUE, message)
    assert issuing.last_transition_time == T0S  # False before, False after


def test_the_trigger_stays_visible_on_the_next_ready_status_without_one() -> None:
    issued = ready(GOOD_BEFORE, trigger=TRIGGER)
    later = ready(issued, now=NOW + timedelta(hours=1))
    assert get(later, ConditionType.ISSUING) == get(issued, ConditionType.ISSUING)
    assert status_patch(issued, later) == {}


# ---------------------------------------------------------------------------------------------------------
# PostQuantum


@pytest.mark.parametrize(
    ("key", "chain", "expected"),
    [
        pytest.param(
            KeyAlgorithm.MLDSA,
            (KeyAlgorithm.MLDSA, KeyAlgorithm.MLDSA),
            (True, Reason.POST_QUANTUM_CHAIN, "Every certificate in the chain is signed with ML-DSA."),
            id="an ML-DSA certificate below ML-DSA CAs only is post-quantum",
        ),
        pytest.param(
            KeyAlgorithm.MLDSA,
            (KeyAlgorithm.MLDSA, KeyAlgorithm.RSA, KeyAlgorithm.ECDSA, KeyAlgorithm.RSA),
            (
                False,
                Reason.MIXED_CHAIN,
                "The ML-DSA certificate chains to a CA signed with ECDSA, RSA: it is not post-quantum end "
                "to end.",
            ),
            id="an ML-DSA certificate below a classical CA is a mixed chain naming each algorithm once",
        ),
        pytest.param(
            KeyAlgorithm.MLDSA, (), None, id="an ML-DSA certificate whose chain is not known says nothing"
        ),
        pytest.param(
            KeyAlgorithm.ECDSA, (KeyAlgorithm.MLDSA,), None, id="a classical certificate says nothing"
        ),
    ],
)
def test_post_quantum(key: KeyAlgorithm, chain: tuple[KeyAlgorithm, ...], expected: object) -> None:
    assert post_quantum(key, chain) == expected


@pytest.mark.parametrize(
    ("chain", "status", "reason"),
    [
        pytest.param(
            (KeyAlgorithm.MLDSA,), True, Reason.POST_QUANTUM_CHAIN, id="PostQuantumChain is a True condition"
        ),
        pytest.param((KeyAlgorithm.ECDSA,), False, Reason.MIXED_CHAIN, id="MixedChain is a False condition"),
    ],
)
def test_ready_status_of_an_mldsa_certificate_carries_post_quantum(
    chain: tuple[KeyAlgorithm, ...], status: bool, reason: Reason
) -> None:
    pq = get(ready(spec=MLDSA_SPEC, chain=chain), ConditionType.POST_QUANTUM)
    assert (pq.status, pq.reason, pq.last_transition_time) == (status, reason, NOWS)


def test_ready_status_of_a_classical_certificate_has_no_post_quantum_condition() -> None:
    assert cond.get(ready(chain=(KeyAlgorithm.MLDSA,)).conditions, ConditionType.POST_QUANTUM) is None


def test_a_certificate_that_leaves_mldsa_drops_its_post_quantum_condition() -> None:
    was_pq = ready(spec=MLDSA_SPEC, chain=(KeyAlgorithm.MLDSA,))
    now_classical = ready(was_pq, spec=SPEC, chain=(KeyAlgorithm.MLDSA,), now=NOW + timedelta(hours=1))
    assert cond.get(now_classical.conditions, ConditionType.POST_QUANTUM) is None


# ---------------------------------------------------------------------------------------------------------
# RolloutBlocked


def test_rollout_blocked_is_true_while_the_loop_guard_holds_then_rollout_allowed() -> None:
    blocked = ready(GOOD_BEFORE, block=LOOP)
    assert get(blocked, ConditionType.ROLLOUT_BLOCKED) == Condition(
        ConditionType.ROLLOUT_BLOCKED, True, Reason.ROLLOUT_LOOP_GUARD, LOOP.message, 3, NOWS
    )
    later = NOW + timedelta(hours=1)
    still = ready(blocked, block=LOOP, now=later)
    assert get(still, ConditionType.ROLLOUT_BLOCKED).last_transition_time == NOWS
    allowed = ready(still, now=later)
    assert get(allowed, ConditionType.ROLLOUT_BLOCKED) == Condition(
        ConditionType.ROLLOUT_BLOCKED,
        False,
        Reason.ROLLOUT_ALLOWED,
        "Workloads are restarted again.",
        3,
        cond.rfc3339(later),
    )
    assert status_patch(allowed, ready(allowed, now=later + timedelta(hours=1))) == {}


@pytest.mark.parametrize(
    ("conditions", "block", "expected_types"),
    [
        pytest.param((), None, [], id="a certificate never blocked gets no RolloutBlocked condition"),
        pytest.param(
            (c(ConditionType.ROLLOUT_BLOCKED, False, Reason.ROLLOUT_ALLOWED),),
            None,
            [ConditionType.ROLLOUT_BLOCKED],
            id="RolloutAllowed stays as it is once written",
        ),
        pytest.param((), LOOP, [ConditionType.ROLLOUT_BLOCKED], id="a block adds the condition"),
    ],
)
def test_rollout_conditions(
    conditions: tuple[Condition, ...], block: RolloutBlock | None, expected_types: list[str]
) -> None:
    out = rollout_conditions(conditions, block, 1, NOW)
    assert [x.type for x in out] == expected_types
    if block is None:
        assert out == conditions


# ---------------------------------------------------------------------------------------------------------
# waiting, blocked and failure


def test_waiting_keeps_what_ready_said_and_its_generation() -> None:
    next_attempt = NOW + timedelta(minutes=5)
    new = waiting_status(GOOD_BEFORE, BUDGET, next_attempt, generation=7, now=NOW)
    r = get(new, ConditionType.READY)
    assert (r.status, r.reason, r.message, r.observed_generation) == (
        False,
        READY_BEFORE.reason,
        READY_BEFORE.message,
        READY_BEFORE.observed_generation,
    )
    i = get(new, ConditionType.ISSUING)
    assert (i.status, i.reason, i.observed_generation) == (True, Reason.ISSUANCE_BUDGET_EXCEEDED, 1)
    assert i.message == f"{BUDGET.message} The next attempt is at {cond.rfc3339(next_attempt)}."
    assert (r.last_transition_time, i.last_transition_time) == (NOWS, NOWS)
    assert new.next_attempt_time == next_attempt
    assert replace(new, conditions=GOOD_BEFORE.conditions, next_attempt_time=None) == GOOD_BEFORE


def test_waiting_without_a_ready_condition_says_why_with_the_current_generation() -> None:
    new = waiting_status(CertificateStatus(), BUDGET, NOW, generation=7, now=NOW)
    r = get(new, ConditionType.READY)
    assert (r.status, r.reason, r.message, r.observed_generation) == (False, BUDGET.reason, BUDGET.message, 7)


def test_blocked_sets_ready_and_issuing_false_for_the_same_reason() -> None:
    new = blocked_status(GOOD_BEFORE, BROKEN, generation=4, now=NOW)
    for kind, at in ((ConditionType.READY, NOWS), (ConditionType.ISSUING, T0S)):
        x = get(new, kind)
        assert (x.status, x.reason, x.message, x.observed_generation, x.last_transition_time) == (
            False,
            BROKEN.reason,
            BROKEN.message,
            4,
            at,
        )
    assert replace(new, conditions=GOOD_BEFORE.conditions) == GOOD_BEFORE


@pytest.mark.parametrize(
    ("old", "attempt"),
    [
        pytest.param(GOOD_BEFORE, 1, id="a first failure is attempt 1"),
        pytest.param(FAILING_BEFORE, 3, id="each failure counts one more attempt"),
    ],
)
def test_failure_counts_attempts(old: CertificateStatus, attempt: int) -> None:
    retry_at = NOW + timedelta(minutes=2)
    new = failure_status(old, BROKEN, retry_at, generation=3, now=NOW)
    assert (new.failed_attempts, new.last_failure_time, new.next_attempt_time) == (attempt, NOW, retry_at)
    i = get(new, ConditionType.ISSUING)
    assert (i.status, i.reason) == (True, BROKEN.reason)
    assert i.message == f"Attempt {attempt} failed; the next attempt is at {cond.rfc3339(retry_at)}."
    r = get(new, ConditionType.READY)
    assert (r.status, r.reason, r.message) == (False, BROKEN.reason, BROKEN.message)


# ---------------------------------------------------------------------------------------------------------
# status_patch and ready_of


@pytest.mark.parametrize(
    "status",
    [
        pytest.param(CertificateStatus(), id="an empty certificate status"),
        pytest.param(FAILING_BEFORE, id="a failing certificate status"),
        pytest.param(
            ready(GOOD_BEFORE, trigger=TRIGGER, block=LOOP), id="a ready, blocked certificate status"
        ),
        pytest.param(IssuerStatus(), id="an empty issuer status"),
    ],
)
def test_status_patch_is_empty_when_nothing_changed(status: CertificateStatus | IssuerStatus) -> None:
    assert status_patch(status, replace(status)) == {}


def test_status_patch_after_recovery_removes_the_failure_fields_with_none() -> None:
    new = ready(FAILING_BEFORE)
    patch = status_patch(FAILING_BEFORE, new)
    assert patch["failedIssuanceAttempts"] is None
    assert patch["lastFailureTime"] is None
    assert patch["nextAttemptTime"] is None
    assert patch["rollouts"] is None
    assert patch["fingerprint"] == "leaffp"
    assert patch["conditions"] == cond.as_list(new.conditions)
    assert "revision" in patch and patch["revision"] == 3


def test_status_patch_carries_only_what_changed() -> None:
    old = ready(GOOD_BEFORE)
    new = replace(old, renewal_time=old.renewal_time + timedelta(hours=1) if old.renewal_time else None)
    assert status_patch(old, new) == {"renewalTime": cond.rfc3339(new.renewal_time)}


def test_status_patch_of_an_issuer_status() -> None:
    old = IssuerStatus(fingerprint="a", observed_generation=1)
    assert status_patch(old, replace(old, fingerprint=None, observed_generation=2)) == {
        "fingerprint": None,
        "observedGeneration": 2,
    }


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param(CertificateStatus(), None, id="no Ready condition reads as nothing"),
        pytest.param(
            GOOD_BEFORE, (True, Reason.UP_TO_DATE), id="a Ready condition reads as status and reason"
        ),
    ],
)
def test_ready_of(status: CertificateStatus, expected: tuple[bool, str] | None) -> None:
    assert ready_of(status) == expected
