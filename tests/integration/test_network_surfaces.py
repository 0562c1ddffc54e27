"""Issue 10, finding 7 (network surfaces): 1,000 half-open connections against each of the operator's ports
(metrics and revocation) do not disturb issuance, the operator's own API calls keep working (it holds and
renews its Lease), and the server closes every held connection within its header timeout.

The operator runs with --leader-elect and a 1,024 open-files limit (set with prlimit once it runs, as a
container's default would be): 2,000 held connections would exhaust it without the connection caps. Half
of the flood's connections send nothing, half a partial request head; none is ever closed by the client.
Then the flood is sustained for 10 s (every connection the server closes is opened again) while a probe
asks /healthz and a relying party fetches the CRL. Figures are printed (pytest -s)."""

from __future__ import annotations

import asyncio
import os
import resource
import statistics
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException
from tests.helpers import Cluster, wait_for

from mtls_objects import create_certificate, create_issuer, get, self_signed, wait_issuer_ready
from nginx_peer import free_port
from operator_process import OperatorProcess

PER_PORT = 1000
HEADER_TIMEOUT = 5.0  # observability.server.HttpLimits default
SLACK = 5.0
FILES_LIMIT = 1024
CERTIFICATES = 5
SUSTAIN = 10.0


@dataclass
class Held:
    port: int
    mode: str
    started: float
    connected: float | None = None
    closed: float | None = None
    error: str | None = None


@dataclass
class Flood:
    """Opens ``per_port`` connections to each port from its own thread and event loop and holds each until
    the server closes it; records when each connected and when it was closed. With ``sustain`` > 0, every
    connection the server closes is opened again (after 100 ms) for that many seconds: the ports stay under
    the flood the whole time."""

    ports: list[int]
    per_port: int
    sustain: float = 0.0
    conns: list[Held] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Flood:
        threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True).start()
        return self

    async def _run(self) -> None:
        gate = asyncio.Semaphore(256)  # connects in flight at once
        until = time.monotonic() + self.sustain

        async def hold(port: int, mode: str) -> None:
            while True:
                held = Held(port, mode, time.monotonic())
                self.conns.append(held)
                writer: asyncio.StreamWriter | None = None
                try:
                    async with gate:
                        if self.sustain and time.monotonic() >= until:
                            return
                        reader, writer = await asyncio.wait_for(
                            asyncio.open_connection("127.0.0.1", held.port), timeout=10
                        )
                    held.connected = time.monotonic()
                    if held.mode == "partial head":
                        writer.write(b"GET /metrics HTTP/1.1\r\nHost: flood\r\nX-Partial: ")
                        await writer.drain()
                    # Until the server closes it. A connection the kernel dropped from a full accept queue
                    # (the client believes it connected; the server never saw it) is given up after 30 s.
                    await asyncio.wait_for(reader.read(), timeout=30)
                except (ConnectionError, TimeoutError, OSError) as exc:
                    held.error = type(exc).__name__
                held.closed = time.monotonic()
                if writer is not None:
                    writer.close()
                if held.closed >= until:
                    return
                await asyncio.sleep(0.1)

        await asyncio.gather(
            *(
                hold(port, "nothing" if i % 2 else "partial head")
                for port in self.ports
                for i in range(self.per_port)
            )
        )
        self.done.set()

    def connected(self) -> int:
        return sum(1 for c in self.conns if c.connected is not None or c.error is not None)


def _listen_overflows() -> int:
    """The kernel's count of connections dropped because a listening socket's accept queue was full."""
    lines = [
        line.split()
        for line in Path("/proc/net/netstat").read_text().splitlines()
        if line.startswith("TcpExt")
    ]
    return int(dict(zip(lines[0], lines[1], strict=True))["ListenOverflows"])


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _issue(cluster: Cluster, ns: str, prefix: str) -> list[float]:
    """Create CERTIFICATES certificates at once; seconds from creation until each is Ready."""
    started = time.monotonic()
    names = [f"{prefix}-{i}" for i in range(CERTIFICATES)]
    for name in names:
        create_certificate(
            cluster,
            ns,
            name,
            {"secretName": f"{name}-tls", "issuerRef": {"name": "ca"}, "dnsNames": [f"{name}.test"]},
        )
    ready: dict[str, float] = {}

    def all_ready() -> bool:
        for name in names:
            if name in ready:
                continue
            conditions = (get(cluster, ns, "mtlscertificates", name).get("status") or {}).get(
                "conditions"
            ) or []
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
                ready[name] = time.monotonic() - started
        return len(ready) == len(names)

    wait_for(all_ready, timeout=120, interval=0.1, message=f"{prefix} certificates Ready")
    return [ready[name] for name in names]


def _lease(cluster: Cluster, ns: str) -> tuple[str, Any]:
    lease = client.CoordinationV1Api(cluster.api_client).read_namespaced_lease("mtls-operator", ns)
    return str(lease.spec.holder_identity), lease.spec.renew_time


def test_a_thousand_half_open_connections_per_port_do_not_disturb_issuance(
    cluster: Cluster, crds: Any, own_namespace: str, tmp_path: Path
) -> None:
    ns = own_namespace
    metrics_port, revocation_port = free_port(), free_port()
    operator = OperatorProcess(
        cluster.kubeconfig,
        tmp_path / "operator.log",
        *("--namespace", ns, "--leader-elect", "--leader-elect-namespace", ns),
        *("--metrics-port", str(metrics_port), "--metrics-bind-address", "127.0.0.1"),
        env={"MTLS_REVOCATION_PORT": str(revocation_port), "MTLS_REVOCATION_BIND": "127.0.0.1"},
    ).start()
    assert operator.proc is not None
    pid = operator.proc.pid
    try:
        wait_for(
            lambda: _lease(cluster, ns)[0].endswith(f"_{pid}"),
            timeout=30,
            message="the operator leads",
            ignore=(ApiException,),  # 404 until the Lease is created
        )
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (FILES_LIMIT, FILES_LIMIT))
        create_issuer(cluster, ns, "ca", {**self_signed("ca"), "revocation": {}})
        wait_issuer_ready(cluster, ns, "ca")
        baseline = _issue(cluster, ns, "before")
        files_before = _files(pid)

        holder, renewed_before = _lease(cluster, ns)
        first_overflows = _listen_overflows()
        flood = Flood([metrics_port, revocation_port], PER_PORT).start()
        peak = files_before
        wait_for(lambda: flood.connected() == len(flood.conns), timeout=60, message="the flood connected")
        flooded_at = time.monotonic()
        during: list[float] = []
        issuing = threading.Thread(target=lambda: during.extend(_issue(cluster, ns, "during")), daemon=True)
        issuing.start()
        while issuing.is_alive() or not flood.done.is_set():
            peak = max(peak, _files(pid))
            assert time.monotonic() - flooded_at < 180, "the flood or the issuance did not finish"
            time.sleep(0.05)

        first_overflows = _listen_overflows() - first_overflows

        # Then a sustained flood: every connection the server closes is opened again, for SUSTAIN seconds,
        # while a kubelet-like probe asks /healthz and a relying party fetches the CRL (1 s timeouts).
        overflows = _listen_overflows()
        sustained_at = time.monotonic()
        sustained = Flood([metrics_port, revocation_port], PER_PORT, sustain=SUSTAIN).start()
        later: list[float] = []
        issuing = threading.Thread(target=lambda: later.extend(_issue(cluster, ns, "sustained")), daemon=True)
        issuing.start()
        probes: list[bool] = []
        fetches: list[bool] = []
        while issuing.is_alive() or not sustained.done.is_set():
            peak = max(peak, _files(pid))
            if time.monotonic() - sustained_at < SUSTAIN:  # while the flood is on in full
                probes.append(_ok(f"http://127.0.0.1:{metrics_port}/healthz"))
                fetches.append(_ok(f"http://127.0.0.1:{revocation_port}/crl/{ns}/ca.crl"))
            assert time.monotonic() - flooded_at < 300, "the sustained flood or the issuance did not finish"
            time.sleep(0.2)
        sustained_for = time.monotonic() - sustained_at
        overflows = _listen_overflows() - overflows
        holder_after, renewed_after = _lease(cluster, ns)
        assert _ok(f"http://127.0.0.1:{metrics_port}/healthz") and _ok(
            f"http://127.0.0.1:{metrics_port}/metrics"
        )
    finally:
        operator.stop()
        print(operator.tail(20))

    errors = [c for c in flood.conns if c.error is not None and c.connected is None]
    holds: dict[int, list[float]] = {metrics_port: [], revocation_port: []}
    for c in flood.conns:
        if c.connected is not None and c.closed is not None:
            holds[c.port].append(c.closed - c.connected)
    refused = {port: sum(1 for h in held if h < 1.0) for port, held in holds.items()}
    print(
        f"\n{PER_PORT} half-open connections on each of 2 ports; operator files: {files_before} before, peak "
        f"{peak} (limit {FILES_LIMIT}); connect failures: {len(errors)}"
    )
    for port, name in ((metrics_port, "metrics"), (revocation_port, "revocation")):
        print(
            f"  {name}: {refused[port]} closed within 1 s (pushed out or refused at the cap), "
            f"{len(holds[port]) - refused[port]} later, the longest held {max(holds[port]):.2f} s (median of "
            f"those: {statistics.median([h for h in holds[port] if h >= 1.0] or [0]):.2f} s)"
        )
    print(
        f"  issuance of {CERTIFICATES} certificates: before the flood max {max(baseline):.2f} s "
        f"(median {statistics.median(baseline):.2f} s), during it max {max(during):.2f} s "
        f"(median {statistics.median(during):.2f} s)"
    )
    opened = len(sustained.conns)
    waits = sorted(c.connected - c.started for c in sustained.conns if c.connected is not None)
    dropped = sum(1 for c in sustained.conns if c.error == "TimeoutError")
    print(
        f"sustained {SUSTAIN:g} s (all done after {sustained_for:.0f} s; {opened} connections opened, every "
        f"closed one opened again, connect p50 {waits[len(waits) // 2]:.2f} s, max {waits[-1]:.2f} s, "
        f"{dropped} never answered: the kernel's accept queue overflowed {overflows} times): "
        f"/healthz answered {sum(probes)}/{len(probes)}, the CRL {sum(fetches)}/{len(fetches)}; issuance max "
        f"{max(later):.2f} s (median {statistics.median(later):.2f} s); operator files peak {peak}; "
        f"Lease renewed {renewed_before} -> {renewed_after}"
    )
    assert errors == [], "every connection was accepted by the kernel"
    for port in holds:
        assert len(holds[port]) == PER_PORT
        # The server's accept queue (HttpLimits.backlog) holds the whole flood: were one dropped from a full
        # queue, the client would hold it for 30 s with no server ever seeing it.
        assert max(holds[port]) <= HEADER_TIMEOUT + SLACK, (
            f"a held connection outlived the header timeout (accept queue overflows: {first_overflows})"
        )
    assert peak < FILES_LIMIT - 100, "the caps keep the operator well below its open-files limit"
    assert holder_after == holder and renewed_after > renewed_before, "the Lease was held and renewed"
    normal = max(30.0, 3 * max(baseline))
    assert len(during) == len(later) == CERTIFICATES and max(during) <= normal and max(later) <= normal
    # At ~2,000 new connections a second some probes find the cap full of connections too young to push
    # out (75-100% answered in runs here); the unit tests show that held half-open ones never lock it out.
    assert sum(probes) >= 0.25 * len(probes) and sum(fetches) >= 0.25 * len(fetches)
