"""On real pods: a renewal restarts a Deployment, the new pods serve the new certificate, no handshake fails.

A 2-replica Deployment with a readiness probe runs a mutual-TLS server from its mounted Secret on the
test node. A client outside the pods handshakes every 200 ms with a ready endpoint of its Service. The
certificate is renewed (``mtls.dev/renew-requested-at``); the operator restarts the Deployment; the
rolling update (maxUnavailable 0) replaces both pods. Every handshake must succeed, and at the end both
new pods serve the new serial number.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from helpers import wait_for
from mtls_objects import create_certificate, create_issuer, get, self_signed, wait_issuer_ready, wait_ready
from node_workloads import (
    Prober,
    client_context,
    running_pods,
    server_configmap,
    server_pod_spec,
    service,
    template,
    wait_rollout,
)
from operator_process import OperatorProcess

ANN_RENEW = "mtls.dev/renew-requested-at"
# Restarts as soon as the renewal is written (the defaults pace restarts over minutes).
PROMPT_ROLLOUTS = {"MTLS_ROLLOUT_COALESCE": "1", "MTLS_ROLLOUT_MIN_INTERVAL": "1"}


@pytest.fixture
def own_operator(own_namespace: str, crds: Any, tmp_path: Path) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(
        crds.kubeconfig, tmp_path / "operator.log", "--namespace", own_namespace, env=PROMPT_ROLLOUTS
    )
    proc.start()
    yield proc
    proc.stop()


def request_renewal(cluster: Any, namespace: str, name: str) -> None:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    cluster.custom.patch_namespaced_custom_object(
        "mtls.dev", "v1alpha1", namespace, "mtlscertificates", name, {"metadata": {"annotations": {ANN_RENEW: stamp}}}
    )


def issue_server_and_client(cluster: Any, namespace: str, server: str) -> None:
    create_issuer(cluster, namespace, "ca", self_signed("ca"))
    wait_issuer_ready(cluster, namespace, "ca")
    create_certificate(
        cluster, namespace, server, {"issuerRef": {"name": "ca"}, "secretName": f"{server}-tls", "dnsNames": [server]}
    )
    create_certificate(
        cluster,
        namespace,
        "client",
        {"issuerRef": {"name": "ca"}, "secretName": "client-tls", "commonName": "client", "usages": ["client auth"]},
    )
    wait_ready(cluster, namespace, server)
    wait_ready(cluster, namespace, "client")


def test_renewal_restarts_the_deployment_and_no_handshake_fails(
    node: Any, cluster: Any, own_namespace: str, own_operator: OperatorProcess, tmp_path: Path
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

    prober = Prober(node, cluster, ns, "web", client_context(cluster, ns, "client-tls", tmp_path / "client"), "web")
    prober.start()
    try:
        wait_for(lambda: len(prober.seen(serial1)) == 2, timeout=30, message="both pods serve the first serial")
        renewal_requested = time.monotonic()
        request_renewal(cluster, ns, "web")
        renewed = wait_for(
            lambda: (c := get(cluster, ns, "mtlscertificates", "web"))["status"].get("revision", 1) >= 2 and c,
            timeout=60,
            message="the certificate renewed",
        )
        serial2 = int(renewed["status"]["serialNumber"], 16)
        assert serial2 != serial1
        # The operator restarts the Deployment: a new template, then new pods that replace the old ones.
        wait_for(
            lambda: {p.metadata.uid for p in running_pods(cluster, ns, "web")}.isdisjoint(first_pods)
            and len(running_pods(cluster, ns, "web")) == 2,
            timeout=120,
            interval=0.5,
            message="two new pods ready, none of the first left",
        )
        wait_rollout(cluster, ns, "web", timeout=60)
        new_addresses = {p.status.pod_ip for p in running_pods(cluster, ns, "web")}
        wait_for(
            lambda: prober.seen(serial2) >= new_addresses, timeout=30, message="both new pods serve the new serial"
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
    print(f"handshakes through the restart: total={total} failed={len(failed)} new-serial={len(prober.seen(serial2))}")
    assert not failed, f"{len(failed)} of {total} handshakes failed: {failed[:5]}"
    # The probe covered the whole restart: the old pods answered after the renewal, the new ones after it.
    assert any(a.serial == serial1 and a.at > renewal_requested for a in prober.attempts)
    assert sum(a.serial == serial2 for a in prober.attempts) >= 10
    assert after and all(a.serial == serial2 for a in after), "a new pod served the old serial"
    assert {p.metadata.uid for p in running_pods(cluster, ns, "web")}.isdisjoint(first_pods)
