"""Root -> intermediate -> leaf, issued by the operator; and the mixed-chain warning."""

from __future__ import annotations

import base64
import time
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store

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


def intermediate(
    parent: str, name: str, algorithm: str = "ECDSA", size: int | None = None, **extra: Any
) -> dict[str, Any]:
    key: dict[str, Any] = {"algorithm": algorithm, **({"size": size} if size else {})}
    return {
        "intermediate": {
            "issuerRef": {"name": parent},
            "secretName": f"{name}-ca",
            "commonName": f"{name} CA",
            "duration": "8760h",
            "privateKey": key,
            **extra,
        }
    }


def test_leaf_verifies_to_the_root_through_the_intermediate_in_tls_crt(
    operator: Any, cluster: Any, namespace: str
) -> None:
    create_issuer(cluster, namespace, "root", self_signed("root"))
    create_issuer(
        cluster,
        namespace,
        "team",
        intermediate(
            "root", "team", pathLength=0, nameConstraints={"permittedDNSDomains": [f"{namespace}.svc"]}
        ),
    )
    wait_issuer_ready(cluster, namespace, "root")
    issuer = wait_issuer_ready(cluster, namespace, "team")
    assert issuer["status"]["type"] == "Intermediate"
    create_certificate(
        cluster,
        namespace,
        "web",
        {"secretName": "web-tls", "issuerRef": {"name": "team"}, "dnsNames": [f"web.{namespace}.svc"]},
    )
    wait_ready(cluster, namespace, "web")
    data = secret_data(cluster, namespace, "web-tls")
    chain = x509.load_pem_x509_certificates(data["tls.crt"])
    root = x509.load_pem_x509_certificate(data["ca.crt"])
    root_ca = x509.load_pem_x509_certificate(secret_data(cluster, namespace, "root-ca")["tls.crt"])
    assert root == root_ca, "ca.crt is the root, not the intermediate"
    assert len(chain) == 2, "tls.crt = leaf + intermediate"
    bc = chain[1].extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca
    assert bc.path_length == 0
    verifier = (
        PolicyBuilder().store(Store([root])).build_server_verifier(x509.DNSName(f"web.{namespace}.svc"))
    )
    verified = verifier.verify(chain[0], chain[1:])
    assert verified[-1] == root


def test_an_mldsa_leaf_under_an_ecdsa_ca_warns_it_is_not_post_quantum(
    operator: Any, cluster: Any, namespace: str
) -> None:
    create_issuer(cluster, namespace, "root", self_signed("root"))
    create_issuer(cluster, namespace, "pq-root", self_signed("pq-root", "MLDSA", 65))
    wait_issuer_ready(cluster, namespace, "root")
    wait_issuer_ready(cluster, namespace, "pq-root")
    create_certificate(
        cluster,
        namespace,
        "mixed",
        {
            "secretName": "mixed-tls",
            "issuerRef": {"name": "root"},
            "commonName": "mixed",
            "privateKey": {"algorithm": "MLDSA", "size": 65},
        },
    )
    create_certificate(
        cluster,
        namespace,
        "pure",
        {
            "secretName": "pure-tls",
            "issuerRef": {"name": "pq-root"},
            "commonName": "pure",
            "privateKey": {"algorithm": "MLDSA", "size": 65},
        },
    )
    wait_ready(cluster, namespace, "mixed")
    wait_ready(cluster, namespace, "pure")
    mixed = condition(get(cluster, namespace, "mtlscertificates", "mixed"), "PostQuantum")
    pure = condition(get(cluster, namespace, "mtlscertificates", "pure"), "PostQuantum")
    assert mixed is not None
    assert mixed["status"] == "False"
    assert mixed["reason"] == "MixedChain"
    assert "ECDSA" in mixed["message"]
    assert pure is not None
    assert pure["status"] == "True"


def test_a_tampered_intermediate_ca_secret_is_repaired_within_seconds(
    operator: Any, cluster: Any, namespace: str
) -> None:
    """The intermediate's CA Secret reaches its issuer through the Secret watch (not the 10-minute
    recheck): another key put into it is replaced within seconds by a new intermediate whose key matches,
    signed by the root, and leaves issued after it chain to the root through it."""
    create_issuer(cluster, namespace, "root", self_signed("root"))
    create_issuer(cluster, namespace, "team", intermediate("root", "team"))
    wait_issuer_ready(cluster, namespace, "root")
    wait_issuer_ready(cluster, namespace, "team")
    root_ca = x509.load_pem_x509_certificate(secret_data(cluster, namespace, "root-ca")["tls.crt"])
    before = secret_data(cluster, namespace, "team-ca")
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tampered_at = time.monotonic()
    cluster.core.patch_namespaced_secret(
        "team-ca", namespace, {"data": {"tls.key": base64.b64encode(other).decode()}}
    )

    def repaired() -> dict[str, bytes] | None:
        data = secret_data(cluster, namespace, "team-ca")
        if data["tls.key"] == other or not key_matches_certificate(data["tls.crt"], data["tls.key"]):
            return None
        return data

    after = wait_for(repaired, timeout=20, message="the intermediate's CA Secret repaired")
    took = time.monotonic() - tampered_at
    print(f"intermediate CA Secret repaired {took:.1f} s after the tamper")
    assert took < 20
    team_ca = x509.load_pem_x509_certificates(after["tls.crt"])[0]
    team_ca.verify_directly_issued_by(root_ca)
    assert (after["tls.key"] != other and after["tls.key"] != before["tls.key"]) or (
        after["tls.crt"] == before["tls.crt"]
    ), "either the old pair is put back or a new pair is issued; never the tampered key"
    wait_issuer_ready(cluster, namespace, "team")
    create_certificate(
        cluster,
        namespace,
        "web",
        {"secretName": "web-tls", "issuerRef": {"name": "team"}, "dnsNames": [f"web.{namespace}.svc"]},
    )
    wait_ready(cluster, namespace, "web")
    leaf, *rest = x509.load_pem_x509_certificates(secret_data(cluster, namespace, "web-tls")["tls.crt"])
    assert rest[0] == team_ca
    leaf.verify_directly_issued_by(team_ca)
