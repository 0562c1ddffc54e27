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

from mtls_operator.api.constants import CLUSTER_ISSUER_KIND, Reason, additional_secret_keys
from mtls_operator.api.errors import Violation as Violation
from mtls_operator.api.models import EXTENDED_USAGES, CertificateSpec, KeyAlgorithm, KeySpec, RotationPolicy
from mtls_operator.api.tls import AdditionalFacts, CAFacts, CertFacts, SecretFacts
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


def _pairs(s: CertificateInput) -> list[tuple[KeySpec, AdditionalFacts | None]]:
    """Each additional key the spec asks for, with the pair the Secret holds for its algorithm (if any).
    Pairs the spec no longer asks for are not judged: they stay until the next issuance drops them."""
    f, spec = s.secret.facts, s.spec
    if f is None or spec is None:
        return []
    return [(k, f.additional_for(k.algorithm)) for k in spec.additional_private_keys]


def _files(algorithm: KeyAlgorithm) -> str:
    return "/".join(additional_secret_keys(algorithm))


def additional_key_missing(s: CertificateInput) -> Violation | None:
    for key, pair in _pairs(s):
        if pair is None:
            return Violation(
                Reason.ADDITIONAL_KEY_MISSING,
                f"The Secret holds no {key.label} key pair ({_files(key.algorithm)}), which "
                "spec.additionalPrivateKeys asks for.",
            )
    return None


def additional_key_mismatch(s: CertificateInput) -> Violation | None:
    for key, pair in _pairs(s):
        if pair is not None and not pair.key_matches:
            crt, tls_key = additional_secret_keys(key.algorithm)
            return Violation(
                Reason.ADDITIONAL_KEY_MISMATCH,
                f"{tls_key} is not the private key of the certificate in {crt}.",
            )
    return None


def additional_key_spec_changed(s: CertificateInput) -> Violation | None:
    for key, pair in _pairs(s):
        if pair is None:
            continue
        crt, tls_key = additional_secret_keys(key.algorithm)
        have = (pair.leaf.key_algorithm, pair.leaf.key_size)
        if have != (key.algorithm, key.size):
            return Violation(
                Reason.KEY_SPEC_CHANGED,
                f"{crt} holds a {have[0]} {have[1] or ''} key but spec.additionalPrivateKeys asks for "
                f"{key.label}.",
            )
        if pair.key_encoding is not key.effective_encoding:
            return Violation(
                Reason.KEY_SPEC_CHANGED,
                f"{tls_key} is encoded as {pair.key_encoding} but spec.additionalPrivateKeys asks for "
                f"{key.effective_encoding}.",
            )
    return None


def _identity_difference(main: CertFacts, other: CertFacts) -> str | None:
    """What makes ``other`` not the same identity as ``main``: names, extended usages or validity (to the
    second), or None."""
    for what, have, want in (
        ("commonName", other.common_name, main.common_name),
        ("dnsNames", other.dns_names, main.dns_names),
        ("ipAddresses", other.ip_addresses, main.ip_addresses),
        ("uris", other.uris, main.uris),
        ("emailAddresses", other.email_addresses, main.email_addresses),
        ("usages", sorted(other.usages & EXTENDED_USAGES), sorted(main.usages & EXTENDED_USAGES)),
    ):
        if have != want:
            return f"its {what} {have!r} differ from {want!r}"
    second = timedelta(seconds=1)
    for what, have_t, want_t in (
        ("notBefore", other.not_before, main.not_before),
        ("notAfter", other.not_after, main.not_after),
    ):
        if abs(have_t - want_t) > second:
            return f"its {what} {have_t.isoformat()} differs from {want_t.isoformat()}"
    return None


def additional_cert_differs(s: CertificateInput) -> Violation | None:
    """An additional certificate is the same identity as tls.crt: same names, usages and lifetime."""
    f = s.secret.facts
    for key, pair in _pairs(s):
        if f is None or pair is None:
            continue
        difference = _identity_difference(f.leaf, pair.leaf)
        if difference is not None:
            crt, _ = additional_secret_keys(key.algorithm)
            return Violation(
                Reason.ADDITIONAL_CERT_MISMATCH, f"{crt} is not the same identity as tls.crt: {difference}."
            )
    return None


def additional_issuer_changed(s: CertificateInput) -> Violation | None:
    for key, pair in _pairs(s):
        if pair is None:
            continue
        crt, _ = additional_secret_keys(key.algorithm)
        if not pair.signed_by_current_ca:
            return Violation(
                Reason.ISSUER_CHANGED, f"{crt} was not issued by the issuer's current {key.algorithm} CA."
            )
        if not pair.chain_complete:
            return Violation(
                Reason.CA_BUNDLE_MISMATCH,
                f"{crt} lacks the intermediates of the issuer's {key.algorithm} CA.",
            )
    return None


def additional_key_unsupported(s: CertificateInput) -> Violation | None:
    """The spec asks for an additional key of an algorithm the issuer holds no CA of."""
    if s.spec is None or s.issuer.ca is None:
        return None
    have = s.issuer.algorithms
    missing = [k for k in s.spec.additional_private_keys if k.algorithm not in have]
    if not missing:
        return None
    ref = s.spec.issuer_ref
    named = ref.name if ref.kind == CLUSTER_ISSUER_KIND else f"{s.namespace}/{ref.name}"
    wanted = ", ".join(str(k.algorithm) for k in missing)
    return Violation(
        Reason.ADDITIONAL_KEY_UNSUPPORTED,
        f"spec.additionalPrivateKeys asks for {wanted}, but {ref.kind} {named} holds no {wanted} CA (it "
        f"signs {', '.join(sorted(str(a) for a in have))}); nothing is issued until the issuer has one "
        "(a dual issuer: spec.selfSigned.additionalPrivateKeys, or tls-<algorithm>.crt/.key in its CA "
        "Secret) or the key is removed.",
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
        for key, pair in _pairs(s)
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
