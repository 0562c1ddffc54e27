"""The periodic resync: what the operator holds, compared with a fresh list of the cluster.

Watches can miss things: a DELETED event during a gap (the operator stopped, partitioned, or re-listed
after a 410) is never delivered, and a missed update leaves a stale object in a store. Every
``--resync-interval`` the operator lists (metadata only, paginated) its certificates, its issuers and the
Secrets it watches, and then:

* forgets what vanished (as if the DELETED event had come), unless intake saw it after the list began;
* re-reads what changed or appeared, and feeds it to intake as an event;
* for a managed Secret that vanished or changed, queues the certificates and issuers that use it, so a
  Secret deleted during a gap is repaired.

A resync that finds nothing writes nothing.
"""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mtls_operator.api.constants import (
    CERTIFICATE_PLURAL,
    CLUSTER_ISSUER_PLURAL,
    ISSUER_PLURAL,
    LABEL_SECRET_ROLE,
)
from mtls_operator.api.objects import Key
from mtls_operator.controllers.context import Context
from mtls_operator.controllers.intake import Intake
from mtls_operator.k8s.api import ApiError
from mtls_operator.k8s.resources import (
    ListedObject,
    custom_collection,
    get_custom,
    list_metadata,
    secret_collection,
)
from mtls_operator.observability.heap import HEAP

logger = logging.getLogger("mtls_operator.resync")


@dataclass(frozen=True, slots=True)
class ResyncReport:
    forgotten: int = 0
    refreshed: int = 0
    secrets_changed: int = 0
    seconds: float = 0.0


class Resync:
    def __init__(self, ctx: Context, intake: Intake) -> None:
        self.api = ctx.api
        self.config = ctx.config
        self.clock = ctx.clock
        self.certificates = ctx.certificates
        self.issuers = ctx.issuers
        self.secrets = ctx.secrets
        self.intake = intake
        self.last: ResyncReport | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.config.resync_interval.total_seconds() > 0:
            self._task = asyncio.create_task(self._loop(), name="mtls-resync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        interval = self.config.resync_interval.total_seconds()
        while True:
            await asyncio.sleep(interval)
            try:
                self.last = await self.run()
                if self.last.forgotten or self.last.refreshed or self.last.secrets_changed:
                    logger.info(
                        "Resync: forgot %d, refreshed %d, %d Secrets changed unseen (%.2fs).",
                        self.last.forgotten,
                        self.last.refreshed,
                        self.last.secrets_changed,
                        self.last.seconds,
                    )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the loop must outlive a failed list
                logger.warning("Resync failed: %s; trying again in %ds.", exc, int(interval))
            HEAP.soon()  # the lists of every object (megabytes at 10k) are garbage now

    # ------------------------------------------------------------------ one pass

    async def run(self) -> ResyncReport:
        with self.intake.recording():
            return await self._run()

    async def _run(self) -> ResyncReport:
        started = self.clock.monotonic()
        forgotten = refreshed = 0
        kinds: list[tuple[str, str, Any]] = [
            (CERTIFICATE_PLURAL, "cert", self.certificates),
            (ISSUER_PLURAL, "issuer", self.issuers),
        ]
        if self._cluster_scope():
            kinds.append((CLUSTER_ISSUER_PLURAL, "issuer", self.issuers))
        for plural, kind, store in kinds:
            listed_at = self.clock.monotonic()
            if plural == CLUSTER_ISSUER_PLURAL:
                items, _ = await list_metadata(self.api, custom_collection(plural))
                listed = {("", item.name): item for item in items}
            else:
                listed = await self._list(functools.partial(custom_collection, plural))
            cluster = plural == CLUSTER_ISSUER_PLURAL
            held = {obj.key: obj.meta for obj in store if (obj.key[0] == "") == cluster}
            for key, meta in held.items():
                item = listed.get(key)
                if self.intake.heard_since(kind, key, listed_at):
                    continue  # intake heard of it after the list began: the list may be older
                if item is None or item.uid != meta.uid:
                    self._gone(plural, key)
                    forgotten += 1
            for key, item in listed.items():
                known = held.get(key)
                stale = known is None or known.resource_version != item.resource_version
                if stale and await self._refresh(plural, key):
                    refreshed += 1
        listed_at = self.clock.monotonic()
        secrets = await self._list(secret_collection, label_selector=LABEL_SECRET_ROLE)
        changed = 0
        for key in self.secrets.watched() - set(secrets):
            if not self.intake.heard_since("secret", key, listed_at):
                self.intake.secret_changed(key, None)
                changed += 1
        for key, item in secrets.items():
            seen = self.secrets.resource_version(key)
            if seen not in (None, item.resource_version) and not self.intake.heard_since(
                "secret", key, listed_at
            ):
                self.intake.secret_changed(key, item.resource_version, watched=True)
                changed += 1
        return ResyncReport(forgotten, refreshed, changed, self.clock.monotonic() - started)

    async def _list(
        self, path_for: Callable[[str | None], str], label_selector: str | None = None
    ) -> dict[Key, ListedObject]:
        found: dict[Key, ListedObject] = {}
        for namespace in self._list_scopes():
            items, _ = await list_metadata(self.api, path_for(namespace), label_selector=label_selector)
            for item in items:
                if self._in_scope(item.namespace):
                    found[(item.namespace, item.name)] = item
        return found

    def _cluster_scope(self) -> bool:
        """Whether MTLSClusterIssuers are watched: every namespace, or namespace globs."""
        names = self.config.namespaces
        return not names or any(ch in n for n in names for ch in "*?[")

    def _list_scopes(self) -> Sequence[str | None]:
        """Exact namespaces are listed one by one; globs and "every namespace" list cluster-wide."""
        names = self.config.namespaces
        if names and not any(ch in n for n in names for ch in "*?["):
            return list(names)
        return [None]

    def _in_scope(self, namespace: str) -> bool:
        names = self.config.namespaces
        return not names or any(fnmatch.fnmatchcase(namespace, pattern) for pattern in names)

    def _gone(self, plural: str, key: Key) -> None:
        if plural == CERTIFICATE_PLURAL:
            self.intake.certificate_gone(key)
        else:
            self.intake.issuer_gone(key)

    async def _refresh(self, plural: str, key: Key) -> bool:
        try:
            body = await get_custom(self.api, plural, *key)
        except ApiError as exc:
            logger.warning("Resync cannot read %s %s/%s: %s", plural, *key, exc)
            return False
        if body is None:
            self._gone(plural, key)
            return True
        if plural == CERTIFICATE_PLURAL:
            self.intake.certificate_event("MODIFIED", body)
        else:
            self.intake.issuer_event("MODIFIED", body)
        return True
