"""What every scenario of bench_operator.py shares: `Run` (one variant's operator on one control
plane: the issuer, a burst of certificates, the writes the API server audited, the result file), the aims
reported next to each result, `wait_until` and the probe's memory figures.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from control_plane import CERTS, GROUP, ISSUERS, VERSION, ApiServerWindow, Cluster
from harness import audit_writes, percentile, ready_status
from measured_operator import Operator
from objects import create_custom, issuer_body
from procfs import cpu_seconds, loadavg
from reporting import AFTER, Variant, say, write_result
from trackers import CertTracker

AIMS: dict[str, dict[str, float]] = {
    "issuance-ecdsa-p256": {"certificates_per_second": 200.0, "single_p50_ms": 50.0},
    "issuance-ed25519": {"single_p50_ms": 50.0},
    "issuance-mldsa65": {"certificates_per_second": 150.0, "single_p50_ms": 50.0},
    "issuance-rsa2048": {"single_p50_ms": 50.0},
    "idle-10k": {"rss_mb": 120.0},
    "restart-10k": {"seconds_to_steady": 30.0, "writes": 0},
    "renewal-storm": {"writes_per_renewal": 3.0, "drain_seconds": 120.0, "peak_rss_mb": 200.0},
    "noise": {"rss_growth_mb": 10.0, "cpu_percent_of_apiserver": 10.0},
    "bad-input": {"max_stall_seconds": 1.0},
}
OPERATOR_AGENT = "mtls-operator"  # the operator's own client; kopf's watches say "kopf/<version>"


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, progress: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    next_note = time.monotonic() + 15
    while not predicate():
        now = time.monotonic()
        if now > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what} ({progress()})")
        if now > next_note:
            say(f"waiting for {what}: {progress()}")
            next_note = now + 15
        time.sleep(0.05)


class Run:
    def __init__(self, c: Cluster, logs: Path, variant: Variant = AFTER) -> None:
        self.c = c
        self.logs = logs
        self.variant = variant
        self.clients = env_int("BENCH_CLIENTS", 8)
        self.load_at_start = loadavg()  # the machine is shared: each result says how busy it was

    def operator(
        self, scenario: str, namespace: str | None, env: Mapping[str, str] | None = None
    ) -> Operator:
        """An operator for `namespace` (None: every namespace) from the run's variant."""
        log = self.logs / f"{self.variant.result_name(scenario)}.log"
        say(f"{scenario} [{self.variant.name}]: operator log {log}")
        namespaces = [namespace] if namespace else []
        return Operator(self.c.kubeconfig, log, namespaces, env, self.variant).start()

    def result(self, name: str, n: int, figures: Mapping[str, Any], extra: Mapping[str, Any]) -> None:
        load = {"at_start": self.load_at_start, "at_end": loadavg()}
        write_result(name, n, figures, {"aims": AIMS.get(name, {}), "loadavg": load, **extra}, self.variant)
        say(f"{self.variant.result_name(name)}: load average {load['at_start']} -> {load['at_end']}")

    def operator_writes(self, since: float, until: float = math.inf) -> dict[str, int]:
        """Writes the API server audited from the operator's own client in [since, until) (epoch)."""
        return audit_writes(self.c.read_audit(), OPERATOR_AGENT, since, until)

    def kopf_writes(self, since: float, until: float = math.inf) -> dict[str, int]:
        """Writes made by kopf's client (there should be none: the handlers only watch)."""
        return audit_writes(self.c.read_audit(), "kopf", since, until)

    def issuer(self, op: Operator, namespace: str, algorithm: str, size: int | None) -> int:
        """Create the scenario's self-signed issuer, wait for it to be Ready, return the writes it took."""
        create_custom(self.c, namespace, ISSUERS, issuer_body("bench-ca", algorithm, size))
        wait_until(
            lambda: ready_status(
                self.c.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, ISSUERS, "bench-ca")
            ),
            60,
            f"issuer {namespace}/bench-ca Ready",
            lambda: "not ready",
        )
        return op.wait_idle(0, timeout=30, quiet=2.0).writes

    def create_many(
        self, namespace: str, bodies: list[dict[str, Any]]
    ) -> tuple[dict[str, float], float, float]:
        """Create `bodies` from `self.clients` threads.

        Returns the time each create call returned, by name, the first call's start and the last return.
        """
        created: dict[str, float] = {}
        first = time.monotonic()

        def one(body: dict[str, Any]) -> None:
            create_custom(self.c, namespace, CERTS, body)
            created[body["metadata"]["name"]] = time.monotonic()

        with ThreadPoolExecutor(self.clients, thread_name_prefix="bench-create") as pool:
            for f in [pool.submit(one, b) for b in bodies]:
                f.result()
        return created, first, max(created.values())

    def bulk(
        self,
        namespace: str,
        tracker: CertTracker,
        bodies: list[dict[str, Any]],
        timeout: float,
        op: Operator,
    ) -> dict[str, Any]:
        """Create `bodies` and wait until all are Ready; time-to-Ready percentiles and the rate."""
        n = len(bodies)
        cpu0 = cpu_seconds(op.pid)
        server = ApiServerWindow(self.c).start()
        epoch0 = time.time()
        created, first, last_create = self.create_many(namespace, bodies)
        say(f"{namespace}: created {n} certificates in {last_create - first:.1f}s")
        wait_until(
            lambda: tracker.count("ready") >= n,
            timeout,
            f"{n} certificates Ready",
            lambda: f"{tracker.count('ready')}/{n} Ready",
        )
        with tracker.lock:
            ready = {k: v for k, v in tracker.ready.items() if k in created}
        latencies = [max(0.0, ready[k] - created[k]) for k in created]
        last_ready = max(ready.values())
        cpu = cpu_seconds(op.pid) - cpu0
        apiserver = server.stop()
        return {
            # The API server's side of the same burst: its CPU (which includes serving the bench's own
            # creates and watches) next to the operator's.
            "apiserver": apiserver,
            "apiserver_cpu_seconds": apiserver["apiserver_cpu_seconds"],
            "etcd_cpu_seconds": apiserver["etcd_cpu_seconds"],
            "burst_started_epoch": epoch0,
            # Of one core: near 100 means the operator's one Python thread (plus 2 crypto threads) is
            # the bottleneck; well below means it waits for the API server.
            "operator_cpu_seconds": cpu,
            "operator_cpu_percent": 100 * cpu / max(1e-9, time.monotonic() - first),
            "time_to_ready_p50_s": percentile(latencies, 50),
            "time_to_ready_p99_s": percentile(latencies, 99),
            "time_to_ready_max_s": max(latencies),
            "certificates_per_second": n / (last_ready - first),
            "wall_seconds": last_ready - first,
            "create_seconds": last_create - first,
            "creates_per_second": n / max(1e-9, last_create - first),
        }


def memory_figures(report: Mapping[str, Any], n: int) -> dict[str, Any]:
    """The probe's report, with bytes per certificate by structure."""
    rss = report["rss_kib"] * 1024
    floor = report["import_floor_rss_kib"] * 1024
    structures = report.get("structures") or {}
    return {
        "rss_bytes": rss,
        "import_floor_rss_bytes": floor,
        "bytes_per_certificate_over_floor": (rss - floor) / n,
        "structures": structures,
        "structure_bytes_per_certificate": {
            name: round(v["bytes"] / n, 1) for name, v in structures.items() if v["bytes"] / n >= 1
        },
        "structures_total_bytes": sum(v["bytes"] for v in structures.values()),
        "malloc": report.get("malloc"),
        "pymalloc": report.get("pymalloc"),
        "import_floor_heap": report.get("import_floor_heap"),
        "gc_objects": report.get("gc_objects"),
        "report_seconds": report.get("report_seconds"),
        "tracemalloc": report.get("tracemalloc"),
    }
