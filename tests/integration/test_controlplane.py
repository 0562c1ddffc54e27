"""The control plane behaves like the real thing in every way the operator depends on.

No kubelet or scheduler runs, so Pods stay Pending; everything else here is the real API server and
controller manager: storage, RBAC, CRDs with a status subresource, optimistic concurrency, and the
Deployment -> ReplicaSet -> Pod controllers that rolling restarts rely on.
"""

from __future__ import annotations

import base64
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from tests.helpers import Cluster, wait_for

from mtls_operator.testing.controlplane import (
    Binaries,
    ControlPlane,
    k8s_version_from_go_mod,
    log_tails,
    pick_free_ports,
)

GO_MOD = Path(__file__).resolve().parents[2] / "e2e" / "controlplane" / "go.mod"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"


def owned_by(obj: Any, owner_uid: str) -> bool:
    return any(ref.uid == owner_uid for ref in obj.metadata.owner_references or ())


def replica_sets_of(cluster: Cluster, namespace: str, deployment: client.V1Deployment) -> list[Any]:
    found = cluster.apps.list_namespaced_replica_set(namespace).items
    return [rs for rs in found if owned_by(rs, deployment.metadata.uid)]


def pause_deployment(name: str) -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="pause", image=PAUSE_IMAGE)]),
            ),
        ),
    )


def test_the_api_server_runs_the_version_pinned_in_go_mod(cluster: Cluster) -> None:
    assert cluster.version == k8s_version_from_go_mod(GO_MOD.read_text())
    assert cluster.control_plane.readyz() == (200, "ok")


def test_a_secret_reads_back_as_written(cluster: Cluster, namespace: str) -> None:
    payload = b"\x00not utf-8\xff"
    cluster.core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="tls"),
            type="kubernetes.io/tls",
            data={
                "tls.crt": base64.b64encode(b"certificate").decode(),
                "tls.key": base64.b64encode(payload).decode(),
            },
        ),
    )

    assert cluster.core.read_namespace(namespace).status.phase == "Active"
    secret = cluster.core.read_namespaced_secret("tls", namespace)
    assert secret.type == "kubernetes.io/tls"
    assert base64.b64decode(secret.data["tls.key"]) == payload
    assert base64.b64decode(secret.data["tls.crt"]) == b"certificate"


def test_a_deployment_gets_a_replicaset_and_a_pending_pod(cluster: Cluster, namespace: str) -> None:
    deployment = cluster.apps.create_namespaced_deployment(namespace, pause_deployment("web"))

    (replica_set,) = wait_for(
        lambda: replica_sets_of(cluster, namespace, deployment),
        timeout=30,
        message=f"kube-controller-manager to create a ReplicaSet for {namespace}/web",
    )
    pods = wait_for(
        lambda: [
            pod
            for pod in cluster.core.list_namespaced_pod(namespace).items
            if owned_by(pod, replica_set.metadata.uid)
        ],
        timeout=30,
        message=f"ReplicaSet {replica_set.metadata.name} to create its Pod",
    )
    assert [pod.status.phase for pod in pods] == ["Pending"]  # no node: nothing schedules it


def test_changing_pod_template_annotations_rolls_out_a_new_replicaset(
    cluster: Cluster, namespace: str
) -> None:
    deployment = cluster.apps.create_namespaced_deployment(namespace, pause_deployment("web"))
    (first,) = wait_for(
        lambda: replica_sets_of(cluster, namespace, deployment),
        timeout=30,
        message="the first ReplicaSet",
    )

    stamp = {"mtls.dev/certificate-fingerprint": "sha256:" + "ab" * 32}
    cluster.apps.patch_namespaced_deployment(
        "web", namespace, {"spec": {"template": {"metadata": {"annotations": stamp}}}}
    )

    replica_sets = wait_for(
        lambda: [
            rs
            for rs in replica_sets_of(cluster, namespace, deployment)
            if rs.metadata.uid != first.metadata.uid
        ],
        timeout=30,
        message="a second ReplicaSet after the pod template changed",
    )
    (second,) = replica_sets
    assert second.spec.template.metadata.annotations == stamp
    assert second.metadata.labels["pod-template-hash"] != first.metadata.labels["pod-template-hash"]


@pytest.fixture
def widget_crd(cluster: Cluster) -> Any:
    """A namespaced CRD with a status subresource, under a group unique to this test."""
    group = f"g{uuid.uuid4().hex[:8]}.test.mtls.dev"
    open_object = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"spec": open_object, "status": open_object},
                        }
                    },
                }
            ],
        },
    }
    cluster.apiextensions.create_custom_resource_definition(crd)

    def established() -> bool:
        status = cluster.apiextensions.read_custom_resource_definition(f"widgets.{group}").status
        return any(c.type == "Established" and c.status == "True" for c in status.conditions or ())

    wait_for(established, timeout=30, message=f"CRD widgets.{group} to be established")
    yield group
    cluster.apiextensions.delete_custom_resource_definition(f"widgets.{group}")


def test_status_is_a_subresource_and_a_stale_resource_version_conflicts(
    cluster: Cluster, namespace: str, widget_crd: str
) -> None:
    api = (widget_crd, "v1", namespace, "widgets")
    body = {
        "apiVersion": f"{widget_crd}/v1",
        "kind": "Widget",
        "metadata": {"name": "w"},
        "spec": {"size": 1},
    }
    created = wait_for(
        lambda: cluster.custom.create_namespaced_custom_object(*api, body),
        timeout=15,
        message="the new CRD to serve requests",
        ignore=(ApiException,),
    )

    with_status = cluster.custom.patch_namespaced_custom_object_status(
        *api, "w", {"status": {"phase": "Ready"}}
    )
    assert with_status["status"] == {"phase": "Ready"}
    assert with_status["spec"] == {"size": 1}

    # Writing the main resource does not touch status; writing it with the old resourceVersion conflicts.
    current = dict(with_status, spec={"size": 2}, status={"phase": "Ignored"})
    updated = cluster.custom.replace_namespaced_custom_object(*api, "w", current)
    assert updated["status"] == {"phase": "Ready"}
    assert updated["spec"] == {"size": 2}

    stale = dict(created, spec={"size": 3})
    with pytest.raises(ApiException) as conflict:
        cluster.custom.replace_namespaced_custom_object(*api, "w", stale)
    assert conflict.value.status == 409

    stale_status = dict(created, status={"phase": "Failed"})
    with pytest.raises(ApiException) as status_conflict:
        cluster.custom.replace_namespaced_custom_object_status(*api, "w", stale_status)
    assert status_conflict.value.status == 409


def test_rbac_denies_a_service_account_until_a_role_allows_it(cluster: Cluster, namespace: str) -> None:
    cluster.core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader"))
    )
    with cluster.impersonate(f"system:serviceaccount:{namespace}:reader") as api_client:
        as_reader = client.CoreV1Api(api_client)
        with pytest.raises(ApiException) as denied:
            as_reader.list_namespaced_secret(namespace)
        assert denied.value.status == 403

        cluster.rbac.create_namespaced_role(
            namespace,
            client.V1Role(
                metadata=client.V1ObjectMeta(name="secret-reader"),
                rules=[client.V1PolicyRule(api_groups=[""], resources=["secrets"], verbs=["list"])],
            ),
        )
        cluster.rbac.create_namespaced_role_binding(
            namespace,
            client.V1RoleBinding(
                metadata=client.V1ObjectMeta(name="secret-reader"),
                role_ref=client.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="Role", name="secret-reader"
                ),
                subjects=[client.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=namespace)],
            ),
        )

        def allowed() -> bool:
            try:
                as_reader.list_namespaced_secret(namespace)
            except ApiException as error:
                if error.status != 403:
                    raise
                return False
            return True

        wait_for(allowed, timeout=15, message="the RoleBinding to let the ServiceAccount list secrets")
        with pytest.raises(ApiException) as elsewhere:
            as_reader.list_namespaced_secret("default")
        assert elsewhere.value.status == 403


@pytest.mark.slow
def test_a_port_taken_before_a_component_binds_it_is_replaced(
    controlplane_binaries: Binaries, tmp_path: Path
) -> None:
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    picks: list[int] = []

    def picker(count: int) -> list[int]:
        """The first pick for each component includes the taken port; later picks are really free."""
        picks.append(count)
        first_for_component = len(picks) in (1, 3, 5)
        return [taken, *pick_free_ports(count - 1)] if first_for_component else pick_free_ports(count)

    try:
        with ControlPlane.start(
            tmp_path,
            bin_dir=controlplane_binaries.bin_dir,
            die_with_parent=True,
            port_picker=picker,
            timeout=90,
        ) as plane:
            assert plane.readyz() == (200, "ok")
            assert f":{taken}" not in plane.server
    finally:
        squatter.close()
    assert picks == [2, 2, 1, 1, 1, 1]  # every component was given the taken port once, then new ones
    logs = "\n".join(log_tails(tmp_path, lines=2000).values())
    assert logs.count("address already in use") >= 3
