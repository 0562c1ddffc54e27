"""The checks of ``spec.additionalPrivateKeys``: each extra key pair of another algorithm that the Secret
holds as ``tls-<algorithm>.crt/.key`` must exist, match its certificate and the spec, be the same identity
as ``tls.crt`` and be signed by the issuer's CA of its algorithm. :mod:`mtls_operator.policy.certificate`
orders them among the other checks; like those, each returns a :class:`Violation` or None.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from mtls_operator.api.constants import CLUSTER_ISSUER_KIND, Reason, additional_secret_keys
from mtls_operator.api.errors import Violation
from mtls_operator.api.models import EXTENDED_USAGES, KeyAlgorithm, KeySpec
from mtls_operator.api.tls import AdditionalFacts, CertFacts

if TYPE_CHECKING:  # certificate.py imports the checks to order them
    from mtls_operator.policy.certificate import CertificateInput


def additional_pairs(s: CertificateInput) -> list[tuple[KeySpec, AdditionalFacts | None]]:
    """Each additional key the spec asks for, with the pair the Secret holds for its algorithm (if any).
    Pairs the spec no longer asks for are not judged: they stay until the next issuance drops them."""
    f, spec = s.secret.facts, s.spec
    if f is None or spec is None:
        return []
    return [(k, f.additional_for(k.algorithm)) for k in spec.additional_private_keys]


def _files(algorithm: KeyAlgorithm) -> str:
    return "/".join(additional_secret_keys(algorithm))


def additional_key_missing(s: CertificateInput) -> Violation | None:
    for key, pair in additional_pairs(s):
        if pair is None:
            return Violation(
                Reason.ADDITIONAL_KEY_MISSING,
                f"The Secret holds no {key.label} key pair ({_files(key.algorithm)}), which "
                "spec.additionalPrivateKeys asks for.",
            )
    return None


def additional_key_mismatch(s: CertificateInput) -> Violation | None:
    for key, pair in additional_pairs(s):
        if pair is not None and not pair.key_matches:
            crt, tls_key = additional_secret_keys(key.algorithm)
            return Violation(
                Reason.ADDITIONAL_KEY_MISMATCH,
                f"{tls_key} is not the private key of the certificate in {crt}.",
            )
    return None


def additional_key_spec_changed(s: CertificateInput) -> Violation | None:
    for key, pair in additional_pairs(s):
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
    for key, pair in additional_pairs(s):
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
    for key, pair in additional_pairs(s):
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
