"""CA rotation with overlap on real pods: two workloads handshake through the whole rotation, none fails.

The real-pod counterpart of test_ca_rotation_overlap.py (which plays the pods with a probe on the host).
Server `a` (a Deployment) serves its certificate and trusts the issuer's bundle ConfigMap; client `b`
(a Deployment) handshakes with a ready endpoint of `a` every second, with its own certificate, trusting
the same bundle. Both load their files once, at start, so only the operator's restarts make them see a
new leaf or bundle. The client finds `a` through the API (its ServiceAccount may list EndpointSlices)
and appends one JSON line per handshake to a file in a hostPath directory, which the test reads:
every line of every client pod, through `mtlsctl rotate-ca` to the end of the rotation, must be a
success.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from kubernetes import client
from node_workloads import (
    running_pods,
    server_configmap,
    server_pod_spec,
    service,
    template,
    wait_rollout,
)

from helpers import wait_for
from mtls_objects import create_certificate, create_issuer, get, self_signed, wait_issuer_ready, wait_ready
from mtls_operator.testing.node import TOLERATION
from operator_process import OperatorProcess

CLIENT = """\
import json, os, socket, ssl, time, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
token, ns = open(sa + "/token").read(), open(sa + "/namespace").read()
api = ssl.create_default_context(cafile=sa + "/ca.crt")
url = ("https://%s:%s/apis/discovery.k8s.io/v1/namespaces/%s/endpointslices"
       "?labelSelector=kubernetes.io/service-name=a") % (
    os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"], ns)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations("/trust/ca.crt")
ctx.load_cert_chain("/tls/tls.crt", "/tls/tls.key")
out = open("/results/handshakes.jsonl", "a", buffering=1)
turn = 0
while True:
    at = time.time()
    try:
        req = urllib.request.Request(url, headers={"Authorization": "Bearer " + token})
        slices = json.load(urllib.request.urlopen(req, context=api, timeout=5))["items"]
        ready = sorted(a for s in slices for e in s.get("endpoints") or []
                       if (e.get("conditions") or {}).get("ready") for a in e["addresses"])
        if not ready:
            print(json.dumps({"at": at, "skip": "no ready endpoint"}), file=out)
        else:
            address = ready[turn % len(ready)]
            turn += 1
            with socket.create_connection((address, 8443), timeout=5) as raw:
                with ctx.wrap_socket(raw, server_hostname="a.example") as tls:
                    tls.recv(3)
            print(json.dumps({"at": at, "ok": True, "address": address}), file=out)
    except Exception as error:
        print(json.dumps({"at": at, "ok": False, "error": repr(error)}), file=out)
    time.sleep(1)
"""

ORDER = ["Stable", "NewCAGenerated", "BundlesOverlap", "ConsumersRestarted", "LeavesReissued", "OldCADropped"]


def client_deployment(image: str, results: Any) -> client.V1Deployment:
    spec = client.V1PodSpec(
        tolerations=[client.V1Toleration(**TOLERATION)],
        dns_policy="Default",
        termination_grace_period_seconds=2,
        containers=[
            client.V1Container(
                name="client",
                image=image,
                image_pull_policy="Never",
                command=["python3", "/app/client.py"],
                volume_mounts=[
                    client.V1VolumeMount(name="tls", mount_path="/tls", read_only=True),
                    client.V1VolumeMount(name="trust", mount_path="/trust", read_only=True),
                    client.V1VolumeMount(name="app", mount_path="/app", read_only=True),
                    client.V1VolumeMount(name="results", mount_path="/results"),
                ],
            )
        ],
        volumes=[
            client.V1Volume(name="tls", secret=client.V1SecretVolumeSource(secret_name="b-tls")),
            client.V1Volume(name="trust", config_map=client.V1ConfigMapVolumeSource(name="mesh-bundle")),
            client.V1Volume(name="app", config_map=client.V1ConfigMapVolumeSource(name="tls-client")),
            # Survives the pods (a deleted pod's logs go with it): every client pod appends here.
            client.V1Volume(name="results", host_path=client.V1HostPathVolumeSource(path=str(results))),
        ],
    )
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name="b"),
        spec=client.V1DeploymentSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels={"app": "b"}),
            template=template("b", spec),
        ),
    )


def handshakes(results: Any) -> list[dict[str, Any]]:
    """Every line the client pods (all of them, old and new) wrote to the shared results directory."""
    path = results / "handshakes.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def test_ca_rotation_on_real_pods_with_zero_failed_handshakes(
    node: Any, crds: Any, cluster: Any, own_namespace: str, tmp_path: Any
) -> None:
    ns = own_namespace
    env = {"MTLS_ROLLOUT_COALESCE": "1", "MTLS_ROLLOUT_MIN_INTERVAL": "1", "MTLS_ROLLOUT_MAX_PER_HOUR": "50"}
    op = OperatorProcess(cluster.kubeconfig, tmp_path / "op.log", "--namespace", ns, env=env).start()
    phases: list[str] = []
    results = node.node_dir / "results" / ns
    results.mkdir(parents=True)
    results.chmod(0o777)  # the client runs as uid 65532
    try:
        create_issuer(
            cluster, ns, "root", {**self_signed("root"), "trustBundle": {"configMapName": "mesh-bundle"}}
        )
        wait_issuer_ready(cluster, ns, "root")
        short = {"issuerRef": {"name": "root"}, "duration": "2m", "renewBefore": "10s"}
        create_certificate(cluster, ns, "a", {**short, "secretName": "a-tls", "dnsNames": ["a.example"]})
        create_certificate(cluster, ns, "b", {**short, "secretName": "b-tls", "commonName": "b"})
        wait_ready(cluster, ns, "a")
        wait_ready(cluster, ns, "b")
        wait_for(
            lambda: cluster.core.read_namespaced_config_map("mesh-bundle", ns),
            timeout=30,
            ignore=(client.ApiException,),
            message="the trust bundle",
        )
        # The client pod's ServiceAccount may list EndpointSlices, as kube-proxy would, to find `a`.
        rbac = cluster.rbac
        rbac.create_namespaced_role(
            ns,
            client.V1Role(
                metadata=client.V1ObjectMeta(name="endpoints-reader"),
                rules=[
                    client.V1PolicyRule(
                        api_groups=["discovery.k8s.io"], resources=["endpointslices"], verbs=["list"]
                    )
                ],
            ),
        )
        rbac.create_namespaced_role_binding(
            ns,
            client.V1RoleBinding(
                metadata=client.V1ObjectMeta(name="endpoints-reader"),
                role_ref=client.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="Role", name="endpoints-reader"
                ),
                subjects=[client.RbacV1Subject(kind="ServiceAccount", name="default", namespace=ns)],
            ),
        )
        cluster.core.create_namespaced_config_map(ns, server_configmap(ns))
        cluster.core.create_namespaced_config_map(
            ns,
            client.V1ConfigMap(metadata=client.V1ObjectMeta(name="tls-client"), data={"client.py": CLIENT}),
        )
        cluster.core.create_namespaced_service(ns, service(ns, "a"))
        cluster.apps.create_namespaced_deployment(
            ns,
            client.V1Deployment(
                metadata=client.V1ObjectMeta(name="a"),
                spec=client.V1DeploymentSpec(
                    replicas=1,
                    selector=client.V1LabelSelector(match_labels={"app": "a"}),
                    strategy=client.V1DeploymentStrategy(
                        type="RollingUpdate",
                        rolling_update=client.V1RollingUpdateDeployment(max_unavailable=0, max_surge=1),
                    ),
                    template=template(
                        "a", server_pod_spec(node.operator_image, "a-tls", bundle="mesh-bundle")
                    ),
                ),
            ),
        )
        cluster.apps.create_namespaced_deployment(ns, client_deployment(node.operator_image, results))
        wait_rollout(cluster, ns, "a", timeout=120)
        wait_rollout(cluster, ns, "b", timeout=120)
        wait_for(
            lambda: sum(1 for h in handshakes(results) if h.get("ok")) >= 3,
            timeout=60,
            message=f"the client pod handshaking (so far: {handshakes(results)[-3:]})",
        )
        first_clients = {p.metadata.uid for p in running_pods(cluster, ns, "b")}

        cli = subprocess.run(
            [
                sys.executable,
                "-m",
                "mtls_operator.cli.main",
                "rotate-ca",
                "root",
                "-n",
                ns,
                "--kubeconfig",
                str(cluster.kubeconfig),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert cli.returncode == 0, cli.stderr

        def rotation_done() -> bool:
            phase = ((get(cluster, ns, "mtlsissuers", "root").get("status") or {}).get("rotation") or {}).get(
                "phase"
            )
            if phase and (not phases or phases[-1] != phase):
                phases.append(phase)
            return len(phases) >= 3 and phases[-1] == "Stable"

        wait_for(rotation_done, timeout=300, interval=0.3, message="the rotation to finish")
        wait_rollout(cluster, ns, "a", timeout=60)
        wait_rollout(cluster, ns, "b", timeout=60)
        finished_at = time.time()
        wait_for(
            lambda: sum(1 for h in handshakes(results) if h.get("ok") and h["at"] > finished_at) >= 3,
            timeout=60,
            message="handshakes after the rotation",
        )
    finally:
        op.stop()

    lines = handshakes(results)
    ok = [h for h in lines if h.get("ok")]
    failed = [h for h in lines if h.get("ok") is False]
    print(
        f"CA rotation on real pods: phases {phases}; "
        f"handshakes total={len(ok) + len(failed)} failed={len(failed)}"
    )
    assert not failed, f"{len(failed)} of {len(lines)} handshakes failed: {failed[:3]}"
    assert {"BundlesOverlap", "LeavesReissued"} <= set(phases), phases
    ordered = [p for p in phases if p in ORDER]
    assert [ORDER.index(p) for p in ordered[:-1]] == sorted(ORDER.index(p) for p in ordered[:-1]), phases
    assert not first_clients & {p.metadata.uid for p in running_pods(cluster, ns, "b")}, (
        "the client restarted"
    )
    assert len(ok) > 30, "the client ran through the whole rotation"
