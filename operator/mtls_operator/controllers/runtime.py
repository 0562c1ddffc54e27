"""The operator's runtime: stores fed by watches, one work queue, and the gather/decide/act loops.

kopf only watches and dispatches (``on.event`` handlers, which write nothing on their own); every write
the operator makes is made here, deliberately, and only when the decided state differs from the world.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from mtls_operator.api import conditions as cond
from mtls_operator.api.constants import (
    ANN_CA_FOR_ISSUER,
    ANN_CERTIFICATE_NAME,
    ANN_CERTIFICATE_UID,
    ANN_COMMON_NAME,
    ANN_DNS_NAMES,
    ANN_EMAILS,
    ANN_FINGERPRINT,
    ANN_IP_ADDRESSES,
    ANN_ISSUER_KIND,
    ANN_ISSUER_NAME,
    ANN_NOT_AFTER,
    ANN_RENEW_REQUESTED,
    ANN_REVISION,
    ANN_REVOKE_REASON,
    ANN_REVOKE_REQUESTED,
    ANN_SERIAL,
    ANN_SPEC_HASH,
    ANN_URIS,
    API_VERSION,
    CERTIFICATE_KIND,
    CERTIFICATE_PLURAL,
    ISSUER_KIND,
    ISSUER_PLURAL,
    LABEL_MANAGED_BY,
    MANAGED_BY_VALUE,
    SECRET_TYPE_TLS,
    TLS_KEY,
    Reason,
)
from mtls_operator.api.issuer_policy import IssuerPolicy, parse_issuer_policy, parse_spiffe, with_spiffe_uri
from mtls_operator.api.models import (
    CertificateSpec,
    CleanupPolicy,
    IssuerSpec,
    KeyAlgorithm,
    KeySpec,
    SpecError,
    parse_certificate_spec,
    parse_issuer_spec,
)
from mtls_operator.api.tls import CAError, SecretFacts, TLSMaterialError
from mtls_operator.controllers.revocation import Revocations
from mtls_operator.controllers.rollouts import RolloutManager, Stamped, Workload
from mtls_operator.controllers.stores import ObjectStore
from mtls_operator.controllers.trust import TrustManager
from mtls_operator.controllers.workqueue import WorkQueue
from mtls_operator.k8s.api import ApiClient, ApiError
from mtls_operator.k8s.resources import (
    SecretObject,
    encode_data,
    get_custom,
    patch_status,
    post_event,
    read_secret,
    write_secret,
)
from mtls_operator.observability.metrics import Metrics
from mtls_operator.pki.ca import CAKeyPair, create_self_signed_ca, load_ca
from mtls_operator.pki.certs import issued_by
from mtls_operator.pki.intermediate import sign_intermediate
from mtls_operator.pki.issuance import IssuedMaterial, issue_tls_material
from mtls_operator.pki.keys import key_algorithm_of
from mtls_operator.pki.material import inspect_tls_secret
from mtls_operator.policy import backoff
from mtls_operator.policy.certificate import (
    Action,
    CertificateInput,
    IssuerView,
    Plan,
    SecretView,
    Violation,
    plan,
)
from mtls_operator.policy.issuance_policy import evaluate as evaluate_policy
from mtls_operator.policy.renewal import renewal_time
from mtls_operator.policy.rollout import CONFIGMAP_PREFIX, Pacing, SecretVersion

logger = logging.getLogger("mtls_operator")
T = TypeVar("T")
Key = tuple[str, str]
WorkKey = tuple[str, str, str]  # (kind, namespace, name)
CERT = "cert"
ISSUER = "issuer"
ROLLOUT_BLOCKED = "RolloutBlocked"
POST_QUANTUM = "PostQuantum"


def key_of(inp: CertificateInput) -> tuple[str, str]:
    return (inp.namespace, inp.name)


@dataclass(frozen=True)
class Settings:
    workers: int = 8
    crypto_threads: int = 2
    backoff_base: timedelta = backoff.DEFAULT_BASE
    backoff_cap: timedelta = backoff.DEFAULT_CAP
    issuer_recheck: timedelta = timedelta(minutes=10)
    pacing: Pacing = field(default_factory=lambda: pacing_from_env(os.environ))


def pacing_from_env(env: Mapping[str, str]) -> Pacing:
    """Rollout pacing from MTLS_ROLLOUT_* variables (the chart sets them from values)."""
    base = Pacing()

    def seconds(name: str, default: timedelta) -> timedelta:
        value = env.get(name)
        return timedelta(seconds=float(value)) if value else default

    return Pacing(
        max_in_flight=int(env.get("MTLS_ROLLOUT_MAX_IN_FLIGHT") or base.max_in_flight),
        min_interval=seconds("MTLS_ROLLOUT_MIN_INTERVAL", base.min_interval),
        coalesce=seconds("MTLS_ROLLOUT_COALESCE", base.coalesce),
        max_per_hour=int(env.get("MTLS_ROLLOUT_MAX_PER_HOUR") or base.max_per_hour),
        timeout=seconds("MTLS_ROLLOUT_TIMEOUT", base.timeout),
    )


@dataclass(frozen=True)
class Verdict:
    """A cached judgement of one certificate's Secret, valid while resourceVersion and CA are unchanged."""

    secret_name: str
    resource_version: str | None
    ca_fingerprint: str | None
    view: SecretView


@dataclass
class IssuerState:
    spec: IssuerSpec | None
    view: IssuerView
    ca: CAKeyPair | None = None
    secret_rv: str | None = None
    policy: IssuerPolicy | None = None
    parent_fp: str | None = None
    trust_anchors_pem: bytes | None = None  # during a CA rotation: old and new roots; else None (the root)
    base_ca: CAKeyPair | None = None  # the CA in the issuer's Secret (ca may be a staged one mid-rotation)
    base_view: IssuerView | None = None


@dataclass
class Stats:
    issued: int = 0
    failed: int = 0
    by_algorithm: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def _now() -> datetime:
    return datetime.now(UTC)


class Runtime:
    def __init__(
        self,
        api: ApiClient,
        settings: Settings | None = None,
        clock: Callable[[], datetime] = _now,
        metrics: Metrics | None = None,
    ):
        self.api = api
        self.metrics = metrics or Metrics()
        api.on_write = lambda verb: self.metrics.api_write(verb=verb)
        self.settings = settings or Settings()
        self.clock = clock
        self.certs = ObjectStore(ref_field="secretName")
        self.certs_by_issuer: dict[Key, set[str]] = defaultdict(set)
        self.issuers = ObjectStore(ref_field="issuerRef.name")  # issuers have no issuerRef: unused index
        self.issuer_states: dict[Key, IssuerState] = {}
        self.secret_rv: dict[Key, str] = {}
        self.verdicts: dict[Key, Verdict] = {}
        self.stats = Stats()
        self.executor = ThreadPoolExecutor(self.settings.crypto_threads, thread_name_prefix="mtls-crypto")
        self.queue: WorkQueue[WorkKey] = WorkQueue(
            self._process, workers=self.settings.workers, name="mtls", on_idle=self._idle
        )
        self._idle_logged_at = (0, 0.0)
        self._idle_pending = False
        self.rollouts = RolloutManager(
            api,
            self._secret_version,
            pacing=self.settings.pacing,
            metrics=self.metrics,
            on_stamped=self._rollout_stamped,
            on_blocked=self._rollout_blocked,
            clock=clock,
        )
        self.rollout_records: dict[Key, list[dict[str, Any]]] = {}
        self.rollout_blocks: dict[Key, tuple[str, str] | None] = {}
        self._seen_fingerprint: dict[Key, str] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.revocations = Revocations(api, self.metrics)
        self.trust = TrustManager(api, self.rollouts, self._leaf_counts)
        self._ns_labels: dict[str, tuple[float, dict[str, str]]] = {}
        self._must_read: set[Key] = set()  # certificates whose Secret must be read, not assumed missing

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.queue.start()
        self.rollouts.start()
        self._background.add(asyncio.create_task(self.revocations.start()))

    async def stop(self) -> None:
        await self.revocations.stop()
        await self.rollouts.stop()
        await self.queue.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
        await self.api.close()

    def _idle(self) -> None:
        """Log when the queue drains, at most once a second and always after the last drain, so tests and
        people see a quiet operator and how many writes it took to get there."""
        if self._idle_pending:
            return
        processed, last = self._idle_logged_at
        if self.queue.processed == processed:
            return
        delay = max(0.0, 1.0 - (time.monotonic() - last))
        self._idle_pending = True
        asyncio.get_running_loop().call_later(delay, self._log_idle)

    def _log_idle(self) -> None:
        self._idle_pending = False
        self._idle_logged_at = (self.queue.processed, time.monotonic())
        logger.info(
            "Queue idle: processed=%d writes=%d reads=%d issued=%d waiting=%d",
            self.queue.processed,
            self.api.writes,
            self.api.reads,
            self.stats.issued,
            self.queue.waiting,
        )

    async def _in_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: fn(*args, **kwargs))

    async def _process(self, key: WorkKey) -> None:
        kind, namespace, name = key
        if kind == CERT:
            await self.reconcile_certificate((namespace, name))
        else:
            await self.reconcile_issuer((namespace, name))

    # ------------------------------------------------------------------ watch events (from kopf)

    def on_certificate_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        old = self.certs.get(key)
        if old is not None:
            old_issuer = (old.get("spec") or {}).get("issuerRef", {}).get("name")
            self.certs_by_issuer[(key[0], old_issuer)].discard(key[1])
        self._update_rollout_targets(key, old, None if event_type == "DELETED" else body)
        if event_type == "DELETED":
            self._revoke_on_delete(key, body)
            others = self.certs.remove(key)
            self.verdicts.pop(key, None)
            self._must_read.discard(key)
            self.metrics.forget_certificate(*key)
            self.queue.forget((CERT, *key))
        else:
            others = self.certs.put(key, body)
            issuer = (body.get("spec") or {}).get("issuerRef", {}).get("name")
            if issuer:
                self.certs_by_issuer[(key[0], issuer)].add(key[1])
            self.queue.add((CERT, *key))
        for other in others:  # certificates sharing a secretName re-judge their duplicate condition
            if other != key[1]:
                self.queue.add((CERT, key[0], other))

    def _revoke_on_delete(self, key: Key, body: Mapping[str, Any]) -> None:
        """A certificate deleted with revocationPolicy Revoke puts its current serial on the CRL."""
        spec = body.get("spec") or {}
        serial = (body.get("status") or {}).get("serialNumber")
        issuer = (spec.get("issuerRef") or {}).get("name")
        if spec.get("revocationPolicy") != "Revoke" or not serial or not issuer:
            return
        task = asyncio.create_task(
            self.revocations.revoke(key[0], str(issuer), str(serial), "cessationOfOperation", key[1])
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _update_rollout_targets(
        self, key: Key, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None
    ) -> None:
        def targets(body: Mapping[str, Any] | None) -> tuple[str, str, list[tuple[str, str]]]:
            spec = (body or {}).get("spec") or {}
            rollout = spec.get("rollout") or {}
            pairs = [
                (str(t.get("kind")), str(t.get("name")))
                for t in rollout.get("targets") or []
                if isinstance(t, Mapping) and t.get("kind") and t.get("name")
            ]
            return str(spec.get("secretName") or ""), str(rollout.get("policy") or "Auto"), pairs

        old_secret, _, old_targets = targets(old)
        new_secret, policy, new_targets = targets(new)
        if old_secret and old_secret != new_secret:
            self.rollouts.set_certificate_targets(key[0], old_secret, "Auto", [], old_targets)
            old_targets = []
        if new is None:
            if old_secret:
                self.rollouts.set_certificate_targets(key[0], old_secret, "Auto", [], old_targets)
            return
        if new_secret:
            self.rollouts.set_certificate_targets(key[0], new_secret, policy, new_targets, old_targets)

    def on_workload_event(self, kind: str, event_type: str | None, body: Mapping[str, Any]) -> None:
        self.rollouts.on_workload_event(kind, event_type, body)

    def on_issuer_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if event_type == "DELETED":
            self.issuers.remove(key)
            self.issuer_states.pop(key, None)
            self.metrics.forget_issuer(*key)
            self.revocations.forget_issuer(*key)
            self.queue.forget((ISSUER, *key))
            self._enqueue_issuer_certificates(key)
            return
        self.issuers.put(key, body)
        self.queue.add((ISSUER, *key))

    def on_secret_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        namespace, name = meta.get("namespace", ""), meta.get("name", "")
        key = (namespace, name)
        labels = meta.get("labels") or {}
        annotations = meta.get("annotations") or {}
        named_by_certs = self.certs.naming(namespace, name)
        issuers = [
            ikey
            for ikey, obj in self.issuers.objects.items()
            if ikey[0] == namespace and _issuer_secret_name(obj) == name
        ]
        relevant = named_by_certs or issuers or labels.get(LABEL_MANAGED_BY) == MANAGED_BY_VALUE
        if not relevant:
            return
        if event_type == "DELETED":
            self.secret_rv.pop(key, None)
        else:
            rv = meta.get("resourceVersion", "")
            if self.secret_rv.get(key) == rv:
                return  # our own write, already judged
            self.secret_rv[key] = rv
        owner = annotations.get(ANN_CERTIFICATE_NAME)
        if owner:
            named_by_certs.add(owner)
        for cert in named_by_certs:
            self.queue.add((CERT, namespace, cert))
        for ikey in issuers:
            self.queue.add((ISSUER, *ikey))

    def _enqueue_issuer_certificates(self, issuer: Key) -> None:
        for name in self.certs_by_issuer.get(issuer, ()):
            self.queue.add((CERT, issuer[0], name))

    # ------------------------------------------------------------------ issuers

    async def reconcile_issuer(self, key: Key) -> None:
        obj = self.issuers.get(key)
        if obj is None:
            return
        namespace, name = key
        meta, status = obj["metadata"], obj.get("status") or {}
        now = self.clock()
        previous = self.issuer_states.get(key)
        state = await self._gather_issuer(key, obj, now, previous)
        raw_policy = (obj.get("spec") or {}).get("policy")
        if raw_policy is not None:
            try:
                state.policy = parse_issuer_policy(raw_policy)
            except SpecError as exc:
                state.view = IssuerView(True, False, exc.reason, exc.message)
                state.ca = None
        rotation_status: Any = None
        recheck: datetime | None = None
        if state.ca is not None and state.spec is not None:
            try:
                outcome = await self.trust.reconcile(key, obj, state.spec, state.ca, now)
            except (ApiError, CAError) as exc:
                logger.warning("Trust bundle / CA rotation step of %s/%s failed: %s", namespace, name, exc)
            else:
                rotation_status, recheck = outcome.status, outcome.recheck
                state.trust_anchors_pem = outcome.trust_anchors_pem
                if outcome.active_ca is not None and outcome.active_ca is not state.ca:
                    active = outcome.active_ca
                    chain = tuple(
                        key_algorithm_of(c.public_key())[0]
                        for c in (active.certificate, *active.intermediates, active.root)
                    )
                    state.ca = active
                    state.view = IssuerView(
                        True,
                        True,
                        Reason.KEY_PAIR_VERIFIED,
                        f"Signing with the new CA {active.facts.subject} during a CA rotation.",
                        active.facts,
                        chain_algorithms=chain,
                    )
        self.issuer_states[key] = state
        await self.revocations.sync_issuer(namespace, name, obj.get("spec") or {}, state.ca)
        view = state.view
        self.metrics.observe_issuer(
            namespace,
            name,
            ca_not_after=view.ca.not_after if view.ca else None,
            ready=view.ready,
            reason=str(view.reason),
        )
        new_status: dict[str, Any] = {
            "conditions": cond.set_condition(
                status.get("conditions"),
                cond.READY,
                view.ready,
                view.reason,
                view.message,
                meta["generation"],
                now,
            ),
            "observedGeneration": meta["generation"],
            "type": _issuer_type(state.spec),
            "rotation": rotation_status,
            "secretName": state.spec.ca_secret_name if state.spec else None,
        }
        if view.ca is not None:
            new_status.update(
                notBefore=cond.rfc3339(view.ca.not_before),
                notAfter=cond.rfc3339(view.ca.not_after),
                fingerprint=view.ca.fingerprint,
                algorithm=_algorithm_label(view.ca.key_algorithm, view.ca.key_size),
                subject=view.ca.subject,
            )
        changed = _status_changed(status, new_status)
        if changed:
            await self._patch_status(ISSUER_PLURAL, key, new_status, self.issuers)
        old_ready = cond.find(status.get("conditions"), cond.READY)
        if (
            old_ready is None
            or old_ready.get("reason") != view.reason
            or (old_ready.get("status") == "True") != view.ready
        ):
            await post_event(
                self.api,
                kind=ISSUER_KIND,
                namespace=namespace,
                name=name,
                uid=meta["uid"],
                event_type="Normal" if view.ready else "Warning",
                reason=view.reason,
                message=view.message,
            )
        old_fp = previous.view.ca.fingerprint if previous and previous.view.ca else None
        new_fp = view.ca.fingerprint if view.ca else None
        if (
            previous is None
            or old_fp != new_fp
            or previous.view.ready != view.ready
            or previous.policy != state.policy
        ):
            self._enqueue_issuer_certificates(key)
            for child in self._child_issuers(key):
                self.queue.add((ISSUER, *child))
        # Look again at expiry (a CA that expires makes the issuer NotReady) and periodically.
        when = now + self.settings.issuer_recheck
        if view.ca is not None and view.ca.not_after < when:
            when = view.ca.not_after + timedelta(seconds=1)
        if recheck is not None and recheck < when:
            when = recheck
        self.queue.add_at((ISSUER, *key), when)

    async def _gather_issuer(
        self, key: Key, obj: Mapping[str, Any], now: datetime, previous: IssuerState | None
    ) -> IssuerState:
        namespace, name = key
        try:
            spec = parse_issuer_spec(obj.get("spec") or {})
        except SpecError as exc:
            return IssuerState(None, IssuerView(True, False, exc.reason, exc.message))
        secret_name = spec.ca_secret_name
        parent: CAKeyPair | None = None
        if spec.intermediate is not None:
            parent_state = self.issuer_states.get((namespace, spec.intermediate.parent))
            parent = parent_state.ca if parent_state else None
            if parent is None:
                return IssuerState(
                    spec,
                    IssuerView(
                        True,
                        False,
                        Reason.ISSUER_NOT_READY,
                        f"The parent MTLSIssuer {namespace}/{spec.intermediate.parent} is not ready, so the "
                        "intermediate CA cannot be signed yet.",
                    ),
                )
        parent_fp = parent.facts.fingerprint if parent else None
        secret = await read_secret(self.api, namespace, secret_name)
        if secret is None and (spec.self_signed is not None or spec.intermediate is not None):
            secret = await self._write_managed_ca(namespace, name, spec, now, parent, None)
            if secret is None:  # lost a create race: the next pass reads the winner's CA
                self.queue.add((ISSUER, *key))
                return previous or IssuerState(spec, IssuerView(True, False, Reason.CA_SECRET_MISSING, ""))
        if secret is None:
            return IssuerState(
                spec,
                IssuerView(
                    True,
                    False,
                    Reason.CA_SECRET_MISSING,
                    f"Secret {namespace}/{secret_name} with the CA key pair does not exist.",
                ),
            )
        self.secret_rv[(namespace, secret_name)] = secret.resource_version
        if (
            previous
            and previous.base_ca is not None
            and previous.base_view is not None
            and previous.secret_rv == secret.resource_version
            and previous.parent_fp == parent_fp
        ):
            ca = previous.base_ca  # parsed once, cached while the Secret (and the parent) are unchanged
            if now >= ca.facts.not_after:
                return IssuerState(
                    spec,
                    IssuerView(
                        True,
                        False,
                        Reason.CA_EXPIRED,
                        f"The CA certificate in Secret {secret_name} expired at "
                        f"{ca.facts.not_after.isoformat()}.",
                    ),
                    None,
                    secret.resource_version,
                )
            return IssuerState(
                spec,
                previous.base_view,
                ca,
                secret.resource_version,
                parent_fp=parent_fp,
                base_ca=ca,
                base_view=previous.base_view,
            )
        read_version = secret.resource_version
        try:
            ca = await self._in_thread(load_ca, secret.data, now)
            if parent is not None and not issued_by(ca.certificate, parent.certificate):
                # The parent CA changed: sign a new intermediate in place (guarded by resourceVersion).
                logger.info("Re-signing intermediate CA %s/%s under its parent's new CA.", namespace, name)
                rewritten = await self._write_managed_ca(namespace, name, spec, now, parent, secret)
                if rewritten is None:
                    self.queue.add((ISSUER, *key))
                    return previous or IssuerState(
                        spec, IssuerView(True, False, Reason.CA_SECRET_MISSING, "")
                    )
                secret = rewritten
                self.secret_rv[(namespace, secret_name)] = secret.resource_version
                ca = await self._in_thread(load_ca, secret.data, now)
        except CAError as exc:
            return IssuerState(
                spec,
                IssuerView(True, False, exc.reason, f"Secret {namespace}/{secret_name}: {exc.message}"),
                None,
                read_version,
            )
        facts = ca.facts
        message = (
            f"The CA {facts.subject} ({_algorithm_label(facts.key_algorithm, facts.key_size)}) is valid "
            f"until {cond.rfc3339(facts.not_after)}."
        )
        chain = tuple(
            key_algorithm_of(c.public_key())[0] for c in (ca.certificate, *ca.intermediates, ca.root)
        )
        view = IssuerView(True, True, Reason.KEY_PAIR_VERIFIED, message, facts, chain_algorithms=chain)
        return IssuerState(
            spec, view, ca, secret.resource_version, parent_fp=parent_fp, base_ca=ca, base_view=view
        )

    async def _write_managed_ca(
        self,
        namespace: str,
        issuer: str,
        spec: IssuerSpec,
        now: datetime,
        parent: CAKeyPair | None,
        existing: SecretObject | None,
    ) -> SecretObject | None:
        """Create (or, for an intermediate whose parent changed, replace) the CA Secret of an issuer the
        operator keeps. Returns None when another writer won the race."""
        if spec.intermediate is not None:
            assert parent is not None
            inter = spec.intermediate
            key_pem, chain = await self._in_thread(
                sign_intermediate,
                inter.ca,
                parent,
                now,
                inter.path_length,
                inter.permitted_dns,
                inter.excluded_dns,
            )
            data = {"tls.crt": chain, "tls.key": key_pem, "ca.crt": parent.root_pem}
            secret_name = inter.ca.secret_name
        else:
            assert spec.self_signed is not None
            key_pem, cert_pem = await self._in_thread(create_self_signed_ca, spec.self_signed, now)
            data = {"tls.crt": cert_pem, "tls.key": key_pem, "ca.crt": cert_pem}
            secret_name = spec.self_signed.secret_name
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": SECRET_TYPE_TLS,
            "metadata": {
                "name": secret_name,
                "namespace": namespace,
                "labels": {LABEL_MANAGED_BY: MANAGED_BY_VALUE},
                "annotations": {ANN_CA_FOR_ISSUER: issuer},
            },
            "data": encode_data(data),
        }
        try:
            written = await write_secret(
                self.api, body, replace_version=existing.resource_version if existing else None
            )
        except ApiError as exc:
            if exc.conflict:
                return None
            raise
        logger.info("Wrote the %s CA for MTLSIssuer %s/%s.", spec.kind, namespace, issuer)
        return written

    def _child_issuers(self, parent: Key) -> list[Key]:
        out = []
        for ikey, obj in self.issuers.objects.items():
            inter = (obj.get("spec") or {}).get("intermediate") or {}
            if ikey[0] == parent[0] and (inter.get("issuerRef") or {}).get("name") == parent[1]:
                out.append(ikey)
        return out

    # ------------------------------------------------------------------ certificates

    async def reconcile_certificate(self, key: Key) -> None:
        obj = self.certs.get(key)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return
        if not await self._issuer_judged(key[0], obj):
            return  # the issuer's first reconcile re-queues every certificate that names it
        now = self.clock()
        inp, secret = await self._gather_certificate(key, obj, now)
        decision = plan(inp)
        await self._act_certificate(key, obj, inp, decision, secret)
        self._observe_certificate(key)
        if inp.spec is not None:
            self._note_secret_version(key, inp.spec.secret_name)

    def _observe_certificate(self, key: Key) -> None:
        obj = self.certs.get(key)
        if obj is None:
            return
        verdict = self.verdicts.get(key)
        facts = verdict.view.facts if verdict else None
        status = obj.get("status") or {}
        ready = cond.find(status.get("conditions"), cond.READY) or {}
        ref = (obj.get("spec") or {}).get("issuerRef") or {}
        self.metrics.observe_certificate(
            key[0],
            key[1],
            str(ref.get("name", "")) if isinstance(ref, Mapping) else "",
            not_after=facts.leaf.not_after if facts else None,
            renewal_time=cond.parse_rfc3339(status.get("renewalTime")) if facts else None,
            ready=ready.get("status") == "True",
            reason=str(ready.get("reason", "")),
        )

    async def _issuer_judged(self, namespace: str, obj: Mapping[str, Any]) -> bool:
        """Whether the issuer this certificate names has been judged (or surely does not exist).

        After a restart the certificate watch may deliver before the issuer watch: deciding then would
        flap Ready to IssuerNotFound/NotReady and back, two needless writes. Ask the API server instead.
        """
        ref = (obj.get("spec") or {}).get("issuerRef") or {}
        name = ref.get("name") if isinstance(ref, Mapping) else None
        if not isinstance(name, str) or not name:
            return True
        ikey = (namespace, name)
        if ikey in self.issuer_states:
            return True
        if self.issuers.get(ikey) is None:
            body = await get_custom(self.api, ISSUER_PLURAL, namespace, name)
            if body is None:
                return True  # truly absent: the certificate reports IssuerNotFound
            self.issuers.put(ikey, body)
        self.queue.add((ISSUER, *ikey))
        return False

    async def _gather_certificate(
        self, key: Key, obj: Mapping[str, Any], now: datetime
    ) -> tuple[CertificateInput, SecretObject | None]:
        namespace, name = key
        meta, status = obj["metadata"], obj.get("status") or {}
        spec: CertificateSpec | None = None
        spec_error: Violation | None = None
        try:
            spec = parse_certificate_spec(obj.get("spec") or {})
        except SpecError as exc:
            spec_error = Violation(exc.reason, exc.message)

        issuer_view = IssuerView()
        ca: CAKeyPair | None = None
        policy_violation: Violation | None = None
        if spec is not None:
            state = self.issuer_states.get((namespace, spec.issuer_ref.name))
            if state is not None:
                issuer_view, ca = state.view, state.ca
            elif self.issuers.get((namespace, spec.issuer_ref.name)) is not None:
                issuer_view = IssuerView(True, False, Reason.ISSUER_NOT_READY, "it has not been checked yet.")
            issuer_policy = state.policy if state is not None else None
            try:
                spiffe = parse_spiffe((obj.get("spec") or {}).get("spiffe"))
                spec = with_spiffe_uri(spec, spiffe, namespace, issuer_policy)
            except SpecError as exc:
                spec, spec_error = None, Violation(exc.reason, exc.message)
            if spec is not None and issuer_policy is not None and not issuer_policy.unrestricted:
                labels = await self._namespace_labels(namespace) if issuer_policy.allowed_namespaces else {}
                policy_violation = evaluate_policy(issuer_policy, spec, namespace, labels)

        secret_view, secret = SecretView(), None
        if spec is not None:
            secret_view, secret = await self._gather_secret(key, spec, ca)

        duplicates = tuple(sorted(self.certs.naming(namespace, spec.secret_name) - {name})) if spec else ()
        revoked = False
        if spec is not None and secret_view.facts is not None:
            revoked = await self._revocation_state(
                namespace, name, spec, secret_view.facts, meta["annotations"]
            )
        ready = cond.find(status.get("conditions"), cond.READY)
        failures = int(status.get("failedIssuanceAttempts") or 0)
        last_reason: Reason | None = None
        if failures and ready is not None and ready.get("status") == "False":
            try:
                last_reason = Reason(str(ready.get("reason")))
            except ValueError:
                last_reason = None
        return (
            CertificateInput(
                namespace=namespace,
                name=name,
                uid=meta["uid"],
                generation=meta["generation"],
                spec=spec,
                spec_error=spec_error,
                policy_violation=policy_violation,
                revoked=revoked,
                secret=secret_view,
                issuer=issuer_view,
                now=now,
                duplicates=duplicates,
                renew_requested_at=cond.parse_rfc3339(meta["annotations"].get(ANN_RENEW_REQUESTED)),
                failed_attempts=failures,
                last_failure_time=cond.parse_rfc3339(status.get("lastFailureTime")),
                last_failure_generation=int(ready.get("observedGeneration", 0)) if ready else None,
                last_failure_reason=last_reason,
                backoff_base=self.settings.backoff_base,
                backoff_cap=self.settings.backoff_cap,
            ),
            secret,
        )

    async def _revocation_state(
        self,
        namespace: str,
        name: str,
        spec: CertificateSpec,
        facts: SecretFacts,
        annotations: Mapping[str, str],
    ) -> bool:
        """Whether the current certificate is revoked, acting first on a pending `mtlsctl revoke` request
        (the annotation names a time: the certificate current then is revoked, once)."""
        issuer, serial = spec.issuer_ref.name, facts.leaf.serial_number
        if self.revocations.is_revoked(namespace, issuer, serial):
            return True
        requested = cond.parse_rfc3339(annotations.get(ANN_REVOKE_REQUESTED))
        if (
            requested is not None
            and facts.leaf.not_before <= requested
            and not self.revocations.request_handled(namespace, issuer, name, requested)
        ):
            reason = annotations.get(ANN_REVOKE_REASON) or "unspecified"
            await self.revocations.revoke(namespace, issuer, serial, reason, name)
            return self.revocations.is_revoked(namespace, issuer, serial)
        return False

    async def _namespace_labels(self, namespace: str) -> Mapping[str, str]:
        """A namespace's labels for issuance policy, cached for 5 s (one read per namespace at most)."""
        cached = self._ns_labels.get(namespace)
        if cached is not None and time.monotonic() - cached[0] < 5:
            return cached[1]
        body = await self.api.get_or_none(f"/api/v1/namespaces/{namespace}") or {}
        labels = dict((body.get("metadata") or {}).get("labels") or {})
        self._ns_labels[namespace] = (time.monotonic(), labels)
        return labels

    async def _gather_secret(
        self, key: Key, spec: CertificateSpec, ca: CAKeyPair | None
    ) -> tuple[SecretView, SecretObject | None]:
        namespace, _ = key
        ca_fp = ca.facts.fingerprint if ca else None
        seen_rv = self.secret_rv.get((namespace, spec.secret_name))
        cached = self.verdicts.get(key)
        if (
            cached is not None
            and cached.secret_name == spec.secret_name
            and cached.ca_fingerprint == ca_fp
            and cached.resource_version is not None
            and cached.resource_version == seen_rv
        ):
            return cached.view, None
        status = (self.certs.get(key) or {}).get("status") or {}
        if (
            cached is None
            and seen_rv is None
            and key not in self._must_read
            and not int(status.get("revision") or 0)
            and not int(status.get("failedIssuanceAttempts") or 0)
        ):
            # Never issued and no such Secret seen by the watch: take it as missing without a read. The
            # create that follows is atomic; if a Secret does exist after all, it fails with 409 and the
            # next pass reads it (so nothing is ever overwritten).
            return SecretView(exists=False, revision=0), None
        self._must_read.discard(key)
        secret = await read_secret(self.api, namespace, spec.secret_name)
        view = await self._judge_secret(key, secret, ca)
        rv = secret.resource_version if secret else None
        if rv is not None:
            self.secret_rv[(namespace, spec.secret_name)] = rv
        else:
            self.secret_rv.pop((namespace, spec.secret_name), None)
        self.verdicts[key] = Verdict(spec.secret_name, rv, ca_fp, view)
        return view, secret

    async def _judge_secret(self, key: Key, secret: SecretObject | None, ca: CAKeyPair | None) -> SecretView:
        if secret is None:
            obj = self.certs.get(key) or {}
            return SecretView(exists=False, revision=int((obj.get("status") or {}).get("revision") or 0))
        owner = secret.annotations.get(ANN_CERTIFICATE_NAME)
        revision = _int(secret.annotations.get(ANN_REVISION))
        facts: SecretFacts | None = None
        error: Violation | None = None
        try:
            facts = await self._in_thread(inspect_tls_secret, secret.data, ca)
        except TLSMaterialError as exc:
            error = Violation(exc.reason, exc.message)
        return SecretView(
            exists=True,
            owner_certificate=owner,
            managed=secret.managed,
            facts=facts,
            error=error,
            spec_hash=secret.annotations.get(ANN_SPEC_HASH),
            revision=revision,
        )

    async def _act_certificate(
        self,
        key: Key,
        obj: Mapping[str, Any],
        inp: CertificateInput,
        decision: Plan,
        secret: SecretObject | None,
    ) -> None:
        namespace, name = key
        status = obj.get("status") or {}
        now = inp.now
        if decision.action is Action.ISSUE:
            await self._issue(key, obj, inp, decision, secret)
            return
        if decision.action is Action.FAIL:
            assert decision.violation is not None
            await self._record_failure(key, obj, inp, decision.violation)
            return
        new_status: dict[str, Any]
        violation = decision.violation
        if decision.action is Action.NOTHING:
            new_status = self._ready_status(inp, status, inp.secret.facts, inp.secret.revision, now)
        elif decision.action is Action.WAIT:
            assert violation is not None
            ready = cond.find(status.get("conditions"), cond.READY) or {}
            new_status = {
                "conditions": cond.set_conditions(
                    status.get("conditions"),
                    [
                        (
                            cond.READY,
                            False,
                            str(ready.get("reason") or violation.reason),
                            str(ready.get("message") or violation.message),
                        ),
                        (
                            cond.ISSUING,
                            True,
                            violation.reason,
                            f"{violation.message} The next attempt is at "
                            f"{cond.rfc3339(decision.next_check)}.",
                        ),
                    ],
                    int(ready.get("observedGeneration") or inp.generation),
                    now,
                ),
                "nextAttemptTime": cond.rfc3339(decision.next_check),
            }
        else:  # BLOCKED
            assert violation is not None
            new_status = {
                "conditions": cond.set_conditions(
                    status.get("conditions"),
                    [
                        (cond.READY, False, violation.reason, violation.message),
                        (cond.ISSUING, False, violation.reason, violation.message),
                    ],
                    inp.generation,
                    now,
                ),
            }
        if _status_changed(status, new_status):
            await self._patch_status(CERTIFICATE_PLURAL, key, new_status, self.certs)
            await self._post_rollout_event(key, inp, status, new_status)
            if violation is not None and _ready_reason(status) != _ready_reason(new_status):
                await self._certificate_event(
                    (namespace, name), inp.uid, "Warning", violation.reason, violation.message
                )
        if decision.next_check is not None:
            self.queue.add_at((CERT, *key), decision.next_check)
        elif violation is not None and violation.reason is Reason.POLICY_DENIED:
            # Namespace labels are not watched: look again now and then.
            self.queue.add_at((CERT, *key), now + timedelta(seconds=30))

    async def _certificate_event(
        self, key: Key, uid: str, event_type: str, reason: Reason | str, message: str
    ) -> None:
        await post_event(
            self.api,
            kind=CERTIFICATE_KIND,
            namespace=key[0],
            name=key[1],
            uid=uid,
            event_type=event_type,
            reason=reason,
            message=message,
        )

    async def _post_rollout_event(
        self, key: Key, inp: CertificateInput, old: Mapping[str, Any], new: Mapping[str, Any]
    ) -> None:
        before = cond.find(old.get("conditions"), ROLLOUT_BLOCKED) or {}
        after = cond.find(new.get("conditions"), ROLLOUT_BLOCKED) or {}
        if after.get("status") == "True" and before.get("status") != "True":
            await self._certificate_event(
                (key[0], key[1]), inp.uid, "Warning", str(after.get("reason")), str(after.get("message"))
            )

    def _ready_status(
        self,
        inp: CertificateInput,
        status: Mapping[str, Any],
        facts: SecretFacts | None,
        revision: int,
        now: datetime,
        trigger: Violation | None = None,
    ) -> dict[str, Any]:
        assert facts is not None and inp.spec is not None
        leaf = facts.leaf
        renew_at = renewal_time(
            leaf.not_before, leaf.not_after, inp.spec.renew_before, inp.spec.renew_before_percentage, inp.uid
        )
        message = f"The certificate is up to date and valid until {cond.rfc3339(leaf.not_after)}."
        conditions = cond.set_condition(
            status.get("conditions"), cond.READY, True, Reason.UP_TO_DATE, message, inp.generation, now
        )
        issuing = cond.find(conditions, cond.ISSUING)
        if trigger is not None:
            # The check that caused this issuance stays visible until the next one.
            conditions = cond.set_condition(
                conditions,
                cond.ISSUING,
                False,
                trigger.reason,
                f"Issued revision {revision} because: {trigger.message}",
                inp.generation,
                now,
            )
        elif issuing is None or issuing.get("status") != "False":
            conditions = cond.set_condition(
                conditions,
                cond.ISSUING,
                False,
                Reason.UP_TO_DATE,
                "No issuance is needed.",
                inp.generation,
                now,
            )
        result: dict[str, Any] = {
            "conditions": conditions,
            "notBefore": cond.rfc3339(leaf.not_before),
            "notAfter": cond.rfc3339(leaf.not_after),
            "renewalTime": cond.rfc3339(renew_at),
            "serialNumber": leaf.serial_number,
            "fingerprint": leaf.fingerprint,
            "revision": max(revision, int(status.get("revision") or 0)),
            "algorithm": inp.spec.private_key.label,
            "secretName": inp.spec.secret_name,
            "issuerFingerprint": inp.issuer.ca.fingerprint if inp.issuer.ca else None,
            "failedIssuanceAttempts": None,
            "lastFailureTime": None,
            "nextAttemptTime": None,
        }
        if inp.spec.private_key.algorithm is KeyAlgorithm.MLDSA and inp.issuer.chain_algorithms:
            classical = sorted({str(a) for a in inp.issuer.chain_algorithms if a is not KeyAlgorithm.MLDSA})
            if classical:
                pq = (
                    False,
                    "MixedChain",
                    f"The ML-DSA certificate chains to a CA signed with {', '.join(classical)}: "
                    "it is not post-quantum end to end.",
                )
            else:
                pq = (True, "PostQuantumChain", "Every certificate in the chain is signed with ML-DSA.")
            result["conditions"] = cond.set_condition(
                result["conditions"], POST_QUANTUM, pq[0], pq[1], pq[2], inp.generation, now
            )
        rollout = self._rollout_status(key_of(inp), status, leaf.fingerprint, inp.generation, now)
        blocked = rollout.pop("conditions_rollout", None)
        if blocked is not None:
            result["conditions"] = cond.set_condition(
                result["conditions"], ROLLOUT_BLOCKED, blocked[0], blocked[1], blocked[2], inp.generation, now
            )
        result.update(rollout)
        return result

    # ------------------------------------------------------------------ rollouts

    def _leaf_counts(self, issuer: Key, new_fp: str) -> tuple[int, int, timedelta]:
        """For a CA rotation: leaves of ``issuer`` signed by the CA ``new_fp``, all its leaves, and the
        longest leaf lifetime (from the certificates' own validity)."""
        on_new = total = 0
        longest = timedelta(0)
        for name in self.certs_by_issuer.get(issuer, ()):
            verdict = self.verdicts.get((issuer[0], name))
            facts = verdict.view.facts if verdict else None
            if verdict is None or facts is None:
                continue
            total += 1
            longest = max(longest, facts.leaf.not_after - facts.leaf.not_before)
            if verdict.ca_fingerprint == new_fp and facts.signed_by_current_ca:
                on_new += 1
        return on_new, total, longest

    def _secret_version(
        self, namespace: str, secret: str, kind: str, name: str
    ) -> SecretVersion | str | None:
        if secret.startswith(CONFIGMAP_PREFIX):
            return self.trust.bundle_version(namespace, secret)
        certs = self.certs.naming(namespace, secret)
        if not certs:
            return None  # not a Secret this operator manages
        cert = sorted(certs)[0]
        obj = self.certs.get((namespace, cert)) or {}
        policy = ((obj.get("spec") or {}).get("rollout") or {}).get("policy") or "Auto"
        if policy == "None":
            return None
        verdict = self.verdicts.get((namespace, cert))
        if verdict is None:
            return "unknown"
        facts = verdict.view.facts
        if facts is None or not facts.key_matches:
            return None  # nothing valid to roll out (yet)
        return SecretVersion(secret, facts.leaf.fingerprint, verdict.view.revision, facts.leaf.not_before)

    def _note_secret_version(self, key: Key, secret_name: str) -> None:
        """Tell the rollout manager when a certificate's Secret holds something new (or was first judged)."""
        verdict = self.verdicts.get(key)
        facts = verdict.view.facts if verdict else None
        if facts is None:
            return
        if self._seen_fingerprint.get(key) != facts.leaf.fingerprint:
            self._seen_fingerprint[key] = facts.leaf.fingerprint
            self.rollouts.secret_changed(key[0], secret_name)

    def _rollout_stamped(self, stamped: Stamped) -> None:
        for secret in stamped.secrets:
            for cert in self.certs.naming(stamped.namespace, secret):
                key = (stamped.namespace, cert)
                records = [
                    r
                    for r in self.rollout_records.get(key, [])
                    if (r["kind"], r["name"]) != (stamped.kind, stamped.name)
                ]
                records.append(
                    {
                        "kind": stamped.kind,
                        "name": stamped.name,
                        "fingerprint": stamped.fingerprints[secret],
                        "time": cond.rfc3339(stamped.time),
                    }
                )
                self.rollout_records[key] = records[-64:]
                self.rollout_blocks[key] = None
                self.queue.add((CERT, *key))

    def _rollout_blocked(self, workload: Workload, secrets: Sequence[str], reason: str, message: str) -> None:
        for secret in secrets:
            for cert in self.certs.naming(workload.namespace, secret):
                key = (workload.namespace, cert)
                self.rollout_blocks[key] = (reason, message)
                self.queue.add((CERT, *key))

    def _rollout_status(
        self, key: Key, status: Mapping[str, Any], fingerprint: str, generation: int, now: datetime
    ) -> dict[str, Any]:
        """The rollout part of a Ready certificate's status: restarts for this fingerprint, loop guard."""
        out: dict[str, Any] = {}
        records = [r for r in self.rollout_records.get(key, []) if r["fingerprint"] == fingerprint]
        known = [r for r in status.get("rollouts") or [] if r.get("fingerprint") == fingerprint]
        merged = {(r["kind"], r["name"]): r for r in [*known, *records]}
        out["rollouts"] = sorted(merged.values(), key=lambda r: (r["kind"], r["name"])) or None
        block = self.rollout_blocks.get(key)
        existing = cond.find(status.get("conditions"), ROLLOUT_BLOCKED)
        if block is not None:
            out["conditions_rollout"] = (True, block[0], block[1])
        elif existing is not None and existing.get("status") == "True" and key in self.rollout_blocks:
            out["conditions_rollout"] = (False, "RolloutAllowed", "Workloads are restarted again.")
        return out

    async def _issue(
        self,
        key: Key,
        obj: Mapping[str, Any],
        inp: CertificateInput,
        decision: Plan,
        secret: SecretObject | None,
    ) -> None:
        namespace, name = key
        spec = inp.spec
        assert spec is not None and decision.violation is not None
        state = self.issuer_states.get((namespace, spec.issuer_ref.name))
        if state is None or state.ca is None:
            self.queue.add((CERT, *key))  # the issuer changed since this was decided: decide again
            return
        ca = state.ca
        now = inp.now
        status = obj.get("status") or {}
        if inp.secret.exists and secret is None:  # judged from cache: read it for the write guard
            secret = await read_secret(self.api, namespace, spec.secret_name)
            if secret is None:
                self.verdicts.pop(key, None)
                self.queue.add((CERT, *key))
                return
        try:
            existing_key = secret.data.get(TLS_KEY) if (decision.reuse_key and secret) else None
            password = await self._pkcs12_password(namespace, spec) if spec.pkcs12.create else None
            started = time.monotonic()
            crl_url, ocsp_url = self.revocations.leaf_urls(namespace, spec.issuer_ref.name)
            material: IssuedMaterial = await self._in_thread(
                issue_tls_material,
                spec,
                ca,
                now,
                existing_key_pem=existing_key,
                pkcs12_password=password,
                friendly_name=name,
                crl_url=crl_url,
                ocsp_url=ocsp_url,
                trust_anchors_pem=state.trust_anchors_pem,
            )
        except (TLSMaterialError, CAError, _PasswordError) as exc:
            await self._record_failure(key, obj, inp, Violation(Reason.ISSUANCE_FAILED, exc.message))
            return
        revision = max(inp.secret.revision, int(status.get("revision") or 0)) + 1
        body = self._secret_body(namespace, name, inp, spec, material, revision, secret)
        try:
            written = await write_secret(
                self.api, body, replace_version=secret.resource_version if secret else None
            )
        except ApiError as exc:
            if exc.conflict:
                # Someone else wrote first (another replica, or a user): decide again from what is there.
                logger.info(
                    "Secret %s/%s changed while issuing; deciding again.", namespace, spec.secret_name
                )
                self.verdicts.pop(key, None)
                self._must_read.add(key)
                self.queue.add((CERT, *key))
                return
            if exc.status == 422 or exc.status == 403:
                await self._record_failure(
                    key,
                    obj,
                    inp,
                    Violation(
                        Reason.ISSUANCE_FAILED, f"Writing Secret {spec.secret_name} failed: {exc.message}"
                    ),
                )
                return
            raise
        self.secret_rv[(namespace, spec.secret_name)] = written.resource_version
        view = SecretView(
            exists=True,
            owner_certificate=name,
            managed=True,
            facts=material.facts,
            spec_hash=spec.identity_hash(),
            revision=revision,
        )
        self.verdicts[key] = Verdict(spec.secret_name, written.resource_version, ca.facts.fingerprint, view)
        self.stats.issued += 1
        self.metrics.issuance(
            result="success", algorithm=spec.private_key.label, seconds=time.monotonic() - started
        )
        self.stats.by_algorithm[spec.private_key.label] += 1
        leaf = material.facts.leaf
        new_status = self._ready_status(inp, status, material.facts, revision, now, decision.violation)
        await self._patch_status(CERTIFICATE_PLURAL, key, new_status, self.certs)
        await self._certificate_event(
            (namespace, name),
            inp.uid,
            "Normal",
            Reason.ISSUED,
            (
                f"Issued revision {revision} ({spec.private_key.label}, serial {leaf.serial_number}) into "
                f"Secret {spec.secret_name}, valid until {cond.rfc3339(leaf.not_after)}: "
                f"{decision.violation.message}"
            ),
        )
        logger.info(
            "Issued %s/%s revision %d (%s, serial %s): %s",
            namespace,
            name,
            revision,
            spec.private_key.label,
            leaf.serial_number,
            decision.violation.reason,
        )
        renew_at = cond.parse_rfc3339(new_status["renewalTime"])
        if renew_at is not None:
            self.queue.add_at((CERT, *key), min(renew_at, leaf.not_after))

    def _secret_body(
        self,
        namespace: str,
        name: str,
        inp: CertificateInput,
        spec: CertificateSpec,
        material: IssuedMaterial,
        revision: int,
        existing: SecretObject | None,
    ) -> dict[str, Any]:
        leaf = material.facts.leaf
        labels = dict(spec.secret_template.labels)
        labels[LABEL_MANAGED_BY] = MANAGED_BY_VALUE
        annotations = dict(spec.secret_template.annotations)
        annotations.update(
            {
                ANN_CERTIFICATE_NAME: name,
                ANN_CERTIFICATE_UID: inp.uid,
                ANN_ISSUER_NAME: spec.issuer_ref.name,
                ANN_ISSUER_KIND: spec.issuer_ref.kind,
                ANN_COMMON_NAME: spec.common_name or "",
                ANN_DNS_NAMES: ",".join(spec.dns_names),
                ANN_IP_ADDRESSES: ",".join(spec.ip_addresses),
                ANN_URIS: ",".join(spec.uris),
                ANN_EMAILS: ",".join(spec.email_addresses),
                ANN_SERIAL: leaf.serial_number,
                ANN_NOT_AFTER: cond.rfc3339(leaf.not_after) or "",
                ANN_FINGERPRINT: leaf.fingerprint,
                ANN_REVISION: str(revision),
                ANN_SPEC_HASH: spec.identity_hash(),
            }
        )
        metadata: dict[str, Any] = {
            "name": spec.secret_name,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
        }
        if spec.cleanup_policy is CleanupPolicy.DELETE:
            metadata["ownerReferences"] = [
                {
                    "apiVersion": API_VERSION,
                    "kind": CERTIFICATE_KIND,
                    "name": name,
                    "uid": inp.uid,
                    "controller": True,
                    "blockOwnerDeletion": False,
                }
            ]
        elif existing is not None:
            # Keep owner references that others set; drop ours if the policy changed to Retain.
            refs = [r for r in existing.owner_refs if r.get("uid") != inp.uid]
            if refs:
                metadata["ownerReferences"] = refs
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": SECRET_TYPE_TLS,
            "metadata": metadata,
            "data": encode_data(material.data),
        }

    async def _pkcs12_password(self, namespace: str, spec: CertificateSpec) -> bytes:
        ref = spec.pkcs12.password_secret_ref
        if ref is None:
            return b""
        secret = await read_secret(self.api, namespace, ref.name)
        if secret is None or ref.key not in secret.data:
            raise _PasswordError(
                f"The PKCS#12 password Secret {ref.name} (key {ref.key}) does not exist in {namespace}."
            )
        return secret.data[ref.key]

    async def _record_failure(
        self, key: Key, obj: Mapping[str, Any], inp: CertificateInput, violation: Violation
    ) -> None:
        namespace, name = key
        status = obj.get("status") or {}
        now = inp.now
        failures = int(status.get("failedIssuanceAttempts") or 0) + 1
        retry_at = backoff.next_attempt(failures, now, inp.backoff_base, inp.backoff_cap)
        assert retry_at is not None
        self.stats.failed += 1
        self.metrics.issuance(
            result="failure", algorithm=inp.spec.private_key.label if inp.spec else "unknown", seconds=0.0
        )
        new_status = {
            "conditions": cond.set_conditions(
                status.get("conditions"),
                [
                    (cond.READY, False, violation.reason, violation.message),
                    (
                        cond.ISSUING,
                        True,
                        violation.reason,
                        f"Attempt {failures} failed; the next attempt is at {cond.rfc3339(retry_at)}.",
                    ),
                ],
                inp.generation,
                now,
            ),
            "failedIssuanceAttempts": failures,
            "lastFailureTime": cond.rfc3339(now),
            "nextAttemptTime": cond.rfc3339(retry_at),
        }
        await self._patch_status(CERTIFICATE_PLURAL, key, new_status, self.certs)
        await self._certificate_event(
            (namespace, name),
            inp.uid,
            "Warning",
            violation.reason,
            f"{violation.message} Attempt {failures}; retrying at {cond.rfc3339(retry_at)}.",
        )
        logger.warning(
            "Issuance of %s/%s failed (attempt %d): %s", namespace, name, failures, violation.message
        )
        self.queue.add_at((CERT, *key), retry_at)

    async def _patch_status(self, plural: str, key: Key, new_status: Mapping[str, Any], store: Any) -> None:
        try:
            await patch_status(self.api, plural, key[0], key[1], dict(new_status))
        except ApiError as exc:
            if exc.not_found:
                return  # deleted meanwhile
            raise
        obj = store.get(key)
        if obj is not None:
            merged = dict(obj.get("status") or {})
            for k, v in new_status.items():
                if v is None:
                    merged.pop(k, None)
                else:
                    merged[k] = v
            store.update_status(key, merged)


class _PasswordError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _issuer_secret_name(obj: Mapping[str, Any]) -> str | None:
    spec = obj.get("spec") or {}
    for kind in ("selfSigned", "ca"):
        section = spec.get(kind)
        if isinstance(section, Mapping) and isinstance(section.get("secretName"), str):
            return str(section["secretName"])
    return None


def _issuer_type(spec: IssuerSpec | None) -> str | None:
    return spec.kind if spec is not None else None


def _algorithm_label(algorithm: Any, size: int) -> str:
    return KeySpec(algorithm=KeyAlgorithm(algorithm), size=size).label


def _ready_reason(status: Mapping[str, Any]) -> tuple[Any, Any]:
    ready = cond.find(status.get("conditions"), cond.READY) or {}
    return ready.get("status"), ready.get("reason")


def _status_changed(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    for k, v in desired.items():
        if v is None:
            if current.get(k) is not None:
                return True
        elif current.get(k) != v:
            return True
    return False
