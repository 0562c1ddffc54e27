"""MTLSClusterIssuer: one admin-owned CA for every namespace its policy admits, its CA Secret in the
operator's cluster resource namespace, and its trust anchors published as a ClusterTrustBundle that
follows a CA rotation through the overlap."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from kubernetes import client
from kubernetes.client.rest import ApiException

from helpers import wait_for
from mtls_objects import condition, create_certificate, get, secret_data, wait_ready

GROUP, VERSION, PLURAL = "mtls.dev", "v1alpha1", "mtlsclusterissuers"
CLUSTER_RESOURCES = "t-cluster-resources"  # the shared operator's --cluster-resource-namespace


def create_cluster_issuer(cluster: Any, name: str, spec: dict[str, Any]) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MTLSClusterIssuer",
        "metadata": {"name": name},
        "spec": spec,
    }
    cluster.custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, body)


def get_cluster_issuer(cluster: Any, name: str) -> dict[str, Any]:
    result: dict[str, Any] = cluster.custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)
    return result


def wait_cluster_issuer_ready(cluster: Any, name: str) -> dict[str, Any]:
    return wait_for(
        lambda: (
            (o := get_cluster_issuer(cluster, name)) and (condition(o) or {}).get("status") == "True" and o
        ),
        timeout=60,
        message=f"MTLSClusterIssuer {name} Ready",
    )


@pytest.fixture
def cluster_issuer_name(cluster: Any) -> Iterator[str]:
    name = f"t-mesh-{uuid.uuid4().hex[:6]}"
    yield name
    try:
        cluster.custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
    except ApiException as error:
        if error.status != 404:
            raise


@pytest.fixture
def team_namespaces(cluster: Any) -> Iterator[list[str]]:
    """Three namespaces: two labelled mesh=on, one not."""
    suffix = uuid.uuid4().hex[:6]
    names = [f"t-ci-a-{suffix}", f"t-ci-b-{suffix}", f"t-ci-c-{suffix}"]
    for name, labels in zip(names, ({"mesh": "on"}, {"mesh": "on"}, {}), strict=True):
        cluster.core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels))
        )
    yield names
    for name in names:
        cluster.core.delete_namespace(name)


def _cert(name: str, issuer: str) -> dict[str, Any]:
    return {
        "secretName": f"{name}-tls",
        "issuerRef": {"name": issuer, "kind": "MTLSClusterIssuer"},
        "dnsNames": [f"{name}.example"],
    }


def test_a_cluster_issuer_serves_the_namespaces_its_policy_admits(
    operator: Any, cluster: Any, cluster_issuer_name: str, team_namespaces: list[str]
) -> None:
    issuer = cluster_issuer_name
    create_cluster_issuer(
        cluster,
        issuer,
        {
            "selfSigned": {"secretName": f"{issuer}-ca", "commonName": f"{issuer} root"},
            "policy": {
                "allowedNamespaces": {"matchLabels": {"mesh": "on"}},
                "allowedDNSNames": ["*.example"],
            },
        },
    )
    status = wait_cluster_issuer_ready(cluster, issuer)["status"]
    ca_secret = cluster.core.read_namespaced_secret(f"{issuer}-ca", CLUSTER_RESOURCES)
    assert ca_secret.metadata.annotations["mtls.dev/ca-for-issuer"] == issuer, (
        "its CA in the resource namespace"
    )
    a, b, c = team_namespaces
    for ns in (a, b, c):
        create_certificate(cluster, ns, "web", _cert("web", issuer))
    ca = x509.load_pem_x509_certificate(secret_data(cluster, CLUSTER_RESOURCES, f"{issuer}-ca")["tls.crt"])
    for ns in (a, b):
        wait_ready(cluster, ns, "web")
        leaf = x509.load_pem_x509_certificate(secret_data(cluster, ns, "web-tls")["tls.crt"])
        leaf.verify_directly_issued_by(ca)
        assert (
            secret_data(cluster, ns, "web-tls")["ca.crt"]
            == secret_data(cluster, CLUSTER_RESOURCES, f"{issuer}-ca")["ca.crt"]
        )

    def denied() -> dict[str, Any] | None:
        found = condition(get(cluster, c, "mtlscertificates", "web"))
        return found if found and found.get("reason") == "PolicyDenied" else None

    refused = wait_for(denied, timeout=60, message="the third namespace refused by the policy")
    assert "allowedNamespaces" in refused["message"]
    with pytest.raises(ApiException) as missing:
        cluster.core.read_namespaced_secret("web-tls", c)
    assert missing.value.status == 404
    assert status["fingerprint"] and status["type"] == "SelfSigned"


def test_a_cluster_trust_bundle_follows_a_ca_rotation_through_the_overlap(
    operator: Any, cluster: Any, cluster_issuer_name: str, namespace: str
) -> None:
    """A one-minute certificate under the issuer keeps the overlap open for at least a minute (the old
    root stays trusted until the longest leaf lifetime has passed)."""
    issuer = cluster_issuer_name
    create_cluster_issuer(
        cluster,
        issuer,
        {
            "selfSigned": {"secretName": f"{issuer}-ca", "commonName": f"{issuer} root"},
            "clusterTrustBundle": True,
        },
    )
    wait_cluster_issuer_ready(cluster, issuer)
    certificates = client.CertificatesV1beta1Api(cluster.api_client)
    name = f"mtls.dev:{issuer}:anchors"

    def roots() -> set[str]:
        try:
            bundle = certificates.read_cluster_trust_bundle(name)
        except ApiException as error:
            if error.status == 404:
                return set()
            raise
        assert bundle.spec.signer_name == f"mtls.dev/{issuer}"
        assert bundle.metadata.labels["mtls.dev/issuer"] == issuer
        return {
            c.fingerprint(c.signature_hash_algorithm).hex()  # type: ignore[arg-type]
            for c in x509.load_pem_x509_certificates(bundle.spec.trust_bundle.encode())
        }

    old = wait_for(roots, timeout=60, message="the ClusterTrustBundle published")
    assert len(old) == 1
    create_certificate(cluster, namespace, "web", {**_cert("web", issuer), "duration": "1m"})
    wait_ready(cluster, namespace, "web")
    phases: list[str] = []

    def phase() -> str | None:
        value = ((get_cluster_issuer(cluster, issuer).get("status") or {}).get("rotation") or {}).get("phase")
        if value and (not phases or phases[-1] != value):
            phases.append(value)
        return value

    cluster.custom.patch_cluster_custom_object(
        GROUP,
        VERSION,
        PLURAL,
        issuer,
        {"metadata": {"annotations": {"mtls.dev/rotate-requested-at": "rotate/1"}}},
    )
    both = wait_for(
        lambda: (found := roots()) and len(found) == 2 and found, timeout=60, message="both roots"
    )
    assert old < both, "during the overlap the bundle holds the old and the new root"
    wait_for(
        lambda: phase() == "Stable" and len(phases) > 1,
        timeout=120,
        interval=0.5,
        message=f"Stable ({phases})",
    )
    new = wait_for(
        lambda: (found := roots()) and len(found) == 1 and found, timeout=60, message="new root only"
    )
    assert not (new & old) and new < both, "after the rotation only the new root is trusted"
