"""Revocation: the revoked serials of each issuer, its signed CRL (ConfigMap and HTTP) and OCSP answers.

Store. Each issuer keeps its list in a ConfigMap ``<issuer>-revocations`` in its namespace: ``revoked.json``
(``[{serial, revokedAt, reason, certificate, notAfter}]``, serials in lower-case hex), ``crlNumber``,
``ca.crl`` (PEM) and ``binaryData.ca.crl.der``. Annotations record what the published CRL covers (signer
fingerprint, thisUpdate, nextUpdate, digest of the list it was built from), so deciding whether to sign
again needs no parsing. Every write carries the resourceVersion it was computed from; a 409 re-reads,
merges and tries again, so two writers (or an operator and a human with kubectl) never lose a revocation.
The ConfigMap has no owner reference on purpose: a CA's revocations must outlive a deleted-and-recreated
issuer object that reuses the same CA Secret.

Ownership. The operator writes only a ConfigMap it created for that issuer: label
``app.kubernetes.io/managed-by: mtls-operator`` and annotation ``mtls.dev/revocations-for: <issuer>``. A
ConfigMap of that name without them belongs to someone else: it is never written (nor read as a list),
:meth:`Revocations.problem` reports ``RevocationsConflict``, a Warning event says so on the issuer, and
the responder answers 503 / OCSP ``tryLater`` for that issuer.

Bounded. Each entry records the revoked certificate's notAfter and leaves the list (and the CRL) one CRL
validity after it (RFC 5280 5.3: an entry stays until it has appeared on one regularly scheduled CRL
issued after the certificate expired; a CRL is re-signed every two thirds of its validity). Entries
without notAfter (written before it was recorded, or revoked without it) are kept until the issuer's
current CA expires, plus the same margin: no leaf outlives the CA that signed it. A revocation that would
take the ConfigMap past :data:`BUDGET_BYTES` is refused (``RevocationsFull``; ``revoke`` returns False, so
a caller holding a finalizer retries; nothing already listed is dropped).

CRL. Issuers with ``spec.revocation`` (``{}`` will do), and any issuer once something was revoked, keep a
CRL; others get no ConfigMap. A new CRL (cRLNumber + 1) is signed when there is none, when the list changed
since the last one (a revocation, or entries that expired), when the issuer's CA changed, or when a third
or less of its validity is left. ``sync_issuer`` (every issuer reconcile) and a refresh task (every minute)
check that.

Each issuer's list as this process holds it, and the guarded reads and writes of its ConfigMap, are in
controllers.revocation_store; this module keeps one per issuer, its lock, the refresh task, the problems
reported on the issuer, and the interface the rest of the operator calls.

HTTP. ``start()`` serves CRLs and OCSP (controllers.revocation_http) on ``MTLS_REVOCATION_PORT`` (default
9403; 0 disables) and ``MTLS_REVOCATION_BIND`` (default 127.0.0.1; the chart sets 0.0.0.0). A serial on
the list is ``revoked``; any other serial is ``good``: the operator keeps no index of every serial it
issued. Issuers this process has not reconciled are 404 (a standby serves them through
controllers.revocation_mirror instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Final

from mtls_operator.api import conditions as cond
from mtls_operator.api.constants import ISSUER_KIND, ISSUER_PLURAL, Reason
from mtls_operator.api.trust_lifecycle import RevocationSpec
from mtls_operator.controllers.revocation_http import LIMITS, Responder, Served
from mtls_operator.controllers.revocation_store import Clock, IssuerRevocations, Key, RevocationsConfigMap
from mtls_operator.k8s.api import ApiClient, ApiError
from mtls_operator.k8s.resources import get_custom, post_event
from mtls_operator.observability.metrics import Metrics
from mtls_operator.observability.server import HttpLimits
from mtls_operator.pki.ca import CAKeyPair
from mtls_operator.policy.revocations import (
    BUDGET_BYTES,
    Revoked,
    config_map_name,
    normalize_reason,
    parse_serial,
    whole_seconds,
)

logger = logging.getLogger("mtls_operator.revocation")

REFRESH_INTERVAL: Final = 60.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Revocations:
    """The revocation lists of the issuers this (leading) process reconciles, and their responder."""

    def __init__(
        self,
        api: ApiClient,
        metrics: Metrics | None = None,
        clock: Clock = _utcnow,
        *,
        limits: HttpLimits = LIMITS,
        events: bool = True,
        budget: int = BUDGET_BYTES,
    ) -> None:
        self.api = api
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.refresh_interval = REFRESH_INTERVAL
        self.events = events  # post a Warning event on the issuer when a problem appears
        self.store = RevocationsConfigMap(api, clock, budget)
        self.responder = Responder(self.lookup, lambda: self.clock(), limits=limits)
        self._issuers: dict[Key, IssuerRevocations] = {}
        self._refresh: asyncio.Task[None] | None = None

    @property
    def port(self) -> int | None:
        """Where the responder listens, once started."""
        return self.responder.port

    # ------------------------------------------------------------------ lifecycle

    async def start(self, address: tuple[str, int] | None = None) -> None:
        """Start the CRL refresh task and, at ``address`` (bind, port; None: off), the HTTP responder."""
        if self._refresh is None:
            self._refresh = asyncio.create_task(self._refresh_loop(), name="mtls-crl-refresh")
        if address is not None and address[1]:
            await self.responder.start(*address)

    async def stop(self) -> None:
        """Stop what start() started."""
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh
            self._refresh = None
        await self.responder.stop()

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval)
            for key in list(self._issuers):
                state = self._issuers.get(key)
                if state is None or state.ca is None or not state.loaded:
                    continue
                try:
                    async with state.lock:
                        if state.conflict is not None:  # its owner may have removed it since
                            await self.store.load(key, state, reread=True)
                        await self.store.publish_if_due(key, state)
                    await self._report(key, state)
                except Exception as exc:  # the loop must outlive any one issuer's failure
                    logger.warning("Cannot refresh the CRL of issuer %s/%s: %s", *key, exc)

    # ------------------------------------------------------------------ the interface the runtime calls

    def is_revoked(self, namespace: str, issuer: str, serial_hex: str) -> bool:
        """Whether ``serial_hex`` (lower-case hex, as CertFacts.serial_number) is on the issuer's list."""
        state = self._issuers.get((namespace, issuer))
        serial = parse_serial(serial_hex)
        return state is not None and serial is not None and serial in state.serials

    def request_handled(self, namespace: str, issuer: str, certificate: str, requested_at: datetime) -> bool:
        """Whether a revocation request made at ``requested_at`` for ``certificate`` was already acted on
        (an entry for that certificate revoked at or after the request), so its replacement, perhaps
        issued within the same second, is not revoked in turn."""
        state = self._issuers.get((namespace, issuer))
        if state is None:
            return False
        return any(
            r.certificate == certificate and r.revoked_at >= requested_at for r in state.stored.revoked
        )

    def problem(self, namespace: str, issuer: str) -> tuple[Reason, str] | None:
        """What keeps the issuer's revocation list from being kept, for a condition: ``RevocationsConflict``
        (the ConfigMap of that name is someone else's) or ``RevocationsFull`` (the last revocation was
        refused: the list would not fit); None when there is nothing to report."""
        state = self._issuers.get((namespace, issuer))
        if state is None:
            return None
        if state.conflict is not None:
            return Reason.REVOCATIONS_CONFLICT, state.conflict
        if state.full is not None:
            return Reason.REVOCATIONS_FULL, state.full
        return None

    async def revoke(
        self,
        namespace: str,
        issuer: str,
        serial_hex: str,
        reason: str,
        certificate: str,
        *,
        not_after: datetime | None = None,
    ) -> bool:
        """Put a serial on the issuer's list and publish a new CRL. Idempotent.

        Returns True only when the serial is in the ConfigMap as the API server holds it (read or written
        just now), or when it needs no listing (its certificate expired more than a CRL validity ago).
        False when it could not be listed (the ConfigMap is someone else's, the list is full, the API
        server failed): :meth:`problem` says why for the first two; call again later. Raises ValueError
        for a serial that is not hex. ``not_after`` is the certificate's notAfter (None: unknown, kept
        until the issuer's CA expires)."""
        key = (namespace, issuer)
        serial = parse_serial(serial_hex)
        if serial is None:
            raise ValueError(f"{serial_hex!r} is not a hex certificate serial.")
        state = self._state(key)
        now = self.clock()
        if not_after is not None and whole_seconds(not_after) + state.margin <= now:
            logger.info(
                "Not listing serial %x of issuer %s/%s: its certificate expired at %s.",
                serial,
                *key,
                cond.rfc3339(whole_seconds(not_after)),
            )
            return True
        entry = Revoked(
            serial,
            whole_seconds(now),
            normalize_reason(reason),
            certificate,
            whole_seconds(not_after) if not_after is not None else None,
        )
        try:
            async with state.lock:
                done = await self.store.revoke_locked(key, state, entry)
        except ApiError as exc:
            self._refused(key, state, exc)
            logger.error("Cannot revoke serial %s of issuer %s/%s: %s", entry.serial_hex, *key, exc)
            done = False
        except (OSError, TimeoutError) as exc:
            logger.error("Cannot revoke serial %s of issuer %s/%s: %s", entry.serial_hex, *key, exc)
            done = False
        await self._report(key, state)
        return done

    async def sync_issuer(
        self,
        namespace: str,
        issuer: str,
        spec: RevocationSpec | None,
        ca: CAKeyPair | None,
        *,
        uid: str | None = None,
    ) -> None:
        """Called at every issuer reconcile with its parsed ``spec.revocation``: load the issuer's list and
        (re)publish its CRL when needed. ``uid`` (the MTLSIssuer's) is used for events; without it the
        issuer is read when one is due."""
        key = (namespace, issuer)
        state = self._state(key)
        if uid:
            state.uid = uid
        state.spec = spec
        if ca is not state.ca:
            state.ca = ca
            state.serve()
        try:
            async with state.lock:
                await self.store.load(key, state, reread=True)
                if ca is not None:
                    await self.store.publish_if_due(key, state)
        except ApiError as exc:
            self._refused(key, state, exc)
            logger.warning("Cannot sync the revocations of issuer %s/%s: %s", *key, exc)
        except (OSError, TimeoutError) as exc:
            logger.warning("Cannot sync the revocations of issuer %s/%s: %s", *key, exc)
        await self._report(key, state)

    def forget_issuer(self, namespace: str, issuer: str) -> None:
        """The issuer is gone."""
        self._issuers.pop((namespace, issuer), None)

    def leaf_urls(self, namespace: str, issuer: str) -> tuple[str | None, str | None]:
        """(CRL distribution point, OCSP URL) to embed in leaves the issuer signs, if configured."""
        state = self._issuers.get((namespace, issuer))
        if state is None or state.spec is None:
            return None, None
        return state.spec.crl_url, state.spec.ocsp_url

    def _state(self, key: Key) -> IssuerRevocations:
        state = self._issuers.get(key)
        if state is None:
            state = self._issuers[key] = IssuerRevocations()
        return state

    def lookup(self, namespace: str, issuer: str) -> Served | None:
        """What the responder serves for an issuer this process has loaded; None: 404."""
        state = self._issuers.get((namespace, issuer))
        return state.served if state is not None and state.loaded else None

    # ------------------------------------------------------------------ problems

    def _refused(self, key: Key, state: IssuerRevocations, exc: ApiError) -> None:
        """The API server refused the ConfigMap itself (too large, invalid): report it like a full list."""
        if exc.status in (413, 422):
            state.full = (
                f"The API server refused ConfigMap {key[0]}/{config_map_name(key[1])}: {exc.message or exc}"
            )

    async def _report(self, key: Key, state: IssuerRevocations) -> None:
        """Log, and post a Warning event on the issuer, when its problem changes to a new one."""
        found = self.problem(*key)
        reason = found[0] if found is not None else None
        if reason == state.reported:
            return
        state.reported = reason
        if found is None:
            return
        state.log_problem(key, found[1])
        if not self.events:
            return
        uid = state.uid
        if uid is None:
            with contextlib.suppress(ApiError, OSError, TimeoutError):
                body = await get_custom(self.api, ISSUER_PLURAL, *key)
                uid = state.uid = ((body or {}).get("metadata") or {}).get("uid")
        if uid is None:
            return
        with contextlib.suppress(OSError, TimeoutError):
            await post_event(
                self.api,
                kind=ISSUER_KIND,
                namespace=key[0],
                name=key[1],
                uid=uid,
                event_type="Warning",
                reason=reason or "",
                message=found[1],
                now=self.clock(),
            )
