"""Dual certificates against the real API server and the real operator (issue 15).

A dual issuer (an ML-DSA-65 root with an additional ECDSA P-256 root in one CA Secret) signs certificates
that ask for an additional ECDSA key: one Secret holds tls.crt/tls.key (ML-DSA-65) and tls-ecdsa.crt/
tls-ecdsa.key, with the same names and lifetime, each signed by the CA of its algorithm, and ca.crt holds
both roots. What the tests read comes from the cluster: the Secret's bytes, the objects' status and
conditions, the Table the API server renders for `kubectl get`, the Events, and the operator's /metrics.
"""

from __future__ import annotations

import base64
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from helpers import wait_for
from mtls_objects import (
    GROUP,
    VERSION,
    condition,
    create_certificate,
    create_issuer,
    get,
    secret_data,
    wait_condition,
    wait_issuer_ready,
    wait_ready,
)
from nginx_peer import free_port
from operator_process import OperatorProcess

pytestmark = pytest.mark.slow

MLDSA_65 = {"algorithm": "MLDSA", "size": 65}
ECDSA = {"algorithm": "ECDSA", "size": 256}
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"


class Env:
    def __init__(self, cluster: Any, namespace: str, operator: OperatorProcess, metrics_port: int) -> None:
        self.cluster = cluster
        self.ns = namespace
        self.operator = operator
        self.metrics_port = metrics_port

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    def events(self, name: str) -> list[Any]:
        return [
            e
            for e in self.cluster.core.list_namespaced_event(self.ns).items
            if e.involved_object.name == name
        ]

    def secret(self, name: str) -> Any:
        return self.cluster.core.read_namespaced_secret(name, self.ns)


@pytest.fixture(scope="module")
def env(crds: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """One operator watching one namespace of its own (outside the shared operator's t-*)."""
    from kubernetes import client

    ns = f"own-dual-{uuid.uuid4().hex[:6]}"
    crds.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    port = free_port()
    log = tmp_path_factory.mktemp("dual") / "operator.log"
    args = ("--namespace", ns, "--metrics-port", str(port), "--metrics-bind-address", "127.0.0.1")
    op = OperatorProcess(crds.kubeconfig, log, *args).start()
    try:
        yield Env(crds, ns, op, port)
    finally:
        op.stop()
        crds.core.delete_namespace(ns)


def dual_issuer(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "selfSigned": {
            "secretName": f"{name}-ca",
            "commonName": f"{name} root",
            "privateKey": MLDSA_65,
            "additionalPrivateKeys": [ECDSA],
            **extra,
        }
    }


def dual_cert(issuer: str, secret: str, **extra: Any) -> dict[str, Any]:
    return {
        "secretName": secret,
        "issuerRef": {"name": issuer},
        "dnsNames": ["api.example.com"],
        "ipAddresses": ["127.0.0.1"],
        "privateKey": MLDSA_65,
        "additionalPrivateKeys": [ECDSA],
        **extra,
    }


def leaf(data: dict[str, bytes], key: str) -> x509.Certificate:
    return x509.load_pem_x509_certificates(data[key])[0]


def fingerprints(pem: bytes) -> set[str]:
    from cryptography.hazmat.primitives import hashes

    return {c.fingerprint(hashes.SHA256()).hex() for c in x509.load_pem_x509_certificates(pem)}


def test_a_dual_issuer_issues_both_keys_into_one_secret(env: Env) -> None:
    create_issuer(env.cluster, env.ns, "dual", dual_issuer("dual"))
    issuer = wait_issuer_ready(env.cluster, env.ns, "dual")
    ca_data = secret_data(env.cluster, env.ns, "dual-ca")
    assert {"tls.crt", "tls.key", "tls-ecdsa.crt", "tls-ecdsa.key", "ca.crt"} <= set(ca_data)
    (extra_ca,) = issuer["status"]["additionalCAs"]
    assert extra_ca["algorithm"] == "ECDSA-P256" and extra_ca["subject"] == "CN=dual root (ECDSA-P256)"
    assert issuer["status"]["algorithm"] == "ML-DSA-65"

    create_certificate(env.cluster, env.ns, "api", dual_cert("dual", "api-tls"))
    cert = wait_ready(env.cluster, env.ns, "api", timeout=90)
    data = secret_data(env.cluster, env.ns, "api-tls")
    assert {"tls.crt", "tls.key", "tls-ecdsa.crt", "tls-ecdsa.key", "ca.crt"} <= set(data)
    assert env.secret("api-tls").type == "kubernetes.io/tls"

    main, extra = leaf(data, "tls.crt"), leaf(data, "tls-ecdsa.crt")
    assert main.signature_algorithm_oid.dotted_string == "2.16.840.1.101.3.4.3.18"  # id-ml-dsa-65
    assert extra.signature_algorithm_oid == x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256
    san = x509.SubjectAlternativeName
    assert main.extensions.get_extension_for_class(san) == extra.extensions.get_extension_for_class(san)
    assert (main.not_valid_before_utc, main.not_valid_after_utc) == (
        extra.not_valid_before_utc,
        extra.not_valid_after_utc,
    )
    roots = {"tls.crt": x509.load_pem_x509_certificate(ca_data["tls.crt"])}
    roots["tls-ecdsa.crt"] = x509.load_pem_x509_certificate(ca_data["tls-ecdsa.crt"])
    main.verify_directly_issued_by(roots["tls.crt"])
    extra.verify_directly_issued_by(roots["tls-ecdsa.crt"])
    assert fingerprints(data["ca.crt"]) == fingerprints(ca_data["tls.crt"] + ca_data["tls-ecdsa.crt"])
    assert _key_matches(data["tls-ecdsa.key"], extra)

    status = cert["status"]
    assert status["keyAlgorithms"] == ["ML-DSA-65", "ECDSA-P256"]
    (extra_status,) = status["additionalCertificates"]
    assert extra_status["secretKey"] == "tls-ecdsa.crt"
    assert extra_status["notAfter"] == status["notAfter"]
    assert extra_status["serialNumber"] == format(extra.serial_number, "x")

    # `kubectl get mtlscertificates` (the API server's Table) shows both keys.
    table = env.cluster.custom.list_namespaced_custom_object(
        GROUP, VERSION, env.ns, "mtlscertificates", _headers={"Accept": TABLE}
    )
    columns = [c["name"] for c in table["columnDefinitions"]]
    row = next(r["cells"] for r in table["rows"] if r["cells"][0] == "api")
    assert dict(zip(columns, row, strict=True))["Keys"] == '["ML-DSA-65","ECDSA-P256"]'

    issued = [e for e in env.events("api") if e.reason == "Issued"]
    assert issued and "(ML-DSA-65 + ECDSA-P256, serial" in issued[-1].message
    assert "PRIVATE KEY" not in env.operator.log_path.read_text()

    def gauge() -> set[str]:
        return {
            line.split('algorithm="')[1].split('"')[0]
            for line in env.metrics().splitlines()
            if line.startswith("mtls_certificate_key_expiration_timestamp_seconds{") and 'name="api"' in line
        }

    wait_for(lambda: gauge() == {"ML-DSA-65", "ECDSA-P256"}, timeout=30, message="one series per key")


def _key_matches(key_pem: bytes, cert: x509.Certificate) -> bool:
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        PublicFormat,
        load_pem_private_key,
    )

    key = load_pem_private_key(key_pem, None)
    spki = PublicFormat.SubjectPublicKeyInfo
    return bool(
        key.public_key().public_bytes(Encoding.DER, spki)
        == cert.public_key().public_bytes(Encoding.DER, spki)
    )


def test_an_issuer_without_the_algorithm_blocks_then_becomes_dual(env: Env) -> None:
    """A plain ML-DSA issuer cannot sign the ECDSA key: Ready=False, AdditionalKeyUnsupported, an event.
    Adding the ECDSA CA to the issuer (the migration's first step) adds it to the existing CA Secret,
    keeping the ML-DSA CA, and the certificate is then issued with both keys."""
    spec = dual_issuer("mono")
    spec["selfSigned"].pop("additionalPrivateKeys")
    create_issuer(env.cluster, env.ns, "mono", spec)
    wait_issuer_ready(env.cluster, env.ns, "mono")
    first_ca = secret_data(env.cluster, env.ns, "mono-ca")
    create_certificate(env.cluster, env.ns, "blocked", dual_cert("mono", "blocked-tls"))
    cert = wait_condition(
        env.cluster, env.ns, "mtlscertificates", "blocked", "False", "AdditionalKeyUnsupported", timeout=60
    )
    ready = condition(cert)
    assert ready is not None and "holds no ECDSA CA" in ready["message"], ready
    wait_for(
        lambda: [e for e in env.events("blocked") if e.reason == "AdditionalKeyUnsupported"],
        timeout=30,
        message="a warning event",
    )
    assert "blocked-tls" not in {
        s.metadata.name for s in env.cluster.core.list_namespaced_secret(env.ns).items
    }

    env.cluster.custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        env.ns,
        "mtlsissuers",
        "mono",
        {"spec": {"selfSigned": {"additionalPrivateKeys": [ECDSA]}}},
    )
    wait_for(
        lambda: (
            len(get(env.cluster, env.ns, "mtlsissuers", "mono")["status"].get("additionalCAs") or []) == 1
        ),
        timeout=60,
        message="the ECDSA CA added",
    )
    ca = secret_data(env.cluster, env.ns, "mono-ca")
    assert (ca["tls.crt"], ca["tls.key"]) == (first_ca["tls.crt"], first_ca["tls.key"]), "the ML-DSA CA stays"
    assert "tls-ecdsa.crt" in ca
    wait_ready(env.cluster, env.ns, "blocked", timeout=90)
    assert "tls-ecdsa.crt" in secret_data(env.cluster, env.ns, "blocked-tls")


def test_a_broken_additional_pair_is_reissued_and_removal_waits_for_the_next_issuance(env: Env) -> None:
    create_issuer(env.cluster, env.ns, "dual2", dual_issuer("dual2"))
    wait_issuer_ready(env.cluster, env.ns, "dual2")
    create_certificate(env.cluster, env.ns, "web", dual_cert("dual2", "web-tls"))
    wait_ready(env.cluster, env.ns, "web", timeout=90)
    before = secret_data(env.cluster, env.ns, "web-tls")

    # Someone puts another key into tls-ecdsa.key: the operator re-issues, naming the check that fired.
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    stranger = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
    )
    env.cluster.core.patch_namespaced_secret(
        "web-tls", env.ns, {"data": {"tls-ecdsa.key": base64.b64encode(stranger).decode()}}
    )

    def reissued() -> dict[str, Any] | None:
        obj = get(env.cluster, env.ns, "mtlscertificates", "web")
        issuing = condition(obj, "Issuing")
        ok = issuing is not None and issuing["reason"] == "AdditionalKeyMismatch"
        return obj if ok and (condition(obj) or {}).get("status") == "True" else None

    wait_for(reissued, timeout=60, message="a re-issue for AdditionalKeyMismatch")
    after = secret_data(env.cluster, env.ns, "web-tls")
    assert after["tls-ecdsa.key"] != stranger
    assert _key_matches(after["tls-ecdsa.key"], leaf(after, "tls-ecdsa.crt"))
    assert after["tls.crt"] != before["tls.crt"], "both pairs are re-issued together"

    # Removing the list writes nothing by itself; the next issuance (here a renewal request) drops the pair.
    rv = env.secret("web-tls").metadata.resource_version
    env.cluster.custom.patch_namespaced_custom_object(
        GROUP, VERSION, env.ns, "mtlscertificates", "web", {"spec": {"additionalPrivateKeys": None}}
    )
    generation = get(env.cluster, env.ns, "mtlscertificates", "web")["metadata"]["generation"]
    wait_for(
        lambda: (
            (condition(get(env.cluster, env.ns, "mtlscertificates", "web")) or {}).get("observedGeneration")
            == generation
        ),
        timeout=30,
        message="the operator judged the new generation",
    )
    assert env.secret("web-tls").metadata.resource_version == rv
    assert "tls-ecdsa.crt" in secret_data(env.cluster, env.ns, "web-tls")
    env.cluster.custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        env.ns,
        "mtlscertificates",
        "web",
        {"metadata": {"annotations": {"mtls.dev/renew-requested-at": "2026-01-01T00:00:00Z/dual"}}},
    )
    wait_for(
        lambda: "tls-ecdsa.crt" not in secret_data(env.cluster, env.ns, "web-tls"),
        timeout=60,
        message="the ECDSA pair gone with the next issuance",
    )
    status = wait_ready(env.cluster, env.ns, "web")["status"]
    assert status["keyAlgorithms"] == ["ML-DSA-65"]
    assert "additionalCertificates" not in status


def test_mtlsctl_algorithms_shows_the_migration(env: Env, tmp_path: Path) -> None:
    """Which certificates' Secrets hold which algorithms, with a summary, as a user runs it."""
    import json
    import subprocess
    import sys

    create_issuer(env.cluster, env.ns, "dual3", dual_issuer("dual3"))
    wait_issuer_ready(env.cluster, env.ns, "dual3")
    create_certificate(env.cluster, env.ns, "both", dual_cert("dual3", "both-tls"))
    create_certificate(
        env.cluster,
        env.ns,
        "pq-only",
        {
            "secretName": "pq-only-tls",
            "issuerRef": {"name": "dual3"},
            "commonName": "pq",
            "privateKey": MLDSA_65,
        },
    )
    for name in ("both", "pq-only"):
        wait_ready(env.cluster, env.ns, name, timeout=90)
    argv = [sys.executable, "-m", "mtls_operator.cli.main", "algorithms", "-n", env.ns]
    argv += ["--kubeconfig", str(env.cluster.kubeconfig)]
    text = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    assert "both" in text and "ML-DSA-65, ECDSA-P256" in text, text
    doc = json.loads(
        subprocess.run([*argv, "-o", "json"], capture_output=True, text=True, timeout=60, check=True).stdout
    )
    rows = {r["name"]: r for r in doc["certificates"]}
    assert rows["both"]["held"] == ["ML-DSA-65", "ECDSA-P256"]
    assert rows["both"]["kind"] == "dual"
    assert rows["pq-only"]["held"] == ["ML-DSA-65"] and rows["pq-only"]["kind"] == "post-quantum"
    assert doc["summary"]["dual"] >= 1 and doc["summary"]["post-quantum"] >= 1
