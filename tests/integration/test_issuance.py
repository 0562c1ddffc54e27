"""Issuance conformance, run for every key algorithm against the real API server and the real operator.

Each algorithm gets its own self-signed issuer of the same algorithm and a set of certificate cases; every
issued Secret is checked with `cryptography` directly (names, KU/EKU, duration, chain, key match).
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mtls_objects import (
    create_certificate,
    create_issuer,
    secret_data,
    self_signed,
    wait_issuer_ready,
    wait_ready,
)
from tls_checks import mldsa_seed_form_problem

ALGORITHMS = [
    pytest.param(("ECDSA", 256), id="ECDSA-P256"),
    pytest.param(("ECDSA", 384), id="ECDSA-P384"),
    pytest.param(("Ed25519", None), id="Ed25519"),
    pytest.param(("RSA", 2048), id="RSA-2048"),
    pytest.param(("MLDSA", 44), id="ML-DSA-44"),
    pytest.param(("MLDSA", 65), id="ML-DSA-65"),
    pytest.param(("MLDSA", 87), id="ML-DSA-87"),
]

CASES: dict[str, dict[str, Any]] = {
    "cn-only": {"commonName": "cn-only"},
    "dns": {"commonName": "web", "dnsNames": ["web.demo.svc", "web.demo.svc.cluster.local"]},
    "ip": {"ipAddresses": ["10.0.0.7", "fd00::7"]},
    "uri": {"uris": ["spiffe://cluster.local/ns/demo/sa/web"]},
    "email": {"emailAddresses": ["alice@example.com"], "commonName": "alice"},
    "server-only": {"dnsNames": ["api.example.com"], "usages": ["server auth"]},
    "client-only": {"commonName": "bob", "usages": ["client auth"]},
    "short": {"commonName": "short", "duration": "3m", "renewBefore": "1m"},
}


def _public_bytes(key: Any) -> bytes:
    return bytes(
        key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _key_type(algorithm: str) -> type:
    return {
        "ECDSA": ec.EllipticCurvePrivateKey,
        "Ed25519": ed25519.Ed25519PrivateKey,
        "RSA": rsa.RSAPrivateKey,
        "MLDSA": (mldsa.MLDSA44PrivateKey, mldsa.MLDSA65PrivateKey, mldsa.MLDSA87PrivateKey),
    }[algorithm]  # type: ignore[return-value]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_conformance(operator: Any, cluster: Any, namespace: str, algorithm: tuple[str, int | None]) -> None:
    algo, size = algorithm
    create_issuer(cluster, namespace, "ca", self_signed("ca", algo, size))
    wait_issuer_ready(cluster, namespace, "ca")
    key: dict[str, Any] = {"algorithm": algo}
    if size:
        key["size"] = size
    for case, fields in CASES.items():
        create_certificate(
            cluster,
            namespace,
            case,
            {"secretName": f"{case}-tls", "issuerRef": {"name": "ca"}, "privateKey": key, **fields},
        )
    if algo == "MLDSA":  # the issuer's CA key too
        assert size is not None
        ca_key = secret_data(cluster, namespace, "ca-ca")["tls.key"]
        assert mldsa_seed_form_problem(ca_key, size) is None, mldsa_seed_form_problem(ca_key, size)
    for case, fields in CASES.items():
        status = wait_ready(cluster, namespace, case, timeout=90)["status"]
        data = secret_data(cluster, namespace, f"{case}-tls")
        secret = cluster.core.read_namespaced_secret(f"{case}-tls", namespace)
        assert secret.type == "kubernetes.io/tls"
        assert secret.metadata.labels["app.kubernetes.io/managed-by"] == "mtls-operator"
        assert secret.metadata.annotations["mtls.dev/certificate-name"] == case
        chain = x509.load_pem_x509_certificates(data["tls.crt"])
        leaf, root = chain[0], x509.load_pem_x509_certificate(data["ca.crt"])
        private_key = serialization.load_pem_private_key(data["tls.key"], None)
        assert data["tls.key"].startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
        assert isinstance(private_key, _key_type(algo)), case
        if algo == "MLDSA":
            assert size is not None
            assert mldsa_seed_form_problem(data["tls.key"], size) is None, (
                f"{case}: {mldsa_seed_form_problem(data['tls.key'], size)}"
            )
        assert _public_bytes(private_key.public_key()) == _public_bytes(leaf.public_key()), "key matches"
        leaf.verify_directly_issued_by(root)
        assert status["serialNumber"] == format(leaf.serial_number, "x")
        assert status["notAfter"] == leaf.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
        lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
        expected = timedelta(minutes=3) if case == "short" else timedelta(days=90)
        assert lifetime == expected, f"{case}: duration honoured"

        cn = [a.value for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        assert cn == ([fields["commonName"]] if "commonName" in fields else [])
        san = (
            leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            if any(k in fields for k in ("dnsNames", "ipAddresses", "uris", "emailAddresses"))
            else None
        )
        if "dnsNames" in fields:
            assert sorted(san.get_values_for_type(x509.DNSName)) == sorted(fields["dnsNames"])
        if "ipAddresses" in fields:
            got = sorted(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
            assert got == sorted(str(ipaddress.ip_address(ip)) for ip in fields["ipAddresses"])
        if "uris" in fields:
            assert san.get_values_for_type(x509.UniformResourceIdentifier) == fields["uris"]
        if "emailAddresses" in fields:
            assert san.get_values_for_type(x509.RFC822Name) == fields["emailAddresses"]

        eku = set(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        want = {
            "server auth": ExtendedKeyUsageOID.SERVER_AUTH,
            "client auth": ExtendedKeyUsageOID.CLIENT_AUTH,
        }
        assert eku == {want[u] for u in fields.get("usages", ["server auth", "client auth"])}
        ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        assert ku.digital_signature
        assert ku.key_encipherment == (algo == "RSA"), "keyEncipherment only for RSA"
        bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
        assert not bc.ca
