"""A standby replica's read-only copy of the revocation lists: every replica answers CRL and OCSP.

Under leader election only the leader reconciles, yet the chart's revocation Service routes to every
replica. A standby therefore serves what the leader stored, and writes nothing:

- every ``interval`` seconds it lists the MTLSIssuers in the operator's scope (one LIST), and the
  MTLSClusterIssuers when it serves cluster-wide (one more), and reads the ``<issuer>-revocations``
  ConfigMap of each issuer with ``spec.revocation`` (one GET each; an unchanged resourceVersion is not
  parsed again). A cluster issuer's list lives where the leader keeps it: in the cluster resource
  namespace, under ``cluster.<name>`` (IssuerStore.revocation_ref), and so do its URLs. A ConfigMap
  that is not the operator's (ownership as in controllers.revocation) is served as unavailable, exactly
  as the leader does;
- for OCSP it needs the CA that signed the stored CRL (annotation ``mtls.dev/crl-signer``): it loads the
  issuer's CA Secret, or the staging Secret ``<secretName>-next`` of a CA rotation, and uses it only when
  the Secret names the issuer in ``mtls.dev/ca-for-issuer`` (the operator writes it on every CA it
  creates; a bring-your-own CA Secret must carry it to be used by a standby) and its certificate has that
  fingerprint. Without such a CA the standby still serves the CRL and answers OCSP with 503;
- requests never reach the API server: the API cost is one LIST and one GET per issuer per interval,
  whatever the request rate, and a name no issuer has is a 404 from memory.

A standby therefore lags the leader by up to ``interval`` (10 s by default): a serial revoked on the
leader is ``revoked`` on a standby's OCSP within that time. When the standby becomes the leader it stops
its copy and the leader's store (controllers.revocation) takes the port over.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from mtls_operator.api.constants import (
    ANN_ALLOWED_ISSUERS,
    ANN_CA_FOR_ISSUER,
    CLUSTER_ISSUER_PLURAL,
    GROUP,
    ISSUER_PLURAL,
    VERSION,
)
from mtls_operator.api.issuer_spec import parse_issuer_spec
from mtls_operator.api.models import SpecError
from mtls_operator.api.tls import CAError
from mtls_operator.api.trust_lifecycle import parse_revocation
from mtls_operator.controllers.revocation_http import LIMITS, Responder, Served
from mtls_operator.controllers.revocation_store import served_snapshot
from mtls_operator.k8s.api import JSON, ApiClient, ApiError, group_path
from mtls_operator.k8s.resources import SecretObject, read_secret
from mtls_operator.observability.server import HttpLimits
from mtls_operator.pki.ca import CAKeyPair, load_ca
from mtls_operator.policy.ownership import names_in
from mtls_operator.policy.revocations import (
    config_map_name,
    config_map_path,
    list_digest,
    ownership_problem,
    stored_from_config_map,
)

logger = logging.getLogger("mtls_operator.revocation")
Key = tuple[str, str]

INTERVAL_ENV: Final = "MTLS_REVOCATION_MIRROR_INTERVAL"
DEFAULT_INTERVAL: Final = 10.0
CA_RETRY: Final = 300.0  # seconds before looking again for a CA Secret that was not found or not usable
PAGE: Final = "500"


@dataclass(frozen=True, slots=True)
class _Source:
    """One issuer whose list is copied: where the list is served ``key`` (namespace, list name), the
    issuer's name its CA Secrets carry, and its spec."""

    key: Key
    issuer: str
    spec: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Copy:
    version: str
    served: Served


def _utcnow() -> datetime:
    return datetime.now(UTC)


class RevocationMirror:
    """Serve the stored CRLs and answer OCSP from them, read-only (a standby replica's responder)."""

    def __init__(
        self,
        api: ApiClient,
        clock: Callable[[], datetime] = _utcnow,
        *,
        namespaces: Sequence[str] = (),
        cluster_wide: bool = True,
        cluster_namespace: str | None = None,
        interval: float = DEFAULT_INTERVAL,
        limits: HttpLimits = LIMITS,
    ) -> None:
        self.api = api
        self.clock = clock
        self.namespaces = tuple(namespaces)  # names or globs; empty: every namespace
        self.cluster_wide = cluster_wide  # list issuers cluster-wide (globs, or all) or per namespace
        self.cluster_namespace = cluster_namespace  # MTLSClusterIssuers' home; None: they are not served
        self.interval = interval
        self.responder = Responder(
            self.lookup, lambda: self.clock(), name="revocation (standby)", limits=limits
        )
        self.refreshes = 0
        self._served: dict[Key, _Copy] = {}
        self._cas: dict[Key, CAKeyPair] = {}
        self._no_ca: dict[Key, tuple[str, float]] = {}  # signer fingerprint not found, and when we looked
        self._task: asyncio.Task[None] | None = None
        self._last_error: str | None = None

    @property
    def port(self) -> int | None:
        return self.responder.port

    def lookup(self, namespace: str, issuer: str) -> Served | None:
        copy = self._served.get((namespace, issuer))
        return copy.served if copy is not None else None

    async def start(self, host: str, port: int) -> None:
        """Serve on ``host:port`` and refresh every ``interval`` seconds (the first refresh at once)."""
        await self.responder.start(host, port)
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="mtls-revocation-mirror")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.responder.stop()

    async def _loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except (ApiError, OSError, TimeoutError) as exc:
                message = str(exc)
                if message != self._last_error:
                    self._last_error = message
                    logger.warning("The standby's copy of the revocation lists is stale: %s", message)
            await asyncio.sleep(self.interval)

    # ------------------------------------------------------------------ refresh

    async def refresh(self) -> None:
        """Read the issuers in scope and their revocation ConfigMaps; replace what is served at once."""
        fresh: dict[Key, _Copy] = {}
        for source in await self._sources():
            try:
                if parse_revocation(source.spec.get("revocation")) is None:
                    continue
            except SpecError:
                continue
            copy = await self._copy(source)
            if copy is not None:
                fresh[source.key] = copy
        self._served = fresh
        for gone in self._cas.keys() - fresh.keys():
            self._cas.pop(gone, None)
        self.refreshes += 1
        self._last_error = None

    async def _sources(self) -> list[_Source]:
        sources = []
        for issuer in await self._issuers():
            meta = issuer.get("metadata") or {}
            name = str(meta.get("name") or "")
            sources.append(_Source((str(meta.get("namespace") or ""), name), name, issuer.get("spec") or {}))
        if self.cluster_namespace is not None:
            for issuer in await self._list(f"/apis/{GROUP}/{VERSION}/{CLUSTER_ISSUER_PLURAL}"):
                name = str((issuer.get("metadata") or {}).get("name") or "")
                key = (self.cluster_namespace, f"cluster.{name}")
                sources.append(_Source(key, name, issuer.get("spec") or {}))
        return sources

    async def _issuers(self) -> list[JSON]:
        if not self.cluster_wide:
            found: list[JSON] = []
            for namespace in self.namespaces:
                found += await self._list(group_path(GROUP, VERSION, namespace, ISSUER_PLURAL))
            return found
        items = await self._list(f"/apis/{GROUP}/{VERSION}/{ISSUER_PLURAL}")
        if not self.namespaces:
            return items
        return [
            item
            for item in items
            if any(
                fnmatch.fnmatchcase(str((item.get("metadata") or {}).get("namespace") or ""), pattern)
                for pattern in self.namespaces
            )
        ]

    async def _list(self, path: str) -> list[JSON]:
        items: list[JSON] = []
        params = {"limit": PAGE}
        while True:
            page = await self.api.request("GET", path, params=params)
            items += [i for i in page.get("items") or [] if isinstance(i, dict)]
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
            params = {"limit": PAGE, "continue": str(token)}

    async def _copy(self, source: _Source) -> _Copy | None:
        key = source.key
        body = await self.api.get_or_none(config_map_path(*key))
        if body is None:
            return None  # the leader has not published yet
        version = str((body.get("metadata") or {}).get("resourceVersion") or "")
        foreign = ownership_problem(body, key[1])
        if foreign is not None:
            return _Copy(
                version,
                Served(
                    unavailable=f"ConfigMap {key[0]}/{config_map_name(key[1])} is not the operator's "
                    f"revocation list for MTLSIssuer {key[1]}: {foreign}."
                ),
            )
        previous = self._served.get(key)
        stored, _ = stored_from_config_map(body)
        ca = await self._ca(source, stored.signer)
        if previous is not None and previous.version == version and previous.served.ca is ca:
            return previous
        return _Copy(version, served_snapshot(stored, ca, list_digest(stored.revoked)))

    async def _ca(self, source: _Source, signer: str | None) -> CAKeyPair | None:
        """The CA that signed the stored CRL, from a Secret that names this issuer; None if there is none."""
        key = source.key
        if not signer:
            return None
        now = self.clock()
        cached = self._cas.get(key)
        if cached is not None and cached.facts.fingerprint == signer and now < cached.facts.not_after:
            return cached
        missed = self._no_ca.get(key)
        if missed is not None and missed[0] == signer and time.monotonic() - missed[1] < CA_RETRY:
            return None
        try:
            secret_name = parse_issuer_spec(source.spec).ca_secret_name
        except SpecError:
            return None
        for name in (secret_name, f"{secret_name}-next"):
            secret = await read_secret(self.api, key[0], name)
            if secret is None or not _usable(secret, source.issuer):
                continue
            try:
                ca = await asyncio.to_thread(load_ca, secret.data, now)
            except CAError:
                continue
            if ca.facts.fingerprint == signer:
                self._cas[key] = ca
                self._no_ca.pop(key, None)
                return ca
        self._cas.pop(key, None)
        self._no_ca[key] = (signer, time.monotonic())
        logger.warning(
            "Standby: no CA Secret of issuer %s/%s (named for it in %s) has the certificate that signed its "
            "CRL; this standby answers OCSP for it with 503 (the CRL is served).",
            *key,
            ANN_CA_FOR_ISSUER,
        )
        return None


def _usable(secret: SecretObject, issuer: str) -> bool:
    """The operator's CA Secret for this issuer, its staged next CA, or a CA Secret that allows the issuer
    (the same proofs the leader requires, see policy/ownership.py; the issuer's UID is not known here,
    so a name match with the operator's label stands in for it on this read-only path)."""
    if secret.managed and secret.annotations.get(ANN_CA_FOR_ISSUER) == issuer:
        return True
    return issuer in names_in(secret.annotations.get(ANN_ALLOWED_ISSUERS))
