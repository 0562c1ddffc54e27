"""Parsing the CA part of an MTLSIssuer or MTLSClusterIssuer ``spec`` into
:class:`~mtls_operator.api.models.IssuerSpec`: exactly one of ``selfSigned``, ``ca`` and ``intermediate``
(the trust-lifecycle fields are parsed by :mod:`mtls_operator.api.trust_lifecycle`, ``spec.policy`` by
:mod:`mtls_operator.api.issuer_policy`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Any

from mtls_operator.api.certificate_spec import parse_additional_keys, parse_key_spec, parse_subject
from mtls_operator.api.constants import ISSUER_KIND, ISSUER_KINDS
from mtls_operator.api.errors import SpecError
from mtls_operator.api.fields import as_duration, as_mapping, as_strs, as_text, object_name, validate_dns_name
from mtls_operator.api.models import (
    DEFAULT_CA_DURATION,
    MIN_DURATION,
    CASecretSpec,
    IntermediateSpec,
    IssuerSpec,
    SelfSignedCASpec,
)

DEFAULT_INTERMEDIATE_DURATION = timedelta(days=365)


def _managed_ca(doc: Mapping[str, Any], where: str, default_duration: timedelta) -> SelfSignedCASpec:
    name = doc.get("secretName")
    if not isinstance(name, str) or not name:
        raise SpecError(f"{where}.secretName is required.")
    cn = doc.get("commonName")
    if not isinstance(cn, str) or not cn:
        raise SpecError(f"{where}.commonName is required.")
    as_text(cn, f"{where}.commonName")
    duration = as_duration(doc.get("duration"), f"{where}.duration", default_duration)
    assert duration is not None
    if duration < MIN_DURATION:
        raise SpecError(f"{where}.duration must be at least 1m.")
    return SelfSignedCASpec(
        secret_name=name,
        common_name=cn,
        subject=parse_subject(doc.get("subject"), f"{where}.subject"),
        duration=duration,
        private_key=parse_key_spec(doc.get("privateKey"), f"{where}.privateKey"),
    )


def _ca_renew_before(doc: Mapping[str, Any], where: str, ca: SelfSignedCASpec) -> SelfSignedCASpec:
    renew_before = as_duration(doc.get("renewBefore"), f"{where}.renewBefore", None)
    if renew_before is None:
        return ca
    if renew_before < MIN_DURATION or renew_before >= ca.duration:
        raise SpecError(f"{where}.renewBefore must be at least 1m and shorter than the CA's duration.")
    return replace(ca, renew_before=renew_before)


def _intermediate(doc: Mapping[str, Any]) -> IntermediateSpec:
    where = "spec.intermediate"
    ref = as_mapping(doc.get("issuerRef"), f"{where}.issuerRef")
    parent = ref.get("name")
    if not isinstance(parent, str) or not parent:
        raise SpecError(f"{where}.issuerRef.name is required.")
    kind = ref.get("kind") or ISSUER_KIND
    if kind not in ISSUER_KINDS:
        raise SpecError(f"{where}.issuerRef.kind {kind!r} is not supported: use {' or '.join(ISSUER_KINDS)}.")
    object_name(doc.get("secretName"), f"{where}.secretName")
    cn = doc.get("commonName")
    if isinstance(cn, str) and len(cn) > 64:
        raise SpecError(f"{where}.commonName must be at most 64 characters long.")
    path_length = doc.get("pathLength")
    if path_length is not None and (
        not isinstance(path_length, int) or isinstance(path_length, bool) or path_length < 0
    ):
        raise SpecError(f"{where}.pathLength must be a whole number of 0 or more.")
    constraints = as_mapping(doc.get("nameConstraints"), f"{where}.nameConstraints")
    domains: dict[str, tuple[str, ...]] = {}
    for key in ("permittedDNSDomains", "excludedDNSDomains"):
        values = tuple(dict.fromkeys(as_strs(constraints.get(key), f"{where}.nameConstraints.{key}")))
        for value in values:
            if value.startswith("*") or validate_dns_name(value.removeprefix(".")):
                raise SpecError(
                    f"{where}.nameConstraints.{key}: {value!r} is not a DNS domain such as team-a.svc."
                )
        domains[key] = values
    ca = _managed_ca(doc, where, DEFAULT_INTERMEDIATE_DURATION)
    return IntermediateSpec(
        parent=parent,
        parent_kind=kind,
        ca=_ca_renew_before(doc, where, ca),
        path_length=path_length,
        permitted_dns=domains["permittedDNSDomains"],
        excluded_dns=domains["excludedDNSDomains"],
    )


def parse_issuer_spec(spec: Mapping[str, Any]) -> IssuerSpec:
    """Parse and validate the CA part of an MTLSIssuer ``spec``: exactly one of ``selfSigned``, ``ca``,
    ``intermediate`` (the trust-lifecycle fields are parsed by :mod:`mtls_operator.api.trust_lifecycle`)."""
    kinds = [k for k in ("selfSigned", "ca", "intermediate") if spec.get(k) is not None]
    if len(kinds) != 1:
        raise SpecError("Set exactly one of spec.selfSigned, spec.ca and spec.intermediate.")
    if kinds[0] == "ca":
        doc = as_mapping(spec["ca"], "spec.ca")
        return IssuerSpec(
            ca=CASecretSpec(secret_name=object_name(doc.get("secretName"), "spec.ca.secretName"))
        )
    if kinds[0] == "selfSigned":
        doc = as_mapping(spec["selfSigned"], "spec.selfSigned")
        object_name(doc.get("secretName"), "spec.selfSigned.secretName")
        ca = _managed_ca(doc, "spec.selfSigned", DEFAULT_CA_DURATION)
        extra = parse_additional_keys(
            doc.get("additionalPrivateKeys"), "spec.selfSigned.additionalPrivateKeys", ca.private_key
        )
        ca = replace(ca, additional_private_keys=extra)
        return IssuerSpec(self_signed=_ca_renew_before(doc, "spec.selfSigned", ca))
    return IssuerSpec(intermediate=_intermediate(as_mapping(spec["intermediate"], "spec.intermediate")))
