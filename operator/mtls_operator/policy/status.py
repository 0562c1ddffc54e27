"""Status documents, as pure functions of (the status written before, what was decided, now).

Each builder returns the whole new :class:`CertificateStatus`; :func:`status_patch` turns old and new into
the merge patch of what changed (nothing at all when nothing did, so an unchanged status costs no write).
Conditions keep their lastTransitionTime unless their status flips.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from mtls_operator.api import conditions as cond
from mtls_operator.api.constants import ConditionType, Reason, additional_secret_keys
from mtls_operator.api.errors import Violation
from mtls_operator.api.models import CertificateSpec, KeyAlgorithm, KeySpec
from mtls_operator.api.objects import AdditionalCertStatus, CertificateStatus, IssuerStatus
from mtls_operator.api.tls import SecretFacts


@dataclass(frozen=True, slots=True)
class RolloutBlock:
    """Why the workloads using a certificate's Secret are not restarted (the loop guard)."""

    reason: str
    message: str


def post_quantum(key: KeyAlgorithm, chain: Sequence[KeyAlgorithm]) -> tuple[bool, Reason, str] | None:
    """The PostQuantum condition of an ML-DSA certificate (None for classical ones): True when every CA
    in its chain signs with ML-DSA too."""
    if key is not KeyAlgorithm.MLDSA or not chain:
        return None
    classical = sorted({str(a) for a in chain if a is not KeyAlgorithm.MLDSA})
    if classical:
        return (
            False,
            Reason.MIXED_CHAIN,
            f"The ML-DSA certificate chains to a CA signed with {', '.join(classical)}: it is not "
            "post-quantum end to end.",
        )
    return True, Reason.POST_QUANTUM_CHAIN, "Every certificate in the chain is signed with ML-DSA."


def additional_statuses(facts: SecretFacts) -> tuple[AdditionalCertStatus, ...]:
    """status.additionalCertificates: each additional certificate the Secret holds."""
    return tuple(
        AdditionalCertStatus(
            algorithm=KeySpec(algorithm=a.leaf.key_algorithm, size=a.leaf.key_size).label,
            secret_key=additional_secret_keys(a.algorithm)[0],
            not_before=a.leaf.not_before,
            not_after=a.leaf.not_after,
            serial_number=a.leaf.serial_number,
            fingerprint=a.leaf.fingerprint,
        )
        for a in facts.additional
    )


def key_expirations(facts: SecretFacts) -> tuple[tuple[str, datetime], ...]:
    """(key label, notAfter) of every certificate the Secret holds, main first: one metric series each."""
    leaves = [facts.leaf, *(a.leaf for a in facts.additional)]
    return tuple((KeySpec(algorithm=c.key_algorithm, size=c.key_size).label, c.not_after) for c in leaves)


def rollout_conditions(
    conditions: tuple[cond.Condition, ...], block: RolloutBlock | None, generation: int, now: datetime
) -> tuple[cond.Condition, ...]:
    """RolloutBlocked while the loop guard holds; False (RolloutAllowed) once it no longer does."""
    if block is not None:
        return cond.put(
            conditions, ConditionType.ROLLOUT_BLOCKED, True, block.reason, block.message, generation, now
        )
    existing = cond.get(conditions, ConditionType.ROLLOUT_BLOCKED)
    if existing is not None and existing.status:
        return cond.put(
            conditions,
            ConditionType.ROLLOUT_BLOCKED,
            False,
            Reason.ROLLOUT_ALLOWED,
            "Workloads are restarted again.",
            generation,
            now,
        )
    return conditions


def ready_status(
    old: CertificateStatus,
    *,
    spec: CertificateSpec,
    generation: int,
    facts: SecretFacts,
    revision: int,
    renewal_time: datetime | None,
    issuer_fingerprint: str | None,
    chain: Sequence[KeyAlgorithm],
    fulfilled: tuple[str | None, str | None],
    block: RolloutBlock | None,
    now: datetime,
    trigger: Violation | None = None,
    refreshed: bool = False,
) -> CertificateStatus:
    """The certificate's Secret is valid. ``trigger``: it was just (re-)issued (or its ca.crt refreshed,
    ``refreshed``) for that reason, which stays visible in the Issuing condition until the next time."""
    leaf = facts.leaf
    conditions = cond.put(
        old.conditions,
        ConditionType.READY,
        True,
        Reason.UP_TO_DATE,
        f"The certificate is up to date and valid until {cond.rfc3339(leaf.not_after)}.",
        generation,
        now,
    )
    issuing = cond.get(conditions, ConditionType.ISSUING)
    if trigger is not None:
        verb = "Updated ca.crt of" if refreshed else "Issued"
        conditions = cond.put(
            conditions,
            ConditionType.ISSUING,
            False,
            trigger.reason,
            f"{verb} revision {revision} because: {trigger.message}",
            generation,
            now,
        )
    elif issuing is None or issuing.status:
        conditions = cond.put(
            conditions,
            ConditionType.ISSUING,
            False,
            Reason.UP_TO_DATE,
            "No issuance is needed.",
            generation,
            now,
        )
    pq = post_quantum(spec.private_key.algorithm, chain)
    if pq is not None:
        conditions = cond.put(conditions, ConditionType.POST_QUANTUM, pq[0], pq[1], pq[2], generation, now)
    else:  # a classical certificate (perhaps ML-DSA before) says nothing about post-quantum
        conditions = cond.drop(conditions, ConditionType.POST_QUANTUM)
    conditions = rollout_conditions(conditions, block, generation, now)
    additional = additional_statuses(facts)
    return replace(
        old,
        conditions=conditions,
        not_before=leaf.not_before,
        not_after=leaf.not_after,
        renewal_time=renewal_time,
        serial_number=leaf.serial_number,
        fingerprint=leaf.fingerprint,
        revision=max(revision, old.revision),
        algorithm=spec.private_key.label,
        secret_name=spec.secret_name,
        issuer_fingerprint=issuer_fingerprint,
        failed_attempts=0,
        last_failure_time=None,
        next_attempt_time=None,
        rollouts=(),
        handled_renew=fulfilled[0],
        handled_revoke=fulfilled[1],
        key_algorithms=(spec.private_key.label, *(a.algorithm for a in additional)),
        additional=additional,
    )


def waiting_status(
    old: CertificateStatus,
    violation: Violation,
    next_attempt: datetime | None,
    generation: int,
    now: datetime,
) -> CertificateStatus:
    """An issuance is needed but waits (backoff, or the issuance budget): Ready keeps what it said."""
    ready = cond.get(old.conditions, ConditionType.READY)
    ready_generation = (
        ready.observed_generation if ready is not None and ready.observed_generation else generation
    )
    conditions = cond.put(
        old.conditions,
        ConditionType.READY,
        False,
        ready.reason if ready is not None and ready.reason else violation.reason,
        ready.message if ready is not None and ready.message else violation.message,
        ready_generation,
        now,
    )
    conditions = cond.put(
        conditions,
        ConditionType.ISSUING,
        True,
        violation.reason,
        f"{violation.message} The next attempt is at {cond.rfc3339(next_attempt)}.",
        ready_generation,
        now,
    )
    return replace(old, conditions=conditions, next_attempt_time=next_attempt)


def blocked_status(
    old: CertificateStatus, violation: Violation, generation: int, now: datetime
) -> CertificateStatus:
    """Nothing can be issued until the world changes (the spec, the issuer, the Secret's owner)."""
    conditions = cond.put(
        old.conditions, ConditionType.READY, False, violation.reason, violation.message, generation, now
    )
    conditions = cond.put(
        conditions, ConditionType.ISSUING, False, violation.reason, violation.message, generation, now
    )
    return replace(old, conditions=conditions)


def failure_status(
    old: CertificateStatus, violation: Violation, retry_at: datetime, generation: int, now: datetime
) -> CertificateStatus:
    """An issuance attempt failed; the next one is at ``retry_at``."""
    failures = old.failed_attempts + 1
    conditions = cond.put(
        old.conditions, ConditionType.READY, False, violation.reason, violation.message, generation, now
    )
    conditions = cond.put(
        conditions,
        ConditionType.ISSUING,
        True,
        violation.reason,
        f"Attempt {failures} failed; the next attempt is at {cond.rfc3339(retry_at)}.",
        generation,
        now,
    )
    return replace(
        old,
        conditions=conditions,
        failed_attempts=failures,
        last_failure_time=now,
        next_attempt_time=retry_at,
    )


def status_patch(
    old: CertificateStatus | IssuerStatus, new: CertificateStatus | IssuerStatus
) -> dict[str, Any]:
    """The merge patch from ``old`` to ``new``: changed fields only (None removes a field); empty when
    nothing changed."""
    before, after = old.as_dict(), new.as_dict()
    return {k: v for k, v in after.items() if before.get(k) != v}


def ready_of(status: CertificateStatus | IssuerStatus) -> tuple[bool, str] | None:
    """(status, reason) of the Ready condition, if any: to tell when an event is due."""
    ready = cond.get(status.conditions, ConditionType.READY)
    return None if ready is None else (ready.status, ready.reason)
