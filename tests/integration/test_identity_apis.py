"""The test control plane serves the Kubernetes-native identity APIs the next issue builds on.

Kubernetes 1.36 has PodCertificateRequest and ClusterTrustBundle in certificates.k8s.io/v1beta1, off by
default: the control plane turns them on (--runtime-config, --feature-gates) and runs with
--authorization-mode=Node,RBAC and the NodeRestriction admission plugin.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from kubernetes import client

from mtls_operator.testing.controlplane import find_binaries


def test_identity_apis_are_served_and_a_cluster_trust_bundle_round_trips(cluster: Any) -> None:
    kubectl = str(find_binaries().kubectl)
    listed = subprocess.run(
        [
            kubectl,
            "--kubeconfig",
            str(cluster.kubeconfig),
            "api-resources",
            "--api-group=certificates.k8s.io",
            "-o",
            "name",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert {"podcertificaterequests.certificates.k8s.io", "clustertrustbundles.certificates.k8s.io"} <= set(
        listed
    )

    ca_pem = cluster.control_plane.ca_file.read_text()
    body = {
        "apiVersion": "certificates.k8s.io/v1beta1",
        "kind": "ClusterTrustBundle",
        "metadata": {"name": "mtls-test-bundle"},
        "spec": {"trustBundle": ca_pem},
    }
    api = client.CustomObjectsApi(cluster.api_client)
    created = api.create_cluster_custom_object("certificates.k8s.io", "v1beta1", "clustertrustbundles", body)
    try:
        read = api.get_cluster_custom_object(
            "certificates.k8s.io", "v1beta1", "clustertrustbundles", "mtls-test-bundle"
        )
        assert read["spec"]["trustBundle"].strip() == ca_pem.strip()
        assert created["metadata"]["uid"] == read["metadata"]["uid"]
    finally:
        api.delete_cluster_custom_object(
            "certificates.k8s.io", "v1beta1", "clustertrustbundles", "mtls-test-bundle"
        )


def test_the_api_server_authorizes_nodes_and_restricts_them(cluster: Any) -> None:
    """A kubelet's identity may read its own Node only through the Node authorizer, and NodeRestriction
    forbids it to label itself into a node-restriction.kubernetes.io label."""
    impersonated = cluster.impersonate("system:node:mtls-probe")
    impersonated.set_default_header("Impersonate-Group", "system:nodes")
    core = client.CoreV1Api(impersonated)
    try:
        node = client.V1Node(
            metadata=client.V1ObjectMeta(
                name="mtls-probe", labels={"node-restriction.kubernetes.io/forbidden": "x"}
            )
        )
        with pytest.raises(client.ApiException, match=r"node-restriction\.kubernetes\.io") as refused:
            core.create_node(node)
        assert refused.value.status == 403, refused.value
        # The Node authorizer answers for system:nodes: a kubelet may read its own Node.
        review = client.AuthorizationV1Api(cluster.api_client).create_subject_access_review(
            client.V1SubjectAccessReview(
                spec=client.V1SubjectAccessReviewSpec(
                    user="system:node:mtls-probe",
                    groups=["system:nodes"],
                    resource_attributes=client.V1ResourceAttributes(
                        verb="get", resource="nodes", name="mtls-probe"
                    ),
                )
            )
        )
        assert review.status.allowed, review.status
    finally:
        impersonated.close()
