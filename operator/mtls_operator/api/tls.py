"""Plain-data facts about TLS material, produced by ``pki`` and judged by ``policy``.

``policy`` may not import ``cryptography``; it decides from these frozen values instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from mtls_operator.api.errors import CAError, TLSMaterialError
from mtls_operator.api.models import KeyAlgorithm, KeyEncoding, Usage

__all__ = [
    "AdditionalFacts",
    "CAError",
    "CAFacts",
    "CertFacts",
    "SecretFacts",
    "TLSMaterialError",
    "effective_usages",
]


@dataclass(frozen=True, slots=True)
class CertFacts:
    """What a certificate says, in comparable form (names sorted, IPs normalised)."""

    serial_number: str  # lower-case hex, no separators
    fingerprint: str  # sha256 of the DER, lower-case hex
    not_before: datetime
    not_after: datetime
    common_name: str | None
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    uris: tuple[str, ...]
    email_addresses: tuple[str, ...]
    usages: frozenset[Usage]  # extended usages plus "digital signature"/"key encipherment" from KU
    is_ca: bool
    key_algorithm: KeyAlgorithm
    key_size: int  # RSA bits, ECDSA curve bits, ML-DSA parameter set (44/65/87), 0 for Ed25519
    issuer_fingerprint: str | None  # sha256 of the CA certificate whose signature verified, if one did


@dataclass(frozen=True, slots=True)
class AdditionalFacts:
    """One additional key pair of a Secret (tls-<algorithm>.crt and .key), judged against the issuer's CA
    of that algorithm."""

    algorithm: KeyAlgorithm  # the algorithm its data keys name (tls-ecdsa.* -> ECDSA)
    leaf: CertFacts
    key_matches: bool  # tls-<algorithm>.key is the private key of the tls-<algorithm>.crt leaf
    key_encoding: KeyEncoding  # PKCS1 for a traditional RSA/EC PEM, else PKCS8
    signed_by_current_ca: bool  # the leaf verifies under the issuer's current CA of this algorithm
    chain_complete: bool  # tls-<algorithm>.crt carries that CA's intermediates after the leaf


@dataclass(frozen=True, slots=True)
class SecretFacts:
    """The verdict on one ``kubernetes.io/tls`` Secret's data, checked against the issuer's CA."""

    leaf: CertFacts
    key_matches: bool  # tls.key is the private key of the tls.crt leaf
    signed_by_current_ca: bool  # the leaf verifies under the issuer's current CA certificate
    ca_bundle_matches: bool  # ca.crt holds the issuer's root certificate
    chain_complete: bool  # tls.crt carries the issuer's intermediates after the leaf
    has_keystores: bool  # keystore.p12 and truststore.p12 are present
    ca_bundle_fingerprints: frozenset[str] = frozenset()  # sha256 of every certificate in ca.crt
    additional: tuple[AdditionalFacts, ...] = ()  # the additional key pairs the Secret holds

    def additional_for(self, algorithm: KeyAlgorithm) -> AdditionalFacts | None:
        return next((a for a in self.additional if a.algorithm is algorithm), None)


@dataclass(frozen=True, slots=True)
class CAFacts:
    """What the issuer's CA is, for status and for judging leaves."""

    fingerprint: str
    not_before: datetime
    not_after: datetime
    subject: str  # RFC 4514
    key_algorithm: KeyAlgorithm
    key_size: int
    root_fingerprint: str  # the trust anchor (same as fingerprint for a self-signed root)


def effective_usages(usages: Iterable[Usage], key_algorithm: KeyAlgorithm) -> frozenset[Usage]:
    """The usages a certificate issued for ``usages`` and a ``key_algorithm`` key actually carries.

    ``pki`` signs exactly this set and ``policy`` compares :attr:`CertFacts.usages` against it, so the two
    cannot disagree: "digital signature" is always present, "key encipherment" only for RSA keys (it is
    meaningless for ECDSA, Ed25519 and ML-DSA, and is dropped even when the spec asks for it).
    """
    out = {*usages, Usage.DIGITAL_SIGNATURE}
    if key_algorithm is KeyAlgorithm.RSA:
        out.add(Usage.KEY_ENCIPHERMENT)
    else:
        out.discard(Usage.KEY_ENCIPHERMENT)
    return frozenset(out)
