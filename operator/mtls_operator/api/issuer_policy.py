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
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from enum import StrEnum
from typing import Any, Final
from urllib.parse import urlsplit

from mtls_operator.api.durations import DurationError, parse_duration
from mtls_operator.api.models import (
    ALLOWED_SIZES,
    MIN_DURATION,
    CertificateSpec,
    KeyAlgorithm,
    SpecError,
    Usage,
    control_character_problem,
)

DEFAULT_TRUST_DOMAIN: Final = "cluster.local"
DEFAULT_CRL_VALIDITY: Final = timedelta(hours=24)
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
# Kubernetes object names (DNS-1123 subdomain), as service account names are.
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


class SelectorOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


@dataclass(frozen=True, slots=True)
class LabelSelectorRequirement:
    key: str
    operator: SelectorOperator
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """metav1.LabelSelector: every matchLabels pair and every matchExpressions requirement must hold; an
    empty selector matches everything."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()

    def __str__(self) -> str:
        """kubectl's selector syntax, e.g. ``team=a,env in (prod,staging),!legacy``."""
        parts = [f"{k}={v}" for k, v in self.match_labels]
        for r in self.match_expressions:
            if r.operator is SelectorOperator.EXISTS:
                parts.append(r.key)
            elif r.operator is SelectorOperator.DOES_NOT_EXIST:
                parts.append(f"!{r.key}")
            else:
                word = "in" if r.operator is SelectorOperator.IN else "notin"
                parts.append(f"{r.key} {word} ({','.join(r.values)})")
        return ",".join(parts) or "(everything)"


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


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(f"{what} must be an object.")
    return value


def _optional_strs(value: Any, what: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise SpecError(f"{what} must be a list of strings.")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item:
            raise SpecError(f"{what} must be a list of non-empty strings, but holds {item!r}.")
        out.append(item)
    return tuple(dict.fromkeys(out))


def _patterns(value: Any, what: str, *, lower: bool = False) -> tuple[str, ...] | None:
    patterns = _optional_strs(value, what)
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


def parse_label_selector(raw: Any, where: str) -> LabelSelector:
    doc = _mapping(raw, where)
    labels = _mapping(doc.get("matchLabels"), f"{where}.matchLabels")
    for k, v in labels.items():
        if not isinstance(k, str) or not _LABEL_KEY.match(k) or not isinstance(v, str):
            raise SpecError(f"{where}.matchLabels: {k!r}: {v!r} is not a label key and string value.")
    expressions: list[LabelSelectorRequirement] = []
    raw_exprs = doc.get("matchExpressions") or []
    if not isinstance(raw_exprs, Sequence) or isinstance(raw_exprs, str | bytes):
        raise SpecError(f"{where}.matchExpressions must be a list.")
    for i, item in enumerate(raw_exprs):
        path = f"{where}.matchExpressions[{i}]"
        expr = _mapping(item, path)
        key = expr.get("key")
        if not isinstance(key, str) or not _LABEL_KEY.match(key):
            raise SpecError(f"{path}.key must be a label key, not {key!r}.")
        try:
            operator = SelectorOperator(str(expr.get("operator")))
        except ValueError:
            raise SpecError(
                f"{path}.operator must be In, NotIn, Exists or DoesNotExist, not {expr.get('operator')!r}."
            ) from None
        values = _optional_strs(expr.get("values"), f"{path}.values") or ()
        if operator in (SelectorOperator.IN, SelectorOperator.NOT_IN) and not values:
            raise SpecError(f"{path}.values must not be empty for operator {operator}.")
        if operator in (SelectorOperator.EXISTS, SelectorOperator.DOES_NOT_EXIST) and values:
            raise SpecError(f"{path}.values must be empty for operator {operator}.")
        expressions.append(LabelSelectorRequirement(key, operator, values))
    return LabelSelector(
        match_labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
        match_expressions=tuple(expressions),
    )


def _ip_ranges(value: Any, what: str) -> tuple[str, ...] | None:
    ranges = _optional_strs(value, what)
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
    names = _optional_strs(value, what)
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
        doc = _mapping(item, path)
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
    doc = _mapping(value, what)
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
    doc = _mapping(raw, "spec.policy")
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
    doc = _mapping(raw, "spec.spiffe")
    account = doc.get("serviceAccount")
    if not isinstance(account, str) or not account:
        raise SpecError("spec.spiffe.serviceAccount is required.")
    if len(account) > 253 or not _SUBDOMAIN.match(account):
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


# ---------------------------------------------------------------------------------------------------------
# The other trust-lifecycle fields of the issuer and the certificate (docs/trust-lifecycle-crd.md)


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


def _secret_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise SpecError(f"{what} is required.")
    if len(value) > 253 or not _SUBDOMAIN.match(value):
        raise SpecError(f"{what} {value!r} is not a valid Kubernetes object name.")
    return value


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
    doc = _mapping(raw, "spec.revocation")
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
    doc = _mapping(raw, where)
    if doc.get("pkcs12") is not None:
        raise SpecError(
            f"{where}.pkcs12 is not supported yet: the bundle is published as PEM (key ca.crt) only; "
            "remove pkcs12."
        )
    name = _secret_name(doc.get("configMapName"), f"{where}.configMapName")
    selector = parse_label_selector(doc.get("namespaceSelector"), f"{where}.namespaceSelector")
    return TrustBundleSpec(config_map_name=name, namespace_selector=selector)


def parse_ca_rotation(spec: Mapping[str, Any]) -> CARotationSpec:
    """The rotation settings of an MTLSIssuer ``spec``: ``selfSigned.renewBefore`` or
    ``intermediate.renewBefore``; empty when none is set. ``ca.rotation`` is refused: not supported yet."""
    for kind in ("selfSigned", "intermediate"):
        if spec.get(kind) is not None:
            doc = _mapping(spec.get(kind), f"spec.{kind}")
            return CARotationSpec(
                renew_before=_optional_duration(doc.get("renewBefore"), f"spec.{kind}.renewBefore")
            )
    if _mapping(spec.get("ca"), "spec.ca").get("rotation") is not None:
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
