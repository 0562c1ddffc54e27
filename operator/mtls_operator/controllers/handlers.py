"""kopf wiring, kept thin: watch events go to intake; kopf itself writes nothing.

Only ``on.event`` handlers are used (no ``on.create``/``on.update``, timers or daemons), so kopf adds no
finalizers, progress or diff-base annotations: every API write is the operator's own, deliberate one.

Secrets are watched with a server-side label selector (``mtls.dev/secret-role``): the API server sends only
the Secrets the operator keeps and the CA Secrets users opted in, never the rest of the cluster's.
Namespaces (labels and the operator's annotations), MTLSClusterIssuers and PodCertificateRequests are
watched when the operator lists cluster-scoped objects (it serves every namespace, or namespace globs),
which is also when its RBAC may list them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import kopf
from kopf._core.reactor.inventory import (  # kopf exports no public name for them
    ResourceMemories,
    ResourceMemory,
)

from mtls_operator.api.constants import (
    CERTIFICATE_PLURAL,
    CLUSTER_ISSUER_PLURAL,
    GROUP,
    ISSUER_PLURAL,
    KOPF_PREFIX,
    LABEL_SECRET_ROLE,
    VERSION,
)
from mtls_operator.controllers.config import OperatorConfig
from mtls_operator.controllers.runtime import Runtime
from mtls_operator.k8s.api import ApiClient, credentials_from_kopf
from mtls_operator.k8s.login import login
from mtls_operator.observability.metrics import Metrics

logger = logging.getLogger("mtls_operator")
LIST_CHUNK_SIZE = 500  # objects per page of kopf's initial lists
# kopf keeps a worker (a task, a queue, an event) per object for this long after its last event (5 s by
# default). The handlers only hand the event to intake, so a worker has nothing to wait for.
WORKER_IDLE_TIMEOUT = 0.5


def _runtime(memo: Any) -> Runtime:
    runtime: Runtime = memo.runtime
    return runtime


class WatchOnlyDiffBase(kopf.AnnotationsDiffBaseStorage):
    """The diff-base of an operator with only ``on.event`` handlers: nothing.

    kopf compares an object with its last-handled state for ``on.create``/``on.update`` handlers, but it
    builds that state (a deep copy of the whole body: Secret data, pod templates) and parses the stored
    one on every event of every watched object, for any handler. With nothing to compare, both are
    skipped; nothing is stored either (kopf stores a diff-base only after change handlers ran)."""

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None


class WatchOnlyMemories(ResourceMemories):
    """kopf's per-object memories, none of them kept.

    kopf keeps a memory for every object it ever saw (a copy of the memo, an error throttler, daemon and
    index state: ~1 KB each) until the object is deleted, for daemons, timers, indexes and change
    handlers. The ``on.event`` handlers need nothing across events, so each event gets a fresh memory and
    none is stored: memory no longer grows with every Secret and workload kopf delivers. The one thing
    lost is the escalation of kopf's error throttling across events of one object (each failing event
    still waits the first delay); the handlers only hand events to intake, which does not raise."""

    async def recall(
        self,
        raw_body: kopf.RawBody,
        *,
        memobase: Any = None,
        noticed_by_listing: bool = False,
        ephemeral: bool = False,
    ) -> ResourceMemory:
        return await super().recall(
            raw_body, memobase=memobase, noticed_by_listing=noticed_by_listing, ephemeral=True
        )


def configure_kopf(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    """kopf's settings for this operator: watch-only, filtered, paged, and cheap per object."""
    # kopf's own bookkeeping lives under its own prefix, never under mtls.dev (see KOPF_NOTES).
    settings.persistence.finalizer = f"{KOPF_PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = WatchOnlyDiffBase(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = config.watch.server_timeout
    settings.watching.client_timeout = config.watch.client_timeout
    settings.networking.request_timeout = config.watch.request_timeout
    settings.watching.label_selectors["v1", "secrets"] = LABEL_SECRET_ROLE
    # The initial lists in pages: a restart into 10k certificates never holds 10k Secrets (or 10k
    # workloads) as one decoded response.
    settings.watching.chunk_size = LIST_CHUNK_SIZE
    settings.queueing.idle_timeout = WORKER_IDLE_TIMEOUT


def build_registry(config: OperatorConfig, *, cluster_scope: bool) -> kopf.OperatorRegistry:
    """The handlers for one run of the operator. ``cluster_scope``: it may list and watch cluster-scoped
    objects (every namespace, or namespace globs): Namespaces and MTLSClusterIssuers."""
    registry = kopf.OperatorRegistry()

    kopf.on.login(registry=registry)(login)

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        configure_kopf(settings, config)
        info = login(settings=settings)
        if info is None:
            raise kopf.PermanentError(
                "No credentials: set KUBECONFIG or run in-cluster with a service account."
            )
        metrics: Metrics = getattr(memo, "metrics", None) or Metrics()
        runtime = Runtime(ApiClient(credentials_from_kopf(info)), config, metrics=metrics)
        runtime.start()
        memo.runtime = runtime
        logger.info("mtls-operator started with %d workers.", config.workers)

    @kopf.on.cleanup(registry=registry)
    async def shutdown(memo: kopf.Memo, **_: Any) -> None:
        runtime = getattr(memo, "runtime", None)
        if runtime is not None:
            await runtime.stop()

    @kopf.on.event(GROUP, VERSION, CERTIFICATE_PLURAL, registry=registry)
    async def certificate_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
        _runtime(memo).intake.certificate_event(event.get("type"), event["object"])

    @kopf.on.event(GROUP, VERSION, ISSUER_PLURAL, registry=registry)
    async def issuer_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
        _runtime(memo).intake.issuer_event(event.get("type"), event["object"])

    @kopf.on.event("v1", "secrets", registry=registry)
    async def secret_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
        _runtime(memo).intake.secret_event(event.get("type"), event["object"])

    for kind, plural in (
        ("Deployment", "deployments"),
        ("StatefulSet", "statefulsets"),
        ("DaemonSet", "daemonsets"),
    ):

        @kopf.on.event("apps", "v1", plural, registry=registry, id=f"{plural}-event")
        async def workload_event(
            event: kopf.RawEvent, memo: kopf.Memo, workload_kind: str = kind, **_: Any
        ) -> None:
            _runtime(memo).intake.workload_event(workload_kind, event.get("type"), event["object"])

    if cluster_scope:

        @kopf.on.event("v1", "namespaces", registry=registry)
        async def namespace_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
            _runtime(memo).intake.namespace_event(event.get("type"), event["object"])

        @kopf.on.event(GROUP, VERSION, CLUSTER_ISSUER_PLURAL, registry=registry)
        async def cluster_issuer_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
            _runtime(memo).intake.issuer_event(event.get("type"), event["object"])

        # The Pod Certificate signer (KEP-4317): requests of the signer names issuers declare.
        @kopf.on.event("certificates.k8s.io", "v1beta1", "podcertificaterequests", registry=registry)
        async def pod_certificate_request_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
            _runtime(memo).podcerts.event(event.get("type"), event["object"])

    return registry
