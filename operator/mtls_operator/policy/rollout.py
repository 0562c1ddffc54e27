"""Pure decisions for restarting the workloads that use a certificate.

A workload is restarted by stamping its pod template with a digest of the fingerprints of the managed
Secrets it uses (content-addressed: stamping twice is a no-op). These functions decide whether a workload
needs a new stamp, whether pacing or the loop guard holds it back, and when a rollout is complete.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

ANN_STAMP = "mtls.dev/tls-stamp"  # on the pod template: the content address of what the pods use
ANN_HISTORY = "mtls.dev/restart-history"  # on the workload metadata: epoch seconds of recent restarts
ANN_OPT_OUT = "mtls.dev/rollout"  # on the workload metadata: "disabled" opts out
OPT_OUT_VALUE = "disabled"
KINDS = ("Deployment", "StatefulSet", "DaemonSet")
CONFIGMAP_PREFIX = "configmap:"  # ConfigMaps (trust bundles) share the reference space with Secrets


def secret_refs(pod_spec: Mapping[str, Any] | None) -> frozenset[str]:
    """Every Secret (by name) and ConfigMap (as ``configmap:<name>``) a pod template uses: volumes,
    projected sources, env secretKeyRef/configMapKeyRef, envFrom secretRef/configMapRef, in containers and
    initContainers."""
    if not isinstance(pod_spec, Mapping):
        return frozenset()
    names: set[str] = set()
    for volume in pod_spec.get("volumes") or ():
        secret = (volume or {}).get("secret") or {}
        if secret.get("secretName"):
            names.add(str(secret["secretName"]))
        config_map = (volume or {}).get("configMap") or {}
        if config_map.get("name"):
            names.add(CONFIGMAP_PREFIX + str(config_map["name"]))
        for source in ((volume or {}).get("projected") or {}).get("sources") or ():
            ref = (source or {}).get("secret") or {}
            if ref.get("name"):
                names.add(str(ref["name"]))
            cm_ref = (source or {}).get("configMap") or {}
            if cm_ref.get("name"):
                names.add(CONFIGMAP_PREFIX + str(cm_ref["name"]))
    for group in ("containers", "initContainers", "ephemeralContainers"):
        for container in pod_spec.get(group) or ():
            for env in (container or {}).get("env") or ():
                ref = ((env or {}).get("valueFrom") or {}).get("secretKeyRef") or {}
                if ref.get("name"):
                    names.add(str(ref["name"]))
                cm_ref = ((env or {}).get("valueFrom") or {}).get("configMapKeyRef") or {}
                if cm_ref.get("name"):
                    names.add(CONFIGMAP_PREFIX + str(cm_ref["name"]))
            for env_from in (container or {}).get("envFrom") or ():
                ref = (env_from or {}).get("secretRef") or {}
                if ref.get("name"):
                    names.add(str(ref["name"]))
                cm_ref = (env_from or {}).get("configMapRef") or {}
                if cm_ref.get("name"):
                    names.add(CONFIGMAP_PREFIX + str(cm_ref["name"]))
    return frozenset(names)


@dataclass(frozen=True, slots=True)
class SecretVersion:
    """What a managed Secret holds now, as the operator judged it."""

    secret_name: str
    fingerprint: str
    revision: int
    not_before: datetime


def stamp_for(versions: Iterable[SecretVersion]) -> str:
    """The content address of a set of Secret versions (order-independent)."""
    h = hashlib.sha256()
    for v in sorted(versions, key=lambda v: v.secret_name):
        h.update(f"{v.secret_name}={v.fingerprint};".encode())
    return h.hexdigest()[:20]


def parse_history(value: str | None) -> tuple[int, ...]:
    out: list[int] = []
    for part in (value or "").split(","):
        part = part.strip()
        if part.isdigit():
            out.append(int(part))
    return tuple(out)


def format_history(history: Sequence[int], now: datetime, keep: timedelta = timedelta(hours=1)) -> str:
    floor = int((now - keep).timestamp())
    return ",".join(str(t) for t in history if t >= floor)


def rollout_complete(kind: str, body: Mapping[str, Any]) -> bool:
    """As `kubectl rollout status` judges it."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    if int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 0):
        return False
    if kind == "Deployment":
        if spec.get("paused"):
            return True  # a paused Deployment rolls on resume: nothing is in flight meanwhile
        want = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
        updated = int(status.get("updatedReplicas") or 0)
        total = int(status.get("replicas") or 0)
        available = int(status.get("availableReplicas") or 0)
        return updated >= want and total <= updated and available >= updated
    if kind == "StatefulSet":
        if ((spec.get("updateStrategy") or {}).get("type")) == "OnDelete":
            return True
        want = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
        return status.get("updateRevision") == status.get("currentRevision") and (
            int(status.get("readyReplicas") or 0) >= want
        )
    if kind == "DaemonSet":
        if ((spec.get("updateStrategy") or {}).get("type")) == "OnDelete":
            return True
        desired = int(status.get("desiredNumberScheduled") or 0)
        return (
            int(status.get("updatedNumberScheduled") or 0) >= desired
            and int(status.get("numberAvailable") or 0) >= desired
        )
    return True


class RestartAction(StrEnum):
    NONE = "None"  # the pods already use what the Secrets hold (or cannot be judged yet)
    RESTART = "Restart"
    WAIT = "Wait"  # pacing: retry at `retry_at`
    BLOCKED = "Blocked"  # the loop guard holds


@dataclass(frozen=True, slots=True)
class RestartDecision:
    action: RestartAction
    stamp: str | None = None
    reason: str = ""
    message: str = ""
    retry_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Pacing:
    max_in_flight: int = 3
    min_interval: timedelta = timedelta(minutes=1)
    coalesce: timedelta = timedelta(seconds=10)
    max_per_hour: int = 6
    timeout: timedelta = timedelta(minutes=10)


def decide_restart(
    *,
    kind: str,
    name: str,
    current_stamp: str | None,
    created: datetime | None,
    versions: Sequence[SecretVersion],
    history: Sequence[int],
    in_flight: int,
    pacing: Pacing,
    now: datetime,
) -> RestartDecision:
    """Whether workload ``kind/name`` must be restarted now for ``versions`` of the Secrets it uses."""
    if not versions:
        return RestartDecision(RestartAction.NONE)
    desired = stamp_for(versions)
    if current_stamp == desired:
        return RestartDecision(RestartAction.NONE, desired)
    if current_stamp is None:
        # Never stamped: the pods started with whatever the Secrets held when they were created. Only a
        # renewal (revision 2+) issued after the workload was created means they run an old certificate.
        newest = max(versions, key=lambda v: v.not_before)
        if newest.revision < 2 or (created is not None and newest.not_before <= created):
            return RestartDecision(RestartAction.NONE, None)
    hour_ago = int((now - timedelta(hours=1)).timestamp())
    recent = [t for t in history if t >= hour_ago]
    if len(recent) >= pacing.max_per_hour:
        return RestartDecision(
            RestartAction.BLOCKED,
            desired,
            "RolloutLoopGuard",
            f"{kind} {name} was restarted {len(recent)} times in the last hour; it is not restarted again "
            f"until that falls below {pacing.max_per_hour}. Something keeps changing its certificates.",
        )
    if recent:
        next_allowed = datetime.fromtimestamp(max(recent), now.tzinfo) + pacing.min_interval
        if now < next_allowed:
            return RestartDecision(RestartAction.WAIT, desired, "MinInterval", retry_at=next_allowed)
    if in_flight >= pacing.max_in_flight:
        return RestartDecision(RestartAction.WAIT, desired, "MaxInFlight")
    return RestartDecision(RestartAction.RESTART, desired)
