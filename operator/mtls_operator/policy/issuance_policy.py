"""May this issuer sign this certificate? A chain of pure checks over an :class:`IssuerPolicy`.

Each check is named after the request it refuses and returns a :class:`Violation` (reason
``PolicyDenied``) whose message names the first offending value and what the policy allows; the first
violation wins. Nothing here reads the clock or the API server: the caller passes the namespace's labels.

Patterns are globs rendered for the requesting namespace (``{namespace}``, ``{trustDomain}``): ``*``
matches one or more characters within one DNS label (DNS names, common names), one path segment (URIs) or
one side of the ``@`` (emails); ``**`` matches anything, separators included. Matching is exact otherwise,
and case-insensitive for DNS names only.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from mtls_operator.api.constants import ISSUER_KIND, Reason
from mtls_operator.api.durations import format_duration
from mtls_operator.api.issuer_policy import (
    IssuerPolicy,
    LabelSelector,
    LabelSelectorRequirement,
    SelectorOperator,
)
from mtls_operator.api.models import CertificateSpec, KeyAlgorithm, Usage
from mtls_operator.policy.certificate import Violation

_BY = f"{ISSUER_KIND} policy"


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """One certificate request as the policy sees it."""

    policy: IssuerPolicy
    spec: CertificateSpec
    namespace: str
    namespace_labels: Mapping[str, str]


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


def _listing(items: Sequence[str], kind: str) -> str:
    if not items:
        return f"the policy allows no {kind}"
    return "allowed are " + ", ".join(items)


def _first_unmatched(
    values: Sequence[str],
    patterns: tuple[str, ...] | None,
    r: PolicyRequest,
    separator: str,
    *,
    ignore_case: bool = False,
) -> tuple[str, list[str]] | None:
    if patterns is None:
        return None
    rendered = [render_pattern(p, r.namespace, r.policy.trust_domain) for p in patterns]
    for value in values:
        if not any(glob_matches(p, value, separator, ignore_case=ignore_case) for p in rendered):
            return value, rendered
    return None


def _names_check(
    field: str, kind: str, separator: str, ignore_case: bool = False
) -> Callable[[PolicyRequest], Violation | None]:
    def check(r: PolicyRequest) -> Violation | None:
        values: Sequence[str] = getattr(r.spec, _SPEC_FIELDS[field])
        patterns: tuple[str, ...] | None = getattr(r.policy, _POLICY_FIELDS[field])
        found = _first_unmatched(values, patterns, r, separator, ignore_case=ignore_case)
        if found is None:
            return None
        value, rendered = found
        return Violation(
            Reason.POLICY_DENIED,
            f"{field} entry {value} is not allowed by {_BY}: {_listing(rendered, kind)}.",
        )

    check.__name__ = f"{_SPEC_FIELDS[field]}_not_allowed"
    return check


_SPEC_FIELDS = {
    "dnsNames": "dns_names",
    "uris": "uris",
    "emailAddresses": "email_addresses",
}
_POLICY_FIELDS = {
    "dnsNames": "allowed_dns_names",
    "uris": "allowed_uris",
    "emailAddresses": "allowed_emails",
}


# ---------------------------------------------------------------------------------------------------------
# Checks, in the order they are judged


def namespace_not_allowed(r: PolicyRequest) -> Violation | None:
    selector = r.policy.allowed_namespaces
    if selector is None or selector_matches(selector, r.namespace_labels):
        return None
    return Violation(
        Reason.POLICY_DENIED,
        f"Namespace {r.namespace} is not allowed by {_BY}: its labels do not match allowedNamespaces "
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
        f"privateKey {key.label} is not allowed by {_BY}: {_listing(allowed, 'key algorithms')}.",
    )


def duration_too_long(r: PolicyRequest) -> Violation | None:
    limit = r.policy.max_duration
    if limit is None or r.spec.duration <= limit:
        return None
    return Violation(
        Reason.POLICY_DENIED,
        f"duration {format_duration(r.spec.duration)} is longer than the {_BY}'s maxDuration "
        f"{format_duration(limit)}.",
    )


def usage_not_allowed(r: PolicyRequest) -> Violation | None:
    allowed = r.policy.allowed_usages
    if allowed is None:
        return None
    for usage in r.spec.usages:
        # Every certificate carries digital signature (pki adds it), so asking for it is never a violation.
        if usage is Usage.DIGITAL_SIGNATURE or usage in allowed:
            continue
        return Violation(
            Reason.POLICY_DENIED,
            f"usages entry {usage} is not allowed by {_BY}: {_listing([str(u) for u in allowed], 'usages')}.",
        )
    return None


def common_name_not_allowed(r: PolicyRequest) -> Violation | None:
    cn = r.spec.common_name
    found = _first_unmatched((cn,) if cn else (), r.policy.allowed_common_names, r, ".")
    if found is None:
        return None
    value, rendered = found
    return Violation(
        Reason.POLICY_DENIED,
        f"commonName {value} is not allowed by {_BY}: {_listing(rendered, 'common names')}.",
    )


dns_names_not_allowed = _names_check("dnsNames", "DNS names", ".", ignore_case=True)


def ip_addresses_not_allowed(r: PolicyRequest) -> Violation | None:
    ranges = r.policy.allowed_ip_ranges
    if ranges is None:
        return None
    networks = [ipaddress.ip_network(c) for c in ranges]
    for ip in r.spec.ip_addresses:
        address = ipaddress.ip_address(ip)
        if any(address.version == n.version and address in n for n in networks):
            continue
        return Violation(
            Reason.POLICY_DENIED,
            f"ipAddresses entry {ip} is not allowed by {_BY}: {_listing(list(ranges), 'IP addresses')}.",
        )
    return None


uris_not_allowed = _names_check("uris", "URIs", "/")
emails_not_allowed = _names_check("emailAddresses", "email addresses", "@")


POLICY_CHECKS: Sequence[Callable[[PolicyRequest], Violation | None]] = (
    namespace_not_allowed,
    key_algorithm_not_allowed,
    duration_too_long,
    usage_not_allowed,
    common_name_not_allowed,
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
