"""Paced, content-addressed restarts of the Deployments, StatefulSets and DaemonSets that use a certificate.

Workloads are discovered from an in-memory index fed by watch events (no list call per renewal). When a
managed Secret's content changes, its consumers are looked at after a short coalescing window (so a
workload using several certificates renewed together restarts once), then stamped one by one within a
global limit of rollouts in flight, a minimum interval per workload, and a loop guard.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mtls_operator.api import conditions as cond
from mtls_operator.k8s.api import MERGE_PATCH, ApiClient, ApiError
from mtls_operator.observability.metrics import Metrics
from mtls_operator.policy.rollout import (
    ANN_HISTORY,
    ANN_OPT_OUT,
    ANN_STAMP,
    OPT_OUT_VALUE,
    Pacing,
    RestartAction,
    SecretVersion,
    decide_restart,
    format_history,
    parse_history,
    rollout_complete,
    secret_refs,
)

logger = logging.getLogger("mtls_operator.rollouts")

WKey = tuple[str, str, str]  # (namespace, kind, name)
PLURALS = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}


@dataclass(frozen=True, slots=True)
class Workload:
    namespace: str
    kind: str
    name: str
    secrets: frozenset[str]
    stamp: str | None
    opted_out: bool
    created: datetime | None
    history: tuple[int, ...]
    complete: bool


@dataclass(frozen=True, slots=True)
class Stamped:
    """One restart, reported back to the certificates whose Secrets it rolled out."""

    namespace: str
    kind: str
    name: str
    secrets: tuple[str, ...]
    fingerprints: Mapping[str, str]
    time: datetime


# What the runtime answers about a Secret: None = not managed (ignored); "unknown" = managed but not judged
# yet (decide later); otherwise the version the workload should run.
SecretLookup = Callable[[str, str, str, str], "SecretVersion | str | None"]


class RolloutManager:
    def __init__(
        self,
        api: ApiClient,
        lookup: SecretLookup,
        *,
        pacing: Pacing | None = None,
        metrics: Metrics | None = None,
        on_stamped: Callable[[Stamped], None] | None = None,
        on_blocked: Callable[[Workload, Sequence[str], str, str], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.api = api
        self.lookup = lookup
        self.pacing = pacing or Pacing()
        self.metrics = metrics or Metrics()
        self.on_stamped = on_stamped
        self.on_blocked = on_blocked
        self.clock = clock
        self.workloads: dict[WKey, Workload] = {}
        self.by_secret: dict[tuple[str, str], set[WKey]] = defaultdict(set)
        self.explicit: dict[WKey, set[str]] = defaultdict(set)  # workload -> secrets naming it as a target
        self.excluded: dict[tuple[str, str], bool] = {}  # (ns, secret) -> rollout policy Explicit/None
        self.due: dict[WKey, float] = {}  # monotonic time to look at a workload
        self.in_flight: dict[WKey, float] = {}  # monotonic time it was stamped
        self.blocked: set[WKey] = set()
        self.max_in_flight_seen = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="mtls-rollouts")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # ------------------------------------------------------------------ inputs

    def on_workload_event(self, kind: str, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace", "")), kind, str(meta.get("name", "")))
        old = self.workloads.get(key)
        if old is not None:
            for secret in old.secrets:
                self.by_secret[(key[0], secret)].discard(key)
        if event_type == "DELETED":
            self.workloads.pop(key, None)
            self.in_flight.pop(key, None)
            self.due.pop(key, None)
            self._wake.set()
            return
        template = (body.get("spec") or {}).get("template") or {}
        annotations = meta.get("annotations") or {}
        workload = Workload(
            namespace=key[0],
            kind=kind,
            name=key[2],
            secrets=secret_refs(template.get("spec")),
            stamp=((template.get("metadata") or {}).get("annotations") or {}).get(ANN_STAMP),
            opted_out=annotations.get(ANN_OPT_OUT) == OPT_OUT_VALUE,
            created=cond.parse_rfc3339(meta.get("creationTimestamp")),
            history=parse_history(annotations.get(ANN_HISTORY)),
            complete=rollout_complete(kind, body),
        )
        self.workloads[key] = workload
        for secret in workload.secrets:
            self.by_secret[(key[0], secret)].add(key)
        if key in self.in_flight and workload.complete:
            self.in_flight.pop(key, None)
            self._wake.set()
        if old is None or old.secrets != workload.secrets:
            self._schedule(key, delay=0.0)

    def set_certificate_targets(
        self,
        namespace: str,
        secret: str,
        policy: str,
        targets: Sequence[tuple[str, str]],
        old: Sequence[tuple[str, str]],
    ) -> None:
        """Record a certificate's rollout policy and explicit targets (kind, name)."""
        for kind, name in old:
            self.explicit[(namespace, kind, name)].discard(secret)
        for kind, name in targets:
            self.explicit[(namespace, kind, name)].add(secret)
        self.excluded[(namespace, secret)] = policy != "Auto"
        if policy == "None":
            for kind, name in targets:
                self.explicit[(namespace, kind, name)].discard(secret)

    def secret_changed(self, namespace: str, secret: str) -> None:
        """A managed Secret holds a new certificate (or was judged for the first time)."""
        keys = set(self.by_secret.get((namespace, secret), ()))
        keys |= {k for k, secrets in self.explicit.items() if k[0] == namespace and secret in secrets}
        for key in keys:
            self._schedule(key, delay=self.pacing.coalesce.total_seconds())

    def _schedule(self, key: WKey, delay: float) -> None:
        due = time.monotonic() + delay
        # Coalesce: a later change pushes the look back so several renewals in a window restart once.
        self.due[key] = max(self.due.get(key, 0.0), due) if delay else min(self.due.get(key, due), due)
        self._wake.set()

    # ------------------------------------------------------------------ the loop

    async def _loop(self) -> None:
        while True:
            try:
                timeout = await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("Rollout step failed; retrying in 5 s.")
                timeout = 5.0
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.05, timeout))
            except TimeoutError:
                pass

    async def _step(self) -> float:
        """Act on what is due; return how long to sleep unless woken earlier."""
        now_m = time.monotonic()
        limit = self.pacing.timeout.total_seconds()
        for key, since in list(self.in_flight.items()):
            if now_m - since >= limit:
                logger.warning(
                    "Rollout of %s %s/%s did not complete in %ds; no longer counted in flight.",
                    key[1],
                    key[0],
                    key[2],
                    int(limit),
                )
                self.in_flight.pop(key, None)
        capacity_wait = False
        for key in sorted(k for k, due in self.due.items() if due <= now_m):
            if await self._consider(key) == "wait-capacity":
                capacity_wait = True
                break  # keep it due; a completion (or the timeout) wakes the loop
        wake_at = [due for due in self.due.values() if due > time.monotonic()]
        if capacity_wait and self.in_flight:
            wake_at.append(min(self.in_flight.values()) + limit)
        if not wake_at:
            return 5.0
        return min(5.0, min(wake_at) - time.monotonic())

    def _versions(self, key: WKey, workload: Workload) -> list[SecretVersion] | None:
        """The versions of everything the workload uses that the operator manages; None if one of them
        has not been judged yet."""
        versions: list[SecretVersion] = []
        secrets = set(workload.secrets) | self.explicit.get(key, set())
        for secret in sorted(secrets):
            explicit = secret in self.explicit.get(key, set())
            if not explicit and self.excluded.get((key[0], secret)):
                continue
            found = self.lookup(key[0], secret, key[1], key[2])
            if found is None:
                continue
            if isinstance(found, str):
                return None
            versions.append(found)
        return versions

    def settled(self, namespace: str, ref: str) -> bool:
        """Whether every workload using ``ref`` runs what it should (or cannot be restarted: opted out,
        loop guard): the "consumers restarted" observation of a CA rotation."""
        now = self.clock()
        for key in self.by_secret.get((namespace, ref), ()):
            workload = self.workloads.get(key)
            if workload is None or workload.opted_out:
                continue
            if key in self.due:
                return False
            versions = self._versions(key, workload)
            if versions is None:
                return False
            decision = decide_restart(
                kind=workload.kind,
                name=workload.name,
                current_stamp=workload.stamp,
                created=workload.created,
                versions=versions,
                history=workload.history,
                in_flight=0,
                pacing=self.pacing,
                now=now,
            )
            if decision.action in (RestartAction.RESTART, RestartAction.WAIT):
                return False
        return True

    async def _consider(self, key: WKey) -> str:
        workload = self.workloads.get(key)
        if workload is None:
            self.due.pop(key, None)
            return "gone"
        found_versions = self._versions(key, workload)
        if found_versions is None:
            self.due.pop(key, None)  # judged later: secret_changed() brings it back
            return "unknown"
        versions = found_versions
        now = self.clock()
        if workload.opted_out:
            self.due.pop(key, None)
            return "opted-out"
        decision = decide_restart(
            kind=workload.kind,
            name=workload.name,
            current_stamp=workload.stamp,
            created=workload.created,
            versions=versions,
            history=workload.history,
            in_flight=len(self.in_flight),
            pacing=self.pacing,
            now=now,
        )
        if decision.action is RestartAction.NONE:
            self.due.pop(key, None)
            self.blocked.discard(key)
            return "none"
        if decision.action is RestartAction.BLOCKED:
            self.due.pop(key, None)
            if key not in self.blocked:
                self.blocked.add(key)
                self.metrics.rollout_blocked(reason=decision.reason)
                logger.warning("Not restarting %s %s/%s: %s", key[1], key[0], key[2], decision.message)
                if self.on_blocked is not None:
                    self.on_blocked(
                        workload, [v.secret_name for v in versions], decision.reason, decision.message
                    )
            return "blocked"
        if decision.action is RestartAction.WAIT:
            if decision.retry_at is not None:
                self.due[key] = time.monotonic() + max(0.0, (decision.retry_at - now).total_seconds())
                return "wait-interval"
            return "wait-capacity"
        assert decision.stamp is not None
        history = format_history([*workload.history, int(now.timestamp())], now)
        patch = {
            "metadata": {"annotations": {ANN_HISTORY: history}},
            "spec": {"template": {"metadata": {"annotations": {ANN_STAMP: decision.stamp}}}},
        }
        path = f"/apis/apps/v1/namespaces/{key[0]}/{PLURALS[key[1]]}/{key[2]}"
        try:
            await self.api.request("PATCH", path, body=patch, content_type=MERGE_PATCH)
        except ApiError as exc:
            if exc.not_found:
                self.due.pop(key, None)
                return "gone"
            raise
        self.due.pop(key, None)
        self.blocked.discard(key)
        self.in_flight[key] = time.monotonic()
        self.max_in_flight_seen = max(self.max_in_flight_seen, len(self.in_flight))
        # Reflect our own write at once so a quick second look does not stamp again.
        self.workloads[key] = Workload(
            workload.namespace,
            workload.kind,
            workload.name,
            workload.secrets,
            decision.stamp,
            workload.opted_out,
            workload.created,
            parse_history(history),
            False,
        )
        self.metrics.rollout_restart(kind=key[1])
        logger.info(
            "Restarted %s %s/%s for %s.",
            key[1],
            key[0],
            key[2],
            ", ".join(f"{v.secret_name}@{v.fingerprint[:12]}" for v in versions),
        )
        if self.on_stamped is not None:
            self.on_stamped(
                Stamped(
                    key[0],
                    key[1],
                    key[2],
                    tuple(v.secret_name for v in versions),
                    {v.secret_name: v.fingerprint for v in versions},
                    now,
                )
            )
        return "restarted"
