"""Pure decisions for one MTLSCertificate: is it blocked, does it need issuing, and when to look again.

Gathered state goes in (:class:`CertificateInput`, time included); a :class:`Plan` comes out. Each check is
named after the state it detects and returns a :class:`Violation` or None; the first violation wins, so
"why was this certificate re-issued?" is answered by the reason of the check that fired.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from mtls_operator.api.constants import CLUSTER_ISSUER_KIND, Reason
from mtls_operator.api.errors import Violation as Violation
from mtls_operator.api.models import EXTENDED_USAGES, CertificateSpec, KeyAlgorithm, RotationPolicy
from mtls_operator.api.tls import CAFacts, SecretFacts
from mtls_operator.policy import backoff
from mtls_operator.policy.renewal import renewal_time


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
    next_check: datetime | None = None
    renewal_time: datetime | None = None
    revoke_serial: str | None = None  # revoke this serial (durably) before issuing its replacement
    fulfils_renew: str | None = None  # the renew request token the issuance fulfils
    fulfils_revoke: str | None = None  # the revoke request token the issuance fulfils


# --------------------------------------------------------------------------------------------------
# Blocking checks: nothing may be written while one of these holds.


def spec_invalid(s: CertificateInput) -> Violation | None:
    return s.spec_error


def secret_name_duplicated(s: CertificateInput) -> Violation | None:
    if not s.duplicates or s.spec is None:
        return None
    others = ", ".join(sorted(s.duplicates))
    return Violation(
        Reason.DUPLICATE_SECRET_NAME,
        f"Secret {s.spec.secret_name} is also named by MTLSCertificate {others}; "
        "each certificate needs its own secretName, so nothing is written until that is fixed.",
    )


def secret_not_managed(s: CertificateInput) -> Violation | None:
    if s.spec is None or not s.secret.exists or s.secret.owned:
        return None
    if s.secret.managed and s.secret.owner_certificate == s.name:
        owner = f"another MTLSCertificate named {s.name} (deleted since: the owner's UID differs)"
    elif s.secret.managed and s.secret.owner_certificate:
        owner = f"MTLSCertificate {s.secret.owner_certificate}"
    else:
        owner = "something other than mtls-operator"
    return Violation(
        Reason.SECRET_NOT_MANAGED,
        f"Secret {s.spec.secret_name} already exists and belongs to {owner}; the operator does not "
        "overwrite it. Delete it or choose another secretName.",
    )


def issuer_unusable(s: CertificateInput) -> Violation | None:
    if s.spec is None:
        return None
    ref = s.spec.issuer_ref
    named = (
        f"{ref.kind} {ref.name}"
        if ref.kind == CLUSTER_ISSUER_KIND
        else f"{ref.kind} {s.namespace}/{ref.name}"
    )
    if not s.issuer.found:
        return Violation(Reason.ISSUER_NOT_FOUND, f"{named} does not exist.")
    if not s.issuer.ready or s.issuer.ca is None:
        detail = f": {s.issuer.message}" if s.issuer.message else "."
        return Violation(Reason.ISSUER_NOT_READY, f"{named} is not ready{detail}")
    return None


def policy_denied(s: CertificateInput) -> Violation | None:
    return s.policy_violation


BLOCKING_CHECKS: Sequence[Callable[[CertificateInput], Violation | None]] = (
    spec_invalid,
    secret_name_duplicated,
    secret_not_managed,
    policy_denied,
)


# --------------------------------------------------------------------------------------------------
# Issuance checks: each names a reason to (re-)issue.


def secret_missing(s: CertificateInput) -> Violation | None:
    if s.secret.exists:
        return None
    assert s.spec is not None
    if s.secret.revision == 0 and s.failed_attempts == 0:
        return Violation(
            Reason.DOES_NOT_EXIST, f"Issuing a first certificate into Secret {s.spec.secret_name}."
        )
    return Violation(Reason.SECRET_MISSING, f"Secret {s.spec.secret_name} does not exist; re-issuing.")


def secret_unreadable(s: CertificateInput) -> Violation | None:
    return s.secret.error if s.secret.facts is None else None


def key_mismatch(s: CertificateInput) -> Violation | None:
    f = s.secret.facts
    if f is None or f.key_matches:
        return None
    return Violation(Reason.KEY_MISMATCH, "tls.key is not the private key of the certificate in tls.crt.")


def key_spec_changed(s: CertificateInput) -> Violation | None:
    f, spec = s.secret.facts, s.spec
    assert spec is not None
    if f is None:
        return None
    want = (spec.private_key.algorithm, spec.private_key.size)
    have = (f.leaf.key_algorithm, f.leaf.key_size)
    if want == have:
        return None
    return Violation(
        Reason.KEY_SPEC_CHANGED,
        f"The certificate holds a {have[0]} {have[1] or ''} key "
        f"but the spec asks for {spec.private_key.label}.",
    )


def names_changed(s: CertificateInput) -> Violation | None:
    f, spec = s.secret.facts, s.spec
    assert spec is not None
    if f is None:
        return None
    leaf = f.leaf
    pairs = (
        ("commonName", leaf.common_name, spec.common_name),
        ("dnsNames", leaf.dns_names, tuple(sorted(spec.dns_names))),
        ("ipAddresses", leaf.ip_addresses, tuple(sorted(spec.ip_addresses))),
        ("uris", leaf.uris, tuple(sorted(spec.uris))),
        ("emailAddresses", leaf.email_addresses, tuple(sorted(spec.email_addresses))),
    )
    for what, have, want in pairs:
        if have != want:
            return Violation(
                Reason.NAMES_MISMATCH, f"The certificate's {what} {have!r} do not match the spec's {want!r}."
            )
    return None


def usages_changed(s: CertificateInput) -> Violation | None:
    f, spec = s.secret.facts, s.spec
    assert spec is not None
    if f is None:
        return None
    want = {u for u in spec.usages if u in EXTENDED_USAGES}
    have = {u for u in f.leaf.usages if u in EXTENDED_USAGES}
    if want == have:
        return None
    return Violation(
        Reason.USAGES_MISMATCH,
        f"The certificate's usages {sorted(have)} do not match the spec's {sorted(want)}.",
    )


def spec_hash_changed(s: CertificateInput) -> Violation | None:
    spec = s.spec
    assert spec is not None
    if s.secret.facts is None or s.secret.spec_hash == spec.identity_hash():
        return None
    return Violation(
        Reason.SPEC_CHANGED,
        "The spec changed since the certificate was issued (subject, duration or keystores).",
    )


def issuer_changed(s: CertificateInput) -> Violation | None:
    f = s.secret.facts
    if f is None or f.signed_by_current_ca:
        return None
    ca = s.issuer.ca
    fp = ca.fingerprint[:16] if ca else "unknown"
    return Violation(
        Reason.ISSUER_CHANGED,
        f"The certificate was not issued by the issuer's current CA (sha256 {fp}...).",
    )


def ca_bundle_mismatch(s: CertificateInput) -> Violation | None:
    f = s.secret.facts
    if f is None:
        return None
    if not f.ca_bundle_matches:
        return Violation(
            Reason.CA_BUNDLE_MISMATCH, "ca.crt is missing or does not hold the issuer's root CA."
        )
    if not f.chain_complete:
        return Violation(Reason.CA_BUNDLE_MISMATCH, "tls.crt lacks the issuer's intermediate certificates.")
    return None


def trust_anchors_changed(s: CertificateInput) -> Violation | None:
    """ca.crt must hold exactly the issuer's trust anchors: both roots during a CA rotation's overlap,
    only the new one after it."""
    f = s.secret.facts
    if f is None or not s.issuer.anchors or f.ca_bundle_fingerprints == s.issuer.anchors:
        return None
    count = len(s.issuer.anchors)
    return Violation(
        Reason.CA_BUNDLE_MISMATCH,
        f"ca.crt does not hold exactly the issuer's {count} trust anchor{'s' if count > 1 else ''}"
        f"{' (a CA rotation is in progress)' if count > 1 else ''}.",
    )


def keystore_missing(s: CertificateInput) -> Violation | None:
    f, spec = s.secret.facts, s.spec
    assert spec is not None
    if f is None or not spec.pkcs12.create or f.has_keystores:
        return None
    return Violation(Reason.KEYSTORE_MISSING, "keystore.p12 or truststore.p12 is missing.")


def serial_revoked(s: CertificateInput) -> Violation | None:
    f = s.secret.facts
    if f is None:
        return None
    if s.revoke_request is not None and s.revoke_request != s.secret.fulfilled_revoke:
        return Violation(
            Reason.REVOKED,
            f"Revocation of serial {f.leaf.serial_number} was requested ({s.revoke_request}); revoking it "
            "and issuing a new key.",
        )
    if not s.revoked:
        return None
    return Violation(
        Reason.REVOKED, f"The certificate with serial {f.leaf.serial_number} was revoked; issuing a new key."
    )


def expired(s: CertificateInput) -> Violation | None:
    f = s.secret.facts
    if f is None or s.now < f.leaf.not_after:
        return None
    return Violation(Reason.EXPIRED, f"The certificate expired at {f.leaf.not_after.isoformat()}.")


def manual_renewal(s: CertificateInput) -> Violation | None:
    if s.secret.facts is None or s.renew_request is None or s.renew_request == s.secret.fulfilled_renew:
        return None
    return Violation(
        Reason.MANUAL_RENEWAL, f"Renewal was requested ({s.renew_request}, mtls.dev/renew-requested-at)."
    )


def renewal_due(s: CertificateInput) -> Violation | None:
    f = s.secret.facts
    if f is None:
        return None
    when = _renewal_time(s)
    if when is None or s.now < when:
        return None
    return Violation(Reason.RENEWAL_DUE, f"Renewal time {when.isoformat()} has come.")


ISSUANCE_CHECKS: Sequence[Callable[[CertificateInput], Violation | None]] = (
    secret_missing,
    secret_unreadable,
    key_mismatch,
    key_spec_changed,
    names_changed,
    usages_changed,
    spec_hash_changed,
    issuer_changed,
    ca_bundle_mismatch,
    keystore_missing,
    serial_revoked,
    expired,
    manual_renewal,
    renewal_due,
    trust_anchors_changed,  # last: any re-issue writes the right ca.crt too
)
# Without a usable CA the checks that compare against it cannot be judged.
CA_DEPENDENT_CHECKS = frozenset({issuer_changed, ca_bundle_mismatch, trust_anchors_changed})
CA_INDEPENDENT_CHECKS = tuple(c for c in ISSUANCE_CHECKS if c not in CA_DEPENDENT_CHECKS)


def _renewal_time(s: CertificateInput) -> datetime | None:
    f, spec = s.secret.facts, s.spec
    if f is None or spec is None:
        return None
    return renewal_of(spec, f, s.uid)


def renewal_of(spec: CertificateSpec, facts: SecretFacts, uid: str) -> datetime:
    """When the certificate in ``facts`` is renewed."""
    leaf = facts.leaf
    return renewal_time(leaf.not_before, leaf.not_after, spec.renew_before, spec.renew_before_percentage, uid)


def first_violation(
    s: CertificateInput, checks: Sequence[Callable[[CertificateInput], Violation | None]]
) -> Violation | None:
    for check in checks:
        found = check(s)
        if found is not None:
            return found
    return None


def can_reuse_key(s: CertificateInput) -> bool:
    """rotationPolicy Never keeps a key that still matches its certificate and the spec."""
    f, spec = s.secret.facts, s.spec
    if f is None or spec is None or spec.private_key.rotation_policy is not RotationPolicy.NEVER or s.revoked:
        return False
    if s.revoke_request is not None and s.revoke_request != s.secret.fulfilled_revoke:
        return False
    return f.key_matches and (f.leaf.key_algorithm, f.leaf.key_size) == (
        spec.private_key.algorithm,
        spec.private_key.size,
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
    renew_at = _renewal_time(s)
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
        Plan(Action.ISSUE, violation, reuse_key=can_reuse_key(s), renewal_time=renew_at),
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
