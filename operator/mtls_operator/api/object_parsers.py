"""Parsers of the watched objects (:mod:`mtls_operator.api.objects`): a watch event's body becomes a
:class:`~mtls_operator.api.objects.ParsedCertificate` or :class:`~mtls_operator.api.objects.ParsedIssuer`
and never raises: a spec that cannot be used is kept as the reason why. Each field has one parser; the
specs' own parsers are in :mod:`mtls_operator.api.certificate_spec`, :mod:`mtls_operator.api.issuer_spec`,
:mod:`mtls_operator.api.issuer_policy` and :mod:`mtls_operator.api.trust_lifecycle`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mtls_operator.api.certificate_spec import parse_certificate_spec
from mtls_operator.api.conditions import parse_conditions, parse_rfc3339
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
from mtls_operator.api.issuer_policy import SpiffeSpec, parse_issuer_policy, parse_spiffe
from mtls_operator.api.issuer_spec import parse_issuer_spec
from mtls_operator.api.models import CertificateSpec, IssuerSpec
from mtls_operator.api.objects import (
    AdditionalCAStatus,
    AdditionalCertStatus,
    CertificateRequests,
    CertificateStatus,
    IssuerStatus,
    ObjectMeta,
    ParsedCertificate,
    ParsedIssuer,
    RolloutRecord,
    signer_name,
)
from mtls_operator.api.rotation import from_status
from mtls_operator.api.trust_lifecycle import (
    RevocationPolicy,
    parse_revocation,
    parse_revocation_policy,
    parse_trust_bundle,
)

_SIGNER = re.compile(r"^mtls\.dev/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
MAX_REQUEST_TOKEN = 128


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
