"""Root -> intermediate -> leaf, issued by the operator; and the mixed-chain warning."""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

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
