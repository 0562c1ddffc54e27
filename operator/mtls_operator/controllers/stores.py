"""What the watches showed, parsed: certificates, issuers and namespaces, each with the indexes decisions
use instead of scanning everything.

Only intake (and the controllers, for the status they just wrote) change a store; everything else reads.
Each store owns its indexes and keeps them true on every put and remove, so there is one place to look
for "which certificates name this Secret" or "which issuers read this Secret".

What a store keeps lives as long as its object, 10k times over, so it is kept compact: equal values are
one object (see :mod:`mtls_operator.controllers.compact`), and an index entry with one referrer is a name,
not a set.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

from mtls_operator.api.objects import CertificateStatus, IssuerStatus, Key, ParsedCertificate, ParsedIssuer
from mtls_operator.controllers.compact import SHARED, compact_certificate, compact_status

_K = TypeVar("_K")


class _Index:
    """A reverse index: (namespace, referenced name) -> names of the objects that reference it (one name
    as itself, more as a set: almost every Secret is named by one certificate). Kept per namespace, so an
    entry is the referenced name and nothing more (no (namespace, name) tuple each)."""

    def __init__(self) -> None:
        self._by: dict[str, dict[str, str | set[str]]] = {}

    def add(self, namespace: str, ref: str | None, name: str) -> None:
        if not ref:
            return
        refs = self._by.get(namespace)
        if refs is None:
            refs = self._by[namespace] = {}
        names = refs.get(ref)
        if names is None or names == name:
            refs[ref] = name
        elif isinstance(names, str):
            refs[ref] = {names, name}
        else:
            names.add(name)

    def discard(self, namespace: str, ref: str | None, name: str) -> None:
        if not ref:
            return
        refs = self._by.get(namespace)
        names = refs.get(ref) if refs is not None else None
        if refs is None or names is None:
            return
        if isinstance(names, str):
            if names == name:
                del refs[ref]
        else:
            names.discard(name)
            if len(names) == 1:
                refs[ref] = next(iter(names))
            elif not names:
                del refs[ref]
        if not refs:
            del self._by[namespace]

    def get(self, namespace: str, ref: str) -> frozenset[str]:
        names = self._by.get(namespace, {}).get(ref)
        if names is None:
            return frozenset()
        return frozenset((names,)) if isinstance(names, str) else frozenset(names)


class CertificateStore:
    def __init__(self) -> None:
        self._objects: dict[Key, ParsedCertificate] = {}
        self._by_secret = _Index()
        self._by_issuer: dict[Key, set[Key]] = defaultdict(set)  # issuer key -> certificate keys
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
        key = cert.key  # one tuple for the store, the issuer index and every structure keyed by it
        old = self.remove_quietly(key)
        namespace, name = key
        touched = set(self._by_secret.get(namespace, cert.secret_name)) if cert.secret_name else set()
        if old is not None and old.secret_name and old.secret_name != cert.secret_name:
            touched |= self._by_secret.get(namespace, old.secret_name)
        self._objects[key] = cert
        self._by_secret.add(namespace, cert.secret_name, name)
        if cert.issuer_key is not None:
            self._by_issuer[cert.issuer_key].add(key)
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
            issuer = old.issuer_key
            if issuer is not None and issuer in self._by_issuer:
                self._by_issuer[issuer].discard(key)
                if not self._by_issuer[issuer]:
                    del self._by_issuer[issuer]
        return old

    def update_status(self, key: Key, status: CertificateStatus) -> None:
        cert = self._objects.get(key)
        if cert is not None:
            self._objects[key] = cert.with_status(compact_status(self._share, status))

    def naming_secret(self, namespace: str, secret: str) -> frozenset[str]:
        return self._by_secret.get(namespace, secret)

    def of_issuer(self, issuer: Key) -> frozenset[Key]:
        """The certificates naming ``issuer`` (a cluster issuer's are in every namespace)."""
        return frozenset(self._by_issuer.get(issuer, ()))


class IssuerStore:
    """MTLSIssuers and MTLSClusterIssuers by key ((namespace, name); ("", name) for a cluster issuer).
    A cluster issuer keeps its CA Secret in the operator's cluster resource namespace, its home."""

    def __init__(self, cluster_namespace: str = "") -> None:
        self.cluster_namespace = cluster_namespace
        self._objects: dict[Key, ParsedIssuer] = {}
        self._by_secret: dict[Key, set[Key]] = defaultdict(set)  # (home, CA Secret) -> issuers
        self._children: dict[Key, set[Key]] = defaultdict(set)  # parent -> intermediates it signs
        self._by_signer: dict[str, set[Key]] = defaultdict(set)  # pod-certificate signer name -> issuers

    def __len__(self) -> int:
        return len(self._objects)

    def __iter__(self) -> Iterator[ParsedIssuer]:
        return iter(list(self._objects.values()))

    def home(self, issuer: Key) -> str:
        """The namespace of an issuer's Secrets and ConfigMaps."""
        return issuer[0] or self.cluster_namespace

    def revocation_ref(self, issuer: Key) -> Key:
        """Where the revocation store keeps an issuer's list: (home, name); a cluster issuer's name gets a
        "cluster." prefix, so that it never meets a namespaced issuer of its home namespace."""
        return (issuer[0], issuer[1]) if issuer[0] else (self.cluster_namespace, f"cluster.{issuer[1]}")

    def get(self, key: Key) -> ParsedIssuer | None:
        return self._objects.get(key)

    def put(self, issuer: ParsedIssuer) -> ParsedIssuer | None:
        old = self.remove(issuer.key)
        self._objects[issuer.key] = issuer
        home = self.home(issuer.key)
        for secret in issuer.ca_secret_names:
            self._by_secret[(home, secret)].add(issuer.key)
        if issuer.parent_key is not None:
            self._children[issuer.parent_key].add(issuer.key)
        if issuer.pod_signer:
            self._by_signer[issuer.pod_signer].add(issuer.key)
        return old

    def remove(self, key: Key) -> ParsedIssuer | None:
        old = self._objects.pop(key, None)
        if old is not None:
            home = self.home(key)
            for secret in old.ca_secret_names:
                _discard(self._by_secret, (home, secret), key)
            if old.parent_key is not None:
                _discard(self._children, old.parent_key, key)
            if old.pod_signer:
                _discard(self._by_signer, old.pod_signer, key)
        return old

    def update_status(self, key: Key, status: IssuerStatus) -> None:
        issuer = self._objects.get(key)
        if issuer is not None:
            self._objects[key] = issuer.with_status(status)

    def using_secret(self, namespace: str, secret: str) -> frozenset[Key]:
        """The issuers whose CA (or staged next CA) is Secret ``namespace/secret``."""
        return frozenset(self._by_secret.get((namespace, secret), ()))

    def children(self, parent: Key) -> frozenset[Key]:
        return frozenset(self._children.get(parent, ()))

    def signing_for(self, signer_name: str) -> frozenset[Key]:
        """The issuers whose ``spec.podCertificates`` declares ``signer_name`` (in any namespace)."""
        return frozenset(self._by_signer.get(signer_name, ()))


def _discard(index: dict[_K, set[Key]], key: _K, value: Key) -> None:
    values = index.get(key)
    if values is not None:
        values.discard(value)
        if not values:
            del index[key]


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
