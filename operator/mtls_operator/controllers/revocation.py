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
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Final

from mtls_operator.api import conditions as cond
from mtls_operator.api.constants import ISSUER_KIND, ISSUER_PLURAL, Reason
from mtls_operator.api.issuer_policy import DEFAULT_CRL_VALIDITY, RevocationSpec
from mtls_operator.api.tls import CAError
from mtls_operator.controllers.revocation_http import LIMITS, Responder, Served
from mtls_operator.k8s.api import ApiClient, ApiError
from mtls_operator.k8s.resources import get_custom, post_event
from mtls_operator.observability.metrics import Metrics
from mtls_operator.observability.server import HttpLimits
from mtls_operator.pki.ca import CAKeyPair
from mtls_operator.pki.crl import RevocationError, build_crl
from mtls_operator.policy.revocations import (
    BUDGET_BYTES,
    CONFIG_MAP_LIMIT,
    EMPTY_DIGEST,
    Revoked,
    Stored,
    config_map_body,
    config_map_name,
    config_map_path,
    crl_due,
    der_to_pem,
    list_digest,
    merge_revoked,
    normalize_reason,
    ownership_problem,
    parse_serial,
    prune,
    publishes_crl,
    stored_from_config_map,
    whole_seconds,
)

logger = logging.getLogger("mtls_operator.revocation")
Key = tuple[str, str]
Clock = Callable[[], datetime]

REFRESH_INTERVAL: Final = 60.0
WRITE_ATTEMPTS: Final = 5


def served_snapshot(
    stored: Stored, ca: CAKeyPair | None, digest: str, unavailable: str | None = None
) -> Served:
    """What the responder serves of one issuer: the stored CRL, the CA for OCSP, the list as a lookup."""
    if unavailable is not None:
        return Served(unavailable=unavailable)
    return Served(stored.crl_der, stored.crl_pem, ca, stored.lookup(), digest)


# ---------------------------------------------------------------------------------------------------------
# The store


@dataclass
class _Issuer:
    """What this process knows of one issuer."""

    ca: CAKeyPair | None = None
    spec: RevocationSpec | None = None
    stored: Stored = field(default_factory=Stored)
    digest: str = EMPTY_DIGEST
    serials: frozenset[int] = frozenset()
    served: Served = field(default_factory=Served)
    loaded: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_problem: str | None = None  # logged once until it changes
    conflict: str | None = None  # the ConfigMap of that name is not ours: a sentence
    full: str | None = None  # the last revocation was refused for size: a sentence
    reported: Reason | None = None  # the problem last posted as an event
    uid: str | None = None

    @property
    def margin(self) -> timedelta:
        """How long an entry stays after its certificate's notAfter: one CRL validity."""
        return self.spec.crl_validity if self.spec is not None else DEFAULT_CRL_VALIDITY

    @property
    def ca_not_after(self) -> datetime | None:
        return self.ca.facts.not_after if self.ca is not None else None


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
        self.budget = budget
        self.responder = Responder(self.lookup, lambda: self.clock(), limits=limits)
        self._issuers: dict[Key, _Issuer] = {}
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
                            await self._load(key, state, reread=True)
                        await self._publish_if_due(key, state)
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
                done = await self._revoke_locked(key, state, entry)
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
            self._serve(state)
        try:
            async with state.lock:
                await self._load(key, state, reread=True)
                if ca is not None:
                    await self._publish_if_due(key, state)
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

    def _state(self, key: Key) -> _Issuer:
        state = self._issuers.get(key)
        if state is None:
            state = self._issuers[key] = _Issuer()
        return state

    def lookup(self, namespace: str, issuer: str) -> Served | None:
        """What the responder serves for an issuer this process has loaded; None: 404."""
        state = self._issuers.get((namespace, issuer))
        return state.served if state is not None and state.loaded else None

    # ------------------------------------------------------------------ store

    def _set_stored(self, state: _Issuer, stored: Stored) -> None:
        """The one place state.stored changes: the serial index, the digest and the served snapshot follow."""
        if stored.revoked != state.stored.revoked or not state.loaded:
            state.digest = list_digest(stored.revoked)
            state.serials = frozenset(r.serial for r in stored.revoked)
        state.stored = stored
        self._serve(state)

    def _serve(self, state: _Issuer) -> None:
        state.served = served_snapshot(state.stored, state.ca, state.digest, state.conflict)

    def _durable(self, state: _Issuer, serial: int) -> bool:
        """The serial is in the ConfigMap as last read or written (not only in this process's memory)."""
        return serial in state.serials and state.stored.resource_version is not None and not state.conflict

    async def _revoke_locked(self, key: Key, state: _Issuer, entry: Revoked) -> bool:
        await self._load(key, state, reread=True)
        for _ in range(WRITE_ATTEMPTS):
            if state.conflict is not None:
                return False
            if self._durable(state, entry.serial):
                state.full = None
                return True
            now = self.clock()
            merged = merge_revoked(state.stored.revoked, [entry])
            listed = prune(merged, now, state.margin, state.ca_not_after)
            candidate = await self._signed(key, state, replace(state.stored, revoked=listed))
            size = candidate.size()
            if size > self.budget:
                state.full = (
                    f"Serial {entry.serial_hex} (MTLSCertificate {key[0]}/{entry.certificate}) cannot be "
                    f"revoked yet: ConfigMap {config_map_name(key[1])} would hold {size} bytes with "
                    f"{len(listed)} entries, over the {self.budget}-byte budget (the API server's limit is "
                    f"{CONFIG_MAP_LIMIT}). Entries leave one CRL validity after their certificate "
                    "expires; shorter certificate durations keep the list shorter."
                )
                return False
            if await self._write(key, state, candidate):
                state.full = None
                logger.info(
                    "Revoked serial %s of MTLSCertificate %s/%s (issuer %s, reason %s)",
                    entry.serial_hex,
                    key[0],
                    entry.certificate,
                    key[1],
                    entry.reason,
                )
                return self._durable(state, entry.serial)
        return False

    async def _load(self, key: Key, state: _Issuer, *, reread: bool = False) -> None:
        """Read the ConfigMap when this process has not yet, or (``reread``) when it changed since."""
        if state.loaded and not reread:
            return
        body = await self.api.get_or_none(config_map_path(*key))
        if body is None:
            # Deleted (or never written): keep what this process knows, so deleting the ConfigMap does not
            # un-revoke anything; the next publish writes it again. Edit revoked.json to remove an entry.
            kept = state.stored
            state.conflict = None
            self._set_stored(state, Stored(revoked=kept.revoked, crl_number=kept.crl_number))
            state.loaded = True
            return
        foreign = ownership_problem(body, key[1])
        if foreign is not None:
            state.conflict = (
                f"ConfigMap {key[0]}/{config_map_name(key[1])} exists and is not the operator's revocation "
                f"list for MTLSIssuer {key[1]}: {foreign}. The operator does not write it; revocations of "
                "this issuer are not recorded and its CRL and OCSP are not served until it is deleted or "
                "renamed."
            )
            kept = state.stored
            # Keep what this process had listed (not durable any more: no resourceVersion), read nothing.
            self._set_stored(state, Stored(revoked=kept.revoked, crl_number=kept.crl_number))
            state.loaded = True
            return
        was_conflict, state.conflict = state.conflict, None
        version = (body.get("metadata") or {}).get("resourceVersion")
        if state.loaded and not was_conflict and version == state.stored.resource_version:
            return
        stored, problems = stored_from_config_map(body)
        for problem in problems:
            self._log_problem(key, state, f"ConfigMap {config_map_name(key[1])}: {problem}")
        state.loaded = True
        self._set_stored(state, stored)

    async def _write(self, key: Key, state: _Issuer, stored: Stored) -> bool:
        """Create or replace the ConfigMap guarded by the resourceVersion ``stored`` was computed from.
        On a conflict re-read (the caller decides again) and return False. Never writes a ConfigMap that
        is someone else's: creation only when there is none, replacement only over the version read."""
        if state.conflict is not None:
            return False
        body = config_map_body(key[0], key[1], stored)
        try:
            if stored.resource_version is None:
                written = await self.api.request("POST", config_map_path(key[0]), body=body)
            else:
                written = await self.api.request("PUT", config_map_path(*key), body=body)
        except ApiError as exc:
            if exc.conflict:
                await self._load(key, state, reread=True)
                return False
            raise
        version = (written.get("metadata") or {}).get("resourceVersion")
        self._set_stored(state, replace(stored, resource_version=version))
        state.loaded = True
        return True

    async def _signed(self, key: Key, state: _Issuer, stored: Stored) -> Stored:
        """``stored`` with a new CRL over its list when the issuer's CA is known (else as it is)."""
        ca = state.ca
        if ca is None:
            return stored
        now = whole_seconds(self.clock())
        validity = state.margin
        number = stored.crl_number + 1
        entries = [r.entry() for r in stored.revoked]
        try:
            der = await asyncio.to_thread(build_crl, ca, entries, now, validity, number)
        except (CAError, RevocationError) as exc:
            self._log_problem(key, state, f"cannot sign a CRL: {exc}")
            return stored
        return replace(
            stored,
            crl_number=number,
            crl_der=der,
            crl_pem=der_to_pem(der),
            signer=ca.facts.fingerprint,
            this_update=now,
            next_update=now + validity,
            crl_list_digest=list_digest(stored.revoked),
        )

    async def _publish_if_due(self, key: Key, state: _Issuer) -> None:
        for _ in range(WRITE_ATTEMPTS):
            ca = state.ca
            if ca is None or state.conflict is not None:
                return
            if not publishes_crl(state.spec is not None, state.stored):
                return
            now = self.clock()
            listed = prune(state.stored.revoked, now, state.margin, ca.facts.not_after)
            gone = len(state.stored.revoked) - len(listed)
            why = (
                f"{gone} revoked certificate(s) expired more than a CRL validity ago"
                if gone
                else crl_due(state.stored, ca.facts.fingerprint, now)
            )
            if why is None:
                return
            candidate = await self._signed(key, state, replace(state.stored, revoked=listed))
            if candidate.crl_number == state.stored.crl_number:
                return  # could not sign; already logged
            if await self._write(key, state, candidate):
                logger.info(
                    "Published CRL %d of issuer %s/%s with %d revoked serial(s): %s",
                    candidate.crl_number,
                    *key,
                    len(candidate.revoked),
                    why,
                )
                return

    # ------------------------------------------------------------------ problems

    def _refused(self, key: Key, state: _Issuer, exc: ApiError) -> None:
        """The API server refused the ConfigMap itself (too large, invalid): report it like a full list."""
        if exc.status in (413, 422):
            state.full = (
                f"The API server refused ConfigMap {key[0]}/{config_map_name(key[1])}: {exc.message or exc}"
            )

    def _log_problem(self, key: Key, state: _Issuer, message: str) -> None:
        """Log a problem once per issuer until it changes (reconciles repeat; logs should not)."""
        if state.last_problem != message:
            state.last_problem = message
            logger.warning("Issuer %s/%s revocation: %s", *key, message)

    async def _report(self, key: Key, state: _Issuer) -> None:
        """Log, and post a Warning event on the issuer, when its problem changes to a new one."""
        found = self.problem(*key)
        reason = found[0] if found is not None else None
        if reason == state.reported:
            return
        state.reported = reason
        if found is None:
            return
        self._log_problem(key, state, found[1])
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
