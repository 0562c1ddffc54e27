"""Pure decisions for one MTLSCertificate: is it blocked, does it need issuing, and when to look again.

Gathered state goes in (:class:`CertificateInput`, time included); a :class:`Plan` comes out. Each check is
named after the state it detects and returns a :class:`Violation` or None; the first violation wins, so
"why was this certificate re-issued?" is answered by the reason of the check that fired. This module holds
the input and the plan, the order of the checks and :func:`plan`; the checks themselves are in
:mod:`mtls_operator.policy.certificate_checks` (the certificate, its Secret and its issuer) and
:mod:`mtls_operator.policy.additional_keys` (``spec.additionalPrivateKeys``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from mtls_operator.api.constants import Reason
from mtls_operator.api.errors import Violation as Violation
from mtls_operator.api.models import CertificateSpec, KeyAlgorithm, RotationPolicy
from mtls_operator.api.tls import CAFacts, SecretFacts
from mtls_operator.policy import backoff
from mtls_operator.policy.additional_keys import (
    additional_cert_differs,
    additional_issuer_changed,
    additional_key_mismatch,
    additional_key_missing,
    additional_key_spec_changed,
    additional_key_unsupported,
    additional_pairs,
)
from mtls_operator.policy.certificate_checks import (
    ca_bundle_mismatch,
    expired,
    issuer_changed,
    issuer_unusable,
    key_mismatch,
    key_spec_changed,
    keystore_missing,
    manual_renewal,
    names_changed,
    policy_denied,
    renewal_due,
    renewal_time_of,
    secret_missing,
    secret_name_duplicated,
    secret_not_managed,
    secret_unreadable,
    serial_revoked,
    spec_hash_changed,
    spec_invalid,
    trust_anchors_changed,
    usages_changed,
)


@dataclass(frozen=True, slots=True)
class SecretView:
    """The Secret named by spec.secretName, as gathered."""

    exists: bool = False
    owner_certificate: str | None = None  # mtls.dev/certificate-name on the Secret, None if unmanaged
    managed: bool = False  # carries the operator's managed-by label
    facts: SecretFacts | None = None
    error: Violation | None = None  # why the data could not be read as TLS material
    spec_hash: str | None = None
    revision: int = 0
    owned: bool = False  # written by the operator for this very certificate object (policy.ownership)
    fulfilled_renew: str | None = None  # the renew request this content fulfilled
    fulfilled_revoke: str | None = None  # the revoke request this content fulfilled
    content_since: datetime | None = None  # when this content (certificate or ca.crt) was written


@dataclass(frozen=True, slots=True)
class IssuerView:
    found: bool = False
    ready: bool = False
    reason: Reason = Reason.ISSUER_NOT_FOUND
    message: str = ""
    ca: CAFacts | None = None
    chain_algorithms: tuple[KeyAlgorithm, ...] = ()  # issuing CA, its intermediates, the root
    # sha256 of the trust anchors a leaf's ca.crt must hold (two roots during a CA rotation's overlap);
    # empty when not known, and then only "holds the issuer's root" is checked
    anchors: frozenset[str] = frozenset()
    # a dual issuer's other CAs (one per key algorithm), which sign certificates' additional keys
    additional_cas: tuple[CAFacts, ...] = ()

    @property
    def algorithms(self) -> frozenset[KeyAlgorithm]:
        """The key algorithms of the issuer's CAs: the additional keys it can sign."""
        main = {self.ca.key_algorithm} if self.ca is not None else set()
        return frozenset({*main, *(c.key_algorithm for c in self.additional_cas)})


@dataclass(frozen=True, slots=True)
class CertificateInput:
    namespace: str
    name: str
    uid: str
    generation: int
    spec: CertificateSpec | None
    spec_error: Violation | None
    secret: SecretView
    issuer: IssuerView
    now: datetime
    duplicates: tuple[str, ...] = ()  # other certificates naming the same Secret
    renew_request: str | None = None  # a renew request token not yet handled (mtlsctl renew)
    revoke_request: str | None = None  # a revoke request token not yet handled (mtlsctl revoke)
    failed_attempts: int = 0
    last_failure_time: datetime | None = None
    last_failure_generation: int | None = None
    last_failure_reason: Reason | None = None
    backoff_base: timedelta = backoff.DEFAULT_BASE
    backoff_cap: timedelta = backoff.DEFAULT_CAP
    policy_violation: Violation | None = None  # the issuer's issuance policy refuses this request
    revoked: bool = False  # the Secret's certificate is on the issuer's revocation list
    budget_retry_at: datetime | None = None  # the issuance budget is spent until then (policy.budget)


class Action(StrEnum):
    NOTHING = "Nothing"  # the Secret is valid; look again at next_check
    ISSUE = "Issue"  # issue now, for `violation`
    REFRESH_TRUST = "RefreshTrust"  # the certificate is fine; rewrite ca.crt with the issuer's anchors
    WAIT = "Wait"  # issuance is needed but backing off until next_check
    BLOCKED = "Blocked"  # nothing can be issued until the world changes (spec, issuer, Secret owner)
    FAIL = "Fail"  # issuance is needed but the issuer cannot serve it: a failed attempt, backed off


@dataclass(frozen=True, slots=True)
class Plan:
    action: Action
    violation: Violation | None = None
    reuse_key: bool = False
    reuse_additional: frozenset[KeyAlgorithm] = frozenset()  # additional keys kept (rotationPolicy Never)
    next_check: datetime | None = None
    renewal_time: datetime | None = None
    revoke_serial: str | None = None  # revoke this serial (durably) before issuing its replacement
    fulfils_renew: str | None = None  # the renew request token the issuance fulfils
    fulfils_revoke: str | None = None  # the revoke request token the issuance fulfils


BLOCKING_CHECKS: Sequence[Callable[[CertificateInput], Violation | None]] = (
    spec_invalid,
    secret_name_duplicated,
    secret_not_managed,
    policy_denied,
)


ISSUANCE_CHECKS: Sequence[Callable[[CertificateInput], Violation | None]] = (
    secret_missing,
    secret_unreadable,
    key_mismatch,
    key_spec_changed,
    names_changed,
    usages_changed,
    spec_hash_changed,
    additional_key_missing,
    additional_key_mismatch,
    additional_key_spec_changed,
    additional_cert_differs,
    issuer_changed,
    additional_issuer_changed,
    ca_bundle_mismatch,
    keystore_missing,
    serial_revoked,
    expired,
    manual_renewal,
    renewal_due,
    trust_anchors_changed,  # last: any re-issue writes the right ca.crt too
)
# Without a usable CA the checks that compare against it cannot be judged.
CA_DEPENDENT_CHECKS = frozenset(
    {issuer_changed, additional_issuer_changed, ca_bundle_mismatch, trust_anchors_changed}
)
CA_INDEPENDENT_CHECKS = tuple(c for c in ISSUANCE_CHECKS if c not in CA_DEPENDENT_CHECKS)


def first_violation(
    s: CertificateInput, checks: Sequence[Callable[[CertificateInput], Violation | None]]
) -> Violation | None:
    for check in checks:
        found = check(s)
        if found is not None:
            return found
    return None


def _may_keep_keys(s: CertificateInput) -> bool:
    """No revocation (done or asked for) forces new keys."""
    if s.revoked:
        return False
    return s.revoke_request is None or s.revoke_request == s.secret.fulfilled_revoke


def can_reuse_key(s: CertificateInput) -> bool:
    """rotationPolicy Never keeps a key that still matches its certificate and the spec."""
    f, spec = s.secret.facts, s.spec
    if f is None or spec is None or spec.private_key.rotation_policy is not RotationPolicy.NEVER:
        return False
    if not _may_keep_keys(s):
        return False
    return f.key_matches and (f.leaf.key_algorithm, f.leaf.key_size) == (
        spec.private_key.algorithm,
        spec.private_key.size,
    )


def reusable_additional_keys(s: CertificateInput) -> frozenset[KeyAlgorithm]:
    """The additional keys rotationPolicy Never keeps: those that still match their certificate and spec."""
    if not _may_keep_keys(s):
        return frozenset()
    return frozenset(
        key.algorithm
        for key, pair in additional_pairs(s)
        if key.rotation_policy is RotationPolicy.NEVER
        and pair is not None
        and pair.key_matches
        and (pair.leaf.key_algorithm, pair.leaf.key_size) == (key.algorithm, key.size)
    )


def _retry_at(s: CertificateInput) -> datetime | None:
    """When the next attempt may run, if the last failure is still in force for this generation."""
    if s.failed_attempts <= 0 or s.last_failure_generation != s.generation:
        return None  # a spec change retries at once
    retry_at = backoff.next_attempt(s.failed_attempts, s.last_failure_time, s.backoff_base, s.backoff_cap)
    return retry_at if retry_at is not None and s.now < retry_at else None


def plan(s: CertificateInput) -> Plan:
    """Decide what to do for one certificate, now."""
    blocked = first_violation(s, BLOCKING_CHECKS)
    if blocked is not None:
        return Plan(Action.BLOCKED, blocked)
    renew_at = renewal_time_of(s)
    issuer_problem = issuer_unusable(s)
    if issuer_problem is not None:
        violation = first_violation(s, CA_INDEPENDENT_CHECKS)
        if violation is None:
            # The Secret is still fine; nothing can be renewed until the issuer is back.
            return Plan(Action.BLOCKED, issuer_problem, next_check=renew_at, renewal_time=renew_at)
        retry_at = _retry_at(s)
        if retry_at is not None:
            return Plan(Action.WAIT, issuer_problem, next_check=retry_at, renewal_time=renew_at)
        return Plan(Action.FAIL, issuer_problem, renewal_time=renew_at)
    unsupported = additional_key_unsupported(s)
    if unsupported is not None:
        return Plan(Action.BLOCKED, unsupported, next_check=renew_at, renewal_time=renew_at)
    violation = first_violation(s, ISSUANCE_CHECKS)
    if violation is None:
        assert s.secret.facts is not None
        candidates = [t for t in (renew_at, s.secret.facts.leaf.not_after) if t is not None]
        return Plan(Action.NOTHING, None, next_check=min(candidates), renewal_time=renew_at)
    # Failed issuance backs off; an issuer that came back (a different last reason) retries at once.
    if s.last_failure_reason is Reason.ISSUANCE_FAILED:
        retry_at = _retry_at(s)
        if retry_at is not None:
            return Plan(Action.WAIT, violation, next_check=retry_at, renewal_time=renew_at)
    if s.budget_retry_at is not None and s.now < s.budget_retry_at:
        return Plan(
            Action.WAIT,
            Violation(
                Reason.ISSUANCE_BUDGET_EXCEEDED,
                f"{violation.message} The certificate was issued too often lately (a second writer, or a "
                "spec that cannot renew sanely?), so the next issuance waits.",
            ),
            next_check=s.budget_retry_at,
            renewal_time=renew_at,
        )
    if violation == trust_anchors_changed(s) and not (s.spec and s.spec.pkcs12.create):
        # Only ca.crt is stale (the last check): rewrite it, keep the certificate and key.
        return Plan(Action.REFRESH_TRUST, violation, renewal_time=renew_at)
    return replace(
        Plan(
            Action.ISSUE,
            violation,
            reuse_key=can_reuse_key(s),
            reuse_additional=reusable_additional_keys(s),
            renewal_time=renew_at,
        ),
        revoke_serial=_serial_to_revoke(s, violation),
        fulfils_renew=s.renew_request,
        fulfils_revoke=s.revoke_request,
    )


def _serial_to_revoke(s: CertificateInput, violation: Violation) -> str | None:
    """The serial to revoke before issuing: the current one, when revocation was requested for it."""
    f = s.secret.facts
    if f is None or violation.reason is not Reason.REVOKED or s.revoke_request is None:
        return None
    return None if s.revoke_request == s.secret.fulfilled_revoke else f.leaf.serial_number
