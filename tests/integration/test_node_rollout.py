"""On real pods: a renewal restarts a Deployment, the new pods serve the new certificate, no handshake fails.

A 2-replica Deployment with a readiness probe runs a mutual-TLS server from its mounted Secret on the
test node. A client outside the pods handshakes every 200 ms with a ready endpoint of its Service. The
certificate is renewed (``mtls.dev/renew-requested-at``); the operator restarts the Deployment; the
rolling update (maxUnavailable 0) replaces both pods. Every handshake must succeed, and at the end both
new pods serve the new serial number.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from kubernetes import client
from node_workloads import (
    Prober,
    client_context,
    issue_server_and_client,
    request_renewal,
    running_pods,
    server_configmap,
    server_pod_spec,
    service,
    template,
    wait_rollout,
)

from helpers import wait_for
from mtls_objects import get
from operator_process import OperatorProcess


def test_renewal_restarts_the_deployment_and_no_handshake_fails(
    node: Any, cluster: Any, own_namespace: str, prompt_operator: OperatorProcess, tmp_path: Path
) -> None:
    ns = own_namespace
    issue_server_and_client(cluster, ns, "web")
    serial1 = int(get(cluster, ns, "mtlscertificates", "web")["status"]["serialNumber"], 16)
    cluster.core.create_namespaced_config_map(ns, server_configmap(ns))
    cluster.core.create_namespaced_service(ns, service(ns, "web"))
    cluster.apps.create_namespaced_deployment(
        ns,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="web"),
            spec=client.V1DeploymentSpec(
                replicas=2,
                selector=client.V1LabelSelector(match_labels={"app": "web"}),
                strategy=client.V1DeploymentStrategy(
                    type="RollingUpdate",
                    rolling_update=client.V1RollingUpdateDeployment(max_unavailable=0, max_surge=1),
                ),
                template=template("web", server_pod_spec(node.operator_image, "web-tls")),
            ),
        ),
    )
    wait_rollout(cluster, ns, "web", timeout=120)
    first_pods = {p.metadata.uid for p in running_pods(cluster, ns, "web")}
    assert len(first_pods) == 2

    prober = Prober(
        node, cluster, ns, "web", client_context(cluster, ns, "client-tls", tmp_path / "client"), "web"
    )
    prober.start()
    try:
        wait_for(
            lambda: len(prober.seen(serial1)) == 2, timeout=30, message="both pods serve the first serial"
        )
        renewal_requested = time.monotonic()
        request_renewal(cluster, ns, "web")
        renewed = wait_for(
            lambda: (
                (c := get(cluster, ns, "mtlscertificates", "web"))["status"].get("revision", 1) >= 2 and c
            ),
            timeout=60,
            message="the certificate renewed",
        )
        serial2 = int(renewed["status"]["serialNumber"], 16)
        assert serial2 != serial1
        # The operator restarts the Deployment: a new template, then new pods that replace the old ones.
        wait_for(
            lambda: (
                {p.metadata.uid for p in running_pods(cluster, ns, "web")}.isdisjoint(first_pods)
                and len(running_pods(cluster, ns, "web")) == 2
            ),
            timeout=120,
            interval=0.5,
            message="two new pods ready, none of the first left",
        )
        wait_rollout(cluster, ns, "web", timeout=60)
        new_addresses = {p.status.pod_ip for p in running_pods(cluster, ns, "web")}
        wait_for(
            lambda: prober.seen(serial2) >= new_addresses,
            timeout=30,
            message="both new pods serve the new serial",
        )
        rolled_out = time.monotonic()
        wait_for(
            lambda: sum(a.at > rolled_out for a in prober.attempts) >= 10,
            timeout=30,
            message="ten more handshakes after the rollout",
        )
    finally:
        prober.stop()

    total, failed = len(prober.attempts), prober.failed
    after = [a for a in prober.attempts if a.address in new_addresses]
    print(
        f"handshakes through the restart: total={total} failed={len(failed)} "
        f"new serial from {len(prober.seen(serial2))} pods"
    )
    assert not failed, f"{len(failed)} of {total} handshakes failed: {failed[:5]}"
    # The probe covered the whole restart: the old pods answered after the renewal, the new ones after it.
    assert any(a.serial == serial1 and a.at > renewal_requested for a in prober.attempts)
    assert sum(a.serial == serial2 for a in prober.attempts) >= 10
    assert after and all(a.serial == serial2 for a in after), "a new pod served the old serial"
    assert {p.metadata.uid for p in running_pods(cluster, ns, "web")}.isdisjoint(first_pods)
