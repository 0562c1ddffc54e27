"""controllers.revocation_mirror without a cluster: a standby serves the lists the leader stored, answers
OCSP with the CA that signed the stored CRL (only from a Secret named for the issuer), writes nothing, and
its API cost does not depend on the requests it answers."""

from __future__ import annotations

import asyncio
import base64
import copy
from datetime import timedelta
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp as x509_ocsp
from tests.unit.pki_factory import ECDSA_P256, NOW, build_cert, key
from tests.unit.test_revocation_store import CM_PATH, ISSUER, NS, T0, FakeApi, _store

from mtls_operator.api.models import SelfSignedCASpec
from mtls_operator.api.trust_lifecycle import parse_revocation
from mtls_operator.controllers.revocation_mirror import RevocationMirror
from mtls_operator.k8s.api import ApiClient
from mtls_operator.pki import ca as pki_ca

ISSUERS = "/apis/mtls.dev/v1alpha1/mtlsissuers"


def _ca_secret(name: str, issuer: str | None, slot: int = 0) -> tuple[dict[str, Any], pki_ca.CAKeyPair]:
    key_pem, cert_pem = pki_ca.create_self_signed_ca(
        SelfSignedCASpec(
            secret_name=name, common_name=f"root {slot}", duration=timedelta(days=30), private_key=ECDSA_P256
        ),
        NOW,
    )
    ca = pki_ca.load_ca({"tls.crt": cert_pem, "tls.key": key_pem}, NOW)
    body = {
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {"app.kubernetes.io/managed-by": "mtls-operator"},
            "annotations": {"mtls.dev/ca-for-issuer": issuer} if issuer else {},
        },
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": base64.b64encode(cert_pem).decode(),
            "tls.key": base64.b64encode(key_pem).decode(),
        },
    }
    return body, ca


def _issuer(namespace: str, name: str, revocation: bool = True) -> dict[str, Any]:
    spec: dict[str, Any] = {"selfSigned": {"secretName": f"{name}-ca", "commonName": f"{name} root"}}
    if revocation:
        spec["revocation"] = {}
    return {"metadata": {"namespace": namespace, "name": name}, "spec": spec}


class CountingApi(FakeApi):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    async def get_or_none(self, path: str) -> dict[str, Any] | None:
        self.reads.append(path)
        return await super().get_or_none(path)


def _request(leaf: x509.Certificate, ca: pki_ca.CAKeyPair) -> bytes:
    builder = x509_ocsp.OCSPRequestBuilder().add_certificate(leaf, ca.certificate, hashes.SHA1())
    return builder.build().public_bytes(serialization.Encoding.DER)


def _leaf(ca: pki_ca.CAKeyPair, slot: int) -> x509.Certificate:
    return build_cert(
        key(ECDSA_P256, 30 + slot), common_name="l", issuer=(ca.certificate, ca.private_key), is_ca=False
    )


def _published(api: FakeApi, ca: pki_ca.CAKeyPair, revoked: x509.Certificate) -> None:
    """What the leader leaves in the API server: a list with ``revoked`` on it and a CRL."""
    store, _ = _store(api)

    async def run() -> None:
        await store.sync_issuer(NS, ISSUER, parse_revocation({}), ca)
        assert await store.revoke(NS, ISSUER, format(revoked.serial_number, "x"), "keyCompromise", "web")

    asyncio.run(run())


def test_a_standby_serves_the_stored_crl_and_answers_ocsp_with_the_issuers_ca() -> None:
    api = CountingApi()
    secret, ca = _ca_secret(f"{ISSUER}-ca", ISSUER)
    api.objects[f"/api/v1/namespaces/{NS}/secrets/{ISSUER}-ca"] = secret
    api.objects[ISSUERS] = {"items": [_issuer(NS, ISSUER), _issuer(NS, "quiet", revocation=False)]}
    bad, good = _leaf(ca, 1), _leaf(ca, 2)
    _published(api, ca, bad)
    writes = api.writes
    mirror = RevocationMirror(cast(ApiClient, api), lambda: T0)

    async def run() -> tuple[Any, bytes, bytes]:
        await mirror.refresh()
        served = mirror.lookup(NS, ISSUER)
        assert served is not None and served.ca is not None
        return (
            served,
            await mirror.responder.answer(served, _request(bad, ca)),
            await mirror.responder.answer(served, _request(good, ca)),
        )

    served, revoked, fine = asyncio.run(run())
    stored = api.objects[CM_PATH]
    assert served.crl_der == base64.b64decode(stored["binaryData"]["ca.crl.der"])
    assert served.crl_pem == stored["data"]["ca.crl"].encode()
    assert served.ca.facts.fingerprint == ca.facts.fingerprint
    assert x509_ocsp.load_der_ocsp_response(revoked).certificate_status is x509_ocsp.OCSPCertStatus.REVOKED
    assert x509_ocsp.load_der_ocsp_response(fine).certificate_status is x509_ocsp.OCSPCertStatus.GOOD
    assert mirror.lookup(NS, "quiet") is None, "issuers without spec.revocation are not copied"
    assert mirror.lookup(NS, "nobody") is None
    assert api.writes == writes, "a standby writes nothing"


def test_the_api_cost_is_per_issuer_per_refresh_not_per_request() -> None:
    api = CountingApi()
    secret, ca = _ca_secret(f"{ISSUER}-ca", ISSUER)
    api.objects[f"/api/v1/namespaces/{NS}/secrets/{ISSUER}-ca"] = secret
    api.objects[ISSUERS] = {"items": [_issuer(NS, ISSUER)]}
    _published(api, ca, _leaf(ca, 1))
    mirror = RevocationMirror(cast(ApiClient, api), lambda: T0)

    async def run() -> tuple[list[str], list[str]]:
        api.reads.clear()
        await mirror.refresh()
        first = list(api.reads)
        api.reads.clear()
        served = mirror.lookup(NS, ISSUER)
        assert served is not None
        request = _request(_leaf(ca, 2), ca)
        for _ in range(100):
            await mirror.responder.answer(served, request)
            mirror.lookup(NS, "unknown-name")
        await mirror.refresh()
        return first, list(api.reads)

    first, second = asyncio.run(run())
    assert first == [ISSUERS, CM_PATH, f"/api/v1/namespaces/{NS}/secrets/{ISSUER}-ca"]
    assert second == [ISSUERS, CM_PATH], "the CA is read again only when the CRL signer changes"
    assert mirror.responder.signatures == 1


def test_a_ca_secret_not_named_for_the_issuer_is_never_used() -> None:
    api = CountingApi()
    secret, ca = _ca_secret(f"{ISSUER}-ca", "someone-else")
    api.objects[f"/api/v1/namespaces/{NS}/secrets/{ISSUER}-ca"] = secret
    api.objects[ISSUERS] = {"items": [_issuer(NS, ISSUER)]}
    _published(api, ca, _leaf(ca, 1))
    mirror = RevocationMirror(cast(ApiClient, api), lambda: T0)
    asyncio.run(mirror.refresh())
    served = mirror.lookup(NS, ISSUER)
    assert served is not None and served.crl_der is not None, "the CRL is still served"
    assert served.ca is None, "but no OCSP signing with a key the issuer was not given"


def test_during_a_rotation_the_ca_that_signed_the_crl_is_found_in_the_next_secret() -> None:
    api = CountingApi()
    old_secret, _ = _ca_secret(f"{ISSUER}-ca", ISSUER, slot=0)
    next_secret, new = _ca_secret(f"{ISSUER}-ca-next", ISSUER, slot=1)
    api.objects[f"/api/v1/namespaces/{NS}/secrets/{ISSUER}-ca"] = old_secret
    api.objects[f"/api/v1/namespaces/{NS}/secrets/{ISSUER}-ca-next"] = next_secret
    api.objects[ISSUERS] = {"items": [_issuer(NS, ISSUER)]}
    _published(api, new, _leaf(new, 1))
    mirror = RevocationMirror(cast(ApiClient, api), lambda: T0)
    asyncio.run(mirror.refresh())
    served = mirror.lookup(NS, ISSUER)
    assert served is not None and served.ca is not None
    assert served.ca.facts.fingerprint == new.facts.fingerprint


def test_a_config_map_that_is_not_the_operators_is_served_as_unavailable() -> None:
    api = CountingApi()
    api.objects[ISSUERS] = {"items": [_issuer(NS, ISSUER)]}
    api.objects[CM_PATH] = {"metadata": {"name": f"{ISSUER}-revocations", "resourceVersion": "1"}, "data": {}}
    mirror = RevocationMirror(cast(ApiClient, api), lambda: T0)
    asyncio.run(mirror.refresh())
    served = mirror.lookup(NS, ISSUER)
    assert served is not None and served.unavailable is not None and served.crl_der is None


def test_only_issuers_in_the_operators_scope_are_copied() -> None:
    api = CountingApi()
    api.objects[ISSUERS] = {"items": [_issuer("t-one", "a"), _issuer("kube-system", "b")]}
    for namespace, name in (("t-one", "a"), ("kube-system", "b")):
        body = copy.deepcopy(api.objects.get(CM_PATH) or {})
        body = {
            "metadata": {
                "name": f"{name}-revocations",
                "namespace": namespace,
                "resourceVersion": "1",
                "labels": {"app.kubernetes.io/managed-by": "mtls-operator"},
                "annotations": {"mtls.dev/revocations-for": name},
            },
            "data": {"revoked.json": "[]\n", "crlNumber": "0"},
        }
        api.objects[f"/api/v1/namespaces/{namespace}/configmaps/{name}-revocations"] = body
    globbed = RevocationMirror(cast(ApiClient, api), lambda: T0, namespaces=["t-*"])
    asyncio.run(globbed.refresh())
    assert globbed.lookup("t-one", "a") is not None and globbed.lookup("kube-system", "b") is None

    api.objects["/apis/mtls.dev/v1alpha1/namespaces/t-one/mtlsissuers"] = {"items": [_issuer("t-one", "a")]}
    exact = RevocationMirror(cast(ApiClient, api), lambda: T0, namespaces=["t-one"], cluster_wide=False)
    api.reads.clear()
    asyncio.run(exact.refresh())
    assert exact.lookup("t-one", "a") is not None
    assert ISSUERS not in api.reads, "a namespaced install lists per namespace (its RBAC allows no more)"


def test_a_cluster_issuers_list_is_served_where_the_leader_serves_it() -> None:
    """An MTLSClusterIssuer's list lives in the cluster resource namespace under ``cluster.<name>``; its CA
    Secret there names the issuer by its plain name. Without a cluster namespace nothing of it is copied."""
    home, name = "mtls-system", "mesh"
    api = CountingApi()
    secret, ca = _ca_secret(f"{name}-ca", name)
    secret["metadata"]["namespace"] = home
    api.objects[f"/api/v1/namespaces/{home}/secrets/{name}-ca"] = secret
    api.objects[ISSUERS] = {"items": []}
    api.objects["/apis/mtls.dev/v1alpha1/mtlsclusterissuers"] = {"items": [_issuer("", name)]}
    bad = _leaf(ca, 1)
    store, _ = _store(api)

    async def publish() -> None:
        await store.sync_issuer(home, f"cluster.{name}", parse_revocation({}), ca)
        assert await store.revoke(
            home, f"cluster.{name}", format(bad.serial_number, "x"), "keyCompromise", "w"
        )

    asyncio.run(publish())
    mirror = RevocationMirror(cast(ApiClient, api), lambda: T0, cluster_namespace=home)

    async def run() -> tuple[Any, bytes]:
        await mirror.refresh()
        served = mirror.lookup(home, f"cluster.{name}")
        assert served is not None and served.ca is not None and served.crl_der is not None
        return served, await mirror.responder.answer(served, _request(bad, ca))

    served, answer = asyncio.run(run())
    assert served.ca.facts.fingerprint == ca.facts.fingerprint
    assert x509_ocsp.load_der_ocsp_response(answer).certificate_status is x509_ocsp.OCSPCertStatus.REVOKED
    assert mirror.lookup(home, name) is None, "never under the plain name a namespaced issuer could hold"

    namespaced_only = RevocationMirror(cast(ApiClient, api), lambda: T0)
    asyncio.run(namespaced_only.refresh())
    assert namespaced_only.lookup(home, f"cluster.{name}") is None
