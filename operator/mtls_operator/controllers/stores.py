"""What the watches showed, parsed: certificates, issuers and namespaces, each with the indexes decisions
use instead of scanning everything.

Only intake (and the controllers, for the status they just wrote) change a store; everything else reads.
Each store owns its indexes and keeps them true on every put and remove, so there is one place to look
for "which certificates name this Secret" or "which issuers read this Secret".

What a store keeps lives as long as its object, 10k times over, so it is kept compact: equal values are
one object (:class:`Interner`), and an index entry with one referrer is a name, not a set.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
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
from mtls_operator.api.objects import (
    CertificateRequests,
    CertificateStatus,
    IssuerStatus,
    Key,
    ParsedCertificate,
    ParsedIssuer,
)

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
    share_fields(cert.meta, namespace=share(cert.meta.namespace), name=share(cert.meta.name))
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
    )
    return cert


class _Index:
    """A reverse index: (namespace, referenced name) -> names of the objects that reference it (one name
    as itself, more as a set: almost every Secret is named by one certificate)."""

    def __init__(self) -> None:
        self._by: dict[Key, str | set[str]] = {}

    def add(self, namespace: str, ref: str | None, name: str) -> None:
        if not ref:
            return
        key = (namespace, ref)
        names = self._by.get(key)
        if names is None or names == name:
            self._by[key] = name
        elif isinstance(names, str):
            self._by[key] = {names, name}
        else:
            names.add(name)

    def discard(self, namespace: str, ref: str | None, name: str) -> None:
        if not ref:
            return
        key = (namespace, ref)
        names = self._by.get(key)
        if names is None:
            return
        if isinstance(names, str):
            if names == name:
                del self._by[key]
            return
        names.discard(name)
        if len(names) == 1:
            self._by[key] = next(iter(names))
        elif not names:
            del self._by[key]

    def get(self, namespace: str, ref: str) -> frozenset[str]:
        names = self._by.get((namespace, ref))
        if names is None:
            return frozenset()
        return frozenset((names,)) if isinstance(names, str) else frozenset(names)


class CertificateStore:
    def __init__(self) -> None:
        self._objects: dict[Key, ParsedCertificate] = {}
        self._by_secret = _Index()
        self._by_issuer = _Index()
        self._share = SHARED

    def __len__(self) -> int:
        return len(self._objects)

    def __iter__(self) -> Iterator[ParsedCertificate]:
        return iter(list(self._objects.values()))

    def get(self, key: Key) -> ParsedCertificate | None:
        return self._objects.get(key)

    def put(self, cert: ParsedCertificate) -> set[str]:
        """Store ``cert``; return the other certificates whose duplicate-secretName verdict may change."""
        cert = compact_certificate(self._share, cert, self._objects.get(cert.key))
        old = self.remove_quietly(cert.key)
        namespace, name = cert.key
        touched = set(self._by_secret.get(namespace, cert.secret_name)) if cert.secret_name else set()
        if old is not None and old.secret_name and old.secret_name != cert.secret_name:
            touched |= self._by_secret.get(namespace, old.secret_name)
        self._objects[cert.key] = cert
        self._by_secret.add(namespace, cert.secret_name, name)
        self._by_issuer.add(namespace, cert.issuer_name, name)
        touched.discard(name)
        return touched

    def remove(self, key: Key) -> tuple[ParsedCertificate | None, set[str]]:
        """Forget ``key``; return it and the certificates that named the same Secret."""
        old = self.remove_quietly(key)
        if old is None or not old.secret_name:
            return old, set()
        return old, set(self._by_secret.get(key[0], old.secret_name))

    def remove_quietly(self, key: Key) -> ParsedCertificate | None:
        old = self._objects.pop(key, None)
        if old is not None:
            self._by_secret.discard(key[0], old.secret_name, key[1])
            self._by_issuer.discard(key[0], old.issuer_name, key[1])
        return old

    def update_status(self, key: Key, status: CertificateStatus) -> None:
        cert = self._objects.get(key)
        if cert is not None:
            self._objects[key] = cert.with_status(compact_status(self._share, status))

    def naming_secret(self, namespace: str, secret: str) -> frozenset[str]:
        return self._by_secret.get(namespace, secret)

    def of_issuer(self, namespace: str, issuer: str) -> frozenset[str]:
        return self._by_issuer.get(namespace, issuer)


class IssuerStore:
    def __init__(self) -> None:
        self._objects: dict[Key, ParsedIssuer] = {}
        self._by_secret = _Index()  # CA Secret (and staged next CA) -> issuers
        self._children = _Index()  # parent issuer -> intermediates it signs

    def __len__(self) -> int:
        return len(self._objects)

    def __iter__(self) -> Iterator[ParsedIssuer]:
        return iter(list(self._objects.values()))

    def get(self, key: Key) -> ParsedIssuer | None:
        return self._objects.get(key)

    def put(self, issuer: ParsedIssuer) -> ParsedIssuer | None:
        old = self.remove(issuer.key)
        namespace, name = issuer.key
        self._objects[issuer.key] = issuer
        for secret in issuer.ca_secret_names:
            self._by_secret.add(namespace, secret, name)
        self._children.add(namespace, issuer.parent, name)
        return old

    def remove(self, key: Key) -> ParsedIssuer | None:
        old = self._objects.pop(key, None)
        if old is not None:
            for secret in old.ca_secret_names:
                self._by_secret.discard(key[0], secret, key[1])
            self._children.discard(key[0], old.parent, key[1])
        return old

    def update_status(self, key: Key, status: IssuerStatus) -> None:
        issuer = self._objects.get(key)
        if issuer is not None:
            self._objects[key] = issuer.with_status(status)

    def using_secret(self, namespace: str, secret: str) -> frozenset[str]:
        return self._by_secret.get(namespace, secret)

    def children(self, namespace: str, parent: str) -> frozenset[str]:
        return self._children.get(namespace, parent)


@dataclass(frozen=True, slots=True)
class NamespaceInfo:
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    terminating: bool = False


class NamespaceStore:
    """Labels and the annotations the operator reads, per namespace (issuance policy, trust bundles)."""

    def __init__(self) -> None:
        self._objects: dict[str, NamespaceInfo] = {}
        self.watched = False  # True once the namespace watch delivers (cluster-wide installs)

    def __iter__(self) -> Iterator[tuple[str, NamespaceInfo]]:
        return iter(list(self._objects.items()))

    def get(self, name: str) -> NamespaceInfo | None:
        return self._objects.get(name)

    def put(self, name: str, info: NamespaceInfo) -> NamespaceInfo | None:
        old = self._objects.get(name)
        self._objects[name] = info
        return old

    def remove(self, name: str) -> None:
        self._objects.pop(name, None)
