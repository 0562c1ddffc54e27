"""Watched objects, parsed once at intake into frozen values: nothing after intake reads a raw body.

An MTLSCertificate becomes a :class:`ParsedCertificate` and an MTLSIssuer a :class:`ParsedIssuer`: their
metadata, their spec (or the reason it cannot be used), the user requests set as annotations, and the
status the operator last wrote. Each field has one parser. Status values keep what the next status
document is compared against, so an unchanged status is never written again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from mtls_operator.api.certificate_spec import parse_certificate_spec
from mtls_operator.api.conditions import Condition, as_list, parse_conditions, parse_rfc3339, rfc3339
from mtls_operator.api.constants import (
    ANN_RENEW_REQUESTED,
    ANN_REVOKE_REASON,
    ANN_REVOKE_REQUESTED,
    ANN_ROTATE_REQUESTED,
    CLUSTER_ISSUER_KIND,
    ISSUER_KIND,
    SIGNER_DOMAIN,
)
from mtls_operator.api.errors import SpecError, Violation
from mtls_operator.api.issuer_policy import IssuerPolicy, SpiffeSpec, parse_issuer_policy, parse_spiffe
from mtls_operator.api.issuer_spec import parse_issuer_spec
from mtls_operator.api.models import CertificateSpec, IssuerSpec
from mtls_operator.api.rotation import RotationState, from_status, to_status
from mtls_operator.api.trust_lifecycle import (
    RevocationPolicy,
    RevocationSpec,
    TrustBundleSpec,
    parse_revocation,
    parse_revocation_policy,
    parse_trust_bundle,
)

Key = tuple[str, str]  # (namespace, name)
_SIGNER = re.compile(r"^mtls\.dev/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
MAX_REQUEST_TOKEN = 128


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

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)


def parse_meta(body: Mapping[str, Any]) -> ObjectMeta:
    meta = _section(body, "metadata")
    generation = _int(meta.get("generation"))
    return ObjectMeta(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        generation=generation,
        resource_version=str(meta.get("resourceVersion") or ""),
        deleting=bool(meta.get("deletionTimestamp")),
        finalizers=tuple(str(f) for f in _list(meta.get("finalizers"))),
    )


def parse_token(value: Any) -> str | None:
    """A request annotation's value: an opaque token (mtlsctl writes "<time>/<random>"); None when unset.
    Whitespace is trimmed and the length bounded so a token always fits the status field it is copied to."""
    if not isinstance(value, str):
        return None
    token = value.strip()[:MAX_REQUEST_TOKEN].strip()
    return token or None


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError, OverflowError):
        return 0


def _section(body: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = body.get(name)
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _annotations(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return _section(_section(body, "metadata"), "annotations")


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


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


def _additional_certs(raw: Any) -> tuple[AdditionalCertStatus, ...]:
    return tuple(
        AdditionalCertStatus(
            algorithm=str(r["algorithm"]),
            secret_key=str(r.get("secretKey") or ""),
            not_before=parse_rfc3339(r.get("notBefore")),
            not_after=parse_rfc3339(r.get("notAfter")),
            serial_number=_str(r.get("serialNumber")),
            fingerprint=_str(r.get("fingerprint")),
        )
        for r in _list(raw)
        if isinstance(r, Mapping) and isinstance(r.get("algorithm"), str)
    )


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


def parse_certificate_status(raw: Mapping[str, Any] | None) -> CertificateStatus:
    doc = raw or {}
    found = doc.get("requests")
    requests: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    raw_rollouts = doc.get("rollouts")
    rollouts = tuple(
        RolloutRecord(str(r.get("kind")), str(r.get("name")), str(r.get("fingerprint")), str(r.get("time")))
        for r in (raw_rollouts if isinstance(raw_rollouts, list) else ())
        if isinstance(r, Mapping) and r.get("kind") and r.get("name") and r.get("fingerprint")
    )
    return CertificateStatus(
        conditions=parse_conditions(doc.get("conditions")),
        not_before=parse_rfc3339(doc.get("notBefore")),
        not_after=parse_rfc3339(doc.get("notAfter")),
        renewal_time=parse_rfc3339(doc.get("renewalTime")),
        serial_number=_str(doc.get("serialNumber")),
        fingerprint=_str(doc.get("fingerprint")),
        revision=_int(doc.get("revision")),
        algorithm=_str(doc.get("algorithm")),
        secret_name=_str(doc.get("secretName")),
        issuer_fingerprint=_str(doc.get("issuerFingerprint")),
        failed_attempts=_int(doc.get("failedIssuanceAttempts")),
        last_failure_time=parse_rfc3339(doc.get("lastFailureTime")),
        next_attempt_time=parse_rfc3339(doc.get("nextAttemptTime")),
        rollouts=rollouts,
        handled_renew=parse_token(requests.get("renew")),
        handled_revoke=parse_token(requests.get("revoke")),
        key_algorithms=tuple(str(a) for a in _list(doc.get("keyAlgorithms")) if isinstance(a, str)),
        additional=_additional_certs(doc.get("additionalCertificates")),
    )


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


def parse_certificate(body: Mapping[str, Any]) -> ParsedCertificate:
    """An MTLSCertificate watch event's object, parsed; never raises."""
    meta = parse_meta(body)
    raw_spec = _section(body, "spec")
    annotations = _annotations(body)
    spec: CertificateSpec | None = None
    error: Violation | None = None
    spiffe: SpiffeSpec | None = None
    revocation_policy = RevocationPolicy.NONE
    try:
        spec = parse_certificate_spec(raw_spec)
        spiffe = parse_spiffe(raw_spec.get("spiffe"))
        revocation_policy = parse_revocation_policy(raw_spec.get("revocationPolicy"))
    except SpecError as exc:
        spec, error = None, Violation.of(exc)
    ref = raw_spec.get("issuerRef")
    return ParsedCertificate(
        meta=meta,
        spec=spec,
        error=error,
        spiffe=spiffe,
        revocation_policy=revocation_policy,
        requests=CertificateRequests(
            renew=parse_token(annotations.get(ANN_RENEW_REQUESTED)),
            revoke=parse_token(annotations.get(ANN_REVOKE_REQUESTED)),
            revoke_reason=_str(annotations.get(ANN_REVOKE_REASON)) or "unspecified",
        ),
        status=parse_certificate_status(_section(body, "status")),
        secret_name=_str(raw_spec.get("secretName")),
        issuer_name=_str(ref.get("name")) if isinstance(ref, Mapping) else None,
        issuer_kind=_str(ref.get("kind")) or ISSUER_KIND if isinstance(ref, Mapping) else ISSUER_KIND,
    )


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


def parse_issuer_status(raw: Mapping[str, Any] | None) -> IssuerStatus:
    doc = raw or {}
    rotation = doc.get("rotation")
    return IssuerStatus(
        conditions=parse_conditions(doc.get("conditions")),
        observed_generation=_int(doc.get("observedGeneration")),
        type=_str(doc.get("type")),
        secret_name=_str(doc.get("secretName")),
        not_before=parse_rfc3339(doc.get("notBefore")),
        not_after=parse_rfc3339(doc.get("notAfter")),
        fingerprint=_str(doc.get("fingerprint")),
        algorithm=_str(doc.get("algorithm")),
        subject=_str(doc.get("subject")),
        rotation=from_status(rotation) if isinstance(rotation, Mapping) and rotation else None,
        additional_cas=tuple(
            AdditionalCAStatus(
                algorithm=str(r["algorithm"]),
                fingerprint=_str(r.get("fingerprint")),
                not_after=parse_rfc3339(r.get("notAfter")),
                subject=_str(r.get("subject")),
            )
            for r in _list(doc.get("additionalCAs"))
            if isinstance(r, Mapping) and isinstance(r.get("algorithm"), str)
        ),
    )


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


def parse_issuer(body: Mapping[str, Any]) -> ParsedIssuer:
    """An MTLSIssuer or MTLSClusterIssuer watch event's object, parsed; never raises."""
    meta = parse_meta(body)
    raw_spec = _section(body, "spec")
    annotations = _annotations(body)
    status = parse_issuer_status(_section(body, "status"))
    rotate = parse_token(annotations.get(ANN_ROTATE_REQUESTED))
    try:
        spec = parse_issuer_spec(raw_spec)
    except SpecError as exc:
        return ParsedIssuer(meta, None, Violation.of(exc), rotate_request=rotate, status=status)
    try:
        policy = parse_issuer_policy(raw_spec["policy"]) if raw_spec.get("policy") is not None else None
        bundle = parse_trust_bundle(raw_spec.get("trustBundle"))
        revocation = parse_revocation(raw_spec.get("revocation"))
        cluster_bundle, signer = _cluster_identity(meta, spec, raw_spec)
    except SpecError as exc:
        return ParsedIssuer(meta, spec, Violation.of(exc), rotate_request=rotate, status=status)
    return ParsedIssuer(meta, spec, None, policy, bundle, revocation, rotate, status, cluster_bundle, signer)


def signer_name(meta: ObjectMeta) -> str:
    """The default signer name of an issuer: mtls.dev/<name> for a cluster issuer, and
    mtls.dev/<namespace>.<name> for a namespaced one."""
    return (
        f"{SIGNER_DOMAIN}/{meta.name}"
        if not meta.namespace
        else f"{SIGNER_DOMAIN}/{meta.namespace}.{meta.name}"
    )


def _cluster_identity(meta: ObjectMeta, spec: IssuerSpec, raw: Mapping[str, Any]) -> tuple[bool, str | None]:
    """``spec.clusterTrustBundle`` and ``spec.podCertificates``, and the kind rules they and an
    intermediate's parent follow: cluster-wide trust is published only by an MTLSClusterIssuer; a namespaced
    issuer signs pod certificates only under a signer name of its own namespace; an intermediate's parent is
    of its kind."""
    cluster = not meta.namespace
    inter = spec.intermediate
    if inter is not None and (inter.parent_kind == CLUSTER_ISSUER_KIND) != cluster:
        raise SpecError(
            "spec.intermediate.issuerRef.kind must be MTLSClusterIssuer for an MTLSClusterIssuer and "
            "MTLSIssuer for an MTLSIssuer: an issuer is signed by one of its own kind."
        )
    bundle = raw.get("clusterTrustBundle")
    if bundle is not None and not isinstance(bundle, bool):
        raise SpecError("spec.clusterTrustBundle must be true or false.")
    if bundle and not cluster:
        raise SpecError(
            "spec.clusterTrustBundle is for MTLSClusterIssuers: cluster-wide trust is an admin's."
        )
    pods = raw.get("podCertificates")
    if pods is None:
        return bool(bundle), None
    if not isinstance(pods, Mapping):
        raise SpecError("spec.podCertificates must be an object.")
    default = signer_name(meta)
    name = pods.get("signerName") or default
    if not isinstance(name, str) or not _SIGNER.match(name) or len(name) > 253:
        raise SpecError(
            f"spec.podCertificates.signerName {name!r} must be {SIGNER_DOMAIN}/<path>, e.g. {default}."
        )
    own = f"{SIGNER_DOMAIN}/{meta.namespace}."
    if not cluster and not name.startswith(own):
        raise SpecError(
            f"spec.podCertificates.signerName of an MTLSIssuer must start with {own} (its namespace): "
            f"for example {default}."
        )
    return bool(bundle), name
