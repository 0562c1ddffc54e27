"""The named checks of one MTLSCertificate (:mod:`mtls_operator.policy.certificate` orders them and plans):
those that block any write, those that name a reason to (re-)issue the certificate of ``tls.crt``, and when
its renewal is due. Each takes the gathered :class:`CertificateInput` and returns a :class:`Violation`
whose reason is the check's name, or None.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from mtls_operator.api.constants import CLUSTER_ISSUER_KIND, Reason
from mtls_operator.api.errors import Violation
from mtls_operator.api.models import EXTENDED_USAGES, CertificateSpec
from mtls_operator.api.tls import SecretFacts
from mtls_operator.policy.renewal import renewal_time

if TYPE_CHECKING:  # certificate.py imports the checks to order them
    from mtls_operator.policy.certificate import CertificateInput

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
    when = renewal_time_of(s)
    if when is None or s.now < when:
        return None
    return Violation(Reason.RENEWAL_DUE, f"Renewal time {when.isoformat()} has come.")


def renewal_time_of(s: CertificateInput) -> datetime | None:
    f, spec = s.secret.facts, s.spec
    if f is None or spec is None:
        return None
    return renewal_of(spec, f, s.uid)


def renewal_of(spec: CertificateSpec, facts: SecretFacts, uid: str) -> datetime:
    """When the certificate in ``facts`` is renewed."""
    leaf = facts.leaf
    return renewal_time(leaf.not_before, leaf.not_after, spec.renew_before, spec.renew_before_percentage, uid)
