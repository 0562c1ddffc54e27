"""Bad input the schema cannot catch: Ready=False with a reason and a sentence, nothing issued, an event,
and every other object still served. (What the schema rejects is in test_crd_schema.py.)"""

from __future__ import annotations

import base64
import datetime
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client

from helpers import wait_for
from mtls_objects import (
    byo_ca_metadata,
    create_certificate,
    create_issuer,
    get,
    self_signed,
    wait_condition,
    wait_issuer_ready,
    wait_ready,
)

NOW = datetime.datetime.now(datetime.UTC)


def _pem_key(key: Any) -> bytes:
    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def _cert(key: Any, *, ca: bool, key_cert_sign: bool = True, days: int = 30, start_days: int = -1) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "byo")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + datetime.timedelta(days=start_days))
        .not_valid_after(NOW + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, key_cert_sign, True, False, False), critical=True
        )
    )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _ca_secret(cluster: Any, namespace: str, name: str, crt: bytes, key: bytes) -> None:
    cluster.core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=byo_ca_metadata(name, name.removesuffix("-keypair")),
            type="kubernetes.io/tls",
            data={"tls.crt": base64.b64encode(crt).decode(), "tls.key": base64.b64encode(key).decode()},
        ),
    )


def _byo_issuer(cluster: Any, namespace: str, name: str, crt: bytes, key: bytes) -> None:
    _ca_secret(cluster, namespace, f"{name}-keypair", crt, key)
    create_issuer(cluster, namespace, name, {"ca": {"secretName": f"{name}-keypair"}})


K1 = ec.generate_private_key(ec.SECP256R1())
K2 = ec.generate_private_key(ec.SECP256R1())


@pytest.mark.parametrize(
    ("crt", "key", "reason", "fragment"),
    [
        pytest.param(
            _cert(K1, ca=False), _pem_key(K1), "CANotCA", "CA:FALSE", id="refuses a CA that is not CA:TRUE"
        ),
        pytest.param(
            _cert(K1, ca=True, key_cert_sign=False),
            _pem_key(K1),
            "CAMissingKeyCertSign",
            "keyCertSign",
            id="refuses a CA without keyCertSign",
        ),
        pytest.param(
            _cert(K1, ca=True),
            _pem_key(K2),
            "CAKeyMismatch",
            "not the private key",
            id="refuses a CA whose key differs",
        ),
        pytest.param(
            _cert(K1, ca=True, days=-1, start_days=-10),
            _pem_key(K1),
            "CAExpired",
            "expired",
            id="refuses an expired CA",
        ),
        pytest.param(b"garbage", _pem_key(K1), "CAInvalid", "tls.crt", id="refuses a corrupt CA Secret"),
    ],
)
def test_bad_bring_your_own_ca(
    operator: Any, cluster: Any, namespace: str, crt: bytes, key: bytes, reason: str, fragment: str
) -> None:
    _byo_issuer(cluster, namespace, "byo", crt, key)
    issuer = wait_condition(cluster, namespace, "mtlsissuers", "byo", "False", reason)
    ready = next(c for c in issuer["status"]["conditions"] if c["type"] == "Ready")
    assert fragment in ready["message"]
    assert ready["message"].endswith(".")
    create_certificate(
        cluster,
        namespace,
        "leaf",
        {"secretName": "leaf-tls", "issuerRef": {"name": "byo"}, "commonName": "leaf"},
    )
    wait_condition(cluster, namespace, "mtlscertificates", "leaf", "False", "IssuerNotReady")
    assert not _secret_exists(cluster, namespace, "leaf-tls")


def test_a_good_bring_your_own_ca_issues(operator: Any, cluster: Any, namespace: str) -> None:
    _byo_issuer(cluster, namespace, "byo", _cert(K1, ca=True), _pem_key(K1))
    wait_issuer_ready(cluster, namespace, "byo")
    create_certificate(
        cluster,
        namespace,
        "leaf",
        {"secretName": "leaf-tls", "issuerRef": {"name": "byo"}, "commonName": "leaf"},
    )
    wait_ready(cluster, namespace, "leaf")


def _secret_exists(cluster: Any, namespace: str, name: str) -> bool:
    from kubernetes.client.rest import ApiException

    try:
        cluster.core.read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def test_bad_certificates_are_refused_and_others_still_served(
    operator: Any, cluster: Any, namespace: str
) -> None:
    create_issuer(cluster, namespace, "ca", self_signed("ca"))
    wait_issuer_ready(cluster, namespace, "ca")
    # A Secret somebody else owns.
    cluster.core.create_namespaced_secret(
        namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="theirs"), string_data={"password": "x"})
    )
    bad = {
        "missing-issuer": (
            {"secretName": "a-tls", "issuerRef": {"name": "nope"}, "commonName": "a"},
            "IssuerNotFound",
            None,
        ),
        "foreign-secret": (
            {"secretName": "theirs", "issuerRef": {"name": "ca"}, "commonName": "b"},
            "SecretNotManaged",
            None,
        ),
        "dup-one": (
            {"secretName": "shared-tls", "issuerRef": {"name": "ca"}, "commonName": "c"},
            "DuplicateSecretName",
            "shared-tls",
        ),
        "dup-two": (
            {"secretName": "shared-tls", "issuerRef": {"name": "ca"}, "commonName": "d"},
            "DuplicateSecretName",
            "shared-tls",
        ),
        "p12-no-password": (
            {
                "secretName": "p12-tls",
                "issuerRef": {"name": "ca"},
                "commonName": "e",
                "keystores": {"pkcs12": {"create": True, "passwordSecretRef": {"name": "absent"}}},
            },
            "IssuanceFailed",
            None,
        ),
    }
    for name, (spec, _, _) in bad.items():
        create_certificate(cluster, namespace, name, spec)
    create_certificate(
        cluster,
        namespace,
        "good",
        {"secretName": "good-tls", "issuerRef": {"name": "ca"}, "commonName": "good"},
    )
    wait_ready(cluster, namespace, "good")
    for name, (_spec, reason, _) in bad.items():
        obj = wait_condition(cluster, namespace, "mtlscertificates", name, "False", reason)
        ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
        assert ready["message"].endswith("."), ready["message"]
    # Nothing was written for any of them; the foreign Secret is untouched.
    for secret in ("a-tls", "p12-tls"):
        assert not _secret_exists(cluster, namespace, secret), secret
    # dup-one may have been issued before dup-two existed; dup-two never wrote over it.
    if _secret_exists(cluster, namespace, "shared-tls"):
        shared = cluster.core.read_namespaced_secret("shared-tls", namespace)
        assert shared.metadata.annotations["mtls.dev/certificate-name"] == "dup-one"
    theirs = cluster.core.read_namespaced_secret("theirs", namespace)
    assert set(theirs.data) == {"password"}

    # Each got a Warning event with its reason.
    def warned() -> bool:
        events = cluster.core.list_namespaced_event(namespace).items
        seen = {(e.involved_object.name, e.reason) for e in events if e.type == "Warning"}
        return all((name, reason) in seen for name, (_, reason, _) in bad.items())

    wait_for(warned, timeout=15, message="a Warning event for every bad certificate")
    # Fixing the duplicate frees the other one.
    cluster.custom.delete_namespaced_custom_object(
        "mtls.dev", "v1alpha1", namespace, "mtlscertificates", "dup-two"
    )
    wait_ready(cluster, namespace, "dup-one")


def test_pkcs12_keystores_with_a_password(operator: Any, cluster: Any, namespace: str) -> None:
    from cryptography.hazmat.primitives.serialization import pkcs12

    create_issuer(cluster, namespace, "ca", self_signed("ca", "RSA", 2048))
    wait_issuer_ready(cluster, namespace, "ca")
    cluster.core.create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name="p12-pass"), string_data={"password": "s3cret"}),
    )
    create_certificate(
        cluster,
        namespace,
        "java",
        {
            "secretName": "java-tls",
            "issuerRef": {"name": "ca"},
            "commonName": "java",
            "privateKey": {"algorithm": "RSA", "size": 2048},
            "keystores": {
                "pkcs12": {"create": True, "passwordSecretRef": {"name": "p12-pass", "key": "password"}}
            },
        },
    )
    wait_ready(cluster, namespace, "java")
    data = cluster.core.read_namespaced_secret("java-tls", namespace).data
    store = pkcs12.load_pkcs12(base64.b64decode(data["keystore.p12"]), b"s3cret")
    assert store.key is not None
    assert store.cert is not None
    trust = pkcs12.load_pkcs12(base64.b64decode(data["truststore.p12"]), b"s3cret")
    assert trust.additional_certs
    assert get(cluster, namespace, "mtlscertificates", "java")["status"]["algorithm"] == "RSA-2048"
