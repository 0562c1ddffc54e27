"""What the watches showed, parsed: certificates, issuers and namespaces, each with the indexes decisions
use instead of scanning everything.

Only intake (and the controllers, for the status they just wrote) change a store; everything else reads.
Each store owns its indexes and keeps them true on every put and remove, so there is one place to look
for "which certificates name this Secret" or "which issuers read this Secret".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from mtls_operator.api.objects import CertificateStatus, IssuerStatus, Key, ParsedCertificate, ParsedIssuer


class _Index:
    """A reverse index: (namespace, referenced name) -> names of the objects that reference it."""

    def __init__(self) -> None:
        self._by: dict[Key, set[str]] = defaultdict(set)

    def add(self, namespace: str, ref: str | None, name: str) -> None:
        if ref:
            self._by[(namespace, ref)].add(name)

    def discard(self, namespace: str, ref: str | None, name: str) -> None:
        if not ref:
            return
        names = self._by.get((namespace, ref))
        if names is not None:
            names.discard(name)
            if not names:
                del self._by[(namespace, ref)]

    def get(self, namespace: str, ref: str) -> frozenset[str]:
        return frozenset(self._by.get((namespace, ref), ()))


class CertificateStore:
    def __init__(self) -> None:
        self._objects: dict[Key, ParsedCertificate] = {}
        self._by_secret = _Index()
        self._by_issuer = _Index()

    def __len__(self) -> int:
        return len(self._objects)

    def __iter__(self) -> Iterator[ParsedCertificate]:
        return iter(list(self._objects.values()))

    def get(self, key: Key) -> ParsedCertificate | None:
        return self._objects.get(key)

    def put(self, cert: ParsedCertificate) -> set[str]:
        """Store ``cert``; return the other certificates whose duplicate-secretName verdict may change."""
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
            self._objects[key] = cert.with_status(status)

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
