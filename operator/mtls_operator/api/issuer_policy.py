"""Typed, frozen views of an MTLSIssuer's ``spec.policy`` and an MTLSCertificate's ``spec.spiffe``.

``spec.policy`` says which certificates an issuer will sign: which namespaces may use it (a label selector
on the namespace), which names (glob patterns with ``{namespace}`` and ``{trustDomain}`` templates), which
IP ranges, usages, key algorithms (with minimum sizes) and the longest duration. The decision itself is
pure and lives in :mod:`mtls_operator.policy.issuance_policy`; this module only parses and types.

Semantics (deny by default): once an issuer has a ``spec.policy``, every name, subject attribute and usage
that the policy does not allow is refused. A name or subject list left out allows nothing of that kind
(the same as an empty list); ``allowedUsages`` left out allows :data:`DEFAULT_ALLOWED_USAGES`;
``allowedCommonNames`` left out allows only a common name equal to one of the certificate's own DNS names
or SPIFFE IDs. ``allowedNamespaces``, ``maxDuration`` and ``allowedAlgorithms`` left out place no
restriction: they bound no identity. An issuer without ``spec.policy`` signs anything its namespace asks.
The model keeps "left out" (None) apart from "empty" (()) only so that a denial can say which it was.

``spec.spiffe`` asks for the SPIFFE ID URI SAN ``spiffe://{trustDomain}/ns/{namespace}/sa/{serviceAccount}``;
:func:`with_spiffe_uri` adds it to a parsed :class:`CertificateSpec` once the namespace and the issuer's
trust domain are known.

The field shapes this shares with the other parsers (objects, string lists, label selectors) are read in
:mod:`mtls_operator.api.fields`; the other trust-lifecycle fields (``spec.revocation``, ``spec.trustBundle``,
CA rotation, ``spec.revocationPolicy``) are parsed in :mod:`mtls_operator.api.trust_lifecycle`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, Final

from mtls_operator.api.durations import DurationError, parse_duration
from mtls_operator.api.fields import (
    SUBDOMAIN,
    LabelSelector,
    as_mapping,
    control_character_problem,
    optional_strs,
    parse_label_selector,
)
from mtls_operator.api.models import ALLOWED_SIZES, CertificateSpec, KeyAlgorithm, SpecError, Usage

DEFAULT_TRUST_DOMAIN: Final = "cluster.local"
TEMPLATE_VARIABLES: Final = ("namespace", "trustDomain")
# What a policy without allowedUsages allows: mutual TLS, nothing that signs code, mail or OCSP responses.
DEFAULT_ALLOWED_USAGES: Final = (
    Usage.SERVER_AUTH,
    Usage.CLIENT_AUTH,
    Usage.DIGITAL_SIGNATURE,
    Usage.KEY_ENCIPHERMENT,
)

# SPIFFE trust domains: lower-case letters, digits, dots, dashes and underscores (SPIFFE ID spec 2.1).
_TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]{1,255}$")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True, slots=True)
class AlgorithmRule:
    """One allowed key algorithm; ``min_size`` counts as :class:`KeySpec` does (RSA bits, ECDSA curve
    bits, ML-DSA parameter set) and is 0 for "any size" (and always for Ed25519)."""

    algorithm: KeyAlgorithm
    min_size: int = 0

    def __str__(self) -> str:
        if self.algorithm is KeyAlgorithm.ED25519:
            return "Ed25519"
        if self.min_size == 0:
            return f"{self.algorithm} of any size"
        if self.algorithm is KeyAlgorithm.RSA:
            return f"RSA-{self.min_size} or larger"
        if self.algorithm is KeyAlgorithm.ECDSA:
            return f"ECDSA-P{self.min_size} or larger"
        return f"ML-DSA-{self.min_size} or stronger"


@dataclass(frozen=True, slots=True)
class AllowedSubject:
    """``spec.policy.allowedSubject``: patterns for each subject attribute of :class:`Subject` (same field
    names). None (left out) and () both allow no value of that attribute; a certificate that sets none
    of it is never denied."""

    organizations: tuple[str, ...] | None = None
    organizational_units: tuple[str, ...] | None = None
    countries: tuple[str, ...] | None = None
    provinces: tuple[str, ...] | None = None
    localities: tuple[str, ...] | None = None
    street_addresses: tuple[str, ...] | None = None
    postal_codes: tuple[str, ...] | None = None
    serial_number: tuple[str, ...] | None = None


# The CRD's names of the subject attributes, in the order of Subject's fields (and of the checks).
SUBJECT_FIELDS: Final = {
    "organizations": "organizations",
    "organizational_units": "organizationalUnits",
    "countries": "countries",
    "provinces": "provinces",
    "localities": "localities",
    "street_addresses": "streetAddresses",
    "postal_codes": "postalCodes",
    "serial_number": "serialNumber",
}


@dataclass(frozen=True, slots=True)
class IssuerPolicy:
    """What an issuer with a ``spec.policy`` will sign (see the module docstring for what a field left out
    means: None is "left out", () is "an empty list").

    Name patterns are kept as written (with ``{namespace}`` and ``{trustDomain}``); the evaluator renders
    them for the requesting namespace.
    """

    allowed_namespaces: LabelSelector | None = None
    allowed_common_names: tuple[str, ...] | None = None
    allowed_dns_names: tuple[str, ...] | None = None
    allowed_ip_ranges: tuple[str, ...] | None = None  # normalised CIDRs
    allowed_uris: tuple[str, ...] | None = None
    allowed_emails: tuple[str, ...] | None = None
    allowed_usages: tuple[Usage, ...] | None = None
    allowed_subject: AllowedSubject = AllowedSubject()
    max_duration: timedelta | None = None
    allowed_algorithms: tuple[AlgorithmRule, ...] | None = None
    trust_domain: str = DEFAULT_TRUST_DOMAIN


@dataclass(frozen=True, slots=True)
class SpiffeSpec:
    """``spec.spiffe`` of an MTLSCertificate; ``trust_domain`` None means the issuer's (or cluster.local)."""

    service_account: str
    trust_domain: str | None = None


# ---------------------------------------------------------------------------------------------------------
# Parsing at the edge


def _patterns(value: Any, what: str, *, lower: bool = False) -> tuple[str, ...] | None:
    patterns = optional_strs(value, what)
    if patterns is None:
        return None
    for pattern in patterns:
        problem = control_character_problem(pattern)
        if problem:
            raise SpecError(f"{what}: {pattern!r} {problem}.")
        for name in _PLACEHOLDER.findall(pattern):
            if name not in TEMPLATE_VARIABLES:
                raise SpecError(
                    f"{what}: {pattern!r} uses the unknown template variable {{{name}}}; "
                    "use {namespace} or {trustDomain}."
                )
        if _PLACEHOLDER.sub("", pattern).count("{") or _PLACEHOLDER.sub("", pattern).count("}"):
            raise SpecError(f"{what}: {pattern!r} has an unmatched brace.")
    return tuple(p.lower() for p in patterns) if lower else patterns


def _ip_ranges(value: Any, what: str) -> tuple[str, ...] | None:
    ranges = optional_strs(value, what)
    if ranges is None:
        return None
    out: list[str] = []
    for cidr in ranges:
        try:
            out.append(str(ipaddress.ip_network(cidr, strict=True)))
        except ValueError as exc:
            raise SpecError(f"{what}: {cidr!r} is not a CIDR range such as 10.0.0.0/8 ({exc}).") from None
    return tuple(dict.fromkeys(out))


def _usages(value: Any, what: str) -> tuple[Usage, ...] | None:
    names = optional_strs(value, what)
    if names is None:
        return None
    out: list[Usage] = []
    for name in names:
        try:
            out.append(Usage(name))
        except ValueError:
            allowed = ", ".join(u.value for u in Usage)
            raise SpecError(f"{what}: {name!r} is not a known usage ({allowed}).") from None
    return tuple(out)


def _algorithms(value: Any, what: str) -> tuple[AlgorithmRule, ...] | None:
    if value is None:
        return None
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise SpecError(f"{what} must be a list of {{algorithm, minSize}} objects.")
    rules: dict[KeyAlgorithm, AlgorithmRule] = {}
    for i, item in enumerate(value):
        path = f"{what}[{i}]"
        doc = as_mapping(item, path)
        try:
            algorithm = KeyAlgorithm(str(doc.get("algorithm")))
        except ValueError:
            raise SpecError(
                f"{path}.algorithm {doc.get('algorithm')!r} is not one of RSA, ECDSA, Ed25519, MLDSA."
            ) from None
        if algorithm in rules:
            raise SpecError(f"{path}: {algorithm} is listed twice.")
        min_size = doc.get("minSize", 0)
        if min_size is None:
            min_size = 0
        if not isinstance(min_size, int) or isinstance(min_size, bool) or min_size < 0:
            raise SpecError(f"{path}.minSize must be a non-negative whole number.")
        sizes = ALLOWED_SIZES[algorithm]
        if not sizes and min_size:
            raise SpecError(f"{path}.minSize must be left out for Ed25519: the algorithm has one size.")
        if sizes and min_size > max(sizes):
            raise SpecError(
                f"{path}.minSize {min_size} allows no {algorithm} key: the largest is {max(sizes)}."
            )
        rules[algorithm] = AlgorithmRule(algorithm, min_size)
    return tuple(rules.values())


def _allowed_subject(value: Any, what: str) -> AllowedSubject:
    doc = as_mapping(value, what)
    unknown = sorted(set(doc) - set(SUBJECT_FIELDS.values()))
    if unknown:
        raise SpecError(
            f"{what}: {unknown[0]!r} is not a subject attribute ({', '.join(SUBJECT_FIELDS.values())})."
        )
    return AllowedSubject(
        **{field: _patterns(doc.get(name), f"{what}.{name}") for field, name in SUBJECT_FIELDS.items()}
    )


def validate_trust_domain(trust_domain: str) -> str | None:
    """Why ``trust_domain`` is not a SPIFFE trust domain name, or None."""
    if not _TRUST_DOMAIN.match(trust_domain):
        return (
            f"trust domain {trust_domain!r} must be 1 to 255 lower-case letters, digits, dots, dashes "
            "or underscores"
        )
    return None


def parse_issuer_policy(raw: Any) -> IssuerPolicy:
    """Parse an MTLSIssuer's ``spec.policy``; raise :class:`SpecError` naming the field on anything
    unusable. Call it only when ``spec.policy`` is present: an absent policy allows everything, while the
    result for None (or {}) is a policy that allows the defaults only (see the module docstring)."""
    doc = as_mapping(raw, "spec.policy")
    where = "spec.policy"
    trust_domain = doc.get("trustDomain") or DEFAULT_TRUST_DOMAIN
    if not isinstance(trust_domain, str):
        raise SpecError(f"{where}.trustDomain must be a string.")
    problem = validate_trust_domain(trust_domain)
    if problem:
        raise SpecError(f"{where}.trustDomain: {problem}.")
    max_duration = None
    if doc.get("maxDuration") is not None:
        value = doc["maxDuration"]
        if not isinstance(value, str):
            raise SpecError(f"{where}.maxDuration must be a duration string such as 720h, not {value!r}.")
        try:
            max_duration = parse_duration(value)
        except DurationError as exc:
            raise SpecError(f"{where}.maxDuration is invalid: {exc}.") from None
        if max_duration <= timedelta(0):
            raise SpecError(f"{where}.maxDuration must be longer than 0s.")
    selector = doc.get("allowedNamespaces")
    return IssuerPolicy(
        allowed_namespaces=(
            None if selector is None else parse_label_selector(selector, f"{where}.allowedNamespaces")
        ),
        allowed_common_names=_patterns(doc.get("allowedCommonNames"), f"{where}.allowedCommonNames"),
        allowed_dns_names=_patterns(doc.get("allowedDNSNames"), f"{where}.allowedDNSNames", lower=True),
        allowed_ip_ranges=_ip_ranges(doc.get("allowedIPRanges"), f"{where}.allowedIPRanges"),
        allowed_uris=_patterns(doc.get("allowedURIs"), f"{where}.allowedURIs"),
        allowed_emails=_patterns(doc.get("allowedEmails"), f"{where}.allowedEmails"),
        allowed_usages=_usages(doc.get("allowedUsages"), f"{where}.allowedUsages"),
        allowed_subject=_allowed_subject(doc.get("allowedSubject"), f"{where}.allowedSubject"),
        max_duration=max_duration,
        allowed_algorithms=_algorithms(doc.get("allowedAlgorithms"), f"{where}.allowedAlgorithms"),
        trust_domain=trust_domain,
    )


def parse_spiffe(raw: Any) -> SpiffeSpec | None:
    """Parse an MTLSCertificate's ``spec.spiffe`` (None when absent); raise :class:`SpecError`."""
    if raw is None:
        return None
    doc = as_mapping(raw, "spec.spiffe")
    account = doc.get("serviceAccount")
    if not isinstance(account, str) or not account:
        raise SpecError("spec.spiffe.serviceAccount is required.")
    if len(account) > 253 or not SUBDOMAIN.match(account):
        raise SpecError(f"spec.spiffe.serviceAccount {account!r} is not a valid service account name.")
    trust_domain = doc.get("trustDomain") or None
    if trust_domain is not None:
        if not isinstance(trust_domain, str):
            raise SpecError("spec.spiffe.trustDomain must be a string.")
        problem = validate_trust_domain(trust_domain)
        if problem:
            raise SpecError(f"spec.spiffe.trustDomain: {problem}.")
    return SpiffeSpec(service_account=account, trust_domain=trust_domain)


def spiffe_uri(namespace: str, service_account: str, trust_domain: str) -> str:
    """The Kubernetes-style SPIFFE ID of a service account: ``spiffe://td/ns/<namespace>/sa/<account>``."""
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


def with_spiffe_uri(
    spec: CertificateSpec,
    spiffe: SpiffeSpec | None,
    namespace: str,
    policy: IssuerPolicy | None = None,
) -> CertificateSpec:
    """``spec`` with the SPIFFE ID of ``spiffe`` as its first URI SAN (once); unchanged when ``spiffe`` is
    None. The trust domain is the certificate's own, else the issuer policy's, else cluster.local."""
    if spiffe is None:
        return spec
    trust_domain = spiffe.trust_domain or (policy.trust_domain if policy else DEFAULT_TRUST_DOMAIN)
    uri = spiffe_uri(namespace, spiffe.service_account, trust_domain)
    return replace(spec, uris=(uri, *(u for u in spec.uris if u != uri)))
