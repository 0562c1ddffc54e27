"""One issuer's revocation list as this process holds it, and the reads and writes of its ConfigMap.

:class:`IssuerRevocations` is what this process knows of one issuer: its CA and ``spec.revocation``, the
stored list as last read or written, the serial index and the snapshot the responder serves.
:meth:`IssuerRevocations.set_stored` is the one place the stored list changes; the index, the digest and
the snapshot follow it there.

:class:`RevocationsConfigMap` reads and writes the ``<issuer>-revocations`` ConfigMap for it: every write
carries the resourceVersion it was computed from, a 409 re-reads (the caller decides again), a ConfigMap
that is not the operator's is never written, and a list past the budget is refused. The caller
(:class:`~mtls_operator.controllers.revocation.Revocations`, where the design is told) holds the issuer's
lock around each call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Final

from mtls_operator.api.constants import Reason
from mtls_operator.api.tls import CAError
from mtls_operator.api.trust_lifecycle import DEFAULT_CRL_VALIDITY, RevocationSpec
from mtls_operator.controllers.revocation_http import Served
from mtls_operator.k8s.api import ApiClient, ApiError
from mtls_operator.pki.ca import CAKeyPair
from mtls_operator.pki.crl import RevocationError, build_crl
from mtls_operator.policy.revocations import (
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
    ownership_problem,
    prune,
    publishes_crl,
    stored_from_config_map,
    whole_seconds,
)

logger = logging.getLogger("mtls_operator.revocation")
Key = tuple[str, str]
Clock = Callable[[], datetime]

WRITE_ATTEMPTS: Final = 5


def served_snapshot(
    stored: Stored, ca: CAKeyPair | None, digest: str, unavailable: str | None = None
) -> Served:
    """What the responder serves of one issuer: the stored CRL, the CA for OCSP, the list as a lookup."""
    if unavailable is not None:
        return Served(unavailable=unavailable)
    return Served(stored.crl_der, stored.crl_pem, ca, stored.lookup(), digest)


@dataclass
class IssuerRevocations:
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

    def set_stored(self, stored: Stored) -> None:
        """The one place the stored list changes: the serial index, the digest and the served snapshot
        follow."""
        if stored.revoked != self.stored.revoked or not self.loaded:
            self.digest = list_digest(stored.revoked)
            self.serials = frozenset(r.serial for r in stored.revoked)
        self.stored = stored
        self.serve()

    def serve(self) -> None:
        self.served = served_snapshot(self.stored, self.ca, self.digest, self.conflict)

    def durable(self, serial: int) -> bool:
        """The serial is in the ConfigMap as last read or written (not only in this process's memory)."""
        return serial in self.serials and self.stored.resource_version is not None and not self.conflict

    def log_problem(self, key: Key, message: str) -> None:
        """Log a problem once per issuer until it changes (reconciles repeat; logs should not)."""
        if self.last_problem != message:
            self.last_problem = message
            logger.warning("Issuer %s/%s revocation: %s", *key, message)


class RevocationsConfigMap:
    """The ``<issuer>-revocations`` ConfigMaps, read and written for :class:`IssuerRevocations`."""

    def __init__(self, api: ApiClient, clock: Clock, budget: int) -> None:
        self.api = api
        self.clock = clock
        self.budget = budget

    async def revoke_locked(self, key: Key, state: IssuerRevocations, entry: Revoked) -> bool:
        await self.load(key, state, reread=True)
        for _ in range(WRITE_ATTEMPTS):
            if state.conflict is not None:
                return False
            if state.durable(entry.serial):
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
                return state.durable(entry.serial)
        return False

    async def load(self, key: Key, state: IssuerRevocations, *, reread: bool = False) -> None:
        """Read the ConfigMap when this process has not yet, or (``reread``) when it changed since."""
        if state.loaded and not reread:
            return
        body = await self.api.get_or_none(config_map_path(*key))
        if body is None:
            # Deleted (or never written): keep what this process knows, so deleting the ConfigMap does not
            # un-revoke anything; the next publish writes it again. Edit revoked.json to remove an entry.
            kept = state.stored
            state.conflict = None
            state.set_stored(Stored(revoked=kept.revoked, crl_number=kept.crl_number))
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
            state.set_stored(Stored(revoked=kept.revoked, crl_number=kept.crl_number))
            state.loaded = True
            return
        was_conflict, state.conflict = state.conflict, None
        version = (body.get("metadata") or {}).get("resourceVersion")
        if state.loaded and not was_conflict and version == state.stored.resource_version:
            return
        stored, problems = stored_from_config_map(body)
        for problem in problems:
            state.log_problem(key, f"ConfigMap {config_map_name(key[1])}: {problem}")
        state.loaded = True
        state.set_stored(stored)

    async def _write(self, key: Key, state: IssuerRevocations, stored: Stored) -> bool:
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
                await self.load(key, state, reread=True)
                return False
            raise
        version = (written.get("metadata") or {}).get("resourceVersion")
        state.set_stored(replace(stored, resource_version=version))
        state.loaded = True
        return True

    async def _signed(self, key: Key, state: IssuerRevocations, stored: Stored) -> Stored:
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
            state.log_problem(key, f"cannot sign a CRL: {exc}")
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

    async def publish_if_due(self, key: Key, state: IssuerRevocations) -> None:
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
