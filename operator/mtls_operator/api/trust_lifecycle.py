"""The trust-lifecycle fields of the issuer and the certificate (docs/trust-lifecycle-crd.md), typed and
frozen: an MTLSIssuer's ``spec.revocation`` (CRL and OCSP URLs, CRL validity), ``spec.trustBundle`` (the
ConfigMap its trust anchors are published as) and the CA rotation settings, and an MTLSCertificate's
``spec.revocationPolicy``. Parsing only; each parser raises :class:`SpecError` naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any, Final
from urllib.parse import urlsplit

from mtls_operator.api.durations import DurationError, parse_duration
from mtls_operator.api.fields import LabelSelector, as_mapping, object_name, parse_label_selector
from mtls_operator.api.models import MIN_DURATION, SpecError

DEFAULT_CRL_VALIDITY: Final = timedelta(hours=24)


class RevocationPolicy(StrEnum):
    """``spec.revocationPolicy`` of an MTLSCertificate: what happens to its serial when it is deleted."""

    NONE = "None"
    REVOKE = "Revoke"  # the serial goes on the issuer's CRL (and OCSP answers revoked)


@dataclass(frozen=True, slots=True)
class RevocationSpec:
    """``spec.revocation`` of an MTLSIssuer: where relying parties fetch the CRL and ask OCSP; both end up
    in every leaf (cRLDistributionPoints, authorityInfoAccess)."""

    crl_url: str | None = None
    ocsp_url: str | None = None
    crl_validity: timedelta = DEFAULT_CRL_VALIDITY  # nextUpdate - thisUpdate of each CRL


@dataclass(frozen=True, slots=True)
class TrustBundleSpec:
    """``spec.trustBundle`` of an MTLSIssuer: publish the issuer's trust anchors (two during a rotation)
    as a ConfigMap in every namespace the selector matches."""

    config_map_name: str
    namespace_selector: LabelSelector = LabelSelector()


@dataclass(frozen=True, slots=True)
class CARotationSpec:
    """When the issuer's CA rotates. ``renew_before`` (selfSigned and intermediate): start a rotation that
    long before the CA expires; None: only on demand. A ``ca`` issuer does not rotate (its
    ``rotation`` field is refused)."""

    renew_before: timedelta | None = None


def _http_url(value: Any, what: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise SpecError(f"{what} must be a string.")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or not value.isascii() or " " in value:
        raise SpecError(f"{what} {value!r} must be an absolute http:// URL such as http://ca.example/ca.crl.")
    return value


def _optional_duration(value: Any, what: str) -> timedelta | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise SpecError(f"{what} must be a duration string such as 720h, not {value!r}.")
    try:
        duration = parse_duration(value)
    except DurationError as exc:
        raise SpecError(f"{what} is invalid: {exc}.") from None
    if duration < MIN_DURATION:
        raise SpecError(f"{what} must be at least 1m.")
    return duration


def parse_revocation(raw: Any) -> RevocationSpec | None:
    """``spec.revocation`` of an MTLSIssuer (None when absent)."""
    if raw is None:
        return None
    doc = as_mapping(raw, "spec.revocation")
    validity = _optional_duration(doc.get("crlValidity"), "spec.revocation.crlValidity")
    return RevocationSpec(
        crl_url=_http_url(doc.get("crlURL"), "spec.revocation.crlURL"),
        ocsp_url=_http_url(doc.get("ocspURL"), "spec.revocation.ocspURL"),
        crl_validity=validity or DEFAULT_CRL_VALIDITY,
    )


def parse_trust_bundle(raw: Any) -> TrustBundleSpec | None:
    """``spec.trustBundle`` of an MTLSIssuer (None when absent)."""
    if raw is None:
        return None
    where = "spec.trustBundle"
    doc = as_mapping(raw, where)
    if doc.get("pkcs12") is not None:
        raise SpecError(
            f"{where}.pkcs12 is not supported yet: the bundle is published as PEM (key ca.crt) only; "
            "remove pkcs12."
        )
    name = object_name(doc.get("configMapName"), f"{where}.configMapName")
    selector = parse_label_selector(doc.get("namespaceSelector"), f"{where}.namespaceSelector")
    return TrustBundleSpec(config_map_name=name, namespace_selector=selector)


def parse_ca_rotation(spec: Mapping[str, Any]) -> CARotationSpec:
    """The rotation settings of an MTLSIssuer ``spec``: ``selfSigned.renewBefore`` or
    ``intermediate.renewBefore``; empty when none is set. ``ca.rotation`` is refused: not supported yet."""
    for kind in ("selfSigned", "intermediate"):
        if spec.get(kind) is not None:
            doc = as_mapping(spec.get(kind), f"spec.{kind}")
            return CARotationSpec(
                renew_before=_optional_duration(doc.get("renewBefore"), f"spec.{kind}.renewBefore")
            )
    if as_mapping(spec.get("ca"), "spec.ca").get("rotation") is not None:
        raise SpecError(
            "spec.ca.rotation (nextSecretName) is not supported yet: to replace the CA, put the new key "
            "pair in another Secret and change spec.ca.secretName."
        )
    return CARotationSpec()


def parse_revocation_policy(raw: Any) -> RevocationPolicy:
    """``spec.revocationPolicy`` of an MTLSCertificate; None by default."""
    try:
        return RevocationPolicy(raw or RevocationPolicy.NONE)
    except ValueError:
        raise SpecError("spec.revocationPolicy must be None or Revoke.") from None
