"""Tampered Secrets are re-issued promptly, and the Issuing condition names the check that caught it."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from helpers import wait_for
from mtls_objects import (
    condition,
    create_certificate,
    create_issuer,
    get,
    secret_data,
    self_signed,
    wait_issuer_ready,
    wait_ready,
)
from tls_checks import key_matches_certificate

SPEC = {
    "secretName": "web-tls",
    "issuerRef": {"name": "ca"},
    "dnsNames": ["web.demo.svc"],
    "commonName": "web",
}


def _patch_data(cluster: Any, namespace: str, data: dict[str, bytes | None]) -> None:
    encoded = {k: (base64.b64encode(v).decode() if v is not None else None) for k, v in data.items()}
    cluster.core.patch_namespaced_secret("web-tls", namespace, {"data": encoded})


def delete_secret(cluster: Any, namespace: str) -> None:
    cluster.core.delete_namespaced_secret("web-tls", namespace)


def garbage_key(cluster: Any, namespace: str) -> None:
    _patch_data(cluster, namespace, {"tls.key": b"-----BEGIN PRIVATE KEY-----\nnonsense\n"})


def other_key(cluster: Any, namespace: str) -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _patch_data(cluster, namespace, {"tls.key": pem})


def other_names(cluster: Any, namespace: str) -> None:
    decoy = secret_data(cluster, namespace, "decoy-names-tls")
    _patch_data(cluster, namespace, {"tls.crt": decoy["tls.crt"], "tls.key": decoy["tls.key"]})


def other_ca(cluster: Any, namespace: str) -> None:
    decoy = secret_data(cluster, namespace, "decoy-ca-tls")
    _patch_data(cluster, namespace, {"tls.crt": decoy["tls.crt"], "tls.key": decoy["tls.key"]})


def ca_removed(cluster: Any, namespace: str) -> None:
    _patch_data(cluster, namespace, {"ca.crt": None})


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        pytest.param(delete_secret, "SecretMissing", id="re-issues when the Secret is deleted"),
        pytest.param(garbage_key, "SecretCorrupt", id="re-issues when tls.key is garbage"),
        pytest.param(other_key, "KeyMismatch", id="re-issues when tls.key is another key"),
        pytest.param(other_names, "NamesMismatch", id="re-issues when tls.crt is for other names"),
        pytest.param(other_ca, "IssuerChanged", id="re-issues when tls.crt is from another CA"),
        pytest.param(ca_removed, "CABundleMismatch", id="re-issues when ca.crt is removed"),
    ],
)
def test_tampered_secret_is_reissued(
    operator: Any, cluster: Any, namespace: str, tamper: Callable[[Any, str], None], reason: str
) -> None:
    create_issuer(cluster, namespace, "ca", self_signed("ca"))
    create_issuer(cluster, namespace, "other", self_signed("other"))
    wait_issuer_ready(cluster, namespace, "ca")
    create_certificate(cluster, namespace, "web", SPEC)
    create_certificate(
        cluster,
        namespace,
        "decoy-names",
        {"secretName": "decoy-names-tls", "issuerRef": {"name": "ca"}, "dnsNames": ["evil.example"]},
    )
    create_certificate(
        cluster, namespace, "decoy-ca", {**SPEC, "secretName": "decoy-ca-tls", "issuerRef": {"name": "other"}}
    )
    for name in ("web", "decoy-names", "decoy-ca"):
        wait_ready(cluster, namespace, name)
    before = get(cluster, namespace, "mtlscertificates", "web")["status"]

    tamper(cluster, namespace)

    def reissued() -> dict[str, Any] | None:
        obj = get(cluster, namespace, "mtlscertificates", "web")
        issuing = condition(obj, "Issuing")
        status = obj["status"]
        if status.get("revision", 0) > before["revision"] and issuing and issuing["reason"] == reason:
            return obj
        return None

    after = wait_for(reissued, timeout=30, message=f"re-issue for {reason}")
    assert after["status"]["serialNumber"] != before["serialNumber"]
    ready = condition(after)
    assert ready is not None
    assert ready["status"] == "True"
    data = secret_data(cluster, namespace, "web-tls")
    assert {"tls.crt", "tls.key", "ca.crt"} <= set(data)
    # The re-issued Secret is whole: its key is the certificate's, the certificate is the one in status,
    # signed by the issuer's CA, and ca.crt is exactly that CA (not the decoy's, not missing).
    assert key_matches_certificate(data["tls.crt"], data["tls.key"]), "tls.key does not match tls.crt"
    leaf = x509.load_pem_x509_certificates(data["tls.crt"])[0]
    assert format(leaf.serial_number, "x") == after["status"]["serialNumber"]
    issuer_ca = x509.load_pem_x509_certificate(secret_data(cluster, namespace, "ca-ca")["tls.crt"])
    leaf.verify_directly_issued_by(issuer_ca)
    assert x509.load_pem_x509_certificates(data["ca.crt"]) == [issuer_ca], "ca.crt is not the issuer's CA"

    def issued_events() -> list[Any]:
        events = cluster.core.list_namespaced_event(namespace, field_selector="involvedObject.name=web")
        return [e for e in events.items if e.reason == "Issued"]

    assert (
        len(
            wait_for(
                lambda: len(issued_events()) >= 2 and issued_events(), timeout=10, message="two Issued events"
            )
        )
        == 2
    )
