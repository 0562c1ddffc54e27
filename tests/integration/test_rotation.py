"""Renewal with no human action, and paced restarts of the workloads that use a certificate.

Real kube-apiserver and kube-controller-manager: a pod-template change really makes a new ReplicaSet.
No kubelet runs, so Pods stay Pending and no rollout ever completes; the operator's rollout timeout is
what frees an in-flight slot here, which makes pacing observable: a stamp occupies a slot for exactly the
timeout.
"""

from __future__ import annotations

import base64
import itertools
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from kubernetes import client, watch

from helpers import wait_for
from mtls_objects import (
    byo_ca_metadata,
    condition,
    create_certificate,
    create_issuer,
    get,
    secret_data,
    self_signed,
    wait_issuer_ready,
    wait_ready,
)
from operator_process import OperatorProcess

STAMP = "mtls.dev/tls-stamp"


def deployment(name: str, secrets: list[str], replicas: int = 1) -> client.V1Deployment:
    volumes = [
        client.V1Volume(name=f"s{i}", secret=client.V1SecretVolumeSource(secret_name=s))
        for i, s in enumerate(secrets)
    ]
    mounts = [client.V1VolumeMount(name=f"s{i}", mount_path=f"/tls/{i}") for i in range(len(secrets))]
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels={"app": name}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": name}),
                spec=client.V1PodSpec(
                    containers=[
                        client.V1Container(
                            name="app", image="registry.k8s.io/pause:3.10", volume_mounts=mounts
                        )
                    ],
                    volumes=volumes,
                ),
            ),
        ),
    )


def replicasets(cluster: Any, namespace: str, app: str) -> list[Any]:
    return list(cluster.apps.list_namespaced_replica_set(namespace, label_selector=f"app={app}").items)


def revision(cluster: Any, namespace: str, name: str) -> int:
    return int(get(cluster, namespace, "mtlscertificates", name).get("status", {}).get("revision") or 0)


def _public_key(data: dict[str, bytes]) -> bytes:
    key = serialization.load_pem_private_key(data["tls.key"], None)
    return bytes(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def test_short_lived_certificates_renew_twice_and_roll_their_deployment(
    operator: Any, cluster: Any, namespace: str
) -> None:
    create_issuer(cluster, namespace, "ca", self_signed("ca"))
    wait_issuer_ready(cluster, namespace, "ca")
    short = {"issuerRef": {"name": "ca"}, "duration": "2m", "renewBefore": "90s"}
    create_certificate(
        cluster,
        namespace,
        "always",
        {**short, "secretName": "always-tls", "commonName": "a", "privateKey": {"rotationPolicy": "Always"}},
    )
    create_certificate(
        cluster,
        namespace,
        "never",
        {**short, "secretName": "never-tls", "commonName": "n", "privateKey": {"rotationPolicy": "Never"}},
    )
    wait_ready(cluster, namespace, "always")
    wait_ready(cluster, namespace, "never")
    cluster.apps.create_namespaced_deployment(namespace, deployment("user", ["always-tls"]))
    cluster.apps.create_namespaced_deployment(namespace, deployment("bystander", ["unrelated"]))
    wait_for(
        lambda: len(replicasets(cluster, namespace, "user")) == 1, timeout=30, message="first ReplicaSet"
    )
    wait_for(
        lambda: len(replicasets(cluster, namespace, "bystander")) == 1, timeout=30, message="bystander RS"
    )

    serials: dict[str, list[str]] = defaultdict(list)
    keys: dict[str, list[bytes]] = defaultdict(list)
    for rev in (1, 2, 3):
        for name in ("always", "never"):
            obj = wait_for(
                lambda name=name, rev=rev: (
                    (o := get(cluster, namespace, "mtlscertificates", name))
                    and int(o["status"].get("revision") or 0) >= rev
                    and (condition(o) or {}).get("status") == "True"
                    and o
                ),
                timeout=90,
                message=f"{name} revision {rev}",
            )
            assert int(obj["status"]["revision"]) == rev, "renewed once per renewal time"
            serials[name].append(obj["status"]["serialNumber"])
            keys[name].append(_public_key(secret_data(cluster, namespace, f"{name}-tls")))
        if rev >= 2:
            # Exactly one new ReplicaSet per renewal of the mounted certificate.
            wait_for(
                lambda rev=rev: len(replicasets(cluster, namespace, "user")) == rev,
                timeout=30,
                message=f"{rev} ReplicaSets for the consuming Deployment",
            )
    assert len(set(serials["always"])) == 3
    assert len(set(serials["never"])) == 3
    assert len(set(keys["always"])) == 3, "rotationPolicy Always makes a new key at each renewal"
    assert len(set(keys["never"])) == 1, "rotationPolicy Never keeps the key"
    assert len(replicasets(cluster, namespace, "user")) == 3
    assert len(replicasets(cluster, namespace, "bystander")) == 1, "a Deployment that does not mount it"
    status = get(cluster, namespace, "mtlscertificates", "always")["status"]
    user = cluster.apps.read_namespaced_deployment("user", namespace)
    stamped_for = (user.metadata.annotations or {}).get("mtls.dev/tls-stamp-for", "")
    assert f"always-tls={status['fingerprint'][:16]}" in stamped_for, (
        "the restart is recorded on the workload"
    )


def test_a_failing_issuer_backs_off_then_issues_promptly_once_fixed(
    operator: Any, cluster: Any, namespace: str
) -> None:
    cluster.core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=byo_ca_metadata("byo-keypair", "byo"),
            type="kubernetes.io/tls",
            data={
                "tls.crt": base64.b64encode(b"broken").decode(),
                "tls.key": base64.b64encode(b"broken").decode(),
            },
        ),
    )
    create_issuer(cluster, namespace, "byo", {"ca": {"secretName": "byo-keypair"}})
    create_certificate(
        cluster,
        namespace,
        "leaf",
        {"secretName": "leaf-tls", "issuerRef": {"name": "byo"}, "commonName": "leaf"},
    )
    failures: dict[int, datetime] = {}

    def attempts() -> bool:
        status = get(cluster, namespace, "mtlscertificates", "leaf").get("status") or {}
        n = int(status.get("failedIssuanceAttempts") or 0)
        if n and status.get("lastFailureTime"):
            failures.setdefault(n, datetime.fromisoformat(status["lastFailureTime"].replace("Z", "+00:00")))
        return n >= 4

    wait_for(attempts, timeout=60, interval=0.1, message="four failed attempts")
    ready = condition(get(cluster, namespace, "mtlscertificates", "leaf"))
    assert ready is not None
    assert ready["status"] == "False"
    assert ready["reason"] == "IssuerNotReady"
    gaps = [(failures[n + 1] - failures[n]).total_seconds() for n in (1, 2, 3) if n + 1 in failures]
    assert len(gaps) >= 2
    assert all(later > earlier for earlier, later in itertools.pairwise(gaps)), gaps
    # Fix the issuer: the certificate is issued promptly, not at the next backoff step.
    key = ec.generate_private_key(ec.SECP256R1())
    from test_bad_input import _cert, _pem_key

    crt = _cert(key, ca=True)
    cluster.core.replace_namespaced_secret(
        "byo-keypair",
        namespace,
        client.V1Secret(
            metadata=byo_ca_metadata("byo-keypair", "byo"),
            type="kubernetes.io/tls",
            data={
                "tls.crt": base64.b64encode(crt).decode(),
                "tls.key": base64.b64encode(_pem_key(key)).decode(),
            },
        ),
    )
    fixed_at = time.monotonic()
    wait_ready(cluster, namespace, "leaf", timeout=30)
    assert time.monotonic() - fixed_at < 10


class StampRecorder:
    """Records, per Deployment, the times its pod-template stamp changed (from a watch)."""

    def __init__(self, cluster: Any, namespace: str) -> None:
        self.stamps: dict[str, list[tuple[float, str]]] = defaultdict(list)
        self._watch = watch.Watch()
        threading.Thread(target=self._run, args=(cluster, namespace), daemon=True).start()

    def _run(self, cluster: Any, namespace: str) -> None:
        try:
            self._stream(cluster, namespace)
        except Exception:  # the stream ends with the test (watch stopped, namespace or cluster gone)
            return

    def _stream(self, cluster: Any, namespace: str) -> None:
        for event in self._watch.stream(
            cluster.apps.list_namespaced_deployment, namespace, timeout_seconds=900
        ):
            dep = event["object"]
            stamp = (dep.spec.template.metadata.annotations or {}).get(STAMP)
            seen = self.stamps[dep.metadata.name]
            if stamp and (not seen or seen[-1][1] != stamp):
                seen.append((time.monotonic(), stamp))

    def stop(self) -> None:
        self._watch.stop()


def test_fifty_renewals_roll_twenty_deployments_within_the_in_flight_limit(
    crds: Any, cluster: Any, own_namespace: str, tmp_path: Path
) -> None:
    ns, limit, timeout = own_namespace, 2, 3.0
    env = {
        "MTLS_ROLLOUT_MAX_IN_FLIGHT": str(limit),
        "MTLS_ROLLOUT_TIMEOUT": str(timeout),
        "MTLS_ROLLOUT_COALESCE": "8",
        "MTLS_ROLLOUT_MIN_INTERVAL": "5",
    }
    op = OperatorProcess(cluster.kubeconfig, tmp_path / "op.log", "--namespace", ns, env=env).start()
    recorder = StampRecorder(cluster, ns)
    try:
        create_issuer(cluster, ns, "ca", self_signed("ca"))
        wait_issuer_ready(cluster, ns, "ca")
        for i in range(50):
            create_certificate(
                cluster,
                ns,
                f"c{i}",
                {
                    "secretName": f"c{i}-tls",
                    "issuerRef": {"name": "ca"},
                    "commonName": f"c{i}",
                    "duration": "3m",
                    "renewBefore": "2m",
                },
            )
        for i in range(20):
            mounted = [f"c{j}-tls" for j in (i, i + 20, i + 40) if j < 50]
            cluster.apps.create_namespaced_deployment(ns, deployment(f"d{i}", mounted))
        first = {f"c{i}": wait_ready(cluster, ns, f"c{i}")["status"] for i in range(50)}
        expiry = min(datetime.fromisoformat(s["notAfter"].replace("Z", "+00:00")) for s in first.values())
        wait_for(
            lambda: all(revision(cluster, ns, f"c{i}") >= 2 for i in range(50)),
            timeout=120,
            interval=1,
            message="every certificate renewed",
        )
        assert datetime.now(UTC) < expiry, "renewed before expiry"
        wait_for(
            lambda: all(len(recorder.stamps[f"d{i}"]) >= 1 for i in range(20)),
            timeout=90,
            interval=1,
            message="every Deployment restarted",
        )
        # Let any stray second restart show up before judging (bounded by the coalescing window + timeout).
        settle = time.monotonic() + 8 + timeout
        wait_for(lambda: time.monotonic() > settle, timeout=30, message="settle")
        for i in range(20):
            assert len(recorder.stamps[f"d{i}"]) == 1, f"d{i} restarted once for its renewals"
            assert len(replicasets(cluster, ns, f"d{i}")) == 2
        times = sorted(t for stamps in recorder.stamps.values() for t, _ in stamps)
        # A stamp holds a slot for the rollout timeout (no rollout completes here): never more than `limit`.
        for i, t in enumerate(times):
            overlapping = [u for u in times[: i + 1] if t - u < timeout - 0.5]
            assert len(overlapping) <= limit, f"{len(overlapping)} rollouts in flight at once"
        assert times[-1] - times[0] >= (20 / limit - 1) * timeout - 1, "pacing spread the restarts out"
    finally:
        recorder.stop()
        op.stop()


def test_a_second_writer_trips_the_loop_guard(
    crds: Any, cluster: Any, own_namespace: str, tmp_path: Path
) -> None:
    ns = own_namespace
    env = {
        "MTLS_ROLLOUT_MAX_PER_HOUR": "3",
        "MTLS_ROLLOUT_MIN_INTERVAL": "1",
        "MTLS_ROLLOUT_COALESCE": "1",
        "MTLS_ROLLOUT_TIMEOUT": "1",
    }
    op = OperatorProcess(cluster.kubeconfig, tmp_path / "op.log", "--namespace", ns, env=env).start()
    recorder = StampRecorder(cluster, ns)
    try:
        create_issuer(cluster, ns, "ca", self_signed("ca"))
        wait_issuer_ready(cluster, ns, "ca")
        create_certificate(
            cluster, ns, "web", {"secretName": "web-tls", "issuerRef": {"name": "ca"}, "commonName": "web"}
        )
        wait_ready(cluster, ns, "web")
        cluster.apps.create_namespaced_deployment(ns, deployment("web", ["web-tls"]))
        wait_for(lambda: len(replicasets(cluster, ns, "web")) == 1, timeout=30, message="first ReplicaSet")

        def blocked() -> dict[str, Any] | None:
            # The second writer: replace tls.key with a stranger's key; the operator re-issues each time.
            obj = get(cluster, ns, "mtlscertificates", "web")
            cond = condition(obj, "RolloutBlocked")
            if cond and cond["status"] == "True":
                return cond
            pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            cluster.core.patch_namespaced_secret(
                "web-tls", ns, {"data": {"tls.key": base64.b64encode(pem).decode()}}
            )
            return None

        cond = wait_for(blocked, timeout=90, interval=2.5, message="the loop guard to trip")
        assert cond["reason"] == "RolloutLoopGuard"
        assert "restarted 3 times in the last hour" in cond["message"]
        restarts = len(recorder.stamps["web"])
        assert restarts == 3, "restarts stop at the guard"
        events = cluster.core.list_namespaced_event(ns, field_selector="involvedObject.name=web").items
        assert any(e.reason == "RolloutLoopGuard" and e.type == "Warning" for e in events)
        # Further changes still re-issue the certificate, but restart nothing.
        rev = revision(cluster, ns, "web")
        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        cluster.core.patch_namespaced_secret(
            "web-tls", ns, {"data": {"tls.key": base64.b64encode(pem).decode()}}
        )
        wait_for(lambda: revision(cluster, ns, "web") > rev, timeout=30, message="re-issued again")
        wait_for(
            lambda: "Not restarting Deployment" in (tmp_path / "op.log").read_text(),
            timeout=10,
            message="the operator logged the block",
        )
        assert len(recorder.stamps["web"]) == restarts
    finally:
        recorder.stop()
        op.stop()


def test_renewal_happens_on_time_across_an_operator_restart(
    crds: Any, cluster: Any, own_namespace: str, tmp_path: Path
) -> None:
    ns = own_namespace
    first = OperatorProcess(cluster.kubeconfig, tmp_path / "op1.log", "--namespace", ns).start()
    try:
        create_issuer(cluster, ns, "ca", self_signed("ca"))
        wait_issuer_ready(cluster, ns, "ca")
        create_certificate(
            cluster,
            ns,
            "web",
            {
                "secretName": "web-tls",
                "issuerRef": {"name": "ca"},
                "commonName": "web",
                "duration": "2m",
                "renewBefore": "90s",
            },
        )
        status = wait_ready(cluster, ns, "web")["status"]
    finally:
        first.kill()
    renew_at = datetime.fromisoformat(status["renewalTime"].replace("Z", "+00:00"))
    assert renew_at > datetime.now(UTC) + timedelta(seconds=5), "killed before the renewal time"
    second = OperatorProcess(cluster.kubeconfig, tmp_path / "op2.log", "--namespace", ns).start()
    try:
        wait_for(lambda: revision(cluster, ns, "web") >= 2, timeout=90, interval=0.5, message="renewed")
        renewed = datetime.now(UTC)
        assert renewed >= renew_at - timedelta(seconds=1), "not early"
        assert renewed <= renew_at + timedelta(seconds=10), f"on time: due {renew_at}, renewed {renewed}"
    finally:
        second.stop()
