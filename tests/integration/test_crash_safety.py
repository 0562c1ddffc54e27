"""Crash safety and API economy with a real operator process that is SIGKILLed and restarted.

These tests run their own operator on a namespace the shared one does not watch (it watches `t-*`).
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from kubernetes import watch

from helpers import wait_for
from mtls_objects import condition, create_certificate, create_issuer, self_signed, wait_issuer_ready
from operator_process import OperatorProcess

BURST = 200


class SecretRecorder:
    """Watches every Secret write in a namespace: (name, revision) -> the set of key digests published."""

    def __init__(self, cluster: Any, namespace: str) -> None:
        self.published: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, args=(cluster, namespace), daemon=True)
        self._thread.start()

    def _run(self, cluster: Any, namespace: str) -> None:
        try:
            self._stream(cluster, namespace)
        except Exception:  # the stream ends with the test (watch stopped, namespace or cluster gone)
            return

    def _stream(self, cluster: Any, namespace: str) -> None:
        for event in self._watch.stream(cluster.core.list_namespaced_secret, namespace, timeout_seconds=600):
            secret = event["object"]
            ann = secret.metadata.annotations or {}
            if "mtls.dev/revision" in ann and secret.data and "tls.key" in secret.data:
                digest = hashlib.sha256(secret.data["tls.key"].encode()).hexdigest()
                self.published[(secret.metadata.name, ann["mtls.dev/revision"])].add(digest)

    def stop(self) -> None:
        self._watch.stop()


def _ready_count(cluster: Any, namespace: str) -> int:
    items = cluster.custom.list_namespaced_custom_object(
        "mtls.dev", "v1alpha1", namespace, "mtlscertificates"
    )
    return sum(1 for obj in items["items"] if (condition(obj) or {}).get("status") == "True")


def _idle_processed(log: Path) -> int:
    found = re.findall(r"Queue idle: processed=(\d+) writes=(\d+)", log.read_text(errors="replace"))
    return int(found[-1][0]) if found else 0


def _idle_writes(log: Path) -> int:
    found = re.findall(r"Queue idle: processed=(\d+) writes=(\d+)", log.read_text(errors="replace"))
    return int(found[-1][1]) if found else -1


def test_sigkill_during_a_burst_loses_nothing(
    crds: Any, cluster: Any, own_namespace: str, tmp_path: Path
) -> None:
    ns = own_namespace
    recorder = SecretRecorder(cluster, ns)
    # Two workers keep the burst long enough to be cut in the middle on a fast machine.
    first = OperatorProcess(
        cluster.kubeconfig, tmp_path / "op1.log", "--namespace", ns, env={"MTLS_WORKERS": "2"}
    ).start()
    try:
        create_issuer(cluster, ns, "ca", self_signed("ca", "MLDSA", 65))
        wait_issuer_ready(cluster, ns, "ca")
        for i in range(BURST):
            create_certificate(
                cluster,
                ns,
                f"svc-{i}",
                {
                    "secretName": f"svc-{i}-tls",
                    "issuerRef": {"name": "ca"},
                    "commonName": f"svc-{i}",
                    "privateKey": {"algorithm": "MLDSA", "size": 65},
                },
            )
        log = tmp_path / "op1.log"
        wait_for(
            lambda: log.read_text(errors="replace").count(" Issued ") >= 20,
            timeout=60,
            interval=0.05,
            message="20 issuances",
        )
        first.kill()
        killed_at = _ready_count(cluster, ns)
    finally:
        first.kill()
    assert killed_at < BURST, "the kill came mid-burst"

    second = OperatorProcess(cluster.kubeconfig, tmp_path / "op2.log", "--namespace", ns).start()
    try:
        wait_for(lambda: _ready_count(cluster, ns) == BURST, timeout=120, message=f"all {BURST} Ready")
        secrets = cluster.core.list_namespaced_secret(ns).items
        names = {s.metadata.name for s in secrets}
        assert names == {"ca-ca"} | {f"svc-{i}-tls" for i in range(BURST)}, "nothing left behind"
        for secret in secrets:
            if secret.metadata.name == "ca-ca":
                continue
            data = {k: base64.b64decode(v) for k, v in secret.data.items()}
            leaf = x509.load_pem_x509_certificate(data["tls.crt"])
            key = serialization.load_pem_private_key(data["tls.key"], None)
            fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            assert key.public_key().public_bytes(*fmt) == leaf.public_key().public_bytes(*fmt)
        recorder.stop()
        doubles = {k: v for k, v in recorder.published.items() if len(v) > 1}
        assert not doubles, f"two keys published for one revision: {sorted(doubles)[:5]}"
    finally:
        second.stop()
        recorder.stop()


def test_restart_writes_nothing_when_all_is_valid(
    crds: Any, cluster: Any, own_namespace: str, tmp_path: Path
) -> None:
    ns = own_namespace
    # Two workers keep the burst long enough to be cut in the middle on a fast machine.
    first = OperatorProcess(
        cluster.kubeconfig, tmp_path / "op1.log", "--namespace", ns, env={"MTLS_WORKERS": "2"}
    ).start()
    count = 30
    try:
        create_issuer(cluster, ns, "ca", self_signed("ca"))
        wait_issuer_ready(cluster, ns, "ca")
        for i in range(count):
            create_certificate(
                cluster,
                ns,
                f"c-{i}",
                {"secretName": f"c-{i}-tls", "issuerRef": {"name": "ca"}, "dnsNames": [f"c-{i}.example.com"]},
            )
        wait_for(lambda: _ready_count(cluster, ns) == count, timeout=60, message="all Ready")
        # Issuance itself: at most three writes per certificate (Secret, status, event), plus the issuer's.
        wait_for(lambda: _idle_processed(tmp_path / "op1.log") > 0, timeout=10, message="an idle line")
        writes = _idle_writes(tmp_path / "op1.log")
        assert writes <= 3 * count + 3, f"{writes} writes for {count} issuances"
    finally:
        first.stop()

    def versions() -> dict[str, str]:
        out = {}
        for s in cluster.core.list_namespaced_secret(ns).items:
            out[f"secret/{s.metadata.name}"] = s.metadata.resource_version
        items = cluster.custom.list_namespaced_custom_object("mtls.dev", "v1alpha1", ns, "mtlscertificates")
        for obj in items["items"]:
            out[f"cert/{obj['metadata']['name']}"] = obj["metadata"]["resourceVersion"]
        issuers = cluster.custom.list_namespaced_custom_object("mtls.dev", "v1alpha1", ns, "mtlsissuers")
        for obj in issuers["items"]:
            out[f"issuer/{obj['metadata']['name']}"] = obj["metadata"]["resourceVersion"]
        return out

    before = versions()
    events_before = len(cluster.core.list_namespaced_event(ns).items)
    log = tmp_path / "op2.log"
    second = OperatorProcess(cluster.kubeconfig, log, "--namespace", ns).start()
    try:
        wait_for(
            lambda: _idle_processed(log) >= count + 1,
            timeout=60,
            message="the restarted operator checked all",
        )
        assert _idle_writes(log) == 0, "a restart with valid Secrets makes no API writes"
        assert versions() == before
        assert len(cluster.core.list_namespaced_event(ns).items) == events_before
    finally:
        second.stop()
