"""The responder's OCSP answers are cached: a flood of requests for the same serials costs no signing.

Signatures are counted with a signer that wraps the real one; time comes from an injected clock."""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp as x509_ocsp
from tests.unit.pki_factory import ECDSA_P256, MLDSA_65, NOW, build_cert, key, self_signed_ca

from mtls_operator.controllers.revocation_http import AnswerCache, Responder, Served
from mtls_operator.observability.server import HttpLimits
from mtls_operator.pki import ocsp
from mtls_operator.pki.ca import CAKeyPair
from mtls_operator.pki.crl import RevokedEntry

T0 = NOW.replace(microsecond=0)
CA = self_signed_ca(ECDSA_P256)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class CountingSigner:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, *args: Any) -> bytes:
        self.count += 1
        return ocsp.sign_answer(*args)


def _leaf(serial_slot: int, ca: CAKeyPair = CA) -> x509.Certificate:
    return build_cert(
        key(ECDSA_P256, 10 + serial_slot % 3),
        common_name=f"leaf-{serial_slot}",
        issuer=(ca.certificate, ca.private_key),
        is_ca=False,
    )


LEAVES = [_leaf(i) for i in range(6)]


def _request(leaf: x509.Certificate, *, nonce: bytes | None = None, algorithm: Any = None) -> bytes:
    builder = x509_ocsp.OCSPRequestBuilder().add_certificate(leaf, CA.certificate, algorithm or hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def _served(revoked: dict[int, RevokedEntry] | None = None, digest: str = "d1") -> Served:
    return Served(b"der", b"pem", CA, revoked or {}, digest)


def _responder(clock: Clock, signer: CountingSigner, **options: Any) -> Responder:
    return Responder(lambda ns, name: None, clock, sign=signer, **options)


def _status(der: bytes) -> x509_ocsp.OCSPCertStatus:
    return x509_ocsp.load_der_ocsp_response(der).certificate_status


def test_a_thousand_requests_for_one_serial_cost_one_signature() -> None:
    signer, clock = CountingSigner(), Clock(T0)
    responder = _responder(clock, signer)
    request = _request(LEAVES[0])

    async def run() -> set[bytes]:
        return {await responder.answer(_served(), request) for _ in range(1000)}

    answers = asyncio.run(run())
    assert signer.count == 1 and len(answers) == 1
    assert _status(answers.pop()) is x509_ocsp.OCSPCertStatus.GOOD


def test_concurrent_requests_wait_for_the_one_signature_in_flight() -> None:
    signer, clock = CountingSigner(), Clock(T0)
    responder = _responder(clock, signer)
    request = _request(LEAVES[0])

    async def run() -> list[bytes]:
        return await asyncio.gather(*(responder.answer(_served(), request) for _ in range(200)))

    answers = asyncio.run(run())
    assert signer.count == 1 and len(set(answers)) == 1


def test_one_signature_per_serial_and_hash_algorithm() -> None:
    signer, clock = CountingSigner(), Clock(T0)
    responder = _responder(clock, signer)

    async def run() -> None:
        for _ in range(10):
            for leaf in LEAVES:
                await responder.answer(_served(), _request(leaf))
            await responder.answer(_served(), _request(LEAVES[0], algorithm=hashes.SHA256()))

    asyncio.run(run())
    assert signer.count == len(LEAVES) + 1


def test_an_answer_is_served_until_a_third_of_its_validity_is_left() -> None:
    signer, clock = CountingSigner(), Clock(T0)
    responder = _responder(clock, signer, validity=timedelta(hours=1))
    request = _request(LEAVES[0])

    async def run() -> list[datetime]:
        this_updates = []
        for minutes in (0, 39, 40, 79, 80):
            clock.now = T0 + timedelta(minutes=minutes, seconds=59 if minutes in (39, 79) else 0)
            answer = x509_ocsp.load_der_ocsp_response(await responder.answer(_served(), request))
            this_updates.append(answer.this_update_utc)
        return this_updates

    this_updates = asyncio.run(run())
    assert signer.count == 3
    assert this_updates == [
        T0,
        T0,
        T0 + timedelta(minutes=40),
        T0 + timedelta(minutes=40),
        T0 + timedelta(minutes=80),
    ]


def test_a_revocation_changes_the_digest_and_the_next_answer_says_revoked() -> None:
    signer, clock = CountingSigner(), Clock(T0)
    responder = _responder(clock, signer)
    leaf = LEAVES[1]
    request = _request(leaf)

    async def run() -> tuple[bytes, bytes, bytes]:
        before = await responder.answer(_served(digest="before"), request)
        revoked = {leaf.serial_number: RevokedEntry(leaf.serial_number, T0, "keyCompromise")}
        after = await responder.answer(_served(revoked, digest="after"), request)
        again = await responder.answer(_served(revoked, digest="after"), request)
        return before, after, again

    before, after, again = asyncio.run(run())
    assert _status(before) is x509_ocsp.OCSPCertStatus.GOOD
    assert _status(after) is x509_ocsp.OCSPCertStatus.REVOKED and again == after
    assert signer.count == 2


def test_nonces_are_not_echoed_so_they_cannot_force_a_signature_each() -> None:
    signer, clock = CountingSigner(), Clock(T0)
    responder = _responder(clock, signer)

    async def run() -> list[bytes]:
        return [
            await responder.answer(_served(), _request(LEAVES[0], nonce=bytes([i]) * 16)) for i in range(50)
        ]

    answers = asyncio.run(run())
    assert signer.count == 1 and len(set(answers)) == 1
    with pytest.raises(x509.ExtensionNotFound):
        x509_ocsp.load_der_ocsp_response(answers[0]).extensions.get_extension_for_class(x509.OCSPNonce)


def test_malformed_and_foreign_requests_cost_no_signature() -> None:
    signer, clock = CountingSigner(), Clock(T0)
    responder = _responder(clock, signer)
    other = self_signed_ca(ECDSA_P256, slot=1)
    foreign = (
        x509_ocsp.OCSPRequestBuilder()
        .add_certificate(_leaf(0, other), other.certificate, hashes.SHA1())
        .build()
        .public_bytes(serialization.Encoding.DER)
    )

    async def run() -> list[x509_ocsp.OCSPResponseStatus]:
        out = []
        for der in (b"garbage", foreign) * 20:
            out.append(
                x509_ocsp.load_der_ocsp_response(await responder.answer(_served(), der)).response_status
            )
        return out

    statuses = asyncio.run(run())
    assert set(statuses) == {
        x509_ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
        x509_ocsp.OCSPResponseStatus.UNAUTHORIZED,
    }
    assert signer.count == 0


def test_the_cache_is_bounded_least_recently_used_first_out() -> None:
    cache = AnswerCache(size=2)
    later = T0 + timedelta(hours=1)
    cache.put(("ca", "sha1", 1, "d"), b"one", later)
    cache.put(("ca", "sha1", 2, "d"), b"two", later)
    assert cache.get(("ca", "sha1", 1, "d"), T0) == b"one"  # 1 is now the most recently used
    cache.put(("ca", "sha1", 3, "d"), b"three", later)
    assert len(cache) == 2
    assert cache.get(("ca", "sha1", 2, "d"), T0) is None
    assert cache.get(("ca", "sha1", 1, "d"), T0) == b"one"
    assert cache.get(("ca", "sha1", 3, "d"), later) is None, "stale at fresh_until, and dropped"
    assert len(cache) == 1


def test_signatures_at_once_are_bounded() -> None:
    clock = Clock(T0)
    running = peak = 0

    def slow_signer(*args: Any) -> bytes:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        time.sleep(0.02)
        running -= 1
        return ocsp.sign_answer(*args)

    responder = Responder(lambda ns, name: None, clock, sign=slow_signer, signers=2)

    async def run() -> None:
        await asyncio.gather(*(responder.answer(_served(), _request(leaf)) for leaf in LEAVES))

    asyncio.run(run())
    assert peak <= 2


# ---------------------------------------------------------------------------------------------------------
# Measured over HTTP: N requests for the same serials, with the real signer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("ca_spec", [ECDSA_P256, MLDSA_65], ids=["ECDSA P-256 CA", "ML-DSA-65 CA"])
def test_a_flood_of_ocsp_requests_over_http_is_answered_from_the_cache(ca_spec: Any) -> None:
    ca = self_signed_ca(ca_spec)
    leaves = [
        build_cert(
            key(ECDSA_P256, 20 + i), common_name=f"f{i}", issuer=(ca.certificate, ca.private_key), is_ca=False
        )
        for i in range(4)
    ]
    requests = [
        x509_ocsp.OCSPRequestBuilder()
        .add_certificate(leaf, ca.certificate, hashes.SHA1())
        .add_extension(x509.OCSPNonce(b"n" * 16), critical=False)  # as openssl sends by default
        .build()
        .public_bytes(serialization.Encoding.DER)
        for leaf in leaves
    ]
    served = Served(b"der", b"pem", ca, {}, "d")
    signer = CountingSigner()
    responder = Responder(
        lambda ns, name: served if (ns, name) == ("team-a", "mesh-ca") else None,
        Clock(T0),
        sign=signer,
        limits=HttpLimits(max_connections=64),
    )
    port = _free_port()
    n = 2000

    async def flood(session: aiohttp.ClientSession, count: int) -> int:
        ok = 0
        for i in range(count):
            async with session.post(
                f"http://127.0.0.1:{port}/ocsp/team-a/mesh-ca",
                data=requests[i % len(requests)],
                headers={"Content-Type": "application/ocsp-request"},
            ) as resp:
                body = await resp.read()
                ok += resp.status == 200 and _status(body) is x509_ocsp.OCSPCertStatus.GOOD
        return ok

    async def run() -> tuple[int, float, float]:
        await responder.start("127.0.0.1", port)
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8)) as session:
                started = time.perf_counter()
                ok = sum(await asyncio.gather(*(flood(session, n // 8) for _ in range(8))))
                cached = time.perf_counter() - started
                # The same number of requests if every one were signed (a fresh digest each time).
                started = time.perf_counter()
                for i in range(200):
                    await responder.answer(Served(b"", b"", ca, {}, f"u{i}"), requests[0])
                uncached = (time.perf_counter() - started) / 200 * n
            return ok, cached, uncached
        finally:
            await responder.stop()

    ok, cached, uncached = asyncio.run(run())
    print(
        f"\n{ca_spec.label}: {n} OCSP POSTs over HTTP for {len(leaves)} serials: "
        f"{signer.count - 200} signature(s) for the flood, {cached:.2f} s ({n / cached:.0f}/s); "
        f"answering each with a fresh signature takes about {uncached:.2f} s without HTTP"
    )
    assert ok == n
    assert signer.count - 200 == len(leaves), "one signature per serial, however many ask"
