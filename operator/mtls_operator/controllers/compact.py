"""What the stores and the Secret cache keep, made compact: equal values are one object.

A kept certificate or verdict lives as long as its object, 10k times over; JSON decoding and certificate
parsing make a new string, tuple or record for each, although most are the same for thousands of them.
:class:`Interner` swaps them for one shared object; ``compact_*`` apply it field by field to the frozen
records the stores keep (their value, equality and hash do not change).
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from mtls_operator.api.conditions import Condition
from mtls_operator.api.models import (
    CertificateSpec,
    IssuerRef,
    KeySpec,
    PKCS12Spec,
    RolloutSpec,
    SecretTemplate,
    Subject,
)
from mtls_operator.api.objects import CertificateRequests, CertificateStatus, ParsedCertificate

T = TypeVar("T")
# Values shared by equality only when equal means interchangeable: these frozen records (built by the
# parsers, with enums where enums belong), time spans, and tuples or frozensets of one element type.
_RECORDS = (
    IssuerRef,
    Subject,
    KeySpec,
    SecretTemplate,
    PKCS12Spec,
    RolloutSpec,
    CertificateRequests,
    timedelta,
)


class Interner:
    """One object for many equal values: JSON decoding and certificate parsing make a new string, tuple or
    record for every object, although most are the same for thousands of them (a namespace, an issuer's
    fingerprint, the default subject, the usages). Strings go through ``sys.intern`` (freed with their last
    user); the other values through a table of at most ``limit`` entries, emptied when full, so it can
    never grow with the cluster. Anything else is returned as it is."""

    def __init__(self, limit: int = 4096, recent: int = 1024) -> None:
        self.limit = limit
        self._table: dict[Any, Any] = {}
        # Times: most are one certificate's own, held twice (its status and its Secret's verdict), so they
        # are shared through a small table of the latest ones, apart from the long-lived records.
        self._recent_limit = recent
        self._recent: dict[Any, Any] = {}

    def __call__(self, value: T) -> T:
        kind = type(value)
        if kind is str:
            return cast(T, sys.intern(cast(str, value)))
        if kind is datetime:
            moment = cast(datetime, value)
            when = (moment, moment.tzinfo, moment.fold)  # equal instants in other zones are not swapped
            found = self._recent.get(when)
            if found is not None:
                return cast(T, found)
            if len(self._recent) >= self._recent_limit:
                self._recent.clear()
            self._recent[when] = value
            return value
        if kind is tuple or kind is frozenset:
            inner = {type(x) for x in cast(tuple[Any, ...], value)}
            if len(inner) > 1:
                return value  # (1, True) == (1, 1): mixed element types are never swapped for each other
            key: Any = (kind, next(iter(inner), None), value)
        elif isinstance(value, _RECORDS):
            key = (kind, value, None)
        else:
            return value
        found = self._table.get(key)
        if found is not None:
            return cast(T, found)
        if len(self._table) >= self.limit:
            self._table.clear()
        self._table[key] = value
        return value

    def strings(self, values: tuple[str, ...]) -> tuple[str, ...]:
        """A tuple of strings with each string interned (the tuple itself is most often one object's own:
        sharing it through the table would only churn the table)."""
        return tuple(sys.intern(v) for v in values) if values else values


# One for the stores and the Secret cache: a certificate and its verdict share their names and records.
SHARED = Interner()


def share_fields(obj: object, **fields: Any) -> None:
    """Give a frozen record's fields other objects that are *equal* to theirs (shared ones): its value,
    equality and hash do not change, so no reader can tell; only its memory does. Cheaper than building a
    copy (``dataclasses.replace`` costs ~4 us a record, this ~0.3 us a field)."""
    for name, value in fields.items():
        if value is not getattr(obj, name):
            object.__setattr__(obj, name, value)


def compact_conditions(share: Interner, conditions: tuple[Condition, ...]) -> None:
    """Conditions with their vocabulary (type, reason, transition time) shared; messages are kept as they
    are (they name the object)."""
    for c in conditions:
        share_fields(
            c,
            type=share(c.type),
            reason=share(c.reason),
            last_transition_time=share(c.last_transition_time),
        )


def compact_status(share: Interner, status: CertificateStatus) -> CertificateStatus:
    compact_conditions(share, status.conditions)
    share_fields(
        status,
        not_before=share(status.not_before),
        not_after=share(status.not_after),
        serial_number=share(status.serial_number),
        fingerprint=share(status.fingerprint),
        algorithm=share(status.algorithm),
        secret_name=share(status.secret_name),
        issuer_fingerprint=share(status.issuer_fingerprint),
        key_algorithms=share(status.key_algorithms),
    )
    return status


def compact_spec(share: Interner, spec: CertificateSpec) -> CertificateSpec:
    ref = spec.issuer_ref
    share_fields(ref, name=share(ref.name), kind=share(ref.kind))
    share_fields(
        spec,
        secret_name=share(spec.secret_name),
        issuer_ref=share(ref),
        common_name=share(spec.common_name),
        dns_names=share.strings(spec.dns_names),
        ip_addresses=share.strings(spec.ip_addresses),
        uris=share.strings(spec.uris),
        email_addresses=share.strings(spec.email_addresses),
        subject=share(spec.subject),
        usages=share(spec.usages),
        duration=share(spec.duration),
        renew_before=share(spec.renew_before),
        private_key=share(spec.private_key),
        secret_template=share(spec.secret_template),
        pkcs12=share(spec.pkcs12),
        rollout=share(spec.rollout),
    )
    return spec


def compact_certificate(
    share: Interner, cert: ParsedCertificate, previous: ParsedCertificate | None = None
) -> ParsedCertificate:
    """``cert`` as the store keeps it: the same value, with what it has in common with other certificates
    shared (about 1.4 KB less per certificate; see docs/benchmarks.md). An unchanged spec is the
    ``previous`` version's, already compact (most events change only the status)."""
    meta = cert.meta
    namespace, name = share(meta.namespace), share(meta.name)
    key = previous.meta.key if previous is not None else (namespace, name)
    share_fields(meta, namespace=namespace, name=name, key=key)
    if previous is not None and previous.spec is not None and previous.spec == cert.spec:
        share_fields(cert, spec=previous.spec)
    elif cert.spec is not None:
        compact_spec(share, cert.spec)
    compact_status(share, cert.status)
    share_fields(
        cert,
        requests=share(cert.requests),
        secret_name=share(cert.secret_name),
        issuer_name=share(cert.issuer_name),
        issuer_kind=share(cert.issuer_kind),
    )
    return cert
