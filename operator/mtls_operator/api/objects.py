"""Watched objects, parsed once at intake into frozen values: nothing after intake reads a raw body.

An MTLSCertificate becomes a :class:`ParsedCertificate` and an MTLSIssuer a :class:`ParsedIssuer`: their
metadata, their spec (or the reason it cannot be used), the user requests set as annotations, and the
status the operator last wrote. Status values keep what the next status document is compared against, so
an unchanged status is never written again. This module holds the values and the names derived from them;
:mod:`mtls_operator.api.object_parsers` builds them from a watch event's body, one parser a field.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from mtls_operator.api.conditions import Condition, as_list, rfc3339
from mtls_operator.api.constants import CLUSTER_ISSUER_KIND, ISSUER_KIND, SIGNER_DOMAIN
from mtls_operator.api.errors import Violation
from mtls_operator.api.issuer_policy import IssuerPolicy, SpiffeSpec
from mtls_operator.api.models import CertificateSpec, IssuerSpec
from mtls_operator.api.rotation import RotationState, to_status
from mtls_operator.api.trust_lifecycle import RevocationPolicy, RevocationSpec, TrustBundleSpec

Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    """The metadata decisions need."""

    namespace: str
    name: str
    uid: str = ""
    generation: int = 0
    resource_version: str = ""
    deleting: bool = False
    finalizers: tuple[str, ...] = ()
    # (namespace, name), made once: the stores give a new version of an object its predecessor's, so
    # every structure keyed by a certificate holds one tuple, not one each (10k times over).
    key: Key = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", (self.namespace, self.name))


# ---------------------------------------------------------------------------------------------------------
# MTLSCertificate


@dataclass(frozen=True, slots=True)
class RolloutRecord:
    """One workload restarted for a certificate fingerprint (status.rollouts)."""

    kind: str
    name: str
    fingerprint: str
    time: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "fingerprint": self.fingerprint, "time": self.time}


@dataclass(frozen=True, slots=True)
class AdditionalCertStatus:
    """One additional certificate of a dual certificate (status.additionalCertificates)."""

    algorithm: str  # e.g. ECDSA-P256
    secret_key: str  # the Secret data key of the certificate, e.g. tls-ecdsa.crt
    not_before: datetime | None = None
    not_after: datetime | None = None
    serial_number: str | None = None
    fingerprint: str | None = None

    def as_dict(self) -> dict[str, Any]:
        doc = {
            "algorithm": self.algorithm,
            "secretKey": self.secret_key,
            "notBefore": rfc3339(self.not_before),
            "notAfter": rfc3339(self.not_after),
            "serialNumber": self.serial_number,
            "fingerprint": self.fingerprint,
        }
        return {k: v for k, v in doc.items() if v is not None}


@dataclass(frozen=True, slots=True)
class CertificateStatus:
    """``status`` of an MTLSCertificate as the operator wrote it."""

    conditions: tuple[Condition, ...] = ()
    not_before: datetime | None = None
    not_after: datetime | None = None
    renewal_time: datetime | None = None
    serial_number: str | None = None
    fingerprint: str | None = None
    revision: int = 0
    algorithm: str | None = None
    secret_name: str | None = None
    issuer_fingerprint: str | None = None
    failed_attempts: int = 0
    last_failure_time: datetime | None = None
    next_attempt_time: datetime | None = None
    rollouts: tuple[RolloutRecord, ...] = ()
    handled_renew: str | None = None  # the last renew request acted on
    handled_revoke: str | None = None  # the last revoke request acted on
    key_algorithms: tuple[str, ...] = ()  # every key the Secret holds: the main one, then the additional ones
    additional: tuple[AdditionalCertStatus, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The status document (None for absent fields, as a merge patch removes them)."""
        requests = {"renew": self.handled_renew, "revoke": self.handled_revoke}
        return {
            "conditions": as_list(self.conditions),
            "notBefore": rfc3339(self.not_before),
            "notAfter": rfc3339(self.not_after),
            "renewalTime": rfc3339(self.renewal_time),
            "serialNumber": self.serial_number,
            "fingerprint": self.fingerprint,
            "revision": self.revision or None,
            "algorithm": self.algorithm,
            "secretName": self.secret_name,
            "issuerFingerprint": self.issuer_fingerprint,
            "failedIssuanceAttempts": self.failed_attempts or None,
            "lastFailureTime": rfc3339(self.last_failure_time),
            "nextAttemptTime": rfc3339(self.next_attempt_time),
            "rollouts": [r.as_dict() for r in self.rollouts] or None,
            "requests": {k: v for k, v in requests.items() if v} or None,
            "keyAlgorithms": list(self.key_algorithms) or None,
            "additionalCertificates": [a.as_dict() for a in self.additional] or None,
        }


@dataclass(frozen=True, slots=True)
class CertificateRequests:
    """What a user asked for through annotations (mtlsctl renew / revoke)."""

    renew: str | None = None
    revoke: str | None = None
    revoke_reason: str = "unspecified"


@dataclass(frozen=True, slots=True)
class ParsedCertificate:
    meta: ObjectMeta
    spec: CertificateSpec | None  # None when the spec cannot be used: see ``error``
    error: Violation | None = None
    spiffe: SpiffeSpec | None = None
    revocation_policy: RevocationPolicy = RevocationPolicy.NONE
    requests: CertificateRequests = field(default_factory=CertificateRequests)
    status: CertificateStatus = field(default_factory=CertificateStatus)
    # What the indexes key on, readable even when the spec as a whole is invalid.
    secret_name: str | None = None
    issuer_name: str | None = None
    issuer_kind: str = ISSUER_KIND

    @property
    def key(self) -> Key:
        return self.meta.key

    @property
    def issuer_key(self) -> Key | None:
        """The issuer it names: (its namespace, name) for an MTLSIssuer, ("", name) for an
        MTLSClusterIssuer (cluster-scoped objects have no namespace)."""
        if not self.issuer_name:
            return None
        return issuer_key(self.meta.namespace, self.issuer_kind, self.issuer_name)

    def with_status(self, status: CertificateStatus) -> ParsedCertificate:
        return replace(self, status=status)


def issuer_key(namespace: str, kind: str, name: str) -> Key:
    """Where an issuer reference points: a cluster issuer's key has no namespace."""
    return ("", name) if kind == CLUSTER_ISSUER_KIND else (namespace, name)


# ---------------------------------------------------------------------------------------------------------
# MTLSIssuer


@dataclass(frozen=True, slots=True)
class AdditionalCAStatus:
    """One additional CA of a dual issuer (status.additionalCAs)."""

    algorithm: str  # e.g. ECDSA-P256
    fingerprint: str | None = None
    not_after: datetime | None = None
    subject: str | None = None

    def as_dict(self) -> dict[str, Any]:
        doc = {
            "algorithm": self.algorithm,
            "fingerprint": self.fingerprint,
            "notAfter": rfc3339(self.not_after),
            "subject": self.subject,
        }
        return {k: v for k, v in doc.items() if v is not None}


@dataclass(frozen=True, slots=True)
class IssuerStatus:
    """``status`` of an MTLSIssuer as the operator wrote it."""

    conditions: tuple[Condition, ...] = ()
    observed_generation: int = 0
    type: str | None = None
    secret_name: str | None = None
    not_before: datetime | None = None
    not_after: datetime | None = None
    fingerprint: str | None = None
    algorithm: str | None = None
    subject: str | None = None
    rotation: RotationState | None = None  # None until a rotation ever ran
    additional_cas: tuple[AdditionalCAStatus, ...] = ()  # a dual issuer's other CAs

    def as_dict(self) -> dict[str, Any]:
        return {
            "conditions": as_list(self.conditions),
            "observedGeneration": self.observed_generation,
            "type": self.type,
            "secretName": self.secret_name,
            "notBefore": rfc3339(self.not_before),
            "notAfter": rfc3339(self.not_after),
            "fingerprint": self.fingerprint,
            "algorithm": self.algorithm,
            "subject": self.subject,
            "rotation": to_status(self.rotation) if self.rotation is not None else None,
            "additionalCAs": [a.as_dict() for a in self.additional_cas] or None,
        }


@dataclass(frozen=True, slots=True)
class ParsedIssuer:
    meta: ObjectMeta
    spec: IssuerSpec | None  # None when the spec cannot be used: see ``error``
    error: Violation | None = None
    policy: IssuerPolicy | None = None
    trust_bundle: TrustBundleSpec | None = None
    revocation: RevocationSpec | None = None
    rotate_request: str | None = None  # mtls.dev/rotate-requested-at
    status: IssuerStatus = field(default_factory=IssuerStatus)
    cluster_trust_bundle: bool = False  # publish the trust anchors as a ClusterTrustBundle (cluster only)
    pod_signer: str | None = None  # the signer name of PodCertificateRequests this issuer signs

    @property
    def key(self) -> Key:
        return self.meta.key

    @property
    def cluster(self) -> bool:
        """An MTLSClusterIssuer (cluster-scoped: no namespace)."""
        return not self.meta.namespace

    @property
    def kind(self) -> str:
        return CLUSTER_ISSUER_KIND if self.cluster else ISSUER_KIND

    @property
    def parent(self) -> str | None:
        """The parent issuer of an intermediate."""
        return self.spec.intermediate.parent if self.spec and self.spec.intermediate else None

    @property
    def parent_key(self) -> Key | None:
        """The parent issuer of an intermediate, as a key."""
        inter = self.spec.intermediate if self.spec else None
        return issuer_key(self.meta.namespace, inter.parent_kind, inter.parent) if inter else None

    @property
    def ca_secret_names(self) -> tuple[str, ...]:
        """The Secrets this issuer reads: its CA Secret and, for a CA the operator keeps, the staged next CA
        of a rotation."""
        if self.spec is None:
            return ()
        name = self.spec.ca_secret_name
        return (name, next_ca_secret_name(name)) if self.spec.managed_ca is not None else (name,)

    def with_status(self, status: IssuerStatus) -> ParsedIssuer:
        return replace(self, status=status)


def next_ca_secret_name(ca_secret_name: str) -> str:
    """Where a rotation stages the next CA."""
    return f"{ca_secret_name}-next"


def signer_name(meta: ObjectMeta) -> str:
    """The default signer name of an issuer: mtls.dev/<name> for a cluster issuer, and
    mtls.dev/<namespace>.<name> for a namespaced one."""
    return (
        f"{SIGNER_DOMAIN}/{meta.name}"
        if not meta.namespace
        else f"{SIGNER_DOMAIN}/{meta.namespace}.{meta.name}"
    )
