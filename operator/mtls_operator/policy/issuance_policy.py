"""May this issuer sign this certificate? A chain of pure checks over an :class:`IssuerPolicy`.

Each check is named after the request it refuses and returns a :class:`Violation` (reason
``PolicyDenied``) whose message names the first offending value and what the policy allows; the first
violation wins. Nothing here reads the clock or the API server: the caller passes the namespace's labels.

Deny by default: a name, subject attribute or usage the policy does not allow is refused, including when
the policy leaves the field out (see :mod:`mtls_operator.api.issuer_policy` for the defaults); the
message then names the field to set.

Patterns are globs rendered for the requesting namespace (``{namespace}``, ``{trustDomain}``): ``*``
matches one or more characters within one DNS label (DNS names, common names), one path segment (URIs) or
one side of the ``@`` (emails), and any one or more characters in subject attributes; ``**`` matches
anything, separators included. Matching is exact otherwise, and case-insensitive for DNS names only.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from mtls_operator.api.constants import Reason
from mtls_operator.api.durations import format_duration
from mtls_operator.api.fields import LabelSelector, LabelSelectorRequirement, SelectorOperator
from mtls_operator.api.issuer_policy import DEFAULT_ALLOWED_USAGES, SUBJECT_FIELDS, IssuerPolicy
from mtls_operator.api.models import CertificateSpec, KeyAlgorithm, Usage
from mtls_operator.policy.certificate import Violation


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """One certificate request as the policy sees it."""

    policy: IssuerPolicy
    spec: CertificateSpec
    namespace: str
    namespace_labels: Mapping[str, str]

    @property
    def by(self) -> str:
        """Whose policy refuses, for the sentences: ``MTLSIssuer policy`` or ``MTLSClusterIssuer policy``."""
        return f"{self.spec.issuer_ref.kind} policy"


# ---------------------------------------------------------------------------------------------------------
# Building blocks


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector semantics (NotIn and DoesNotExist hold for an absent key)."""
    if any(labels.get(k) != v for k, v in selector.match_labels):
        return False
    return all(_requirement_holds(r, labels) for r in selector.match_expressions)


def _requirement_holds(r: LabelSelectorRequirement, labels: Mapping[str, str]) -> bool:
    if r.operator is SelectorOperator.EXISTS:
        return r.key in labels
    if r.operator is SelectorOperator.DOES_NOT_EXIST:
        return r.key not in labels
    if r.operator is SelectorOperator.IN:
        return r.key in labels and labels[r.key] in r.values
    return r.key not in labels or labels[r.key] not in r.values


def render_pattern(pattern: str, namespace: str, trust_domain: str) -> str:
    """``pattern`` with its template variables filled in for ``namespace``."""
    return pattern.replace("{namespace}", namespace).replace("{trustDomain}", trust_domain)


@functools.lru_cache(maxsize=1024)
def _compile(pattern: str, separator: str, ignore_case: bool) -> re.Pattern[str]:
    parts: list[str] = []
    i = 0
    one = f"[^{re.escape(separator)}]+" if separator else ".+"
    while i < len(pattern):
        if pattern.startswith("**", i):
            parts.append(".+")
            i += 2
        elif pattern[i] == "*":
            parts.append(one)
            i += 1
        else:
            parts.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(parts), re.IGNORECASE if ignore_case else 0)


def glob_matches(pattern: str, value: str, separator: str, *, ignore_case: bool = False) -> bool:
    """Whether ``value`` matches the rendered glob ``pattern`` (see the module docstring)."""
    return _compile(pattern, separator, ignore_case).fullmatch(value) is not None


def _allowance(allowed: Sequence[str] | None, kind: str, policy_field: str) -> str:
    """What the policy allows of ``kind``: ``allowed`` rendered, () for an empty list, None when the
    policy leaves ``policy_field`` out (deny by default)."""
    if allowed is None:
        return f"the policy sets no {policy_field}, so it allows no {kind}"
    if not allowed:
        return f"the policy allows no {kind}"
    return "allowed are " + ", ".join(allowed)


def _first_unmatched(
    values: Sequence[str],
    patterns: tuple[str, ...] | None,
    r: PolicyRequest,
    separator: str,
    *,
    ignore_case: bool = False,
) -> tuple[str, list[str] | None] | None:
    """The first value no pattern matches, with the rendered patterns (None: the field is left out, so
    nothing matches); None when every value matches."""
    rendered = (
        None
        if patterns is None
        else [render_pattern(p, r.namespace, r.policy.trust_domain) for p in patterns]
    )
    for value in values:
        if rendered is None or not any(
            glob_matches(p, value, separator, ignore_case=ignore_case) for p in rendered
        ):
            return value, rendered
    return None


def _names_check(
    field: str, kind: str, separator: str, ignore_case: bool = False
) -> Callable[[PolicyRequest], Violation | None]:
    spec_attribute, policy_attribute, policy_field = _NAME_FIELDS[field]

    def check(r: PolicyRequest) -> Violation | None:
        values: Sequence[str] = getattr(r.spec, spec_attribute)
        patterns: tuple[str, ...] | None = getattr(r.policy, policy_attribute)
        found = _first_unmatched(values, patterns, r, separator, ignore_case=ignore_case)
        if found is None:
            return None
        value, rendered = found
        return Violation(
            Reason.POLICY_DENIED,
            f"{field} entry {value} is not allowed by {r.by}: {_allowance(rendered, kind, policy_field)}.",
        )

    check.__name__ = f"{spec_attribute}_not_allowed"
    return check


# certificate field -> (CertificateSpec attribute, IssuerPolicy attribute, policy field)
_NAME_FIELDS = {
    "dnsNames": ("dns_names", "allowed_dns_names", "allowedDNSNames"),
    "uris": ("uris", "allowed_uris", "allowedURIs"),
    "emailAddresses": ("email_addresses", "allowed_emails", "allowedEmails"),
}
# The kind of value each subject attribute holds, as a denial names it.
_SUBJECT_KINDS = {
    "organizations": "organizations",
    "organizational_units": "organizational units",
    "countries": "countries",
    "provinces": "provinces",
    "localities": "localities",
    "street_addresses": "street addresses",
    "postal_codes": "postal codes",
    "serial_number": "subject serial numbers",
}


# ---------------------------------------------------------------------------------------------------------
# Checks, in the order they are judged


def namespace_not_allowed(r: PolicyRequest) -> Violation | None:
    selector = r.policy.allowed_namespaces
    if selector is None or selector_matches(selector, r.namespace_labels):
        return None
    return Violation(
        Reason.POLICY_DENIED,
        f"Namespace {r.namespace} is not allowed by {r.by}: its labels do not match allowedNamespaces "
        f"({selector}).",
    )


def key_algorithm_not_allowed(r: PolicyRequest) -> Violation | None:
    rules = r.policy.allowed_algorithms
    if rules is None:
        return None
    key = r.spec.private_key
    for rule in rules:
        if rule.algorithm is key.algorithm and (
            key.algorithm is KeyAlgorithm.ED25519 or key.size >= rule.min_size
        ):
            return None
    allowed = [str(rule) for rule in rules]
    return Violation(
        Reason.POLICY_DENIED,
        f"privateKey {key.label} is not allowed by {r.by}: "
        f"{_allowance(allowed, 'key algorithms', 'allowedAlgorithms')}.",
    )


def duration_too_long(r: PolicyRequest) -> Violation | None:
    limit = r.policy.max_duration
    if limit is None or r.spec.duration <= limit:
        return None
    return Violation(
        Reason.POLICY_DENIED,
        f"duration {format_duration(r.spec.duration)} is longer than the {r.by}'s maxDuration "
        f"{format_duration(limit)}.",
    )


def usage_not_allowed(r: PolicyRequest) -> Violation | None:
    listed = r.policy.allowed_usages
    allowed = DEFAULT_ALLOWED_USAGES if listed is None else listed
    for usage in r.spec.usages:
        # Every certificate carries digital signature (pki adds it), so asking for it is never a violation.
        if usage is Usage.DIGITAL_SIGNATURE or usage in allowed:
            continue
        names = [str(u) for u in allowed]
        why = _allowance(names, "usages", "allowedUsages")
        if listed is None:
            why = f"the policy sets no allowedUsages, so {why}"
        return Violation(Reason.POLICY_DENIED, f"usages entry {usage} is not allowed by {r.by}: {why}.")
    return None


def common_name_not_allowed(r: PolicyRequest) -> Violation | None:
    cn = r.spec.common_name
    if not cn:
        return None
    if r.policy.allowed_common_names is None:
        # Left out: a common name that repeats one of the certificate's own DNS names or SPIFFE IDs claims
        # nothing the SAN checks below do not judge; anything else (a user name such as system:admin) is
        # an identity of its own that the policy must list.
        if cn in r.spec.dns_names or (cn.startswith("spiffe://") and cn in r.spec.uris):
            return None
        return Violation(
            Reason.POLICY_DENIED,
            f"commonName {cn} is not allowed by {r.by}: the policy sets no allowedCommonNames, so a "
            "commonName must equal one of the certificate's dnsNames or SPIFFE IDs.",
        )
    found = _first_unmatched((cn,), r.policy.allowed_common_names, r, ".")
    if found is None:
        return None
    value, rendered = found
    return Violation(
        Reason.POLICY_DENIED,
        f"commonName {value} is not allowed by {r.by}: "
        f"{_allowance(rendered, 'common names', 'allowedCommonNames')}.",
    )


def subject_not_allowed(r: PolicyRequest) -> Violation | None:
    for attribute, name in SUBJECT_FIELDS.items():
        value: tuple[str, ...] | str | None = getattr(r.spec.subject, attribute)
        values = (value,) if isinstance(value, str) else (value or ())
        patterns: tuple[str, ...] | None = getattr(r.policy.allowed_subject, attribute)
        found = _first_unmatched(values, patterns, r, "")
        if found is None:
            continue
        offending, rendered = found
        entry = "" if isinstance(value, str) else " entry"
        why = _allowance(rendered, _SUBJECT_KINDS[attribute], f"allowedSubject.{name}")
        return Violation(
            Reason.POLICY_DENIED, f"subject.{name}{entry} {offending} is not allowed by {r.by}: {why}."
        )
    return None


dns_names_not_allowed = _names_check("dnsNames", "DNS names", ".", ignore_case=True)


def ip_addresses_not_allowed(r: PolicyRequest) -> Violation | None:
    ranges = r.policy.allowed_ip_ranges
    networks = [ipaddress.ip_network(c) for c in ranges or ()]
    for ip in r.spec.ip_addresses:
        address = ipaddress.ip_address(ip)
        if any(address.version == n.version and address in n for n in networks):
            continue
        why = _allowance(None if ranges is None else list(ranges), "IP addresses", "allowedIPRanges")
        return Violation(Reason.POLICY_DENIED, f"ipAddresses entry {ip} is not allowed by {r.by}: {why}.")
    return None


uris_not_allowed = _names_check("uris", "URIs", "/")
emails_not_allowed = _names_check("emailAddresses", "email addresses", "@")


POLICY_CHECKS: Sequence[Callable[[PolicyRequest], Violation | None]] = (
    namespace_not_allowed,
    key_algorithm_not_allowed,
    duration_too_long,
    usage_not_allowed,
    common_name_not_allowed,
    subject_not_allowed,
    dns_names_not_allowed,
    ip_addresses_not_allowed,
    uris_not_allowed,
    emails_not_allowed,
)


def evaluate(
    policy: IssuerPolicy,
    spec: CertificateSpec,
    namespace: str,
    namespace_labels: Mapping[str, str],
) -> Violation | None:
    """The first way ``spec``, requested from ``namespace`` (with ``namespace_labels``), breaks
    ``policy``, as a ``PolicyDenied`` violation; None when the issuer may sign it."""
    request = PolicyRequest(policy, spec, namespace, namespace_labels)
    for check in POLICY_CHECKS:
        found = check(request)
        if found is not None:
            return found
    return None
