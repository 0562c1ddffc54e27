"""Revocation: the revoked serials of each issuer, its signed CRL (ConfigMap and HTTP) and OCSP answers.

Store. Each issuer keeps its list in a ConfigMap ``<issuer>-revocations`` in its namespace: ``revoked.json``
(``[{serial, revokedAt, reason, certificate}]``, serials in lower-case hex), ``crlNumber``, ``ca.crl`` (PEM)
and ``binaryData.ca.crl.der``. Annotations record what the published CRL covers (signer fingerprint,
thisUpdate, nextUpdate, digest of the list it was built from), so deciding whether to sign again needs no
parsing. Every write carries the resourceVersion it was computed from; a 409 re-reads, merges and tries
again, so two writers (or an operator and a human with kubectl) never lose a revocation. The ConfigMap has
no owner reference on purpose: a CA's revocations must outlive a deleted-and-recreated issuer object that
reuses the same CA Secret.

CRL. Issuers with ``spec.revocation`` (``{}`` will do), and any issuer once something was revoked, keep a
CRL; others get no ConfigMap. A new CRL (cRLNumber + 1) is signed when there is none, when the list changed
since the last one, when the issuer's CA changed (the last one was signed by another CA), or when a third
or less of its validity is left. ``sync_issuer`` (every issuer reconcile) and a refresh task (every minute)
check that.

HTTP. ``start()`` serves, on ``MTLS_REVOCATION_PORT`` (default 9403; 0 disables) and
``MTLS_REVOCATION_BIND`` (default 0.0.0.0)::

    GET  /crl/<namespace>/<issuer>.crl            DER CRL (application/pkix-crl)
    GET  /crl/<namespace>/<issuer>.pem            PEM CRL
    POST /ocsp/<namespace>/<issuer>               OCSP request body (application/ocsp-request)
    GET  /ocsp/<namespace>/<issuer>/<base64 req>  RFC 6960 A.1

OCSP answers are signed by the issuer's CA (in a thread: RSA and ML-DSA signing is slow). A serial on the
list is ``revoked``; any other serial is ``good``: the operator keeps no index of every serial it issued,
so it cannot say ``unknown`` for serials it never issued. A CertID naming another CA gets ``unauthorized``.
Issuers this process has not reconciled (another namespace, a standby replica) are 404.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import unquote

from aiohttp import web

from mtls_operator.api import conditions as cond
from mtls_operator.api.constants import LABEL_MANAGED_BY, MANAGED_BY_VALUE
from mtls_operator.api.issuer_policy import DEFAULT_CRL_VALIDITY, RevocationSpec
from mtls_operator.api.tls import CAError
from mtls_operator.k8s.api import ApiClient, ApiError
from mtls_operator.observability.metrics import Metrics
from mtls_operator.pki import ocsp
from mtls_operator.pki.ca import CAKeyPair
from mtls_operator.pki.crl import REASONS, UNSPECIFIED, RevocationError, RevokedEntry, build_crl

logger = logging.getLogger("mtls_operator.revocation")
Key = tuple[str, str]

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

PORT_ENV: Final = "MTLS_REVOCATION_PORT"
BIND_ENV: Final = "MTLS_REVOCATION_BIND"
DEFAULT_PORT: Final = 9403
DEFAULT_BIND: Final = "0.0.0.0"  # noqa: S104 (relying parties outside the pod fetch CRLs and ask OCSP)
REFRESH_INTERVAL: Final = 60.0
MAX_OCSP_REQUEST: Final = 64 * 1024
WRITE_ATTEMPTS: Final = 5

CRL_CONTENT_TYPE: Final = "application/pkix-crl"
OCSP_RESPONSE_CONTENT_TYPE: Final = "application/ocsp-response"


# ---------------------------------------------------------------------------------------------------------
# Pure helpers: the stored list, the decision to sign a CRL, the ConfigMap body, OCSP GET decoding


@dataclass(frozen=True, slots=True)
class Revoked:
    """One entry of ``revoked.json``: the serial, when and why it was revoked, and the MTLSCertificate."""

    serial: int
    revoked_at: datetime
    reason: str = UNSPECIFIED
    certificate: str = ""

    @property
    def serial_hex(self) -> str:
        return format(self.serial, "x")

    def entry(self) -> RevokedEntry:
        return RevokedEntry(self.serial, self.revoked_at, self.reason)

    def as_json(self) -> dict[str, str]:
        return {
            "serial": self.serial_hex,
            "revokedAt": cond.rfc3339(self.revoked_at) or "",
            "reason": self.reason,
            "certificate": self.certificate,
        }


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


def parse_revoked_json(text: str | None) -> tuple[tuple[Revoked, ...], list[str]]:
    """The entries of ``revoked.json``, sorted by serial, earliest revocation per serial, and a sentence per
    entry that had to be skipped (the ConfigMap is user-editable: a bad entry must not stop the rest)."""
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
        revoked_at = cond.parse_rfc3339(item.get("revokedAt"))
        if serial is None or revoked_at is None or revoked_at.tzinfo is None:
            problems.append(f"{KEY_REVOKED}[{index}] needs a hex serial and an RFC 3339 revokedAt.")
            continue
        reason = str(item.get("reason") or UNSPECIFIED)
        found.append(
            Revoked(
                serial,
                whole_seconds(revoked_at),
                normalize_reason(reason),
                str(item.get("certificate") or ""),
            )
        )
    return merge_revoked(found), problems


def merge_revoked(*lists: Iterable[Revoked]) -> tuple[Revoked, ...]:
    """The union of ``lists``, one entry per serial (the earliest revocation wins), sorted by serial."""
    by_serial: dict[int, Revoked] = {}
    for entries in lists:
        for entry in entries:
            seen = by_serial.get(entry.serial)
            if seen is None or entry.revoked_at < seen.revoked_at:
                by_serial[entry.serial] = entry
    return tuple(by_serial[s] for s in sorted(by_serial))


def dump_revoked_json(entries: Iterable[Revoked]) -> str:
    """Canonical ``revoked.json``: sorted by serial, one entry per line, so diffs read well."""
    items = [json.dumps(e.as_json(), sort_keys=True) for e in merge_revoked(entries)]
    return "[\n" + ",\n".join(items) + "\n]\n" if items else "[]\n"


def list_digest(entries: Iterable[Revoked]) -> str:
    return hashlib.sha256(dump_revoked_json(entries).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Stored:
    """The issuer's revocation ConfigMap as read (or as it is about to be written)."""

    resource_version: str | None = None  # None: the ConfigMap does not exist yet
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


def decode_ocsp_get(tail: str) -> bytes | None:
    """The DER request of an RFC 6960 A.1 GET: the URL-encoded base64 of the request (padding optional)."""
    text = unquote(tail).strip()
    if not text:
        return None
    text = text.replace("-", "+").replace("_", "/")  # tolerate base64url too
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


# ---------------------------------------------------------------------------------------------------------
# The store and responder


@dataclass
class _Issuer:
    """What this process knows of one issuer."""

    ca: CAKeyPair | None = None
    spec: RevocationSpec | None = None
    stored: Stored = Stored()
    loaded: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_problem: str | None = None


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Revocations:
    def __init__(self, api: ApiClient, metrics: Metrics | None = None) -> None:
        self.api = api
        self.metrics = metrics or Metrics()
        self.clock = _utcnow
        self.refresh_interval = REFRESH_INTERVAL
        self.port: int | None = None  # where the responder listens, once started
        self._issuers: dict[Key, _Issuer] = {}
        self._runner: web.AppRunner | None = None
        self._refresh: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the HTTP responder (CRL and OCSP) and the CRL refresh task."""
        if self._refresh is None:
            self._refresh = asyncio.create_task(self._refresh_loop(), name="mtls-crl-refresh")
        await self._start_responder()

    async def stop(self) -> None:
        """Stop what start() started."""
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh
            self._refresh = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self.port = None

    async def _start_responder(self) -> None:
        try:
            port = int(os.environ.get(PORT_ENV, str(DEFAULT_PORT)))
        except ValueError:
            logger.error(
                "%s=%r is not a port number; the revocation responder is off.", PORT_ENV, os.environ[PORT_ENV]
            )
            return
        if port == 0 or self._runner is not None:
            return
        bind = os.environ.get(BIND_ENV, DEFAULT_BIND) or DEFAULT_BIND
        app = web.Application(client_max_size=MAX_OCSP_REQUEST)
        app.router.add_get("/crl/{namespace}/{file}", self._get_crl)
        app.router.add_post("/ocsp/{namespace}/{issuer}", self._post_ocsp)
        app.router.add_get("/ocsp/{namespace}/{issuer}/{request:.+}", self._get_ocsp)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, bind, port).start()
        except (OSError, OverflowError, ValueError) as exc:  # taken, not ours to bind, or out of range
            logger.error(
                "The revocation responder cannot listen on %s:%d (%s); CRLs stay in ConfigMaps, OCSP is off.",
                bind,
                port,
                getattr(exc, "strerror", None) or exc,
            )
            await runner.cleanup()
            return
        self._runner, self.port = runner, port
        logger.info("Revocation responder (CRL and OCSP) listening on %s:%d", bind, port)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval)
            for key in list(self._issuers):
                state = self._issuers.get(key)
                if state is None or state.ca is None or not state.loaded:
                    continue
                try:
                    async with state.lock:
                        await self._publish_if_due(key, state)
                except Exception as exc:  # the loop must outlive any one issuer's failure
                    logger.warning("Cannot refresh the CRL of issuer %s/%s: %s", *key, exc)

    # ------------------------------------------------------------------ the interface the runtime calls

    def is_revoked(self, namespace: str, issuer: str, serial_hex: str) -> bool:
        """Whether ``serial_hex`` (lower-case hex, as CertFacts.serial_number) is on the issuer's list."""
        state = self._issuers.get((namespace, issuer))
        serial = parse_serial(serial_hex)
        if state is None or serial is None:
            return False
        return any(r.serial == serial for r in state.stored.revoked)

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
        """Put a serial on the issuer's list and publish a new CRL. Idempotent. True once the serial is
        durably on the list (in the ConfigMap), False when it could not be written yet (retry)."""
        del not_after
        key = (namespace, issuer)
        serial = parse_serial(serial_hex)
        if serial is None:
            logger.warning("Not revoking %r of issuer %s/%s: not a hex serial.", serial_hex, *key)
            return True
        entry = Revoked(serial, whole_seconds(self.clock()), normalize_reason(reason), certificate)
        state = self._issuers.setdefault(key, _Issuer())
        try:
            async with state.lock:
                await self._load(key, state)
                for _ in range(WRITE_ATTEMPTS):
                    if (
                        any(r.serial == serial for r in state.stored.revoked)
                        and state.stored.resource_version
                    ):
                        return True
                    candidate = replace(state.stored, revoked=merge_revoked(state.stored.revoked, [entry]))
                    if await self._write(key, state, await self._signed(key, state, candidate)):
                        logger.info(
                            "Revoked serial %s of MTLSCertificate %s/%s (issuer %s, reason %s)",
                            entry.serial_hex,
                            namespace,
                            certificate,
                            issuer,
                            entry.reason,
                        )
                        return True
        except (ApiError, OSError, TimeoutError) as exc:
            logger.error("Cannot revoke serial %s of issuer %s/%s: %s", entry.serial_hex, *key, exc)
        return False

    async def sync_issuer(
        self, namespace: str, issuer: str, spec: RevocationSpec | None, ca: CAKeyPair | None
    ) -> None:
        """Called at every issuer reconcile: load the issuer's list and (re)publish its CRL when needed."""
        key = (namespace, issuer)
        state = self._issuers.setdefault(key, _Issuer())
        state.spec = spec
        state.ca = ca
        try:
            async with state.lock:
                await self._load(key, state, reread=True)
                if ca is not None:
                    await self._publish_if_due(key, state)
        except (ApiError, OSError, TimeoutError) as exc:
            logger.warning("Cannot sync the revocations of issuer %s/%s: %s", *key, exc)

    def forget_issuer(self, namespace: str, issuer: str) -> None:
        """The issuer is gone."""
        self._issuers.pop((namespace, issuer), None)

    def leaf_urls(self, namespace: str, issuer: str) -> tuple[str | None, str | None]:
        """(CRL distribution point, OCSP URL) to embed in leaves the issuer signs, if configured."""
        state = self._issuers.get((namespace, issuer))
        if state is None or state.spec is None:
            return None, None
        return state.spec.crl_url, state.spec.ocsp_url

    # ------------------------------------------------------------------ store

    def _path(self, namespace: str, issuer: str | None = None) -> str:
        path = f"/api/v1/namespaces/{namespace}/configmaps"
        return f"{path}/{config_map_name(issuer)}" if issuer else path

    async def _load(self, key: Key, state: _Issuer, *, reread: bool = False) -> None:
        """Read the ConfigMap when this process has not yet, or (``reread``) when it changed since."""
        if state.loaded and not reread:
            return
        body = await self.api.get_or_none(self._path(*key))
        if body is None:
            # Deleted (or never written): keep what this process knows, so deleting the ConfigMap does not
            # un-revoke anything; the next publish writes it again. Edit revoked.json to remove an entry.
            kept = state.stored
            state.stored, state.loaded = Stored(revoked=kept.revoked, crl_number=kept.crl_number), True
            return
        if (
            state.loaded
            and (body.get("metadata") or {}).get("resourceVersion") == state.stored.resource_version
        ):
            return
        stored, problems = stored_from_config_map(body)
        for problem in problems:
            self._problem(key, state, f"ConfigMap {config_map_name(key[1])}: {problem}")
        state.stored, state.loaded = stored, True

    async def _write(self, key: Key, state: _Issuer, stored: Stored) -> bool:
        """Create or replace the ConfigMap guarded by the resourceVersion ``stored`` was computed from.
        On a conflict re-read (the caller decides again) and return False."""
        body = config_map_body(key[0], key[1], stored)
        try:
            if stored.resource_version is None:
                written = await self.api.request("POST", self._path(key[0]), body=body)
            else:
                written = await self.api.request("PUT", self._path(*key), body=body)
        except ApiError as exc:
            if exc.conflict:
                await self._load(key, state, reread=True)
                return False
            raise
        version = (written.get("metadata") or {}).get("resourceVersion")
        state.stored = replace(stored, resource_version=version)
        state.loaded = True
        return True

    async def _signed(self, key: Key, state: _Issuer, stored: Stored) -> Stored:
        """``stored`` with a new CRL over its list when the issuer's CA is known (else as it is)."""
        ca = state.ca
        if ca is None:
            return stored
        now = whole_seconds(self.clock())
        validity = state.spec.crl_validity if state.spec is not None else DEFAULT_CRL_VALIDITY
        number = stored.crl_number + 1
        entries = [r.entry() for r in stored.revoked]
        try:
            der = await asyncio.to_thread(build_crl, ca, entries, now, validity, number)
        except (CAError, RevocationError) as exc:
            self._problem(key, state, f"cannot sign a CRL: {exc}")
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
            if ca is None or not publishes_crl(state.spec is not None, state.stored):
                return
            why = crl_due(state.stored, ca.facts.fingerprint, self.clock())
            if why is None:
                return
            candidate = await self._signed(key, state, state.stored)
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

    def _problem(self, key: Key, state: _Issuer, message: str) -> None:
        """Log a problem once per issuer until it changes (reconciles repeat; logs should not)."""
        if state.last_problem != message:
            state.last_problem = message
            logger.warning("Issuer %s/%s revocation: %s", *key, message)

    # ------------------------------------------------------------------ HTTP

    def _known(self, request: web.Request, name: str) -> _Issuer:
        state = self._issuers.get((request.match_info["namespace"], name))
        if state is None or not state.loaded:
            raise web.HTTPNotFound(text="No such issuer.\n")
        return state

    async def _get_crl(self, request: web.Request) -> web.Response:
        file = request.match_info["file"]
        name, dot, ext = file.rpartition(".")
        if not dot or ext not in ("crl", "pem"):
            raise web.HTTPNotFound(text="Ask for <issuer>.crl (DER) or <issuer>.pem.\n")
        stored = self._known(request, name).stored
        if stored.crl_der is None or stored.crl_pem is None:
            raise web.HTTPNotFound(text="The issuer has no CRL yet.\n")
        if ext == "crl":
            return web.Response(body=stored.crl_der, content_type=CRL_CONTENT_TYPE)
        return web.Response(body=stored.crl_pem, content_type="application/x-pem-file")

    async def _post_ocsp(self, request: web.Request) -> web.Response:
        state = self._known(request, request.match_info["issuer"])
        return await self._answer(state, await request.read())

    async def _get_ocsp(self, request: web.Request) -> web.Response:
        state = self._known(request, request.match_info["issuer"])
        # The raw path, not match_info: base64 may hold "/" and "+", and %2F must not split segments.
        parts = request.rel_url.raw_path.split("/", 4)  # "", "ocsp", namespace, issuer, request
        der = decode_ocsp_get(parts[4] if len(parts) == 5 else "")
        return await self._answer(state, der or b"")

    async def _answer(self, state: _Issuer, request_der: bytes) -> web.Response:
        ca = state.ca
        if ca is None:
            raise web.HTTPServiceUnavailable(text="The issuer's CA is not ready.\n")
        revoked = state.stored.lookup()
        response = await asyncio.to_thread(ocsp.respond, request_der, ca, revoked.get, self.clock())
        return web.Response(body=response, content_type=OCSP_RESPONSE_CONTENT_TYPE)
