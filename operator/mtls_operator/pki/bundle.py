"""Trust bundles: the set of trust anchors (CA certificates) consumers load, as PEM and as a Java truststore.

During a CA rotation the bundle holds the old and the new root. The content is a function of the *set* of
anchors: duplicates are dropped and the order is fixed (oldest notBefore first, then by fingerprint), so
publishing the same anchors again writes the same bytes, and the consumers' restart stamp (a hash of the
bundle) does not change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import PrivateFormat, pkcs12

from mtls_operator.api.constants import Reason
from mtls_operator.api.tls import TLSMaterialError
from mtls_operator.pki.certs import READ_ERRORS, certificates_to_pem
from mtls_operator.pki.fingerprints import certificate_fingerprint
from mtls_operator.pki.pkcs12 import KDF_ROUNDS


def bundle_anchors(anchors: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """``anchors`` without duplicates, oldest first (ties by SHA-256 fingerprint). Raises
    :class:`TLSMaterialError` (``INVALID_SPEC``) for an empty bundle or a certificate that is not a CA."""
    if not anchors:
        raise TLSMaterialError("A trust bundle needs at least one CA certificate.", Reason.INVALID_SPEC)
    unique = {certificate_fingerprint(c): c for c in anchors}
    for fingerprint, cert in unique.items():
        if not _is_ca(cert):
            raise TLSMaterialError(
                f"Certificate {cert.subject.rfc4514_string()!r} (sha256 {fingerprint[:16]}...) is not a CA "
                "certificate and cannot be a trust anchor.",
                Reason.INVALID_SPEC,
            )
    ordered = sorted(unique.items(), key=lambda item: (item[1].not_valid_before_utc, item[0]))
    return [cert for _, cert in ordered]


def bundle_pem(anchors: Sequence[x509.Certificate]) -> bytes:
    """The PEM trust bundle (what ``ca.crt`` of a trust-bundle ConfigMap holds)."""
    return certificates_to_pem(bundle_anchors(anchors))


def bundle_pkcs12_truststore(anchors: Sequence[x509.Certificate], password: bytes) -> bytes:
    """A Java-readable PKCS#12 truststore of the anchors, each a trusted-certificate entry whose alias is
    ``ca-`` and the first 16 hex digits of its fingerprint (stable across rotations), encrypted like the
    certificate keystores (PBES2, AES-256-CBC, PBKDF2 50,000 rounds, HMAC-SHA256)."""
    if not password:
        raise TLSMaterialError(
            "The truststore password is empty: point passwordSecretRef at a non-empty password.",
            Reason.INVALID_SPEC,
        )
    entries = [
        pkcs12.PKCS12Certificate(cert, f"ca-{certificate_fingerprint(cert)[:16]}".encode())
        for cert in bundle_anchors(anchors)
    ]
    encryption = (
        PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(KDF_ROUNDS)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(password)
    )
    return pkcs12.serialize_java_truststore(entries, encryption)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False
    except READ_ERRORS:
        return False


@dataclass(frozen=True)
class Anchors:
    """A set of trust anchors: the certificates, their PEM bundle and their fingerprints."""

    certificates: tuple[x509.Certificate, ...]
    pem: bytes
    fingerprints: frozenset[str]

    def __or__(self, other: Anchors) -> Anchors:
        return anchors_of([*self.certificates, *other.certificates])


def anchors_of(certificates: Sequence[x509.Certificate]) -> Anchors:
    """The anchors ``certificates`` make (deduplicated, in :func:`bundle_anchors` order)."""
    ordered = bundle_anchors(certificates)
    return Anchors(
        tuple(ordered), certificates_to_pem(ordered), frozenset(certificate_fingerprint(c) for c in ordered)
    )
