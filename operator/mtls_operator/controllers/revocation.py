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
import base64
import binascii
import contextlib
import functools
import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from mtls_operator.api import conditions as cond
from mtls_operator.api.constants import ISSUER_KIND, ISSUER_PLURAL, LABEL_MANAGED_BY, MANAGED_BY_VALUE, Reason
from mtls_operator.api.issuer_policy import DEFAULT_CRL_VALIDITY, RevocationSpec
from mtls_operator.api.tls import CAError
from mtls_operator.controllers.revocation_http import LIMITS, Responder, Served
from mtls_operator.k8s.api import ApiClient, ApiError
from mtls_operator.k8s.resources import get_custom, post_event
from mtls_operator.observability.metrics import Metrics
from mtls_operator.observability.server import HttpLimits
from mtls_operator.pki.ca import CAKeyPair
from mtls_operator.pki.crl import REASONS, UNSPECIFIED, RevocationError, RevokedEntry, build_crl

logger = logging.getLogger("mtls_operator.revocation")
Key = tuple[str, str]
Clock = Callable[[], datetime]

CONFIG_MAP_SUFFIX: Final = "-revocations"
ANN_REVOCATIONS_FOR: Final = "mtls.dev/revocations-for"
ANN_CRL_SIGNER: Final = "mtls.dev/crl-signer"  # sha256 fingerprint of the CA certificate that signed ca.crl
ANN_CRL_THIS_UPDATE: Final = "mtls.dev/crl-this-update"
ANN_CRL_NEXT_UPDATE: Final = "mtls.dev/crl-next-update"
ANN_CRL_LIST_DIGEST: Final = "mtls.dev/crl-list-digest"  # digest of the revoked.json the CRL was built from
KEY_REVOKED: Final = "revoked.json"
KEY_CRL_NUMBER: Final = "crlNumber"
KEY_CRL_PEM: Final = "ca.crl"
KEY_CRL_DER: Final = "ca.crl.der"

REFRESH_INTERVAL: Final = 60.0
WRITE_ATTEMPTS: Final = 5
# The API server refuses a ConfigMap whose data and binaryData hold more than 1 MiB. Additions stop
# short of it, leaving room for a larger cRLNumber and for entries written by a concurrent writer.
CONFIG_MAP_LIMIT: Final = 1024 * 1024
BUDGET_BYTES: Final = 1_000_000


# ---------------------------------------------------------------------------------------------------------
# Pure helpers: the stored list, what may leave it, ownership, the decision to sign a CRL, the ConfigMap


@dataclass(frozen=True, slots=True)
class Revoked:
    """One entry of ``revoked.json``: the serial, when and why it was revoked, the MTLSCertificate, and the
    certificate's notAfter (None: unknown, for entries written before it was recorded)."""

    serial: int
    revoked_at: datetime
    reason: str = UNSPECIFIED
    certificate: str = ""
    not_after: datetime | None = None

    @property
    def serial_hex(self) -> str:
        return format(self.serial, "x")

    def entry(self) -> RevokedEntry:
        return RevokedEntry(self.serial, self.revoked_at, self.reason)

    def as_json(self) -> dict[str, str]:
        doc = {
            "serial": self.serial_hex,
            "revokedAt": cond.rfc3339(self.revoked_at) or "",
            "reason": self.reason,
            "certificate": self.certificate,
        }
        if self.not_after is not None:
            doc["notAfter"] = cond.rfc3339(self.not_after) or ""
        return doc


def parse_serial(value: Any) -> int | None:
    """A positive serial from hex text (``0a1b``, ``0A:1B``, ``0x0a1b``); None when it is not one."""
    if not isinstance(value, str):
        return None
    text = value.strip().lower().replace(":", "")
    text = text.removeprefix("0x")
    if not text or len(text) > 64:
        return None
    try:
        serial = int(text, 16)
    except ValueError:
        return None
    return serial if serial > 0 else None


def normalize_reason(reason: str) -> str:
    """An RFC 5280 reason name a CRL can carry; anything else (``removeFromCRL`` included) is unspecified."""
    if reason in REASONS and reason != "removeFromCRL":
        return reason
    return UNSPECIFIED


def whole_seconds(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(microsecond=0)


def _aware(value: Any) -> datetime | None:
    moment = cond.parse_rfc3339(value)
    return whole_seconds(moment) if moment is not None and moment.tzinfo is not None else None


def parse_revoked_json(text: str | None) -> tuple[tuple[Revoked, ...], list[str]]:
    """The entries of ``revoked.json``, sorted by serial, earliest revocation per serial, and a sentence per
    entry that had to be skipped (the ConfigMap is user-editable: a bad entry must not stop the rest). A
    bad ``notAfter`` reads as unknown (kept longer), never as a reason to drop the entry."""
    if not text:
        return (), []
    try:
        raw = json.loads(text)
    except ValueError:
        return (), [f"{KEY_REVOKED} is not JSON; starting from an empty list."]
    if not isinstance(raw, list):
        return (), [f"{KEY_REVOKED} is not a JSON list; starting from an empty list."]
    problems: list[str] = []
    found: list[Revoked] = []
    for index, item in enumerate(raw):
        if not isinstance(item, Mapping):
            problems.append(f"{KEY_REVOKED}[{index}] is not an object.")
            continue
        serial = parse_serial(item.get("serial"))
        revoked_at = _aware(item.get("revokedAt"))
        if serial is None or revoked_at is None:
            problems.append(f"{KEY_REVOKED}[{index}] needs a hex serial and an RFC 3339 revokedAt.")
            continue
        not_after = _aware(item.get("notAfter"))
        if not_after is None and item.get("notAfter") is not None:
            problems.append(f"{KEY_REVOKED}[{index}].notAfter is not an RFC 3339 time; kept as unknown.")
        reason = str(item.get("reason") or UNSPECIFIED)
        certificate = str(item.get("certificate") or "")
        found.append(Revoked(serial, revoked_at, normalize_reason(reason), certificate, not_after))
    return merge_revoked(found), problems


def merge_revoked(*lists: Iterable[Revoked]) -> tuple[Revoked, ...]:
    """The union of ``lists``, one entry per serial (the earliest revocation wins, and keeps a notAfter
    another entry for the serial knows), sorted by serial."""
    by_serial: dict[int, Revoked] = {}
    for entries in lists:
        for entry in entries:
            seen = by_serial.get(entry.serial)
            if seen is None:
                by_serial[entry.serial] = entry
                continue
            first, other = (entry, seen) if entry.revoked_at < seen.revoked_at else (seen, entry)
            if first.not_after is None and other.not_after is not None:
                first = replace(first, not_after=other.not_after)
            by_serial[entry.serial] = first
    return tuple(by_serial[s] for s in sorted(by_serial))


@functools.lru_cache(maxsize=16384)
def _json_line(entry: Revoked) -> str:
    return json.dumps(entry.as_json(), sort_keys=True)


_last_dump: list[tuple[tuple[Revoked, ...], str]] = []  # the last list dumped: one revoke dumps it 3 times


def dump_revoked_json(entries: Iterable[Revoked]) -> str:
    """Canonical ``revoked.json``: sorted by serial, one entry per line, so diffs read well."""
    if isinstance(entries, tuple) and _last_dump and _last_dump[0][0] is entries:
        return _last_dump[0][1]
    items = [_json_line(e) for e in merge_revoked(entries)]
    text = "[\n" + ",\n".join(items) + "\n]\n" if items else "[]\n"
    if isinstance(entries, tuple):
        _last_dump[:] = [(entries, text)]
    return text


def list_digest(entries: Iterable[Revoked]) -> str:
    return hashlib.sha256(dump_revoked_json(entries).encode()).hexdigest()


EMPTY_DIGEST: Final = hashlib.sha256(b"[]\n").hexdigest()


def keep_until(entry: Revoked, margin: timedelta, ca_not_after: datetime | None) -> datetime | None:
    """When ``entry`` may leave the list: its certificate's notAfter plus ``margin``; for an unknown notAfter
    the CA's notAfter plus ``margin`` (a leaf never outlives its CA); None (keep) when neither is known."""
    end = entry.not_after if entry.not_after is not None else ca_not_after
    return None if end is None else end + margin


def prune(
    entries: Iterable[Revoked], now: datetime, margin: timedelta, ca_not_after: datetime | None
) -> tuple[Revoked, ...]:
    """The entries still owed a place on the list at ``now``."""
    kept = []
    for entry in entries:
        until = keep_until(entry, margin, ca_not_after)
        if until is None or now < until:
            kept.append(entry)
    return tuple(kept)


def ownership_problem(body: Mapping[str, Any], issuer: str) -> str | None:
    """Why the ConfigMap ``body`` is not the operator's list for ``issuer`` (a sentence), or None when it
    carries both marks the operator writes: the managed-by label and ``mtls.dev/revocations-for``."""
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    missing = []
    if labels.get(LABEL_MANAGED_BY) != MANAGED_BY_VALUE:
        missing.append(f"the label {LABEL_MANAGED_BY}={MANAGED_BY_VALUE}")
    owner = annotations.get(ANN_REVOCATIONS_FOR)
    if owner != issuer:
        missing.append(
            f"the annotation {ANN_REVOCATIONS_FOR}={issuer}"
            + (f" (it names {owner!r})" if isinstance(owner, str) else "")
        )
    if not missing:
        return None
    return "it lacks " + " and ".join(missing)


@dataclass(frozen=True, slots=True)
class Stored:
    """The issuer's revocation ConfigMap as read (or as it is about to be written)."""

    resource_version: str | None = None  # None: not in the API server (never written, or deleted)
    revoked: tuple[Revoked, ...] = ()
    crl_number: int = 0
    crl_der: bytes | None = None
    crl_pem: bytes | None = None
    signer: str | None = None
    this_update: datetime | None = None
    next_update: datetime | None = None
    crl_list_digest: str | None = None

    def lookup(self) -> dict[int, RevokedEntry]:
        return {r.serial: r.entry() for r in self.revoked}

    def size(self) -> int:
        """The bytes the API server counts against the 1 MiB limit: data values plus decoded binaryData."""
        total = len(dump_revoked_json(self.revoked).encode()) + len(str(self.crl_number))
        if self.crl_der is not None and self.crl_pem is not None:
            total += len(self.crl_der) + len(self.crl_pem)
        return total


def stored_from_config_map(body: Mapping[str, Any]) -> tuple[Stored, list[str]]:
    """Parse the ConfigMap; a corrupt field reads as absent (the next publish repairs it)."""
    meta = body.get("metadata") or {}
    ann = meta.get("annotations") or {}
    data = body.get("data") or {}
    binary = body.get("binaryData") or {}
    revoked, problems = parse_revoked_json(data.get(KEY_REVOKED))
    try:
        number = int(str(data.get(KEY_CRL_NUMBER) or "0"))
    except ValueError:
        number, problems = 0, [*problems, f"{KEY_CRL_NUMBER} is not a number."]
    der: bytes | None = None
    if binary.get(KEY_CRL_DER):
        try:
            der = base64.b64decode(binary[KEY_CRL_DER], validate=True)
        except (binascii.Error, ValueError):
            problems.append(f"binaryData.{KEY_CRL_DER} is not base64.")
    pem = data.get(KEY_CRL_PEM)
    return (
        Stored(
            resource_version=meta.get("resourceVersion"),
            revoked=revoked,
            crl_number=max(number, 0),
            crl_der=der,
            crl_pem=pem.encode() if isinstance(pem, str) and pem and der else None,
            signer=ann.get(ANN_CRL_SIGNER) if der else None,
            this_update=cond.parse_rfc3339(ann.get(ANN_CRL_THIS_UPDATE)),
            next_update=cond.parse_rfc3339(ann.get(ANN_CRL_NEXT_UPDATE)),
            crl_list_digest=ann.get(ANN_CRL_LIST_DIGEST),
        ),
        problems,
    )


def config_map_body(namespace: str, issuer: str, stored: Stored) -> dict[str, Any]:
    annotations = {ANN_REVOCATIONS_FOR: issuer}
    data = {KEY_REVOKED: dump_revoked_json(stored.revoked), KEY_CRL_NUMBER: str(stored.crl_number)}
    binary: dict[str, str] = {}
    if stored.crl_der is not None and stored.crl_pem is not None:
        data[KEY_CRL_PEM] = stored.crl_pem.decode()
        binary[KEY_CRL_DER] = base64.b64encode(stored.crl_der).decode()
        annotations[ANN_CRL_SIGNER] = stored.signer or ""
        annotations[ANN_CRL_THIS_UPDATE] = cond.rfc3339(stored.this_update) or ""
        annotations[ANN_CRL_NEXT_UPDATE] = cond.rfc3339(stored.next_update) or ""
        annotations[ANN_CRL_LIST_DIGEST] = stored.crl_list_digest or ""
    metadata: dict[str, Any] = {
        "name": config_map_name(issuer),
        "namespace": namespace,
        "labels": {LABEL_MANAGED_BY: MANAGED_BY_VALUE},
        "annotations": annotations,
    }
    if stored.resource_version is not None:
        metadata["resourceVersion"] = stored.resource_version
    body: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}
    if binary:
        body["binaryData"] = binary
    return body


def config_map_name(issuer: str) -> str:
    return f"{issuer}{CONFIG_MAP_SUFFIX}"


def config_map_path(namespace: str, issuer: str | None = None) -> str:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    return f"{path}/{config_map_name(issuer)}" if issuer else path


def publishes_crl(configured: bool, stored: Stored) -> bool:
    """Whether an issuer keeps a CRL: when ``spec.revocation`` is set, once anything was revoked, or once it
    has a ConfigMap. Issuers that never use revocation get no ConfigMap (and no extra API write)."""
    return configured or bool(stored.revoked) or stored.resource_version is not None


def crl_due(stored: Stored, ca_fingerprint: str, now: datetime) -> str | None:
    """Why the issuer needs a new CRL now (a sentence for the log), or None when the published one serves."""
    if stored.crl_der is None or stored.this_update is None or stored.next_update is None:
        return "no CRL has been published yet"
    if stored.signer != ca_fingerprint:
        return "the issuer's CA changed since the last CRL"
    if stored.crl_list_digest != list_digest(stored.revoked):
        return "the revoked list changed since the last CRL"
    validity = stored.next_update - stored.this_update
    if stored.next_update - now <= validity / 3:
        return "the last CRL is within a third of its validity of nextUpdate"
    return None


def der_to_pem(der: bytes, label: str = "X509 CRL") -> bytes:
    body = base64.b64encode(der).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return ("\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----"]) + "\n").encode()


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
    stored: Stored = Stored()
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
