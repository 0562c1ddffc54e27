"""`helm install` of the chart gives a running operator on a real node.

The locally built operator image runs as two replicas under the chart's ServiceAccount: kopf's in-cluster
login (the projected token, ca.crt and the `kubernetes` Service at 10.0.0.1:443, served inside the node's
namespace) is the only credential the pods have. One replica holds the Lease and issues; deleting it
hands the Lease over to the other, which issues from then on without re-issuing what exists. Both pods
pass their readiness probe and no container restarts; then a frozen replica is taken out of readiness
and restarted by its liveness probe.
"""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from kubernetes import client
from node_workloads import print_wide

from helpers import wait_for
from mtls_objects import create_certificate, create_issuer, get, self_signed, wait_issuer_ready, wait_ready
from mtls_operator.testing.node import TAINT_KEY

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "mtls-operator"
RELEASE = "e2e"
LEASE = "mtls-operator"


def helm_run(helm: str, cluster: Any, *args: str, timeout: float = 300) -> str:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "HELM_CACHE_HOME": "/tmp/helm-cache"}
    result = subprocess.run(
        [helm, *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def parse_time(text: str | datetime.datetime) -> datetime.datetime:
    if isinstance(text, datetime.datetime):
        return text
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def operator_pods(cluster: Any, ns: str) -> list[client.V1Pod]:
    pods = cluster.core.list_namespaced_pod(ns, label_selector=f"app.kubernetes.io/instance={RELEASE}").items
    return [p for p in pods if p.metadata.deletion_timestamp is None]


def ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def test_helm_install_runs_two_replicas_in_cluster_with_one_leader_and_a_handover(
    helm: str, node: Any, cluster: Any, crds: Any, own_namespace: str
) -> None:
    ns = own_namespace
    coordination = client.CoordinationV1Api(cluster.api_client)
    repository, _, tag = node.operator_image.rpartition(":")
    helm_run(
        helm,
        cluster,
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        ns,
        "--set",
        f"image.repository={repository}",
        "--set",
        f"image.tag={tag}",
        "--set",
        "image.pullPolicy=Never",
        # The CRDs are the suite's (applied from crds/ by the `crds` fixture).
        "--set",
        "crds.enabled=false",
        "--set",
        f"scope.namespaces={{{ns}}}",
        "--set",
        f"tolerations[0].key={TAINT_KEY}",
        "--set",
        "tolerations[0].operator=Exists",
        "--set",
        "tolerations[0].effect=NoSchedule",
        # kopf logs in at https://kubernetes.default.svc; the node has no cluster DNS: /etc/hosts does it.
        "--set",
        "hostAliases[0].ip=10.0.0.1",
        "--set",
        "hostAliases[0].hostnames={kubernetes.default.svc}",
        # Probes every 2 s, so that the liveness part below takes seconds, not a minute.
        "--set",
        "livenessProbe.periodSeconds=2",
        "--set",
        "livenessProbe.timeoutSeconds=1",
        "--set",
        "readinessProbe.periodSeconds=2",
        "--set",
        "readinessProbe.timeoutSeconds=1",
        "--set",
        "readinessProbe.failureThreshold=1",
        "--wait",
        "--timeout",
        "4m",
    )
    pods = wait_for(
        lambda: (p := operator_pods(cluster, ns)) and len(p) == 2 and all(ready(x) for x in p) and p,
        timeout=60,
        message="two ready operator pods",
    )
    for pod in pods:
        assert pod.spec.service_account_name == f"{RELEASE}-mtls-operator"
        container = pod.spec.containers[0]
        assert container.image == node.operator_image
        assert not any(e.name == "KUBECONFIG" for e in container.env or []), "in-cluster login only"
        assert container.liveness_probe is not None and container.readiness_probe is not None
        assert pod.spec.node_name == node.name

    names = {p.metadata.name for p in pods}
    lease = wait_for(
        lambda: (le := coordination.read_namespaced_lease(LEASE, ns)) and le.spec.holder_identity and le,
        timeout=60,
        ignore=(client.ApiException,),
        message="a leader in the Lease",
    )
    leader = lease.spec.holder_identity.rsplit("_", 1)[0]
    assert leader in names, f"the Lease names {lease.spec.holder_identity}, not one of {names}"
    transitions = lease.spec.lease_transitions or 0

    # The leader issues: an issuer and a certificate, through its in-cluster credentials only.
    create_issuer(cluster, ns, "ca", self_signed("ca"))
    wait_issuer_ready(cluster, ns, "ca", timeout=90)
    create_certificate(
        cluster, ns, "before", {"issuerRef": {"name": "ca"}, "secretName": "before-tls", "commonName": "b"}
    )
    before = wait_ready(cluster, ns, "before", timeout=90)["status"]
    secret_version = cluster.core.read_namespaced_secret("before-tls", ns).metadata.resource_version

    # Delete the leader pod: another replica takes the Lease (the standby, or the pod that replaces the
    # deleted one if it starts and asks first: either is a handover).
    deleted_at = datetime.datetime.now(datetime.UTC)
    cluster.core.delete_namespaced_pod(next(p.metadata.name for p in pods if p.metadata.name == leader), ns)
    handed = wait_for(
        lambda: (
            (le := coordination.read_namespaced_lease(LEASE, ns))
            and (le.spec.holder_identity or "").rsplit("_", 1)[0] not in ("", leader)
            and le
        ),
        timeout=90,
        interval=0.2,
        message="another replica takes the Lease",
    )
    standby = (handed.spec.holder_identity or "").rsplit("_", 1)[0]
    acquired = parse_time(handed.spec.acquire_time)
    handover = (acquired - deleted_at).total_seconds()
    print(
        f"leader handover: {leader} -> {standby}; leaseTransitions {transitions} -> "
        f"{handed.spec.lease_transitions}; acquireTime {handed.spec.acquire_time} is {handover:.1f}s "
        f"after the delete; renewTime {handed.spec.renew_time}; "
        f"leaseDuration {handed.spec.lease_duration_seconds}s"
    )
    assert handed.spec.lease_transitions == transitions + 1
    assert handover < handed.spec.lease_duration_seconds + 10

    # The new leader issues what is new, and re-issues nothing.
    create_certificate(
        cluster, ns, "after", {"issuerRef": {"name": "ca"}, "secretName": "after-tls", "commonName": "a"}
    )
    wait_ready(cluster, ns, "after", timeout=90)
    now = get(cluster, ns, "mtlscertificates", "before")["status"]
    assert (now["serialNumber"], now.get("revision")) == (before["serialNumber"], before.get("revision"))
    assert cluster.core.read_namespaced_secret("before-tls", ns).metadata.resource_version == secret_version

    # The Deployment replaces the deleted pod; both pods are ready and no container restarted.
    final = wait_for(
        lambda: (p := operator_pods(cluster, ns)) and len(p) == 2 and all(ready(x) for x in p) and p,
        timeout=90,
        message="two ready operator pods again",
    )
    restarts = {
        p.metadata.name: sum(c.restart_count for c in p.status.container_statuses or []) for p in final
    }
    assert restarts == dict.fromkeys(restarts, 0), restarts
    assert coordination.read_namespaced_lease(LEASE, ns).spec.holder_identity.startswith(standby)

    # Readiness and liveness: freeze the new standby's operator (SIGSTOP; its /healthz stops answering).
    # The readiness probe takes it out, the liveness probe restarts the container, and it comes back ready
    # as a standby while the leader keeps the Lease.
    spare = next(p for p in final if p.metadata.name != standby)
    os.kill(node.container_pid(spare.status.container_statuses[0].container_id), signal.SIGSTOP)

    def spare_pod() -> client.V1Pod:
        return cluster.core.read_namespaced_pod(spare.metadata.name, ns)

    wait_for(lambda: not ready(spare_pod()), timeout=30, message="the frozen pod marked not ready")
    revived = wait_for(
        lambda: (p := spare_pod()).status.container_statuses[0].restart_count >= 1 and ready(p) and p,
        timeout=120,
        interval=0.5,
        message="the liveness probe restarts the frozen container, which becomes ready again",
    )
    assert revived.status.container_statuses[0].last_state.terminated is not None
    assert coordination.read_namespaced_lease(LEASE, ns).spec.holder_identity.startswith(standby)
    assert spare.metadata.name in print_wide(cluster)
    helm_run(helm, cluster, "uninstall", RELEASE, "--namespace", ns, "--wait")
