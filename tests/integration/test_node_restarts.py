"""On real pods: a StatefulSet and a DaemonSet that mount a Secret are restarted when it is renewed.

Each runs the mutual-TLS server of node_workloads (it reads its certificate once, at start). After the
renewal the operator restarts both; new pods (new UIDs) run and serve the new serial number, which a
client reads in a handshake with each pod.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes import client
from node_workloads import (
    client_context,
    handshake,
    issue_server_and_client,
    print_wide,
    request_renewal,
    running_pods,
    server_configmap,
    server_pod_spec,
    template,
    wait_rollout,
)

from helpers import wait_for
from mtls_objects import get
from operator_process import OperatorProcess


def serials_served(node: Any, cluster: Any, ns: str, app: str, context: Any) -> dict[str, int]:
    """Pod UID -> the serial number it serves, for every running, ready pod of `app` (certificate "db")."""
    return {
        p.metadata.uid: handshake(node, context, p.status.pod_ip, "db")
        for p in running_pods(cluster, ns, app)
    }


def test_statefulset_and_daemonset_restart_for_real_on_renewal(
    node: Any, cluster: Any, own_namespace: str, prompt_operator: OperatorProcess, tmp_path: Path
) -> None:
    ns = own_namespace
    issue_server_and_client(cluster, ns, "db")
    cluster.core.create_namespaced_config_map(ns, server_configmap(ns))
    # Both mount the same Secret: one renewal restarts both.
    spec = server_pod_spec(node.operator_image, "db-tls")
    cluster.apps.create_namespaced_stateful_set(
        ns,
        client.V1StatefulSet(
            metadata=client.V1ObjectMeta(name="db"),
            spec=client.V1StatefulSetSpec(
                service_name="db",
                replicas=1,
                selector=client.V1LabelSelector(match_labels={"app": "db"}),
                template=template("db", spec),
            ),
        ),
    )
    cluster.apps.create_namespaced_daemon_set(
        ns,
        client.V1DaemonSet(
            metadata=client.V1ObjectMeta(name="agent"),
            spec=client.V1DaemonSetSpec(
                selector=client.V1LabelSelector(match_labels={"app": "agent"}),
                template=template("agent", server_pod_spec(node.operator_image, "db-tls")),
            ),
        ),
    )
    wait_rollout(cluster, ns, "db", "StatefulSet", timeout=120)
    wait_rollout(cluster, ns, "agent", "DaemonSet", timeout=120)
    context = client_context(cluster, ns, "client-tls", tmp_path / "client")
    serial1 = int(get(cluster, ns, "mtlscertificates", "db")["status"]["serialNumber"], 16)
    before = {app: serials_served(node, cluster, ns, app, context) for app in ("db", "agent")}
    assert all(list(served.values()) == [serial1] for served in before.values()), before

    request_renewal(cluster, ns, "db")
    renewed = wait_for(
        lambda: (c := get(cluster, ns, "mtlscertificates", "db"))["status"].get("revision", 1) >= 2 and c,
        timeout=60,
        message="the certificate renewed",
    )
    serial2 = int(renewed["status"]["serialNumber"], 16)
    assert serial2 != serial1
    for app, kind in (("db", "StatefulSet"), ("agent", "DaemonSet")):
        wait_for(
            lambda app=app: (
                (pods := running_pods(cluster, ns, app))
                and all(p.metadata.uid not in before[app] for p in pods)
            ),
            timeout=120,
            interval=0.5,
            message=f"{kind} {app} restarted: a new pod",
        )
        wait_rollout(cluster, ns, app, kind, timeout=60)
        after = serials_served(node, cluster, ns, app, context)
        assert after and set(after.values()) == {serial2}, f"{kind} {app} serves {after}, not {serial2:x}"
        assert not set(after) & set(before[app]), f"{kind} {app} kept a pod from before the renewal"
    assert "agent-" in print_wide(cluster)
