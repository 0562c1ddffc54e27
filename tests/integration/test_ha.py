"""High availability: two operator processes with --leader-elect (default Lease timings: 15 s duration,
10 s renew deadline, 2 s retry). Exactly one writes; when it is killed the standby takes over within
seconds and nothing that was issued is issued again; a clean stop (SIGTERM) releases the Lease, so the
standby does not wait for it to expire.

Who leads is read from the Lease object (holderIdentity is ``<host>_<pid>``, renewTime, leaseTransitions),
and who wrote what from the API server's audit log: each candidate logs in as a user of its own."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.helpers import Cluster, free_port, wait_for

from api_audit import ISSUANCE_WRITES, audited_identity, kinds, per_certificate, show
from mtls_objects import create_certificate, create_issuer, get, self_signed, wait_issuer_ready, wait_ready
from operator_process import OperatorProcess

LEASE_DURATION = 15.0
RETRY_PERIOD = 2.0
LEASE = "mtls-operator"


class Candidate(OperatorProcess):
    """An operator process with --leader-elect, logged in as a user of its own. A standby never logs
    "mtls-operator started" (kopf starts only once it leads), so starting waits for the leader-election
    line instead: the process is up; who leads is read from the Lease."""

    def __init__(self, cluster: Cluster, log: Path, namespace: str) -> None:
        self.metrics_port = free_port()
        args = ["--namespace", namespace, "--leader-elect", "--leader-elect-namespace", namespace]
        args += ["--metrics-port", str(self.metrics_port), "--metrics-bind-address", "127.0.0.1"]
        identity = audited_identity(cluster.control_plane, log.stem, log.parent)
        super().__init__(identity.kubeconfig, log, *args, user=identity.user, audit=cluster.audit)

    def wait_for_log(self, fragment: str, timeout: float) -> None:
        if fragment == "mtls-operator started":
            fragment = "Leader election on"
        super().wait_for_log(fragment, timeout)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def leader_gauge(self) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith("mtls_leader_election_is_leader "):
                    return float(line.split()[1])
        raise AssertionError("no leader gauge")

    def lease_reads(self, since: int) -> int:
        """How often this candidate read the Lease after `since` (a standby looks every retry period)."""
        assert self.audit is not None and self.user is not None
        requests = self.audit.requests(since=since, user=self.user)
        return sum(1 for r in requests if r.verb == "get" and r.resource == "leases" and r.name == LEASE)


def lease_spec(cluster: Cluster, namespace: str) -> Any:
    """The Lease's spec, or None while no candidate has created it."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    try:
        return client.CoordinationV1Api(cluster.api_client).read_namespaced_lease(LEASE, namespace).spec
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def holder(cluster: Cluster, namespace: str) -> Callable[[Candidate], bool]:
    """A predicate: the Lease names `candidate` (its process id) as its holder."""

    def holds(candidate: Candidate) -> bool:
        spec = lease_spec(cluster, namespace)
        identity = (spec.holder_identity or "") if spec is not None else ""
        return identity.rpartition("_")[2] == str(candidate.pid)

    return holds


class LeaseRecorder:
    """Every version of the Lease a watch delivers, from now on: (holderIdentity, leaseDurationSeconds)."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        from kubernetes import client, watch

        self.seen: list[tuple[str, int]] = []
        self.failure: str | None = None
        self._api = client.CoordinationV1Api(cluster.api_client)
        self._watch = watch.Watch()
        self._stopped = threading.Event()
        since = self._api.list_namespaced_lease(namespace).metadata.resource_version
        self._thread = threading.Thread(target=self._run, args=(namespace, since), daemon=True)
        self._thread.start()

    def _run(self, namespace: str, since: str) -> None:
        try:
            for event in self._watch.stream(
                self._api.list_namespaced_lease,
                namespace,
                field_selector=f"metadata.name={LEASE}",
                resource_version=since,
                timeout_seconds=300,
            ):
                spec = event["object"].spec
                self.seen.append((spec.holder_identity or "", spec.lease_duration_seconds))
        except Exception as error:
            if not self._stopped.is_set():
                self.failure = f"{type(error).__name__}: {error}"

    def finish(self) -> list[tuple[str, int]]:
        """Stop; fail if the watch died before."""
        alive = self._thread.is_alive()
        self._stopped.set()
        self._watch.stop()
        assert self.failure is None and alive, f"the Lease watch died: {self.failure}"
        return self.seen


def issued_events(cluster: Cluster, namespace: str) -> Counter[str]:
    events = cluster.core.list_namespaced_event(namespace, field_selector="reason=Issued").items
    return Counter(e.involved_object.name for e in events if e.involved_object.kind == "MTLSCertificate")


def test_the_standby_takes_over_when_the_leader_dies_and_nothing_is_issued_twice(
    cluster: Cluster, crds: Any, own_namespace: str, tmp_path: Path
) -> None:
    ns = own_namespace
    audit = cluster.audit
    start = audit.mark()
    holds = holder(cluster, ns)
    a = Candidate(cluster, tmp_path / "a.log", ns).start()
    b: Candidate | None = None
    c: Candidate | None = None
    try:
        wait_for(lambda: holds(a), timeout=30, message="the Lease held by a")
        first = lease_spec(cluster, ns)
        # The leader renews the Lease every retry period.
        wait_for(
            lambda: lease_spec(cluster, ns).renew_time > first.renew_time,
            timeout=3 * RETRY_PERIOD,
            message="a renews the Lease",
        )
        joined = audit.mark()
        b = Candidate(cluster, tmp_path / "b.log", ns).start()
        wait_for(lambda: b.lease_reads(joined) >= 2, timeout=30, message="b looks at the Lease, twice")
        assert holds(a) and not holds(b)
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
        assert holds(a) and not holds(b)
        # Exactly one writes: the standby wrote nothing at all, not even to the Lease.
        assert b.writes(since=start) == [], show(b.writes(since=start))
        assert {r.resource for r in a.writes(since=joined)} >= {"secrets", "leases"}, show(
            a.writes(since=start)
        )
        transitions = lease_spec(cluster, ns).lease_transitions

        takeover_mark = audit.mark()
        a.kill()
        killed = time.monotonic()
        wait_for(
            lambda: holds(b),
            timeout=LEASE_DURATION + 4 * RETRY_PERIOD + 10,
            interval=0.1,
            message="the Lease held by b",
        )
        takeover = time.monotonic() - killed
        print(f"takeover after SIGKILL of the leader: {takeover:.1f} s")
        assert takeover <= LEASE_DURATION + 2 * RETRY_PERIOD + 3
        assert lease_spec(cluster, ns).lease_transitions == transitions + 1
        wait_for(lambda: b.leader_gauge() == 1, timeout=10, message="b's leader gauge")

        # The new leader works: a new certificate is issued, and the old ones are left alone.
        create_certificate(
            cluster,
            ns,
            "after",
            {"secretName": "after-tls", "issuerRef": {"name": "ca"}, "dnsNames": ["after.example"]},
        )
        wait_ready(cluster, ns, "after")
        wait_for(
            lambda: b.ready_certificates(ns) == len(names) + 1,
            timeout=30,
            message="b judged every certificate Ready",
        )
        for name in names:
            status = get(cluster, ns, "mtlscertificates", name)["status"]
            assert status["serialNumber"] == before[name], f"{name} was re-issued"
            assert status["revision"] == 1
            assert (
                cluster.core.read_namespaced_secret(f"{name}-tls", ns).metadata.resource_version
                == versions[name]
            )
        secrets = {n: f"{n}-tls" for n in [*names, "after"]}
        by_cert = per_certificate(b.writes(since=takeover_mark), secrets)
        assert all(by_cert[n] == [] for n in names), show(w for n in names for w in by_cert[n])
        assert kinds(by_cert["after"]) == ISSUANCE_WRITES, show(by_cert["after"])
        counts = issued_events(cluster, ns)
        assert counts == Counter({**dict.fromkeys(names, 1), "after": 1}), counts

        # A clean stop releases the Lease once kopf has stopped: a new standby takes over at its next retry.
        joined = audit.mark()
        c = Candidate(cluster, tmp_path / "c.log", ns).start()
        wait_for(lambda: c.lease_reads(joined) >= 1, timeout=30, message="c looks at the Lease")
        assert holds(b)
        lease_versions = LeaseRecorder(cluster, ns)
        stopping = time.monotonic()  # SIGTERM: kopf stops, then the Lease is released, then b exits
        b.stop()
        wait_for(lambda: holds(c), timeout=2 * RETRY_PERIOD + 5, interval=0.1, message="the Lease held by c")
        print(f"takeover after SIGTERM to the leader: {time.monotonic() - stopping:.1f} s")
        wait_for(lambda: lease_versions.seen, timeout=10, message="the Lease watch saw c's acquisition")
        seen = lease_versions.finish()
        # b released the Lease (no holder, 1 s duration) before c took it: c did not wait for it to expire.
        released = seen.index(("", 1)) if ("", 1) in seen else None
        assert released is not None, f"b did not release the Lease: {seen}"
        assert seen[released + 1 :] and seen[released + 1][0].endswith(f"_{c.pid}"), seen
    finally:
        for proc in (a, b, c):
            if proc is not None:
                proc.stop()
