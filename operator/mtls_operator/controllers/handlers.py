"""kopf wiring, kept thin: watch events go to the runtime's stores and queue; kopf itself writes nothing.

Only ``on.event`` handlers are used (no ``on.create``/``on.update``, timers or daemons), so kopf adds no
finalizers, progress or diff-base annotations: every API write is the runtime's own, deliberate one.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from mtls_operator.api.constants import CERTIFICATE_PLURAL, GROUP, ISSUER_PLURAL, KOPF_PREFIX, VERSION
from mtls_operator.controllers.runtime import Runtime, Settings
from mtls_operator.k8s.api import ApiClient, credentials_from_kopf
from mtls_operator.observability.metrics import Metrics

logger = logging.getLogger("mtls_operator")


def _runtime(memo: Any) -> Runtime:
    runtime: Runtime = memo.runtime
    return runtime


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # kopf's own bookkeeping lives under its own prefix, never under mtls.dev (see KOPF_NOTES).
    settings.persistence.finalizer = f"{KOPF_PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.networking.request_timeout = 60
    info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise kopf.PermanentError("No credentials: set KUBECONFIG or run in-cluster with a service account.")
    op_settings: Settings = getattr(memo, "settings", None) or Settings()
    metrics: Metrics = getattr(memo, "metrics", None) or Metrics()
    runtime = Runtime(ApiClient(credentials_from_kopf(info)), op_settings, metrics=metrics)
    runtime.start()
    memo.runtime = runtime
    logger.info("mtls-operator started with %d workers.", op_settings.workers)


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    runtime = getattr(memo, "runtime", None)
    if runtime is not None:
        await runtime.stop()


@kopf.on.event(GROUP, VERSION, CERTIFICATE_PLURAL)
async def certificate_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _runtime(memo).on_certificate_event(event.get("type"), event["object"])


@kopf.on.event(GROUP, VERSION, ISSUER_PLURAL)
async def issuer_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _runtime(memo).on_issuer_event(event.get("type"), event["object"])


@kopf.on.event("v1", "secrets")
async def secret_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _runtime(memo).on_secret_event(event.get("type"), event["object"])


@kopf.on.event("apps", "v1", "deployments")
async def deployment_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _runtime(memo).on_workload_event("Deployment", event.get("type"), event["object"])


@kopf.on.event("apps", "v1", "statefulsets")
async def statefulset_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _runtime(memo).on_workload_event("StatefulSet", event.get("type"), event["object"])


@kopf.on.event("apps", "v1", "daemonsets")
async def daemonset_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _runtime(memo).on_workload_event("DaemonSet", event.get("type"), event["object"])
