"""Typed, frozen views of MTLSIssuer and MTLSCertificate specs: the enums, defaults and limits of their
fields and the dataclasses the parsers build (:mod:`mtls_operator.api.certificate_spec`,
:mod:`mtls_operator.api.issuer_spec`). Nothing past the parsers sees a raw dict.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum

from mtls_operator.api.constants import ISSUER_KIND
from mtls_operator.api.errors import SpecError as SpecError


class KeyAlgorithm(StrEnum):
    RSA = "RSA"
    ECDSA = "ECDSA"
    ED25519 = "Ed25519"
    MLDSA = "MLDSA"


class RotationPolicy(StrEnum):
    ALWAYS = "Always"
    NEVER = "Never"


class KeyEncoding(StrEnum):
    PKCS1 = "PKCS1"  # "traditional" PEM: PKCS#1 for RSA, SEC1 for ECDSA; PKCS#8 for the others
    PKCS8 = "PKCS8"


class CleanupPolicy(StrEnum):
    RETAIN = "Retain"
    DELETE = "Delete"


class RolloutPolicy(StrEnum):
    AUTO = "Auto"  # discovered consumers plus explicit targets
    EXPLICIT = "Explicit"  # explicit targets only
    NONE = "None"


class Usage(StrEnum):
    """cert-manager's usage names."""

    SERVER_AUTH = "server auth"
    CLIENT_AUTH = "client auth"
    DIGITAL_SIGNATURE = "digital signature"
    KEY_ENCIPHERMENT = "key encipherment"
    CODE_SIGNING = "code signing"
    EMAIL_PROTECTION = "email protection"
    OCSP_SIGNING = "ocsp signing"


EXTENDED_USAGES = frozenset(
    {Usage.SERVER_AUTH, Usage.CLIENT_AUTH, Usage.CODE_SIGNING, Usage.EMAIL_PROTECTION, Usage.OCSP_SIGNING}
)
DEFAULT_USAGES: tuple[Usage, ...] = (Usage.SERVER_AUTH, Usage.CLIENT_AUTH)

ALLOWED_SIZES: Mapping[KeyAlgorithm, tuple[int, ...]] = {
    KeyAlgorithm.RSA: (2048, 3072, 4096),
    KeyAlgorithm.ECDSA: (256, 384, 521),
    KeyAlgorithm.ED25519: (),
    KeyAlgorithm.MLDSA: (44, 65, 87),
}
DEFAULT_SIZES: Mapping[KeyAlgorithm, int] = {
    KeyAlgorithm.RSA: 2048,
    KeyAlgorithm.ECDSA: 256,
    KeyAlgorithm.ED25519: 0,
    KeyAlgorithm.MLDSA: 44,
}

DEFAULT_CERT_DURATION = timedelta(days=90)
DEFAULT_CA_DURATION = timedelta(days=3650)
MIN_DURATION = timedelta(minutes=1)
MIN_RENEW_BEFORE = timedelta(seconds=5)
RESERVED_KEY_PREFIX = "mtls.dev/"  # labels and annotations the operator writes and reads for ownership
MAX_RENEW_PERCENTAGE = 90  # renewBefore at most 90 % of the duration: see policy.renewal's floor too
MAX_RENEW_FRACTION = MAX_RENEW_PERCENTAGE / 100


@dataclass(frozen=True, slots=True)
class KeySpec:
    algorithm: KeyAlgorithm = KeyAlgorithm.ECDSA
    size: int = 256
    rotation_policy: RotationPolicy = RotationPolicy.ALWAYS
    encoding: KeyEncoding = KeyEncoding.PKCS8

    @property
    def label(self) -> str:
        """A short human name, e.g. ``ECDSA-P256``, ``ML-DSA-65``, ``RSA-2048``, ``Ed25519``."""
        if self.algorithm is KeyAlgorithm.ECDSA:
            return f"ECDSA-P{self.size}"
        if self.algorithm is KeyAlgorithm.MLDSA:
            return f"ML-DSA-{self.size}"
        if self.algorithm is KeyAlgorithm.RSA:
            return f"RSA-{self.size}"
        return "Ed25519"

    @property
    def effective_encoding(self) -> KeyEncoding:
        """The encoding the key is written in: PKCS1 only for RSA and ECDSA (the others have no
        traditional form and are always PKCS#8)."""
        if self.algorithm in (KeyAlgorithm.RSA, KeyAlgorithm.ECDSA):
            return self.encoding
        return KeyEncoding.PKCS8


# spec.additionalPrivateKeys: at most one extra key pair per algorithm (three next to the main key).
MAX_ADDITIONAL_KEYS = 3


@dataclass(frozen=True, slots=True)
class Subject:
    organizations: tuple[str, ...] = ()
    organizational_units: tuple[str, ...] = ()
    countries: tuple[str, ...] = ()
    provinces: tuple[str, ...] = ()
    localities: tuple[str, ...] = ()
    street_addresses: tuple[str, ...] = ()
    postal_codes: tuple[str, ...] = ()
    serial_number: str | None = None


@dataclass(frozen=True, slots=True)
class IssuerRef:
    name: str
    kind: str = ISSUER_KIND


@dataclass(frozen=True, slots=True)
class SecretKeyRef:
    name: str
    key: str = "password"


@dataclass(frozen=True, slots=True)
class PKCS12Spec:
    create: bool = False
    password_secret_ref: SecretKeyRef | None = None


@dataclass(frozen=True, slots=True)
class SecretTemplate:
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class WorkloadRef:
    kind: str  # Deployment | StatefulSet | DaemonSet
    name: str


@dataclass(frozen=True, slots=True)
class RolloutSpec:
    policy: RolloutPolicy = RolloutPolicy.AUTO
    targets: tuple[WorkloadRef, ...] = ()


@dataclass(frozen=True, slots=True)
class CertificateSpec:
    secret_name: str
    issuer_ref: IssuerRef
    common_name: str | None = None
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()
    email_addresses: tuple[str, ...] = ()
    subject: Subject = field(default_factory=Subject)
    usages: tuple[Usage, ...] = DEFAULT_USAGES
    duration: timedelta = DEFAULT_CERT_DURATION
    renew_before: timedelta | None = None
    renew_before_percentage: int | None = None
    private_key: KeySpec = field(default_factory=KeySpec)
    secret_template: SecretTemplate = field(default_factory=SecretTemplate)
    pkcs12: PKCS12Spec = field(default_factory=PKCS12Spec)
    cleanup_policy: CleanupPolicy = CleanupPolicy.RETAIN
    rollout: RolloutSpec = field(default_factory=RolloutSpec)
    # More key pairs of the same identity (names, usages, lifetime), each of another algorithm, issued and
    # rotated together with the main one into tls-<algorithm>.crt/.key of the same Secret.
    additional_private_keys: tuple[KeySpec, ...] = ()

    @property
    def key_specs(self) -> tuple[KeySpec, ...]:
        """The main key, then the additional ones."""
        return (self.private_key, *self.additional_private_keys)

    def identity_hash(self) -> str:
        """A digest of everything that the issued certificate must reflect (names, usages, duration,
        key algorithm and size, issuer). Stored on the Secret so a spec change is seen at once."""
        doc = {
            "cn": self.common_name,
            "dns": sorted(self.dns_names),
            "ip": sorted(self.ip_addresses),
            "uri": sorted(self.uris),
            "email": sorted(self.email_addresses),
            "subject": [
                list(getattr(self.subject, f))
                if isinstance(getattr(self.subject, f), tuple)
                else getattr(self.subject, f)
                for f in Subject.__slots__
            ],
            "usages": sorted(str(u) for u in self.usages),
            "duration": int(self.duration.total_seconds()),
            "key": [str(self.private_key.algorithm), self.private_key.size, str(self.private_key.encoding)],
            "issuer": [self.issuer_ref.kind, self.issuer_ref.name],
            "p12": self.pkcs12.create,
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class SelfSignedCASpec:
    """A CA the operator creates and keeps (a self-signed root, or an intermediate's own CA)."""

    secret_name: str
    common_name: str
    subject: Subject = field(default_factory=Subject)
    duration: timedelta = DEFAULT_CA_DURATION
    private_key: KeySpec = field(default_factory=KeySpec)
    renew_before: timedelta | None = None  # start a CA rotation this long before the CA expires
    # A dual CA: one more self-signed CA per key (same subject, the algorithm in the common name), kept in
    # the same Secret as tls-<algorithm>.crt/.key; it signs certificates' additional keys of its algorithm.
    additional_private_keys: tuple[KeySpec, ...] = ()


@dataclass(frozen=True, slots=True)
class CASecretSpec:
    secret_name: str


@dataclass(frozen=True, slots=True)
class IntermediateSpec:
    """``spec.intermediate``: an intermediate CA the operator creates and keeps, signed by another
    MTLSIssuer of the same namespace (the parent)."""

    parent: str
    ca: SelfSignedCASpec  # secret name, common name, subject, duration, key of the intermediate
    parent_kind: str = ISSUER_KIND
    path_length: int | None = None
    permitted_dns: tuple[str, ...] = ()
    excluded_dns: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class IssuerSpec:
    self_signed: SelfSignedCASpec | None = None
    ca: CASecretSpec | None = None
    intermediate: IntermediateSpec | None = None

    @property
    def ca_secret_name(self) -> str:
        if self.self_signed is not None:
            return self.self_signed.secret_name
        if self.intermediate is not None:
            return self.intermediate.ca.secret_name
        assert self.ca is not None
        return self.ca.secret_name

    @property
    def managed_ca(self) -> SelfSignedCASpec | None:
        """The CA the operator creates and keeps for this issuer (None for a ``ca`` issuer)."""
        if self.self_signed is not None:
            return self.self_signed
        return self.intermediate.ca if self.intermediate is not None else None

    @property
    def kind(self) -> str:
        if self.self_signed is not None:
            return "SelfSigned"
        return "Intermediate" if self.intermediate is not None else "CA"
