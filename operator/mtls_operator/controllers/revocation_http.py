"""The CRL and OCSP responder: HTTP in front of whatever holds the revocation lists.

Both the leader's store (controllers.revocation.Revocations) and a standby's read-only copy
(controllers.revocation_mirror.RevocationMirror) answer through one :class:`Responder`; each hands it a
``lookup(namespace, issuer) -> Served | None`` and nothing else, so the two cannot answer differently::

    GET  /crl/<namespace>/<issuer>.crl            DER CRL (application/pkix-crl)
    GET  /crl/<namespace>/<issuer>.pem            PEM CRL
    POST /ocsp/<namespace>/<issuer>               OCSP request body (application/ocsp-request)
    GET  /ocsp/<namespace>/<issuer>/<base64 req>  RFC 6960 A.1

OCSP answers are cached (:class:`AnswerCache`): per issuer CA, CertID hash algorithm, serial and digest of
the revoked list, until a third of their validity is left. A revocation changes the digest, so the next
answer for any serial of that issuer is signed afresh; a flood of requests for the same serials costs one
signature per serial per 40 minutes, and requests arriving while that signature is made wait for it
rather than sign again. Cached answers do not echo the request's nonce (RFC 5019 2.1 allows a responder
to ignore it; RFC 8954 calls this out for pre-produced responses): a nonce would make every answer
unique and every request a signature. Signing runs in threads, at most ``signers`` at once.

The server itself is hardened by observability.server.serve (timeouts, connection cap, size limits).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Final
from urllib.parse import unquote

from aiohttp import web

from mtls_operator.observability.server import HttpLimits, Listening, serve
from mtls_operator.pki import ocsp
from mtls_operator.pki.ca import CAKeyPair
from mtls_operator.pki.crl import RevokedEntry

logger = logging.getLogger("mtls_operator.revocation")

PORT_ENV: Final = "MTLS_REVOCATION_PORT"
BIND_ENV: Final = "MTLS_REVOCATION_BIND"
DEFAULT_PORT: Final = 9403
# Loopback unless told otherwise (the Helm chart sets 0.0.0.0: relying parties are outside the pod).
DEFAULT_BIND: Final = "127.0.0.1"
MAX_OCSP_REQUEST: Final = 64 * 1024
CACHE_SIZE: Final = 4096  # answers; an ML-DSA-87 answer is about 5 KiB, so at most about 20 MiB
SIGNERS: Final = 2  # OCSP signatures made at once (threads), whatever the request rate
# A responder on an open port: small requests, answered at once. More connections than the metrics port.
LIMITS: Final = HttpLimits(max_connections=128, max_body=MAX_OCSP_REQUEST)

CRL_CONTENT_TYPE: Final = "application/pkix-crl"
OCSP_RESPONSE_CONTENT_TYPE: Final = "application/ocsp-response"


@dataclass(frozen=True, slots=True)
class Served:
    """One issuer as the responder serves it: one consistent snapshot, replaced whole when it changes."""

    crl_der: bytes | None = None
    crl_pem: bytes | None = None
    ca: CAKeyPair | None = None  # signs OCSP answers; None: OCSP is 503 until the CA is known
    revoked: Mapping[int, RevokedEntry] = field(default_factory=dict)
    digest: str = ""  # of the revoked list: part of every cached OCSP answer's key
    unavailable: str | None = None  # why nothing can be served for this issuer (a sentence), if so


Lookup = Callable[[str, str], Served | None]
CacheKey = tuple[str, str, int, str]  # CA fingerprint, CertID hash algorithm, serial, list digest


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


@dataclass(frozen=True, slots=True)
class _Cached:
    der: bytes
    fresh_until: datetime


class AnswerCache:
    """Signed OCSP answers, least recently used first out, each served until ``fresh_until``."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._answers: OrderedDict[CacheKey, _Cached] = OrderedDict()

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, key: CacheKey, now: datetime) -> bytes | None:
        cached = self._answers.get(key)
        if cached is None:
            return None
        if now >= cached.fresh_until:
            del self._answers[key]
            return None
        self._answers.move_to_end(key)
        return cached.der

    def put(self, key: CacheKey, der: bytes, fresh_until: datetime) -> None:
        self._answers[key] = _Cached(der, fresh_until)
        self._answers.move_to_end(key)
        while len(self._answers) > self.size:
            self._answers.popitem(last=False)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Responder:
    """Serves CRLs and answers OCSP for the issuers ``lookup`` knows (404 for the others)."""

    def __init__(
        self,
        lookup: Lookup,
        clock: Callable[[], datetime] = _utcnow,
        *,
        name: str = "revocation",
        limits: HttpLimits = LIMITS,
        validity: timedelta = ocsp.DEFAULT_VALIDITY,
        cache_size: int = CACHE_SIZE,
        signers: int = SIGNERS,
        sign: Callable[[ocsp.Question, CAKeyPair, ocsp.CertStatus, datetime, timedelta], bytes] = (
            ocsp.sign_answer
        ),
    ) -> None:
        self.lookup = lookup
        self.clock = clock
        self.name = name
        self.limits = limits
        self.validity = validity
        self.cache = AnswerCache(cache_size)
        self.signatures = 0  # OCSP answers signed (cache misses that were signed)
        self.listening: Listening | None = None
        self._sign = sign
        self._signers = asyncio.Semaphore(signers)
        self._inflight: dict[CacheKey, asyncio.Task[bytes]] = {}

    @property
    def port(self) -> int | None:
        return self.listening.port if self.listening is not None else None

    async def start(self, host: str, port: int) -> bool:
        """Listen; False (logged) when the address cannot be had: CRLs stay in the ConfigMaps."""
        if self.listening is not None:
            return True
        try:
            self.listening = await serve(self.name, self._routes, host, port, self.limits)
        except (OSError, OverflowError, ValueError) as exc:  # taken, not ours to bind, or out of range
            logger.error(
                "The revocation responder cannot listen on %s:%d (%s); CRLs stay in ConfigMaps, OCSP is off.",
                host,
                port,
                getattr(exc, "strerror", None) or exc,
            )
            return False
        logger.info("Revocation responder (CRL and OCSP) listening on %s:%d", host, self.listening.port)
        return True

    async def stop(self) -> None:
        if self.listening is not None:
            await self.listening.stop()
            self.listening = None
        for task in list(self._inflight.values()):
            task.cancel()

    def _routes(self, app: web.Application) -> None:
        app.router.add_get("/crl/{namespace}/{file}", self._get_crl)
        app.router.add_post("/ocsp/{namespace}/{issuer}", self._post_ocsp)
        app.router.add_get("/ocsp/{namespace}/{issuer}/{request:.+}", self._get_ocsp)

    # ------------------------------------------------------------------ handlers

    def _served(self, request: web.Request, name: str) -> Served:
        served = self.lookup(request.match_info["namespace"], name)
        if served is None:
            raise web.HTTPNotFound(text="No such issuer.\n")
        return served

    async def _get_crl(self, request: web.Request) -> web.Response:
        file = request.match_info["file"]
        name, dot, ext = file.rpartition(".")
        if not dot or ext not in ("crl", "pem"):
            raise web.HTTPNotFound(text="Ask for <issuer>.crl (DER) or <issuer>.pem.\n")
        served = self._served(request, name)
        if served.unavailable is not None:
            raise web.HTTPServiceUnavailable(text=served.unavailable + "\n")
        if served.crl_der is None or served.crl_pem is None:
            raise web.HTTPNotFound(text="The issuer has no CRL yet.\n")
        if ext == "crl":
            return web.Response(body=served.crl_der, content_type=CRL_CONTENT_TYPE)
        return web.Response(body=served.crl_pem, content_type="application/x-pem-file")

    async def _post_ocsp(self, request: web.Request) -> web.Response:
        served = self._served(request, request.match_info["issuer"])
        return await self._answer(served, await request.read())

    async def _get_ocsp(self, request: web.Request) -> web.Response:
        served = self._served(request, request.match_info["issuer"])
        # The raw path, not match_info: base64 may hold "/" and "+", and %2F must not split segments.
        parts = request.rel_url.raw_path.split("/", 4)  # "", "ocsp", namespace, issuer, request
        der = decode_ocsp_get(parts[4] if len(parts) == 5 else "")
        return await self._answer(served, der or b"")

    async def _answer(self, served: Served, request_der: bytes) -> web.Response:
        if served.unavailable is not None:
            return web.Response(body=ocsp.try_later(), content_type=OCSP_RESPONSE_CONTENT_TYPE)
        if served.ca is None:
            raise web.HTTPServiceUnavailable(text="The issuer's CA is not ready.\n")
        body = await self.answer(served, request_der)
        return web.Response(body=body, content_type=OCSP_RESPONSE_CONTENT_TYPE)

    # ------------------------------------------------------------------ OCSP

    async def answer(self, served: Served, request_der: bytes) -> bytes:
        """The DER OCSP response to ``request_der`` for an issuer whose CA is known: from the cache when a
        fresh one is there, else signed (once, however many ask at the same time)."""
        ca = served.ca
        assert ca is not None
        question = ocsp.read_request(request_der, ca)
        if isinstance(question, bytes):
            return question  # malformed or not this CA's: unsigned, costs nothing
        key = (ca.facts.fingerprint, question.hash_algorithm, question.serial, served.digest)
        cached = self.cache.get(key, self.clock())
        if cached is not None:
            return cached
        task = self._inflight.get(key)
        if task is None:
            status = served.revoked.get(question.serial)
            task = asyncio.create_task(self._signed(key, replace(question, nonce=None), ca, status))
            self._inflight[key] = task
            task.add_done_callback(lambda _: self._inflight.pop(key, None))
        return await asyncio.shield(task)  # a client that leaves does not waste the signature

    async def _signed(
        self, key: CacheKey, question: ocsp.Question, ca: CAKeyPair, status: RevokedEntry | None
    ) -> bytes:
        async with self._signers:
            now = self.clock()
            der = await asyncio.to_thread(self._sign, question, ca, status, now, self.validity)
            self.signatures += 1
        # Fresh until a third of its validity is left (like CRLs): relying parties that cache it until
        # nextUpdate get a fresh one well before theirs runs out.
        self.cache.put(key, der, now + self.validity * 2 / 3)
        return der
