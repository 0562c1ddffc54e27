"""Readers of the field shapes the issuer and certificate specs share: an object, a list of strings or of
texts, a duration, a Kubernetes object name, a DNS name, text without control characters, and
``metav1.LabelSelector`` (``spec.policy.allowedNamespaces``, ``spec.trustBundle.namespaceSelector``).

Each reader takes the raw value and the field's path (``what``) and raises :class:`SpecError` naming that
path on anything unusable. Whether a selector matches a namespace is decided in
:mod:`mtls_operator.policy.issuance_policy` (``selector_matches``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from mtls_operator.api.durations import DurationError, parse_duration
from mtls_operator.api.models import SpecError

# Kubernetes object names (DNS-1123 subdomain), as service account names are.
SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# C0 controls (NUL included), DEL and C1 controls: refused in every name and subject attribute.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


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


def as_mapping(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(f"{what} must be an object.")
    return value


def optional_strs(value: Any, what: str) -> tuple[str, ...] | None:
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


def object_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise SpecError(f"{what} is required.")
    if len(value) > 253 or not SUBDOMAIN.match(value):
        raise SpecError(f"{what} {value!r} is not a valid Kubernetes object name.")
    return value


def as_strs(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise SpecError(f"{what} must be a list of strings.")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise SpecError(f"{what} must be a list of strings, but holds {item!r}.")
        out.append(item)
    return tuple(out)


def as_duration(value: Any, what: str, default: timedelta | None) -> timedelta | None:
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise SpecError(f"{what} must be a duration string such as 2160h, but is {value!r}.")
    try:
        return parse_duration(value)
    except DurationError as exc:
        raise SpecError(f"{what} is invalid: {exc}.") from None


def validate_dns_name(name: str) -> str | None:
    """Return why ``name`` is not a valid DNS SAN (a leading ``*.`` wildcard is allowed), or None."""
    if not name or len(name) > 253:
        return f"DNS name {name!r} must be 1 to 253 characters long"
    labels = name.split(".")
    for i, label in enumerate(labels):
        if i == 0 and label == "*" and len(labels) > 1:
            continue
        if not _DNS_LABEL.match(label):
            return f"DNS name {name!r} is not a valid lower-case hostname (label {label!r})"
    return None


def control_character_problem(value: str) -> str | None:
    """Why ``value`` cannot go into a certificate name or subject (it holds NUL, another C0 control, DEL
    or a C1 control, which readers truncate or display misleadingly), or None."""
    found = _CONTROL.search(value)
    if found is None:
        return None
    return f"must not contain control characters (found U+{ord(found.group()):04X})"


def as_text(value: str, what: str) -> str:
    problem = control_character_problem(value)
    if problem:
        raise SpecError(f"{what} {value!r} {problem}.")
    return value


def as_texts(value: Any, what: str) -> tuple[str, ...]:
    return tuple(as_text(item, what) for item in as_strs(value, what))


def parse_label_selector(raw: Any, where: str) -> LabelSelector:
    doc = as_mapping(raw, where)
    labels = as_mapping(doc.get("matchLabels"), f"{where}.matchLabels")
    for k, v in labels.items():
        if not isinstance(k, str) or not _LABEL_KEY.match(k) or not isinstance(v, str):
            raise SpecError(f"{where}.matchLabels: {k!r}: {v!r} is not a label key and string value.")
    expressions: list[LabelSelectorRequirement] = []
    raw_exprs = doc.get("matchExpressions") or []
    if not isinstance(raw_exprs, Sequence) or isinstance(raw_exprs, str | bytes):
        raise SpecError(f"{where}.matchExpressions must be a list.")
    for i, item in enumerate(raw_exprs):
        path = f"{where}.matchExpressions[{i}]"
        expr = as_mapping(item, path)
        key = expr.get("key")
        if not isinstance(key, str) or not _LABEL_KEY.match(key):
            raise SpecError(f"{path}.key must be a label key, not {key!r}.")
        try:
            operator = SelectorOperator(str(expr.get("operator")))
        except ValueError:
            raise SpecError(
                f"{path}.operator must be In, NotIn, Exists or DoesNotExist, not {expr.get('operator')!r}."
            ) from None
        values = optional_strs(expr.get("values"), f"{path}.values") or ()
        if operator in (SelectorOperator.IN, SelectorOperator.NOT_IN) and not values:
            raise SpecError(f"{path}.values must not be empty for operator {operator}.")
        if operator in (SelectorOperator.EXISTS, SelectorOperator.DOES_NOT_EXIST) and values:
            raise SpecError(f"{path}.values must be empty for operator {operator}.")
        expressions.append(LabelSelectorRequirement(key, operator, values))
    return LabelSelector(
        match_labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
        match_expressions=tuple(expressions),
    )
