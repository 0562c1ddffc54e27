"""Trust bundles of a dual issuer carry both roots (issue 15).

A dual issuer (ML-DSA-65 root, additional ECDSA P-256 root) publishes both roots wherever it publishes
trust: the ``spec.trustBundle`` ConfigMap, the ClusterTrustBundle of a dual MTLSClusterIssuer, and every
leaf's ca.crt. What is checked comes from the cluster (the ConfigMap, the ClusterTrustBundle, the Secrets)
and from real peers trusting only the published bundle: Debian's OpenSSL 3.0 (``openssl verify`` and
``s_client``, which cannot use the ML-DSA root but finds the ECDSA one in the same file) and a
post-quantum client (OpenSSL 4 through pyOpenSSL) against a server holding both pairs.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from kubernetes import client
from kubernetes.client.rest import ApiException
from test_cluster_issuer import (
    CLUSTER_RESOURCES,
    GROUP,
    PLURAL,
    VERSION,
    create_cluster_issuer,
    wait_cluster_issuer_ready,
)
from test_interop import SERVER_NAME, require, which
from test_interop_dual import ECDSA, MLDSA_65, Dual, s_client

from helpers import wait_for
from mtls_objects import create_certificate, create_issuer, secret_data, wait_issuer_ready, wait_ready
from mtls_operator.cli.tlsio import EchoServer, client_handshake

pytestmark = pytest.mark.slow


def roots_of(pem: bytes | str) -> dict[str, str]:
    """The certificates of a PEM bundle: fingerprint -> key algorithm (as the operator names it)."""
    from mtls_operator.cli.tls_results import key_label

    raw = pem.encode() if isinstance(pem, str) else pem
    return {
        c.fingerprint(hashes.SHA256()).hex(): str(key_label(c)) for c in x509.load_pem_x509_certificates(raw)
    }


def ca_roots(data: dict[str, bytes]) -> dict[str, str]:
    """The two roots a dual CA Secret holds: tls.crt's and tls-ecdsa.crt's."""
    return roots_of(data["tls.crt"]) | roots_of(data["tls-ecdsa.crt"])


def dual_self_signed(name: str) -> dict[str, Any]:
    return {
        "secretName": f"{name}-ca",
        "commonName": f"{name} root",
        "privateKey": MLDSA_65,
        "additionalPrivateKeys": [ECDSA],
    }


def write_secret(folder: Path, data: dict[str, bytes]) -> Dual:
    folder.mkdir()
    for key, value in data.items():
        (folder / key).write_bytes(value)
        if key.endswith(".key"):
            (folder / key).chmod(0o600)
    return Dual(folder)


def test_a_dual_issuers_trust_bundle_carries_both_roots_and_each_peer_verifies_with_it(
    operator: Any, cluster: Any, namespace: str, tmp_path: Path
) -> None:
    openssl = require(which("openssl"), "Debian's openssl")
    create_issuer(
        cluster,
        namespace,
        "mig",
        {"selfSigned": dual_self_signed("mig"), "trustBundle": {"configMapName": "mig-roots"}},
    )
    wait_issuer_ready(cluster, namespace, "mig")
    common = {"issuerRef": {"name": "mig"}, "privateKey": MLDSA_65, "additionalPrivateKeys": [ECDSA]}
    server_spec = {"dnsNames": [SERVER_NAME], "ipAddresses": ["127.0.0.1"], "usages": ["server auth"]}
    create_certificate(cluster, namespace, "server", {"secretName": "server-tls", **server_spec, **common})
    create_certificate(
        cluster,
        namespace,
        "alice",
        {"secretName": "alice-tls", "commonName": "alice", "usages": ["client auth"], **common},
    )
    for name in ("server", "alice"):
        wait_ready(cluster, namespace, name, timeout=90)

    want = ca_roots(secret_data(cluster, namespace, "mig-ca"))
    assert sorted(want.values()) == ["ECDSA-P256", "ML-DSA-65"], want

    def bundle() -> str | None:
        try:
            found = cluster.core.read_namespaced_config_map("mig-roots", namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return str((found.data or {}).get("ca.crt") or "") or None

    pem = wait_for(bundle, timeout=60, message="the trust bundle ConfigMap mig-roots")
    assert roots_of(pem) == want, "the ConfigMap holds exactly the ML-DSA and the ECDSA root"
    server = write_secret(tmp_path / "server", secret_data(cluster, namespace, "server-tls"))
    alice = write_secret(tmp_path / "alice", secret_data(cluster, namespace, "alice-tls"))
    assert roots_of(server.ca.read_bytes()) == want, "a leaf's ca.crt holds both roots too"
    published = tmp_path / "bundle.pem"
    published.write_text(pem)
    trusting_bundle = Dual(tmp_path / "alice-with-bundle")  # alice's badges, trusting only the ConfigMap
    trusting_bundle.dir.mkdir()
    for stem in ("tls", "tls-ecdsa"):
        for ext in ("crt", "key"):
            (trusting_bundle.dir / f"{stem}.{ext}").write_bytes((alice.dir / f"{stem}.{ext}").read_bytes())
    trusting_bundle.ca.write_text(pem)

    # OpenSSL 3.0 reads the bundle (skipping nothing it needs) and verifies the ECDSA leaf with it.
    verified = subprocess.run(
        [openssl, "verify", "-CAfile", str(published), str(server.dir / "tls-ecdsa.crt")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert verified.returncode == 0 and verified.stdout.strip().endswith(": OK"), verified

    # A real handshake each way, the server trusting the published bundle too.
    echo = EchoServer(*server.pair("tls"), published, extra=(server.pair("tls-ecdsa"),)).start()
    try:
        legacy = s_client(echo.port, trusting_bundle, "tls-ecdsa")
        pqc = client_handshake(
            "127.0.0.1",
            echo.port,
            cert=alice.pair("tls")[0],
            key=alice.pair("tls")[1],
            ca=published,
            server_name=SERVER_NAME,
        )
        wait_for(lambda: len(echo.results) >= 2, timeout=15, message="the server's two reports")
        seen = [r.as_dict() for r in echo.results[:2]]
    finally:
        echo.stop()
    assert legacy["ok"], legacy
    assert (legacy["serverCertificate"], legacy["clientCertificate"]) == ("ECDSA-P256", "ECDSA-P256"), legacy
    assert pqc.ok, pqc
    assert (pqc.peer_key_algorithm, pqc.local_key_algorithm, pqc.group) == (
        "ML-DSA-65",
        "ML-DSA-65",
        "X25519MLKEM768",
    ), pqc
    assert [(s["ok"], s["peerKeyAlgorithm"]) for s in seen] == [(True, "ECDSA-P256"), (True, "ML-DSA-65")], (
        seen
    )


def test_a_dual_cluster_issuers_cluster_trust_bundle_carries_both_roots(operator: Any, cluster: Any) -> None:
    name = f"t-mig-{uuid.uuid4().hex[:6]}"
    create_cluster_issuer(cluster, name, {"selfSigned": dual_self_signed(name), "clusterTrustBundle": True})
    certificates = client.CertificatesV1beta1Api(cluster.api_client)
    try:
        wait_cluster_issuer_ready(cluster, name)
        want = ca_roots(secret_data(cluster, CLUSTER_RESOURCES, f"{name}-ca"))
        assert sorted(want.values()) == ["ECDSA-P256", "ML-DSA-65"], want

        def published() -> dict[str, str] | None:
            try:
                found = certificates.read_cluster_trust_bundle(f"mtls.dev:{name}:anchors")
            except ApiException as error:
                if error.status == 404:
                    return None
                raise
            return roots_of(found.spec.trust_bundle)

        got = wait_for(published, timeout=60, message="the ClusterTrustBundle")
        assert got == want, "the ClusterTrustBundle holds exactly the ML-DSA and the ECDSA root"
    finally:
        cluster.custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
