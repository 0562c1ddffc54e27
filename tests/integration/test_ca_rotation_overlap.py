"""CA rotation with overlap, end to end, while a continuous mTLS probe runs both ways between two workloads.

A root issuer with a trust bundle, and an intermediate issuer under it. Workload "a" holds a certificate of
the intermediate and trusts the ca.crt of its own Secret; workload "b" holds a certificate of the root and
trusts the bundle ConfigMap. No kubelet runs here, so the probe plays their pods: each side (re)loads its
files from the API only when the operator restarts its Deployment (a new pod-template stamp), exactly what
a new pod would see, and restarts are paced one at a time, so a re-issued peer meets a not-yet-restarted
one. Every second each side handshakes with the other (pyOpenSSL, mutual TLS 1.3). The root's rotation must
walk its phases with zero failed handshakes, carry the overlap down to the intermediate's leaves, and end
with the old root gone from the bundle and from every leaf's ca.crt.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from cryptography import x509
from kubernetes import client

from helpers import wait_for
from mtls_objects import (
    create_certificate,
    create_issuer,
    get,
    secret_data,
    self_signed,
    wait_issuer_ready,
    wait_ready,
)
from mtls_operator.cli.tls_results import HandshakeResult
from mtls_operator.cli.tlsio import EchoServer, client_handshake
from operator_process import OperatorProcess

ORDER = ["Stable", "NewCAGenerated", "BundlesOverlap", "ConsumersRestarted", "LeavesReissued", "OldCADropped"]
STAMP = "mtls.dev/tls-stamp"


def workload(name: str, secret: str, bundle: str) -> client.V1Deployment:
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels={"app": name}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": name}),
                spec=client.V1PodSpec(
                    containers=[client.V1Container(name="app", image="registry.k8s.io/pause:3.10")],
                    volumes=[
                        client.V1Volume(name="tls", secret=client.V1SecretVolumeSource(secret_name=secret)),
                        client.V1Volume(name="trust", config_map=client.V1ConfigMapVolumeSource(name=bundle)),
                    ],
                ),
            ),
        ),
    )


class Pod:
    """One workload's pod: the files it would have mounted at its start, and a server on them."""

    def __init__(self, cluster: Any, namespace: str, name: str, secret: str, trust: str, tmp: Path) -> None:
        self.cluster, self.namespace, self.name, self.secret = cluster, namespace, name, secret
        self.trust = trust  # "secret": its Secret's ca.crt; else the name of the bundle ConfigMap
        self.dir = tmp / name
        self.dir.mkdir()
        self.stamp: str | None = None
        self.generation = 0
        self.restarts = 0
        self.server: EchoServer | None = None

    def current_stamp(self) -> str | None:
        dep = self.cluster.apps.read_namespaced_deployment(self.name, self.namespace)
        return (dep.spec.template.metadata.annotations or {}).get(STAMP)

    def start(self) -> None:
        """Load what a new pod would mount now, and serve with it."""
        data = secret_data(self.cluster, self.namespace, self.secret)
        if self.trust == "secret":
            trust = data["ca.crt"].decode()
        else:
            trust = self.cluster.core.read_namespaced_config_map(self.trust, self.namespace).data["ca.crt"]
        self.generation += 1
        gen = self.dir / str(self.generation)
        gen.mkdir()
        (gen / "tls.crt").write_bytes(data["tls.crt"])
        (gen / "tls.key").write_bytes(data["tls.key"])
        (gen / "ca.crt").write_text(trust)
        self.files = gen
        if self.server is not None:
            self.server.stop()
        self.server = EchoServer(gen / "tls.crt", gen / "tls.key", gen / "ca.crt").start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def restarted(self) -> bool:
        stamp = self.current_stamp()
        if stamp == self.stamp:
            return False
        self.stamp = stamp
        self.restarts += 1
        return True

    def call(self, peer: Pod, server_name: str) -> HandshakeResult:
        """A mutual-TLS handshake from this pod (client) to ``peer`` (server)."""
        assert peer.server is not None
        f = self.files
        return client_handshake(
            "127.0.0.1", peer.server.port, cert=f / "tls.crt", key=f / "tls.key", ca=f / "ca.crt",
            server_name=server_name,
        )  # fmt: skip


def _roots(pem: str) -> set[str]:
    return {
        c.fingerprint(c.signature_hash_algorithm).hex() for c in x509.load_pem_x509_certificates(pem.encode())
    }  # type: ignore[arg-type]


def test_ca_rotation_with_zero_failed_handshakes(
    crds: Any, cluster: Any, own_namespace: str, tmp_path: Path
) -> None:
    ns = own_namespace
    env = {
        "MTLS_ROLLOUT_COALESCE": "1",
        "MTLS_ROLLOUT_MIN_INTERVAL": "1",
        "MTLS_ROLLOUT_TIMEOUT": "2",
        "MTLS_ROLLOUT_MAX_IN_FLIGHT": "1",
        "MTLS_ROLLOUT_MAX_PER_HOUR": "50",
    }
    op = OperatorProcess(cluster.kubeconfig, tmp_path / "op.log", "--namespace", ns, env=env).start()
    stop = threading.Event()
    results: list[tuple[str, HandshakeResult]] = []
    phases: list[str] = []
    pods: list[Pod] = []
    try:
        create_issuer(
            cluster, ns, "root", {**self_signed("root"), "trustBundle": {"configMapName": "mesh-bundle"}}
        )
        wait_issuer_ready(cluster, ns, "root")
        create_issuer(
            cluster,
            ns,
            "team",
            {"intermediate": {"issuerRef": {"name": "root"}, "secretName": "team-ca", "commonName": "team"}},
        )
        wait_issuer_ready(cluster, ns, "team")
        short = {"duration": "2m", "renewBefore": "10s"}
        create_certificate(
            cluster,
            ns,
            "a",
            {**short, "issuerRef": {"name": "team"}, "secretName": "a-tls", "dnsNames": ["a.example"]},
        )
        create_certificate(
            cluster,
            ns,
            "b",
            {**short, "issuerRef": {"name": "root"}, "secretName": "b-tls", "dnsNames": ["b.example"]},
        )
        wait_ready(cluster, ns, "a")
        wait_ready(cluster, ns, "b")
        old_bundle = wait_for(lambda: _read_bundle(cluster, ns), timeout=30, message="the trust bundle")
        old_roots = _roots(old_bundle)
        assert len(old_roots) == 1
        assert _roots(secret_data(cluster, ns, "a-tls")["ca.crt"].decode()) == old_roots
        cluster.apps.create_namespaced_deployment(ns, workload("a", "a-tls", "mesh-bundle"))
        cluster.apps.create_namespaced_deployment(ns, workload("b", "b-tls", "mesh-bundle"))
        a = Pod(cluster, ns, "a", "a-tls", "secret", tmp_path)
        b = Pod(cluster, ns, "b", "b-tls", "mesh-bundle", tmp_path)
        pods.extend([a, b])
        for pod in pods:
            pod.restarted()
            pod.start()

        def probe() -> None:
            while not stop.is_set():
                for pod in pods:
                    if pod.restarted():
                        pod.start()
                results.append(("b->a", b.call(a, "a.example")))
                results.append(("a->b", a.call(b, "b.example")))
                stop.wait(1.0)

        def watch_phases() -> None:
            while not stop.is_set():
                phase = (
                    (get(cluster, ns, "mtlsissuers", "root").get("status") or {}).get("rotation") or {}
                ).get("phase")
                if phase and (not phases or phases[-1] != phase):
                    phases.append(phase)
                stop.wait(0.3)

        threads = [
            threading.Thread(target=probe, daemon=True),
            threading.Thread(target=watch_phases, daemon=True),
        ]
        for t in threads:
            t.start()
        wait_for(lambda: len(results) >= 4, timeout=30, message="the probe running")
        assert all(r.ok for _, r in results), [r.error for _, r in results if not r.ok]

        # On demand, as a user would: `mtlsctl rotate-ca` annotates the issuer, right after it was created
        # (a request token, not a timestamp, says which request it is).
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
        assert "CA rotation requested" in cli.stdout

        wait_for(lambda: "BundlesOverlap" in phases, timeout=60, message="the overlap phase")
        overlap = _roots(_read_bundle(cluster, ns) or "")
        assert len(overlap) == 2, "the bundle holds the old and the new root"
        assert old_roots < overlap
        wait_for(
            lambda: _roots(secret_data(cluster, ns, "a-tls")["ca.crt"].decode()) == overlap,
            timeout=60,
            message="the intermediate's leaf carries both roots in ca.crt during the overlap",
        )

        def finished() -> bool:
            return len(phases) >= 3 and phases[-1] == "Stable"

        wait_for(
            finished, timeout=400, interval=1, message=f"the rotation to finish (phases so far: {phases})"
        )
        new_roots = _roots(_read_bundle(cluster, ns) or "")
        wait_for(
            lambda: _roots(secret_data(cluster, ns, "a-tls")["ca.crt"].decode()) == new_roots,
            timeout=60,
            message="the old root gone from the leaves' ca.crt too",
        )
        # The last restarts (the bundle without the old root) come after the rotation's end, one workload at
        # a time (one rollout in flight, each given up on after 2 s here, where no kubelet runs pods).
        wait_for(
            lambda: a.restarts >= 3 and b.restarts >= 3,
            timeout=60,
            message=f"restarts for the overlap, the new leaf and the end (a {a.restarts}, b {b.restarts})",
        )
        stop.set()
        for t in threads:
            t.join(timeout=10)
        assert len(new_roots) == 1
        assert not (new_roots & old_roots), "the old CA is gone from the bundle"
        failed = [(way, r.error) for way, r in results if not r.ok]
        assert not failed, f"{len(failed)} of {len(results)} handshakes failed: {failed[:3]}"
        assert len(results) > 120, "the probe ran both ways through the whole rotation"
        ordered = [p for p in phases if p in ORDER]
        assert [ORDER.index(p) for p in ordered[:-1]] == sorted(ORDER.index(p) for p in ordered[:-1]), phases
        assert {"BundlesOverlap", "LeavesReissued"} <= set(phases), phases
        root = get(cluster, ns, "mtlsissuers", "root")
        token = re.search(r"rotate-requested-at=(\S+);", cli.stdout)
        assert token is not None, cli.stdout
        assert root["status"]["rotation"]["lastRequest"] == token.group(1), "the request recorded as acted on"
        assert a.restarts >= 3 and b.restarts >= 3, "restarted for the overlap, the new leaf and the end"
        ca = x509.load_pem_x509_certificate(secret_data(cluster, ns, "root-ca")["tls.crt"])
        assert ca.fingerprint(ca.signature_hash_algorithm).hex() in new_roots  # type: ignore[arg-type]
        assert not any(
            s.metadata.name == "root-ca-next" for s in cluster.core.list_namespaced_secret(ns).items
        )
        team_chain = x509.load_pem_x509_certificates(secret_data(cluster, ns, "team-ca")["tls.crt"])
        team_chain[0].verify_directly_issued_by(ca)
        leaf = x509.load_pem_x509_certificate(secret_data(cluster, ns, "a-tls")["tls.crt"])
        leaf.verify_directly_issued_by(team_chain[0])
    finally:
        stop.set()
        for pod in pods:
            pod.stop()
        op.stop()


def _read_bundle(cluster: Any, ns: str) -> str | None:
    from kubernetes.client.rest import ApiException

    try:
        return str(cluster.core.read_namespaced_config_map("mesh-bundle", ns).data["ca.crt"])
    except ApiException:
        return None
