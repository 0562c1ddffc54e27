"""controllers.revocation without a cluster: the stored list, the decision to sign a CRL, the ConfigMap
round trip, the resourceVersion guard against a fake API server, and the HTTP responder on a real socket."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import socket
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from hypothesis import given, settings
from hypothesis import strategies as hst
from tests.unit.pki_factory import ECDSA_P256, MLDSA_44, NOW, build_cert, key, self_signed_ca

from mtls_operator.api.trust_lifecycle import parse_revocation
from mtls_operator.controllers.revocation import Revocations
from mtls_operator.controllers.revocation_http import decode_ocsp_get
from mtls_operator.k8s.api import ApiClient, ApiError
from mtls_operator.policy import revocations as rev
from mtls_operator.policy.revocations import Revoked, Stored

T0 = NOW.replace(microsecond=0)
DAY = timedelta(hours=24)
NS, ISSUER = "team-a", "mesh-ca"
CM_PATH = f"/api/v1/namespaces/{NS}/configmaps/{ISSUER}-revocations"
WITH_CRL = parse_revocation({})  # spec.revocation, even empty, keeps a CRL


# ---------------------------------------------------------------------------------------------------------
# Pure helpers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("1a2b", 0x1A2B, id="lower-case hex as CertFacts writes it"),
        pytest.param("1A:2B", 0x1A2B, id="openssl's colon-separated upper-case form"),
        pytest.param("0x01a2b", 0x1A2B, id="a 0x prefix and leading zeros"),
        pytest.param("0", None, id="zero is not a certificate serial"),
        pytest.param("xyz", None, id="not hex"),
        pytest.param("", None, id="empty"),
        pytest.param("f" * 65, None, id="longer than any RFC 5280 serial"),
        pytest.param(None, None, id="not a string"),
    ],
)
def test_parse_serial(text: Any, expected: int | None) -> None:
    assert rev.parse_serial(text) == expected


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        pytest.param("keyCompromise", "keyCompromise", id="keeps an RFC 5280 reason"),
        pytest.param("cessationOfOperation", "cessationOfOperation", id="keeps the delete reason"),
        pytest.param("removeFromCRL", "unspecified", id="refuses removeFromCRL (delta CRLs only)"),
        pytest.param("because", "unspecified", id="maps an unknown reason to unspecified"),
    ],
)
def test_normalize_reason(reason: str, expected: str) -> None:
    assert rev.normalize_reason(reason) == expected


def test_revoked_json_round_trips_sorted_with_the_earliest_revocation_per_serial() -> None:
    entries = [
        Revoked(0x30, T0, "keyCompromise", "web"),
        Revoked(0x10, T0 - DAY, "superseded", "db"),
        Revoked(0x30, T0 - DAY, "cessationOfOperation", "web"),
    ]
    text = rev.dump_revoked_json(entries)
    parsed, problems = rev.parse_revoked_json(text)
    assert problems == []
    assert parsed == (
        Revoked(0x10, T0 - DAY, "superseded", "db"),
        Revoked(0x30, T0 - DAY, "cessationOfOperation", "web"),
    )
    assert json.loads(text)[0] == {
        "serial": "10",
        "revokedAt": "2026-02-28T12:00:00Z",
        "reason": "superseded",
        "certificate": "db",
    }
    assert rev.dump_revoked_json([]) == "[]\n"


def test_bad_entries_are_skipped_with_a_sentence_each() -> None:
    text = json.dumps(
        [
            {"serial": "ab", "revokedAt": "2026-03-01T12:00:00Z", "reason": "keyCompromise"},
            {"serial": "not hex", "revokedAt": "2026-03-01T12:00:00Z"},
            {"serial": "cd"},
            "a string",
            {"serial": "ef", "revokedAt": "2026-03-01T12:00:00Z", "reason": "made-up"},
        ]
    )
    parsed, problems = rev.parse_revoked_json(text)
    assert [r.serial_hex for r in parsed] == ["ab", "ef"]
    assert parsed[1].reason == "unspecified"
    assert len(problems) == 3
    assert rev.parse_revoked_json("{")[1] == ["revoked.json is not JSON; starting from an empty list."]


@settings(max_examples=200, deadline=None)
@given(
    hst.one_of(
        hst.text(),
        hst.recursive(
            hst.none() | hst.text() | hst.integers(), lambda c: hst.lists(c) | hst.dictionaries(hst.text(), c)
        ),
    )
)
def test_no_revoked_json_makes_the_reader_raise(value: Any) -> None:
    text = value if isinstance(value, str) else json.dumps(value)
    entries, _ = rev.parse_revoked_json(text)
    assert all(e.serial > 0 for e in entries)


def _published(**overrides: Any) -> Stored:
    revoked = (Revoked(0x10, T0 - DAY),)
    fields: dict[str, Any] = {
        "resource_version": "7",
        "revoked": revoked,
        "crl_number": 3,
        "crl_der": b"\x30\x00",
        "crl_pem": b"pem",
        "signer": "ca-fp",
        "this_update": T0,
        "next_update": T0 + DAY,
        "crl_list_digest": rev.list_digest(revoked),
    }
    fields.update(overrides)
    return Stored(**fields)


@pytest.mark.parametrize(
    ("stored", "now", "expected"),
    [
        pytest.param(
            Stored(), T0, "no CRL has been published yet", id="signs a first CRL, even an empty one"
        ),
        pytest.param(_published(), T0 + timedelta(hours=1), None, id="leaves a fresh CRL alone"),
        pytest.param(
            _published(signer="old-ca-fp"), T0, "the issuer's CA changed", id="re-signs when the CA changed"
        ),
        pytest.param(
            _published(revoked=(Revoked(0x10, T0 - DAY), Revoked(0x11, T0))),
            T0,
            "the revoked list changed",
            id="re-signs when the list changed",
        ),
        pytest.param(
            _published(), T0 + timedelta(hours=15, minutes=59), None, id="waits until a third is left"
        ),
        pytest.param(
            _published(),
            T0 + timedelta(hours=16),
            "within a third",
            id="re-signs with a third of validity left",
        ),
        pytest.param(_published(), T0 + 2 * DAY, "within a third", id="re-signs an expired CRL"),
    ],
)
def test_crl_due(stored: Stored, now: datetime, expected: str | None) -> None:
    why = rev.crl_due(stored, "ca-fp", now)
    if expected is None:
        assert why is None
    else:
        assert why is not None and expected in why


def test_config_map_round_trips() -> None:
    stored = _published()
    body = rev.config_map_body(NS, ISSUER, stored)
    assert body["metadata"]["name"] == f"{ISSUER}-revocations"
    assert body["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "mtls-operator"}
    assert body["metadata"]["annotations"]["mtls.dev/revocations-for"] == ISSUER
    assert body["metadata"]["resourceVersion"] == "7"
    assert body["binaryData"]["ca.crl.der"] == base64.b64encode(b"\x30\x00").decode()
    again, problems = rev.stored_from_config_map(body)
    assert problems == []
    assert again == stored


def test_a_corrupt_config_map_reads_as_needing_a_new_crl() -> None:
    body = rev.config_map_body(NS, ISSUER, _published())
    body["data"]["crlNumber"] = "three"
    body["binaryData"]["ca.crl.der"] = "%%%"
    stored, problems = rev.stored_from_config_map(body)
    assert len(problems) == 2
    assert stored.crl_der is None and stored.crl_number == 0
    assert rev.crl_due(stored, "ca-fp", T0) == "no CRL has been published yet"


def test_der_to_pem_is_what_cryptography_reads() -> None:
    ca = self_signed_ca(ECDSA_P256)
    der = _crl_der(ca)
    assert x509.load_pem_x509_crl(rev.der_to_pem(der)).public_bytes(serialization.Encoding.DER) == der


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        pytest.param(base64.b64encode(b"\x30\x03abc").decode(), b"\x30\x03abc", id="plain base64"),
        pytest.param("MANhYmM", b"\x30\x03abc", id="base64 without padding"),
        pytest.param("MANhYmM%3D", b"\x30\x03abc", id="URL-encoded padding"),
        pytest.param(base64.b64encode(b"\xfb\xff").decode(), b"\xfb\xff", id="with + and /"),
        pytest.param("%2B%2F8%3D", b"\xfb\xff", id="URL-encoded + and /"),
        pytest.param("", None, id="nothing"),
        pytest.param("!!", None, id="not base64"),
    ],
)
def test_decode_ocsp_get(tail: str, expected: bytes | None) -> None:
    assert decode_ocsp_get(tail) == expected


def _crl_der(ca: Any) -> bytes:
    from mtls_operator.pki.crl import build_crl

    return build_crl(ca, [], T0, DAY, 1)


# ---------------------------------------------------------------------------------------------------------
# The store against a fake API server


class FakeApi:
    """Just enough of ApiClient for ConfigMaps: create, replace with a resourceVersion guard, get; events and
    MTLSIssuers are recorded and served from ``objects`` too."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.writes = 0
        self.events: list[dict[str, Any]] = []
        self.before_write: Callable[[], None] | None = None  # a concurrent writer, once
        self.fail_writes: ApiError | None = None  # every write raises this while set

    def put_object(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self.version += 1
        stored = copy.deepcopy(dict(body))
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.objects[path] = stored
        return copy.deepcopy(stored)

    async def get_or_none(self, path: str) -> dict[str, Any] | None:
        found = self.objects.get(path)
        return copy.deepcopy(found) if found is not None else None

    async def request(
        self, method: str, path: str, *, body: Any = None, content_type: str = "", params: Any = None
    ) -> dict[str, Any]:
        if method == "GET":
            found = await self.get_or_none(path)
            if found is None:
                raise ApiError(404, "NotFound", "no such object")
            return found
        if method == "POST" and path.endswith("/events"):
            self.events.append(copy.deepcopy(body))
            return dict(body)
        if self.before_write is not None:
            hook, self.before_write = self.before_write, None
            hook()
        if self.fail_writes is not None:
            raise self.fail_writes
        self.writes += 1
        if method == "POST":
            full = f"{path}/{body['metadata']['name']}"
            if full in self.objects:
                raise ApiError(409, "AlreadyExists", "exists")
            return self.put_object(full, body)
        assert method == "PUT"
        current = self.objects.get(path)
        if current is None:
            raise ApiError(404, "NotFound", "gone")
        if current["metadata"]["resourceVersion"] != body["metadata"].get("resourceVersion"):
            raise ApiError(409, "Conflict", "the object has been modified")
        return self.put_object(path, body)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _store(api: FakeApi, now: datetime = T0, **options: Any) -> tuple[Revocations, Clock]:
    clock = Clock(now)
    store = Revocations(cast(ApiClient, api), clock=clock, **options)
    return store, clock


def _crl(api: FakeApi) -> x509.CertificateRevocationList:
    body = api.objects[CM_PATH]
    return x509.load_der_x509_crl(base64.b64decode(body["binaryData"]["ca.crl.der"]))


def _signed_by(crl: x509.CertificateRevocationList, ca: Any) -> bool:
    return bool(crl.is_signature_valid(cast(Any, ca.certificate.public_key())))


def _crl_number(crl: x509.CertificateRevocationList) -> int:
    return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)


def test_revoke_stores_the_serial_and_signs_a_crl_once() -> None:
    api = FakeApi()
    store, _ = _store(api)
    ca = self_signed_ca(ECDSA_P256)

    async def run() -> None:
        await store.sync_issuer(NS, ISSUER, WITH_CRL, ca)
        assert api.writes == 1, "an empty CRL is published at the first sync"
        await store.sync_issuer(NS, ISSUER, WITH_CRL, ca)
        assert api.writes == 1, "a second sync with nothing new writes nothing"
        await store.revoke(NS, ISSUER, "abc", "keyCompromise", "web")
        await store.revoke(NS, ISSUER, "ABC", "superseded", "web")

    asyncio.run(run())
    assert api.writes == 2, "revoking twice is one write"
    assert store.is_revoked(NS, ISSUER, "abc") and not store.is_revoked(NS, ISSUER, "abd")
    assert not store.is_revoked(NS, "other", "abc")
    crl = _crl(api)
    assert _signed_by(crl, ca)
    assert [
        (r.serial_number, r.extensions.get_extension_for_class(x509.CRLReason).value.reason) for r in crl
    ] == [(0xABC, x509.ReasonFlags.key_compromise)]
    assert _crl_number(crl) == 2
    body = api.objects[CM_PATH]
    assert json.loads(body["data"]["revoked.json"])[0]["certificate"] == "web"
    assert x509.load_pem_x509_crl(body["data"]["ca.crl"].encode()) == crl


def test_a_conflicting_writer_is_merged_not_lost() -> None:
    api = FakeApi()
    store, _ = _store(api)
    ca = self_signed_ca(ECDSA_P256)

    def other_replica() -> None:
        body = copy.deepcopy(api.objects[CM_PATH])
        body["data"]["revoked.json"] = rev.dump_revoked_json([Revoked(0x77, T0, "superseded", "db")])
        api.put_object(CM_PATH, body)

    async def run() -> None:
        await store.sync_issuer(NS, ISSUER, WITH_CRL, ca)
        api.before_write = other_replica
        await store.revoke(NS, ISSUER, "66", "unspecified", "web")
        await store.sync_issuer(NS, ISSUER, WITH_CRL, ca)

    asyncio.run(run())
    assert sorted(r.serial_number for r in _crl(api)) == [0x66, 0x77]
    assert store.is_revoked(NS, ISSUER, "77")


def test_a_new_crl_when_the_ca_changes_or_next_update_nears() -> None:
    api = FakeApi()
    store, clock = _store(api)
    ca, other = self_signed_ca(ECDSA_P256), self_signed_ca(ECDSA_P256, slot=1)

    async def run() -> None:
        await store.sync_issuer(NS, ISSUER, parse_revocation({"crlValidity": "3h"}), ca)
        clock.now = T0 + timedelta(hours=1)
        await store.sync_issuer(NS, ISSUER, parse_revocation({"crlValidity": "3h"}), ca)
        assert _crl_number(_crl(api)) == 1
        clock.now = T0 + timedelta(hours=2)
        await store.sync_issuer(NS, ISSUER, parse_revocation({"crlValidity": "3h"}), ca)
        assert _crl_number(_crl(api)) == 2
        await store.sync_issuer(NS, ISSUER, WITH_CRL, other)

    asyncio.run(run())
    crl = _crl(api)
    assert _crl_number(crl) == 3
    assert _signed_by(crl, other)
    assert crl.next_update_utc is not None and crl.next_update_utc - crl.last_update_utc == DAY


def test_an_issuer_without_revocation_gets_a_crl_only_once_something_is_revoked() -> None:
    api = FakeApi()
    store, _ = _store(api)
    ca = self_signed_ca(ECDSA_P256)

    async def run() -> None:
        await store.sync_issuer(NS, ISSUER, None, ca)
        assert api.writes == 0 and CM_PATH not in api.objects, "no ConfigMap for an issuer that never revokes"
        await store.revoke(NS, ISSUER, "9", "superseded", "web")
        await store.sync_issuer(NS, ISSUER, None, ca)

    asyncio.run(run())
    assert [r.serial_number for r in _crl(api)] == [9]
    assert api.writes == 1


@pytest.mark.parametrize(
    ("configured", "stored", "expected"),
    [
        pytest.param(False, Stored(), False, id="no CRL for an issuer that never used revocation"),
        pytest.param(True, Stored(), True, id="a CRL when spec.revocation is set"),
        pytest.param(False, Stored(revoked=(Revoked(1, T0),)), True, id="a CRL once something was revoked"),
        pytest.param(False, Stored(resource_version="3"), True, id="a CRL once there is a ConfigMap"),
    ],
)
def test_publishes_crl(configured: bool, stored: Stored, expected: bool) -> None:
    assert rev.publishes_crl(configured, stored) is expected


def test_revoking_before_the_ca_is_known_signs_at_the_next_sync() -> None:
    api = FakeApi()
    store, _ = _store(api)
    ca = self_signed_ca(ECDSA_P256)

    async def run() -> None:
        await store.revoke(NS, ISSUER, "5", "unspecified", "web")
        assert "binaryData" not in api.objects[CM_PATH]
        await store.sync_issuer(NS, ISSUER, WITH_CRL, ca)

    asyncio.run(run())
    assert [r.serial_number for r in _crl(api)] == [5]


def test_deleting_the_config_map_does_not_unrevoke() -> None:
    api = FakeApi()
    store, _ = _store(api)
    ca = self_signed_ca(ECDSA_P256)

    async def run() -> None:
        await store.revoke(NS, ISSUER, "5", "unspecified", "web")
        await store.sync_issuer(NS, ISSUER, WITH_CRL, ca)
        del api.objects[CM_PATH]
        await store.sync_issuer(NS, ISSUER, WITH_CRL, ca)

    asyncio.run(run())
    crl = _crl(api)
    assert [r.serial_number for r in crl] == [5]
    assert _crl_number(crl) == 2, "CRL numbers keep increasing"


def test_leaf_urls_come_from_spec_revocation() -> None:
    store, _ = _store(FakeApi())
    spec = parse_revocation(
        {"crlURL": "http://ca.example/crl/a/b.crl", "ocspURL": "http://ca.example/ocsp/a/b"}
    )
    assert store.leaf_urls(NS, ISSUER) == (None, None)
    asyncio.run(store.sync_issuer(NS, ISSUER, spec, None))
    assert store.leaf_urls(NS, ISSUER) == ("http://ca.example/crl/a/b.crl", "http://ca.example/ocsp/a/b")
    asyncio.run(store.sync_issuer(NS, ISSUER, None, None))
    assert store.leaf_urls(NS, ISSUER) == (None, None), "without spec.revocation no URLs"
    store.forget_issuer(NS, ISSUER)
    assert store.leaf_urls(NS, ISSUER) == (None, None)


# ---------------------------------------------------------------------------------------------------------
# The HTTP responder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _ocsp_request(leaf: x509.Certificate, issuer: x509.Certificate) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA1())
    return builder.build().public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("spec", [ECDSA_P256, MLDSA_44], ids=["ECDSA CA", "ML-DSA CA"])
def test_responder_serves_crls_and_answers_ocsp(spec: Any) -> None:
    port = _free_port()
    api = FakeApi()
    store, _ = _store(api, datetime.now(UTC))
    ca = self_signed_ca(spec)
    revoked = build_cert(
        key(ECDSA_P256, 3), common_name="revoked", issuer=(ca.certificate, ca.private_key), is_ca=False
    )
    good = build_cert(
        key(ECDSA_P256, 4), common_name="good", issuer=(ca.certificate, ca.private_key), is_ca=False
    )
    base = f"http://127.0.0.1:{port}"

    async def run() -> dict[str, Any]:
        await store.start(("127.0.0.1", port))
        try:
            assert store.port == port
            await store.sync_issuer(NS, ISSUER, WITH_CRL, ca)
            await store.revoke(NS, ISSUER, format(revoked.serial_number, "x"), "keyCompromise", "r")
            out: dict[str, Any] = {}
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}/crl/{NS}/{ISSUER}.crl") as resp:
                    out["crl"] = (resp.status, resp.content_type, await resp.read())
                async with http.get(f"{base}/crl/{NS}/{ISSUER}.pem") as resp:
                    out["pem"] = (resp.status, await resp.read())
                for name, leaf in (("revoked", revoked), ("good", good)):
                    async with http.post(
                        f"{base}/ocsp/{NS}/{ISSUER}",
                        data=_ocsp_request(leaf, ca.certificate),
                        headers={"Content-Type": "application/ocsp-request"},
                    ) as resp:
                        out[name] = (resp.status, resp.content_type, await resp.read())
                encoded = base64.b64encode(_ocsp_request(revoked, ca.certificate)).decode()
                async with http.get(f"{base}/ocsp/{NS}/{ISSUER}/{encoded}") as resp:
                    out["get"] = (resp.status, await resp.read())
                for path in (f"/crl/{NS}/nobody.crl", f"/crl/other/{ISSUER}.crl", f"/crl/{NS}/{ISSUER}.txt"):
                    async with http.get(base + path) as resp:
                        out[path] = resp.status
                async with http.post(f"{base}/ocsp/{NS}/nobody", data=b"x") as resp:
                    out["unknown ocsp"] = resp.status
                async with http.post(f"{base}/ocsp/{NS}/{ISSUER}", data=b"garbage") as resp:
                    out["garbage"] = await resp.read()
            return out
        finally:
            await store.stop()

    out = asyncio.run(run())
    status, content_type, der = out["crl"]
    assert (status, content_type) == (200, "application/pkix-crl")
    crl = x509.load_der_x509_crl(der)
    assert _signed_by(crl, ca)
    assert crl.get_revoked_certificate_by_serial_number(revoked.serial_number) is not None
    assert out["pem"][0] == 200 and x509.load_pem_x509_crl(out["pem"][1]) == crl

    for name, expected in (("revoked", ocsp.OCSPCertStatus.REVOKED), ("good", ocsp.OCSPCertStatus.GOOD)):
        status, content_type, body = out[name]
        assert (status, content_type) == (200, "application/ocsp-response")
        answer = ocsp.load_der_ocsp_response(body)
        assert answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
        assert answer.certificate_status is expected, name
    assert ocsp.load_der_ocsp_response(out["get"][1]).certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert [
        out[p] for p in (f"/crl/{NS}/nobody.crl", f"/crl/other/{ISSUER}.crl", f"/crl/{NS}/{ISSUER}.txt")
    ] == [
        404,
        404,
        404,
    ]
    assert out["unknown ocsp"] == 404
    malformed = ocsp.load_der_ocsp_response(out["garbage"])
    assert malformed.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_a_taken_port_leaves_the_responder_off_without_crashing(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        store, _ = _store(FakeApi())

        async def run() -> int | None:
            await store.start(("127.0.0.1", taken.getsockname()[1]))
            port = store.port
            await store.stop()
            return port

        assert asyncio.run(run()) is None
    assert "cannot listen" in caplog.text


def test_port_zero_disables_the_responder() -> None:
    store, _ = _store(FakeApi())

    async def run() -> int | None:
        await store.start(("127.0.0.1", 0))
        port = store.port
        await store.stop()
        return port

    assert asyncio.run(run()) is None
