"""Paced, content-addressed restarts of the Deployments, StatefulSets and DaemonSets that use a certificate.

Workloads are discovered from an in-memory index fed by watch events (no list call per renewal), holding
only what discovery needs (the Secret and ConfigMap names a pod template uses), never whole objects. When a
managed Secret's content changes, its consumers are looked at after a short coalescing window (so a
workload using several certificates renewed together restarts once), then stamped one by one within a
global limit of rollouts in flight, a minimum interval per workload, and a loop guard.

What each Secret holds comes from a read-only index (:class:`SecretVersions`); a restart is recorded on the
workload itself, in the same patch that stamps it (no status write per certificate). When the loop guard
blocks a workload, the certificates naming its Secrets are queued (``notify``) and read :meth:`blocked`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Protocol

from mtls_operator.api import conditions as cond
from mtls_operator.api.constants import ANN_ROLLOUT_TARGET_OF, Reason
from mtls_operator.controllers.clock import SYSTEM_CLOCK, Clock
from mtls_operator.k8s.api import ApiClient, ApiError
from mtls_operator.k8s.resources import patch_workload
from mtls_operator.observability.metrics import Metrics
from mtls_operator.policy.ownership import names_in, workload_accepts_target
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
ANN_STAMPED_FOR = (
    "mtls.dev/tls-stamp-for"  # on the workload: "<secret>=<fingerprint prefix>,..." of its stamp
)


class Unknown(Enum):
    UNKNOWN = "unknown"  # a Secret the operator manages but has not judged yet: decide later


UNKNOWN = Unknown.UNKNOWN
Version = SecretVersion | Unknown | None  # None: not a Secret (or bundle) the operator manages


class SecretVersions(Protocol):
    def version(self, namespace: str, ref: str) -> Version: ...


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
    target_of: frozenset[str] = frozenset()  # certificates it agreed to be restarted for (rollout.targets)


class RolloutManager:
    def __init__(
        self,
        api: ApiClient,
        versions: SecretVersions,
        *,
        pacing: Pacing | None = None,
        metrics: Metrics | None = None,
        notify: Callable[[str, Iterable[str]], None] | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.api = api
        self.versions = versions
        self.pacing = pacing or Pacing()
        self.metrics = metrics or Metrics()
        self.notify = notify
        self.clock = clock
        self.workloads: dict[WKey, Workload] = {}
        self.by_secret: dict[tuple[str, str], set[WKey]] = defaultdict(set)
        # explicit targets: workload -> {(secret, certificate)} naming it in spec.rollout.targets
        self.explicit: dict[WKey, set[tuple[str, str]]] = defaultdict(set)
        # (ns, secret) -> True when its rollout policy is Explicit or None; Auto (nearly all) is no entry
        self.excluded: dict[tuple[str, str], bool] = {}
        self.due: dict[WKey, float] = {}  # monotonic time to look at a workload
        self.in_flight: dict[WKey, float] = {}  # monotonic time it was stamped
        # workload -> (reason, message, the Secrets it uses): restarts the loop guard holds
        self.blocks: dict[WKey, tuple[str, str, frozenset[str]]] = {}
        self.first_due: dict[WKey, float] = {}  # when a workload's coalescing window first opened
        self.max_in_flight_seen = 0
        self.restarts = 0
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
        if event_type == "DELETED":
            self.forget_workload(key)
            return
        template = (body.get("spec") or {}).get("template") or {}
        annotations = meta.get("annotations") or {}
        refs = secret_refs(template.get("spec"))
        target_of = names_in(annotations.get(ANN_ROLLOUT_TARGET_OF))
        old = self.workloads.get(key)
        if not refs and not target_of:
            if old is not None:
                self.forget_workload(key)
            return  # uses nothing the operator could manage: costs nothing
        for secret in old.secrets if old is not None else ():
            self.by_secret[(key[0], secret)].discard(key)
        workload = Workload(
            namespace=key[0],
            kind=kind,
            name=key[2],
            secrets=refs,
            stamp=((template.get("metadata") or {}).get("annotations") or {}).get(ANN_STAMP),
            opted_out=annotations.get(ANN_OPT_OUT) == OPT_OUT_VALUE,
            created=cond.parse_rfc3339(meta.get("creationTimestamp")),
            history=parse_history(annotations.get(ANN_HISTORY)),
            complete=rollout_complete(kind, body),
            target_of=target_of,
        )
        self.workloads[key] = workload
        for secret in workload.secrets:
            self.by_secret[(key[0], secret)].add(key)
        if key in self.in_flight and workload.complete:
            self.in_flight.pop(key, None)
            self._wake.set()
        if old is None or old.secrets != workload.secrets or old.target_of != workload.target_of:
            self._schedule(key, delay=0.0)

    def forget_workload(self, key: WKey) -> None:
        self._unblock(key)
        old = self.workloads.pop(key, None)
        for secret in old.secrets if old is not None else ():
            names = self.by_secret.get((key[0], secret))
            if names is not None:
                names.discard(key)
                if not names:
                    del self.by_secret[(key[0], secret)]
        self.in_flight.pop(key, None)
        self._done(key)
        self._wake.set()

    def set_certificate_targets(
        self,
        namespace: str,
        certificate: str,
        secret: str | None,
        policy: str,
        targets: Iterable[tuple[str, str]],
    ) -> None:
        """Record a certificate's rollout policy and explicit targets (kind, name); None forgets them."""
        for key in list(self.explicit):
            if key[0] == namespace:
                self.explicit[key] = {p for p in self.explicit[key] if p[1] != certificate}
                if not self.explicit[key]:
                    del self.explicit[key]
        if secret is None:
            return
        if policy != "Auto":
            self.excluded[(namespace, secret)] = True
        else:
            self.excluded.pop((namespace, secret), None)
        if policy == "None":
            return
        for kind, name in targets:
            self.explicit[(namespace, kind, name)].add((secret, certificate))

    def secret_changed(self, namespace: str, secret: str) -> None:
        """A managed Secret holds a new certificate (or was judged for the first time)."""
        keys = set(self.by_secret.get((namespace, secret), ()))
        keys |= {
            k
            for k, pairs in self.explicit.items()
            if k[0] == namespace and any(p[0] == secret for p in pairs)
        }
        for key in keys:
            self._schedule(key, delay=self.pacing.coalesce.total_seconds())

    def _schedule(self, key: WKey, delay: float) -> None:
        now = self.clock.monotonic()
        due = now + delay
        if not delay:
            self.due[key] = min(self.due.get(key, due), due)
        else:
            # Coalesce: a later change pushes the look back so several renewals in a window restart once,
            # but never more than three windows after the first change (a steady trickle cannot hold it).
            first = self.first_due.setdefault(key, now)
            self.due[key] = min(max(self.due.get(key, 0.0), due), first + 3 * delay)
        self._wake.set()

    def _done(self, key: WKey) -> None:
        self.due.pop(key, None)
        self.first_due.pop(key, None)

    # ------------------------------------------------------------------ read-only, for certificates

    def blocked(self, namespace: str, secret: str, certificate: str) -> tuple[str, str] | None:
        """Why restarts for this certificate's Secret are held: the loop guard on a workload using it, or
        explicit targets that did not opt in."""
        for key, (reason, message, secrets) in sorted(self.blocks.items()):
            if key[0] == namespace and secret in secrets:
                return reason, message
        refused = sorted(
            f"{key[1]} {key[2]}"
            for key, pairs in self.explicit.items()
            if key[0] == namespace
            and (secret, certificate) in pairs
            and not self._agreed(key, secret, certificate)
        )
        if refused:
            return (
                Reason.ROLLOUT_TARGET_NOT_OPTED_IN,
                f"spec.rollout.targets names {', '.join(refused)}, which do not use Secret {secret} and did "
                "not agree to be restarted for this certificate (or do not exist): their owner adds the "
                f"annotation {ANN_ROLLOUT_TARGET_OF}={certificate} (or *).",
            )
        return None

    def _agreed(self, key: WKey, secret: str, certificate: str) -> bool:
        """A workload named in spec.rollout.targets mounts the Secret, or agreed to be restarted for the
        certificate. (A workload the index does not hold uses nothing and has no opt-in.)"""
        workload = self.workloads.get(key)
        if workload is None:
            return False
        return secret in workload.secrets or workload_accepts_target(_annotations(workload), certificate)

    def settled(self, namespace: str, ref: str) -> bool:
        """Whether every workload using ``ref`` runs what it should (or cannot be restarted: opted out,
        loop guard): the "consumers restarted" observation of a CA rotation. A workload stamped but whose
        rollout has not completed is not settled: its old pods still serve with what they loaded (until
        the rollout completes, or the rollout timeout gives up on it)."""
        now = self.clock.now()
        for key in self.by_secret.get((namespace, ref), ()):
            workload = self.workloads.get(key)
            if workload is None or workload.opted_out:
                continue
            if key in self.due or key in self.in_flight:
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

    # ------------------------------------------------------------------ the loop

    async def _loop(self) -> None:
        while True:
            try:
                timeout = await self.step()
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

    async def step(self) -> float:
        """Act on what is due; return how long to sleep unless woken earlier. (The loop calls it; tests
        with a fake clock call it directly.)"""
        now_m = self.clock.monotonic()
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
        now_m = self.clock.monotonic()
        wake_at = [due for due in self.due.values() if due > now_m]
        if capacity_wait and self.in_flight:
            wake_at.append(min(self.in_flight.values()) + limit)
        if not wake_at:
            return 5.0
        return min(5.0, min(wake_at) - now_m)

    def _versions(self, key: WKey, workload: Workload) -> list[SecretVersion] | None:
        """The versions of everything the workload uses (or agreed to be restarted for) that the operator
        manages; None if one of them has not been judged yet."""
        versions: list[SecretVersion] = []
        explicit = {
            secret
            for secret, certificate in self.explicit.get(key, set())
            if secret in workload.secrets or certificate in workload.target_of or "*" in workload.target_of
        }
        for secret in sorted(set(workload.secrets) | explicit):
            if secret not in explicit and self.excluded.get((key[0], secret)):
                continue
            found = self.versions.version(key[0], secret)
            if found is None:
                continue
            if found is UNKNOWN:
                return None
            assert isinstance(found, SecretVersion)
            versions.append(found)
        return versions

    async def _consider(self, key: WKey) -> str:
        workload = self.workloads.get(key)
        if workload is None:
            self._done(key)
            return "gone"
        found_versions = self._versions(key, workload)
        if found_versions is None:
            self._done(key)  # judged later: secret_changed() brings it back
            return "unknown"
        versions = found_versions
        now = self.clock.now()
        if workload.opted_out:
            self._done(key)
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
            self._done(key)
            self._unblock(key)
            return "none"
        if decision.action is RestartAction.BLOCKED:
            self._done(key)
            secrets = frozenset(v.secret_name for v in versions)
            if key not in self.blocks:
                self.metrics.rollout_blocked(reason=decision.reason)
                logger.warning("Not restarting %s %s/%s: %s", key[1], key[0], key[2], decision.message)
                self.blocks[key] = (decision.reason, decision.message, secrets)
                if self.notify is not None:
                    self.notify(key[0], sorted(secrets))
            return "blocked"
        if decision.action is RestartAction.WAIT:
            if decision.retry_at is not None:
                wait = max(0.0, (decision.retry_at - now).total_seconds())
                self.due[key] = self.clock.monotonic() + wait
                return "wait-interval"
            return "wait-capacity"
        assert decision.stamp is not None
        history = format_history([*workload.history, int(now.timestamp())], now)
        stamped_for = ",".join(f"{v.secret_name}={v.fingerprint[:16]}" for v in versions)
        patch = {
            "metadata": {"annotations": {ANN_HISTORY: history, ANN_STAMPED_FOR: stamped_for}},
            "spec": {"template": {"metadata": {"annotations": {ANN_STAMP: decision.stamp}}}},
        }
        try:
            await patch_workload(self.api, key[0], key[1], key[2], patch)
        except ApiError as exc:
            if exc.not_found:
                self._done(key)
                return "gone"
            raise
        self._done(key)
        self.in_flight[key] = self.clock.monotonic()
        self.max_in_flight_seen = max(self.max_in_flight_seen, len(self.in_flight))
        self.restarts += 1
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
            workload.target_of,
        )
        self.metrics.rollout_restart(kind=key[1])
        logger.info("Restarted %s %s/%s for %s.", key[1], key[0], key[2], stamped_for)
        self._unblock(key)
        return "restarted"

    def _unblock(self, key: WKey) -> None:
        """The loop guard no longer holds ``key`` (restarted, settled, gone): its certificates look again."""
        found = self.blocks.pop(key, None)
        if found is not None and self.notify is not None:
            self.notify(key[0], sorted(found[2]))


def _annotations(workload: Workload) -> dict[str, str]:
    return {ANN_ROLLOUT_TARGET_OF: ",".join(sorted(workload.target_of))} if workload.target_of else {}
