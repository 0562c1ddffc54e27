"""In-memory views of the watched objects, fed by kopf's watch events (never by list calls).

Only what decisions need is kept: a trimmed body per certificate and issuer, and the latest
resourceVersion seen per Secret. Secret data is never held here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mtls_operator.api.constants import (
    ANN_RENEW_REQUESTED,
    ANN_REVOKE_REASON,
    ANN_REVOKE_REQUESTED,
    ANN_ROTATE_REQUESTED,
)

KEPT_ANNOTATIONS = frozenset(
    {ANN_RENEW_REQUESTED, ANN_REVOKE_REQUESTED, ANN_REVOKE_REASON, ANN_ROTATE_REQUESTED}
)

Key = tuple[str, str]  # (namespace, name)


def trim(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return {
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid", ""),
            "generation": int(meta.get("generation") or 0),
            "resourceVersion": meta.get("resourceVersion", ""),
            "deletionTimestamp": meta.get("deletionTimestamp"),
            "annotations": {k: v for k, v in annotations.items() if k in KEPT_ANNOTATIONS},
        },
        "spec": dict(body.get("spec") or {}),
        "status": dict(body.get("status") or {}),
    }


@dataclass
class ObjectStore:
    """Trimmed bodies by key, plus a reverse index from a referenced name to the objects naming it."""

    ref_field: str  # e.g. "secretName" or "issuerRef.name"
    objects: dict[Key, dict[str, Any]] = field(default_factory=dict)
    by_ref: dict[Key, set[str]] = field(default_factory=lambda: defaultdict(set))

    def _ref(self, namespace: str, body: Mapping[str, Any]) -> Key | None:
        value: Any = body.get("spec") or {}
        for part in self.ref_field.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        return (namespace, value) if isinstance(value, str) and value else None

    def put(self, key: Key, body: Mapping[str, Any]) -> set[str]:
        """Store ``body``; return the names of other objects whose reference set changed with it."""
        touched: set[str] = set()
        old = self.objects.get(key)
        if old is not None:
            old_ref = self._ref(key[0], old)
            if old_ref is not None:
                self.by_ref[old_ref].discard(key[1])
                touched |= self.by_ref[old_ref]
                if not self.by_ref[old_ref]:
                    del self.by_ref[old_ref]
        trimmed = trim(body)
        self.objects[key] = trimmed
        ref = self._ref(key[0], trimmed)
        if ref is not None:
            touched |= self.by_ref[ref]
            self.by_ref[ref].add(key[1])
        return touched

    def remove(self, key: Key) -> set[str]:
        old = self.objects.pop(key, None)
        if old is None:
            return set()
        ref = self._ref(key[0], old)
        if ref is None:
            return set()
        self.by_ref[ref].discard(key[1])
        others = set(self.by_ref[ref])
        if not self.by_ref[ref]:
            del self.by_ref[ref]
        return others

    def naming(self, namespace: str, ref: str) -> set[str]:
        return set(self.by_ref.get((namespace, ref), ()))

    def get(self, key: Key) -> dict[str, Any] | None:
        return self.objects.get(key)

    def update_status(self, key: Key, status: Mapping[str, Any]) -> None:
        obj = self.objects.get(key)
        if obj is not None:
            obj["status"] = dict(status)
