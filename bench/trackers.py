"""Observers fed by watches: when each certificate became Ready (and renewed), when each Secret
appeared, which Deployments were restarted and how many rollouts were in flight at once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from control_plane import STAMP_ANNOTATION
from harness import ready_status, rollout_complete


@dataclass
class CertTracker:
    """First time each certificate was seen Ready=True, and at revision >= `renewed_revision`."""

    renewed_revision: int = 2
    ready: dict[str, float] = field(default_factory=dict)
    renewed: dict[str, float] = field(default_factory=dict)
    renewal_time: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    revisions: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_event(self, kind: str, obj: dict[str, Any], t: float) -> None:
        if kind == "DELETED":
            return
        name = obj["metadata"]["name"]
        status = obj.get("status") or {}
        with self.lock:
            for cond in status.get("conditions") or []:
                if cond.get("type") == "Ready" and cond.get("reason"):
                    self.reasons[name] = str(cond["reason"])
            self.revisions[name] = int(status.get("revision") or 0)
            if name not in self.ready and ready_status(obj):
                self.ready[name] = t
            if int(status.get("revision") or 0) >= self.renewed_revision and ready_status(obj):
                self.renewed.setdefault(name, t)
            if status.get("renewalTime"):
                self.renewal_time[name] = str(status["renewalTime"])

    def count(self, which: str) -> int:
        with self.lock:
            return len(self.ready if which == "ready" else self.renewed)

    def has_reason(self, name: str) -> bool:
        """Whether the certificate's Ready condition carries a reason (it was judged, Ready or not)."""
        with self.lock:
            return name in self.reasons

    def revision(self, name: str) -> int:
        with self.lock:
            return self.revisions.get(name, 0)


@dataclass
class SecretTracker:
    added: dict[str, float] = field(default_factory=dict)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def on_event(self, kind: str, obj: dict[str, Any], t: float) -> None:
        if kind != "ADDED":
            return
        with self.cond:
            self.added.setdefault(obj["metadata"]["name"], t)
            self.cond.notify_all()

    def wait(self, name: str, timeout: float) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: name in self.added, timeout):
                raise RuntimeError(f"Secret {name} did not appear within {timeout:g}s")
            return self.added[name]


@dataclass
class RolloutTracker:
    """Deployments whose pod template got a new stamp and whose rollout is not complete yet."""

    stamps: dict[str, str | None] = field(default_factory=dict)
    in_flight: set[str] = field(default_factory=set)
    restarts: int = 0
    max_in_flight: int = 0
    restarted: set[str] = field(default_factory=set)
    last_restart_at: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_event(self, kind: str, obj: dict[str, Any], t: float) -> None:
        if kind == "DELETED":
            return
        name = obj["metadata"]["name"]
        template_meta = ((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}
        stamp = (template_meta.get("annotations") or {}).get(STAMP_ANNOTATION)
        with self.lock:
            before = self.stamps.get(name)
            self.stamps[name] = stamp
            if stamp is not None and stamp != before:
                self.restarts += 1
                self.restarted.add(name)
                self.last_restart_at = t
                self.in_flight.add(name)
            if name in self.in_flight and rollout_complete(obj):
                self.in_flight.discard(name)
            self.max_in_flight = max(self.max_in_flight, len(self.in_flight))
