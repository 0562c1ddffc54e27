"""MTLSClusterIssuer: one admin-owned CA for every namespace its policy admits, its CA Secret in the
operator's cluster resource namespace, and its trust anchors published as a ClusterTrustBundle that
follows a CA rotation through the overlap."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from kubernetes import client
from kubernetes.client.rest import ApiException

from helpers import wait_for
from mtls_objects import admin_ca_pem, condition, create_certificate, get, secret_data, wait_ready

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


def _with_cluster_bundle(issuer: str) -> dict[str, Any]:
    """A self-signed cluster issuer that publishes its root as a ClusterTrustBundle."""
    return {
        "selfSigned": {"secretName": f"{issuer}-ca", "commonName": f"{issuer} root"},
        "clusterTrustBundle": True,
    }


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
    create_cluster_issuer(cluster, issuer, _with_cluster_bundle(issuer))
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


def _trust_bundle_condition(cluster: Any, issuer: str, reason: str, timeout: float) -> dict[str, Any]:
    """The cluster issuer's TrustBundle condition, once it has ``reason``."""
    found: dict[str, Any] = wait_for(
        lambda: (
            (got := condition(get_cluster_issuer(cluster, issuer), "TrustBundle"))
            and got["reason"] == reason
            and got
        ),
        timeout=timeout,
        message=f"TrustBundle {reason}",
    )
    return found


def _deny_bundles_of(cluster: Any, signer: str, name: str) -> None:
    """A ValidatingAdmissionPolicy (and its binding) that denies writing a ClusterTrustBundle of ``signer``:
    what a platform's admission policy would do. Returns once the API server enforces it."""
    admission = client.AdmissionregistrationV1Api(cluster.api_client)
    rule = {
        "apiGroups": ["certificates.k8s.io"],
        "apiVersions": ["*"],
        "operations": ["CREATE", "UPDATE"],
        "resources": ["clustertrustbundles"],
    }
    admission.create_validating_admission_policy(
        {
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [rule]},
                "validations": [
                    {
                        "expression": f"object.spec.signerName != '{signer}'",
                        "message": "bundles of this signer are forbidden by the platform team",
                    }
                ],
            },
        }
    )
    admission.create_validating_admission_policy_binding(
        {"metadata": {"name": name}, "spec": {"policyName": name, "validationActions": ["Deny"]}}
    )
    probe = {
        "metadata": {"name": f"{signer.replace('/', ':')}:probe"},
        "spec": {"signerName": signer, "trustBundle": admin_ca_pem()[0].decode()},
    }

    def denied() -> bool:
        try:
            client.CertificatesV1beta1Api(cluster.api_client).create_cluster_trust_bundle(
                probe, dry_run="All"
            )
        except ApiException as error:
            return "forbidden by the platform team" in str(error.body)
        return False

    wait_for(denied, timeout=30, message="the admission policy enforced")


def test_a_cluster_trust_bundle_the_api_server_refuses_is_a_condition_and_an_event_then_published(
    operator: Any, cluster: Any, cluster_issuer_name: str
) -> None:
    """An admission policy denies the issuer's ClusterTrustBundle: the issuer stays Ready (its CA works)
    with TrustBundle=False BundlePublishFailed naming the bundle and the API server's answer, and a Warning
    Event; once the policy is gone the bundle is written on the next try (30 s) and the condition turns."""
    issuer = cluster_issuer_name
    signer, policy = f"mtls.dev/{issuer}", f"deny-{issuer}"
    bundle = f"mtls.dev:{issuer}:anchors"
    admission = client.AdmissionregistrationV1Api(cluster.api_client)
    _deny_bundles_of(cluster, signer, policy)
    try:
        create_cluster_issuer(cluster, issuer, _with_cluster_bundle(issuer))
        wait_cluster_issuer_ready(cluster, issuer)
        failed = _trust_bundle_condition(cluster, issuer, "BundlePublishFailed", timeout=60)
        assert failed["status"] == "False"
        assert f"ClusterTrustBundle {bundle}" in failed["message"]
        assert "forbidden by the platform team" in failed["message"]
        warnings = wait_for(
            lambda: [
                e
                for e in cluster.core.list_namespaced_event("default").items
                if e.involved_object.name == issuer and e.reason == "BundlePublishFailed"
            ],
            timeout=30,
            message="a BundlePublishFailed event",
        )
        assert warnings[0].type == "Warning"
    finally:
        admission.delete_validating_admission_policy_binding(policy)
        admission.delete_validating_admission_policy(policy)
    published = _trust_bundle_condition(cluster, issuer, "BundlePublished", timeout=90)  # the next try
    assert published["status"] == "True" and published["message"] == (
        f"ClusterTrustBundle {bundle} holds the issuer's trust anchors."
    )
    written = client.CertificatesV1beta1Api(cluster.api_client).read_cluster_trust_bundle(bundle)
    anchors = x509.load_pem_x509_certificates(written.spec.trust_bundle.encode())
    ca = x509.load_pem_x509_certificate(secret_data(cluster, CLUSTER_RESOURCES, f"{issuer}-ca")["tls.crt"])
    assert [a.fingerprint(hashes.SHA256()) for a in anchors] == [ca.fingerprint(hashes.SHA256())]
