"""High availability: two operator processes with --leader-elect (default Lease timings: 15 s duration,
10 s renew deadline, 2 s retry). Exactly one writes; when it is killed the standby takes over within
seconds and nothing that was issued is issued again; a clean stop (SIGTERM) releases the Lease, so the
standby does not wait for it to expire."""

from __future__ import annotations

import socket
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from tests.helpers import Cluster, wait_for

from mtls_objects import create_certificate, create_issuer, get, self_signed, wait_issuer_ready, wait_ready
from operator_process import OperatorProcess

LEASE_DURATION = 15.0
RETRY_PERIOD = 2.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Candidate(OperatorProcess):
    """An operator process with --leader-elect. A standby never logs "mtls-operator started" (kopf starts
    only once it leads), so starting waits for the leader-election line instead."""

    def __init__(self, kubeconfig: Path, log: Path, namespace: str) -> None:
        self.metrics_port = free_port()
        args = ["--namespace", namespace, "--leader-elect", "--leader-elect-namespace", namespace]
        args += ["--metrics-port", str(self.metrics_port), "--metrics-bind-address", "127.0.0.1"]
        super().__init__(kubeconfig, log, *args)

    def wait_for_log(self, fragment: str, timeout: float) -> None:
        if fragment == "mtls-operator started":
            fragment = "Leader election on"
        super().wait_for_log(fragment, timeout)

    def leads(self) -> bool:
        return "Became the leader" in self.log_path.read_text(errors="replace")

    def leader_gauge(self) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith("mtls_leader_election_is_leader "):
                    return float(line.split()[1])
        raise AssertionError("no leader gauge")


def issued_events(cluster: Cluster, namespace: str) -> Counter[str]:
    events = cluster.core.list_namespaced_event(namespace, field_selector="reason=Issued").items
    return Counter(e.involved_object.name for e in events if e.involved_object.kind == "MTLSCertificate")


def test_the_standby_takes_over_when_the_leader_dies_and_nothing_is_issued_twice(
    cluster: Cluster, crds: Any, own_namespace: str, tmp_path: Path
) -> None:
    ns = own_namespace
    a = Candidate(crds.kubeconfig, tmp_path / "a.log", ns).start()
    b: Candidate | None = None
    c: Candidate | None = None
    try:
        wait_for(a.leads, timeout=30, message="a leads")
        b = Candidate(crds.kubeconfig, tmp_path / "b.log", ns).start()
        b.wait_for_log("Standing by", timeout=30)
        assert a.leader_gauge() == 1 and b.leader_gauge() == 0

        create_issuer(cluster, ns, "ca", self_signed("ca"))
        wait_issuer_ready(cluster, ns, "ca")
        names = [f"svc-{i}" for i in range(5)]
        for name in names:
            create_certificate(
                cluster,
                ns,
                name,
                {"secretName": f"{name}-tls", "issuerRef": {"name": "ca"}, "dnsNames": [f"{name}.example"]},
            )
        before = {name: wait_ready(cluster, ns, name)["status"]["serialNumber"] for name in names}
        versions = {
            n: cluster.core.read_namespaced_secret(f"{n}-tls", ns).metadata.resource_version for n in names
        }
        assert not b.leads()

        a.kill()
        killed = time.monotonic()
        wait_for(
            b.leads, timeout=LEASE_DURATION + 4 * RETRY_PERIOD + 10, interval=0.1, message="b takes over"
        )
        takeover = time.monotonic() - killed
        b.wait_for_log("mtls-operator started", timeout=30)
        print(f"takeover after SIGKILL of the leader: {takeover:.1f} s")
        assert takeover <= LEASE_DURATION + 2 * RETRY_PERIOD + 3
        assert b.leader_gauge() == 1

        # The new leader works: a new certificate is issued, and the old ones are left alone.
        create_certificate(
            cluster,
            ns,
            "after",
            {"secretName": "after-tls", "issuerRef": {"name": "ca"}, "dnsNames": ["after.example"]},
        )
        wait_ready(cluster, ns, "after")
        b.wait_for_log("Queue idle", timeout=30)
        for name in names:
            status = get(cluster, ns, "mtlscertificates", name)["status"]
            assert status["serialNumber"] == before[name], f"{name} was re-issued"
            assert status["revision"] == 1
            assert (
                cluster.core.read_namespaced_secret(f"{name}-tls", ns).metadata.resource_version
                == versions[name]
            )
        counts = issued_events(cluster, ns)
        assert counts == Counter({**dict.fromkeys(names, 1), "after": 1}), counts

        # A clean stop releases the Lease once kopf has stopped: a new standby takes over at its next retry.
        c = Candidate(crds.kubeconfig, tmp_path / "c.log", ns).start()
        c.wait_for_log("Standing by", timeout=30)
        stopping = time.monotonic()  # SIGTERM: kopf stops, then the Lease is released, then b exits
        b.stop()
        wait_for(c.leads, timeout=2 * RETRY_PERIOD + 5, interval=0.1, message="c takes over after b stops")
        print(f"takeover after SIGTERM to the leader: {time.monotonic() - stopping:.1f} s")
        assert "Released lease" in b.log_path.read_text()
    finally:
        for proc in (a, b, c):
            if proc is not None:
                proc.stop()
