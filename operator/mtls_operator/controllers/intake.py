"""Intake: watch events become parsed objects in the stores, and keys in the work queue.

Every body is parsed here, once (:mod:`mtls_operator.api.objects`); nothing downstream reads a raw dict.
Events are hints: what to look at again. The reconciles decide from the stores and the cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from mtls_operator.api.constants import ANN_CERTIFICATE_NAME
from mtls_operator.api.object_parsers import parse_certificate, parse_issuer
from mtls_operator.api.objects import Key
from mtls_operator.controllers.context import Context
from mtls_operator.controllers.rollouts import RolloutManager
from mtls_operator.controllers.stores import NamespaceInfo
from mtls_operator.k8s.resources import decode_secret

DELETED = "DELETED"


class Intake:
    def __init__(
        self,
        ctx: Context,
        rollouts: RolloutManager,
        forget_certificate: Callable[[Key], None],
        forget_issuer: Callable[[Key], None],
    ) -> None:
        self.certificates = ctx.certificates
        self.issuers = ctx.issuers
        self.namespaces = ctx.namespaces
        self.secrets = ctx.secrets
        self.work = ctx.work
        self.monotonic = ctx.clock.monotonic
        self.rollouts = rollouts
        self.forget_certificate = forget_certificate
        self.forget_issuer = forget_issuer
        # (kind, key) -> when intake last heard of it, kept only while a resync runs: it asks only about
        # events since its own start, so nothing is kept per object the rest of the time.
        self._heard: dict[tuple[str, Key], float] | None = None

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Remember which objects intake hears of, for the duration of one resync."""
        self._heard = {}
        try:
            yield
        finally:
            self._heard = None

    def heard_since(self, kind: str, key: Key, since: float) -> bool:
        """Whether an event for ``key`` arrived at or after ``since`` during the current recording (the
        resync must not forget it)."""
        heard = self._heard.get((kind, key)) if self._heard is not None else None
        return heard is not None and heard >= since

    def _hear(self, kind: str, key: Key) -> None:
        if self._heard is not None:
            self._heard[(kind, key)] = self.monotonic()

    def _unhear(self, kind: str, key: Key) -> None:
        if self._heard is not None:
            self._heard.pop((kind, key), None)

    # ------------------------------------------------------------------ our kinds

    def certificate_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        cert = parse_certificate(body)
        namespace, name = cert.key
        self._hear("cert", cert.key)
        if event_type == DELETED:
            self.certificate_gone(cert.key)
            return
        touched = self.certificates.put(cert)
        spec = cert.spec
        self.rollouts.set_certificate_targets(
            namespace,
            name,
            spec.secret_name if spec is not None else None,
            str(spec.rollout.policy) if spec is not None else "Auto",
            [(t.kind, t.name) for t in spec.rollout.targets] if spec is not None else [],
        )
        self.work.add_certificate(cert.key)
        for other in touched:  # certificates sharing a secretName re-judge their duplicate condition
            self.work.add_certificate((namespace, other))

    def certificate_gone(self, key: Key) -> None:
        self._unhear("cert", key)
        _, others = self.certificates.remove(key)
        self.rollouts.set_certificate_targets(key[0], key[1], None, "Auto", [])
        self.forget_certificate(key)
        for other in others:
            self.work.add_certificate((key[0], other))

    def issuer_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        issuer = parse_issuer(body)
        self._hear("issuer", issuer.key)
        if event_type == DELETED:
            self.issuer_gone(issuer.key)
            return
        self.issuers.put(issuer)
        self.work.add_issuer(issuer.key)

    def issuer_gone(self, key: Key) -> None:
        self._unhear("issuer", key)
        self.issuers.remove(key)
        self.forget_issuer(key)
        for cert in self.certificates.of_issuer(key):
            self.work.add_certificate(cert)
        for child in self.issuers.children(key):
            self.work.add_issuer(child)

    # ------------------------------------------------------------------ Secrets (the filtered watch)

    def secret_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        version = None if event_type == DELETED else str(meta.get("resourceVersion", ""))
        owner = (meta.get("annotations") or {}).get(ANN_CERTIFICATE_NAME)
        self._hear("secret", (namespace, name))
        if self.secret_changed(
            (namespace, name), version, owner if isinstance(owner, str) else None, watched=True
        ):
            # The body is what a read would return: the certificates just queued judge it, no GET.
            self.secrets.deliver(decode_secret(body), self.monotonic())

    def secret_changed(
        self, secret: Key, version: str | None, owner: str | None = None, *, watched: bool = False
    ) -> bool:
        """Queue what depends on ``secret`` if this is news; True when a certificate was queued for it."""
        if not self.secrets.observe(secret, version, watched=watched):
            return False  # our own write (or a repeat), already judged
        namespace, name = secret
        names = set(self.certificates.naming_secret(namespace, name))
        if owner:
            names.add(owner)
        for cert in names:
            self.work.add_certificate((namespace, cert))
        for issuer in self.issuers.using_secret(namespace, name):
            self.work.add_issuer(issuer)
        return version is not None and bool(names)

    # ------------------------------------------------------------------ workloads and namespaces

    def workload_event(self, kind: str, event_type: str | None, body: Mapping[str, Any]) -> None:
        self.rollouts.on_workload_event(kind, event_type, body)

    def namespace_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        name = str(meta.get("name", ""))
        self.namespaces.watched = True
        if event_type == DELETED:
            self.namespaces.remove(name)
            return
        info = NamespaceInfo(
            labels=dict(meta.get("labels") or {}),
            annotations={
                k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith("mtls.dev/")
            },
            terminating=(body.get("status") or {}).get("phase") == "Terminating",
        )
        old = self.namespaces.put(name, info)
        if old is not None and (old.labels, old.annotations) == (info.labels, info.annotations):
            return
        # Labels decide issuance policy and bundle targets; annotations decide bundle opt-ins.
        for issuer in self.issuers:
            if issuer.trust_bundle is not None:
                self.work.add_issuer(issuer.key)
        if old is not None:
            for cert in self.certificates:
                if cert.meta.namespace == name:
                    self.work.add_certificate(cert.key)
