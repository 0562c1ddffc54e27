"""The operator against a real API server: issuance per algorithm, idle and restart at scale, a renewal
storm, unrelated objects (noise) and bad input.

    python bench/bench_operator.py [scenario ...]     # default: all; see --help for the names
    BENCH_BEFORE=/work/wt/scale-before python bench/bench_operator.py   # before -> after, one sitting

Each scenario (idle-10k and restart-10k together) gets a fresh throwaway control plane (etcd,
kube-apiserver with an audit log of writes and lists, kube-controller-manager) and its own operator
process (bench/probe.py, i.e. `python -m mtls_operator` with a measuring probe inside), so its `Queue idle:
... writes=W` figures, its VmHWM and the API server's CPU and request counters are its own. With
BENCH_BEFORE the "before" operator (another checkout, its own venv and CRDs) runs first on its own control
plane, then this tree's. Objects are created with the `kubernetes` client from a few threads; what the
operator did is observed through watches, the API server's /metrics and its audit log (by user agent),
never by polling objects. Each scenario writes bench/results/<scenario>[.before].json and prints one
summary line on stdout (progress goes to stderr); bench/compare.py prints the before -> after table. The
aims are reported, not asserted. See docs/benchmarks.md.

Scale with BENCH_N (issuance; RSA uses a fifth), BENCH_IDLE_N (idle and restart), BENCH_STORM_N,
BENCH_NOISE_CERTS, BENCH_NOISE_SECRETS, BENCH_NOISE_DEPLOYMENTS; BENCH_CLIENTS sets the creating threads
(default 8), BENCH_SINGLE the single-certificate samples (default 20), BENCH_IDLE_WINDOW the idle window
in seconds (default 30), BENCH_RESYNC_AFTER the restarted operator's resync interval (default 60 s).
"""

from __future__ import annotations

import argparse
import base64
import functools
import math
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    AFTER,
    CERTS,
    ISSUERS,
    STAMP_ANNOTATION,
    ApiServerWindow,
    Cluster,
    CpuSampler,
    Operator,
    Variant,
    audit_writes,
    certificate_body,
    cluster,
    cpu_seconds,
    create_custom,
    create_with_retry,
    current_rss,
    fmt_mb,
    fmt_ms,
    fmt_num,
    issuer_body,
    loadavg,
    peak_rss,
    percentile,
    ready_status,
    rollout_complete,
    say,
    summary_line,
    variants_from_env,
    watch_custom,
    watch_deployments,
    watch_secrets,
    write_result,
)

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
GROUP_VERSION = ("mtls.dev", "v1alpha1")
NOISE_NAMESPACE = "bench-noise-junk"  # not audited: the API server's cost of the noise is not inflated
OPERATOR_AGENT = "mtls-operator"  # the operator's own client; kopf's watches say "kopf/<version>"


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


@dataclass(frozen=True)
class Algorithm:
    scenario: str
    label: str
    algorithm: str
    size: int | None
    n: int
    operator_env: Mapping[str, str] = field(default_factory=dict)


def algorithms() -> list[Algorithm]:
    n = env_int("BENCH_N", 1000)
    return [
        Algorithm("issuance-ecdsa-p256", "ECDSA-P256", "ECDSA", 256, n),
        Algorithm("issuance-ed25519", "Ed25519", "Ed25519", None, n),
        Algorithm("issuance-mldsa65", "ML-DSA-65", "MLDSA", 65, n),
        Algorithm("issuance-rsa2048", "RSA-2048", "RSA", 2048, max(1, n // 5)),
    ]


def variants() -> list[Algorithm]:
    """Scenarios run only when named: the operator with other settings, to compare within one run."""
    n = env_int("BENCH_N", 1000)
    return [
        Algorithm("issuance-ecdsa-p256-workers32", "ECDSA-P256", "ECDSA", 256, n, {"MTLS_WORKERS": "32"}),
        Algorithm("issuance-mldsa65-workers32", "ML-DSA-65", "MLDSA", 65, n, {"MTLS_WORKERS": "32"}),
    ]


# --------------------------------------------------------------------------------------------------
# Observers fed by watches


@dataclass
class CertTracker:
    """First time each certificate was seen Ready=True, and at revision >= `renewed_revision`."""

    renewed_revision: int = 2
    ready: dict[str, float] = field(default_factory=dict)
    renewed: dict[str, float] = field(default_factory=dict)
    renewal_time: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    revisions: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_event(self, kind: str, obj: dict[str, Any], t: float) -> None:
        if kind == "DELETED":
            return
        name = obj["metadata"]["name"]
        status = obj.get("status") or {}
        with self.lock:
            for cond in status.get("conditions") or []:
                if cond.get("type") == "Ready" and cond.get("reason"):
                    self.reasons[name] = str(cond["reason"])
            self.revisions[name] = int(status.get("revision") or 0)
            if name not in self.ready and ready_status(obj):
                self.ready[name] = t
            if int(status.get("revision") or 0) >= self.renewed_revision and ready_status(obj):
                self.renewed.setdefault(name, t)
            if status.get("renewalTime"):
                self.renewal_time[name] = str(status["renewalTime"])

    def count(self, which: str) -> int:
        with self.lock:
            return len(self.ready if which == "ready" else self.renewed)

    def has_reason(self, name: str) -> bool:
        """Whether the certificate's Ready condition carries a reason (it was judged, Ready or not)."""
        with self.lock:
            return name in self.reasons

    def revision(self, name: str) -> int:
        with self.lock:
            return self.revisions.get(name, 0)


@dataclass
class SecretTracker:
    added: dict[str, float] = field(default_factory=dict)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def on_event(self, kind: str, obj: dict[str, Any], t: float) -> None:
        if kind != "ADDED":
            return
        with self.cond:
            self.added.setdefault(obj["metadata"]["name"], t)
            self.cond.notify_all()

    def wait(self, name: str, timeout: float) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: name in self.added, timeout):
                raise RuntimeError(f"Secret {name} did not appear within {timeout:g}s")
            return self.added[name]


@dataclass
class RolloutTracker:
    """Deployments whose pod template got a new stamp and whose rollout is not complete yet."""

    stamps: dict[str, str | None] = field(default_factory=dict)
    in_flight: set[str] = field(default_factory=set)
    restarts: int = 0
    max_in_flight: int = 0
    restarted: set[str] = field(default_factory=set)
    last_restart_at: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_event(self, kind: str, obj: dict[str, Any], t: float) -> None:
        if kind == "DELETED":
            return
        name = obj["metadata"]["name"]
        template_meta = ((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}
        stamp = (template_meta.get("annotations") or {}).get(STAMP_ANNOTATION)
        with self.lock:
            before = self.stamps.get(name)
            self.stamps[name] = stamp
            if stamp is not None and stamp != before:
                self.restarts += 1
                self.restarted.add(name)
                self.last_restart_at = t
                self.in_flight.add(name)
            if name in self.in_flight and rollout_complete(obj):
                self.in_flight.discard(name)
            self.max_in_flight = max(self.max_in_flight, len(self.in_flight))


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


# --------------------------------------------------------------------------------------------------
# Steps shared by the scenarios


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
                self.c.custom.get_namespaced_custom_object(
                    "mtls.dev", "v1alpha1", namespace, ISSUERS, "bench-ca"
                )
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


# --------------------------------------------------------------------------------------------------
# Scenario 1: issuance per algorithm


def issuance(run: Run, alg: Algorithm) -> None:
    ns = run.c.namespace(f"bench-{alg.scenario}")
    op = run.operator(alg.scenario, ns, alg.operator_env)
    try:
        base_writes = run.issuer(op, ns, alg.algorithm, alg.size)
        base = op.idle[-1][1]
        tracker = CertTracker()
        certs = watch_custom(run.c, ns, CERTS, tracker.on_event)
        secrets = SecretTracker()
        secret_watch = watch_secrets(run.c, ns, secrets.on_event)
        bodies = [certificate_body(f"c{i:05d}", "bench-ca", alg.algorithm, alg.size) for i in range(alg.n)]
        figures = run.bulk(ns, tracker, bodies, timeout=120 + alg.n * 0.5, op=op)
        idle = op.wait_idle(base.issued + alg.n, timeout=120)
        writes = run.operator_writes(figures["burst_started_epoch"])
        figures["audited_operator_writes"] = writes
        figures["audited_operator_writes_per_certificate"] = sum(writes.values()) / alg.n
        figures["kopf_writes"] = run.kopf_writes(figures["burst_started_epoch"])
        figures["api_writes_per_certificate"] = (idle.writes - base_writes) / alg.n
        figures["api_reads_per_certificate"] = (idle.reads - base.reads) / alg.n
        figures["peak_rss_bytes_bulk"] = peak_rss(op.pid)

        # Single certificates, one at a time with the queue idle: create -> Secret ADDED.
        samples = env_int("BENCH_SINGLE", 20)
        from_return, from_send = [], []
        for i in range(samples):
            name = f"single{i:02d}"
            sent = time.monotonic()
            create_custom(run.c, ns, CERTS, certificate_body(name, "bench-ca", alg.algorithm, alg.size))
            returned = time.monotonic()
            seen = secrets.wait(f"{name}-tls", timeout=30)
            from_return.append(seen - returned)
            from_send.append(seen - sent)
            wait_until(lambda n=name: n in tracker.ready, 30, f"{name} Ready", lambda: "")
            time.sleep(0.3)  # the status patch and event after the Secret: let the queue drain
        figures["single_secret_p50_s"] = percentile(from_return, 50)
        figures["single_secret_p90_s"] = percentile(from_return, 90)
        figures["single_secret_max_s"] = max(from_return)
        figures["single_secret_from_send_p50_s"] = percentile(from_send, 50)
        figures["single_samples"] = samples
        figures["peak_rss_bytes"] = peak_rss(op.pid)
        certs.stop()
        secret_watch.stop()
    finally:
        op.stop()
    run.result(
        alg.scenario,
        alg.n,
        figures,
        {
            "algorithm": alg.label,
            "clients": run.clients,
            "operator_env": dict(alg.operator_env),
            "notes": "time-to-Ready from create call return to Ready=True seen on a watch; rate is N / "
            "(last Ready - first create call); writes from the operator's Queue idle line minus the "
            "issuer's, and as the API server's audit log recorded them (user agent mtls-operator); "
            "apiserver/etcd CPU over the burst (create calls of the bench included); single = create call "
            "return -> Secret ADDED on a watch, queue idle between samples.",
        },
    )
    print(
        summary_line(
            alg.scenario,
            alg.n,
            [
                ("rate", f"{figures['certificates_per_second']:.1f}/s"),
                ("p50", fmt_ms(figures["time_to_ready_p50_s"])),
                ("p99", fmt_ms(figures["time_to_ready_p99_s"])),
                ("writes/cert", fmt_num(figures["audited_operator_writes_per_certificate"], 2)),
                ("peakRSS", fmt_mb(figures["peak_rss_bytes"])),
                ("single->Secret p50", fmt_ms(figures["single_secret_p50_s"])),
                ("creates", f"{figures['creates_per_second']:.0f}/s"),
                (
                    "cpu operator/apiserver",
                    f"{figures['operator_cpu_seconds']:.1f}s/{figures['apiserver_cpu_seconds']:.1f}s",
                ),
            ],
        ),
        flush=True,
    )


# --------------------------------------------------------------------------------------------------
# Scenarios 2 and 3: idle at scale, then a restart into the same certificates (and its first resync)


def supports(variant: Variant, flag: str) -> bool:
    """Whether the variant's operator has a command-line flag (the "before" tree may lack it)."""
    import subprocess

    done = subprocess.run(
        [variant.python, "-m", "mtls_operator", "--help"], capture_output=True, text=True, check=False
    )
    return flag in done.stdout


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


def idle_and_restart(run: Run, wanted: set[str]) -> None:
    n = env_int("BENCH_IDLE_N", 10_000)
    window = env_int("BENCH_IDLE_WINDOW", 30)
    scenario = "idle-10k"
    ns = run.c.namespace("bench-idle")
    op = run.operator(scenario, ns)
    try:
        run.issuer(op, ns, "ECDSA", 256)
        base = op.idle[-1][1]
        tracker = CertTracker()
        certs = watch_custom(run.c, ns, CERTS, tracker.on_event)
        bodies = [certificate_body(f"c{i:05d}", "bench-ca", "ECDSA", 256) for i in range(n)]
        issued = run.bulk(ns, tracker, bodies, timeout=300 + n * 0.2, op=op)
        certs.stop()
        settled = op.wait_idle(base.issued + n, timeout=180)
        say(f"{scenario}: {n} issued; idle window of {window}s")
        scraped = op.scrape()  # Prometheus would have scraped by now: what that holds is counted
        events_before = certs.events
        cpu0, t0 = cpu_seconds(op.pid), time.monotonic()
        time.sleep(window)  # the measurement window itself, not a wait for a condition
        cpu1, t1 = cpu_seconds(op.pid), time.monotonic()
        rss = current_rss(op.pid)
        op.poll_log()
        after = op.idle[-1][1]
        say(f"{scenario}: memory by structure (the probe walks the heap)")
        memory = memory_figures(op.report(deep=True), n)
        trimmed = op.report(trim=True).get("trim")
        figures: dict[str, Any] = {
            "idle_window_seconds": t1 - t0,
            "idle_cpu_seconds": cpu1 - cpu0,
            "idle_cpu_percent": 100 * (cpu1 - cpu0) / (t1 - t0),
            "rss_bytes": rss,
            "peak_rss_bytes": peak_rss(op.pid),
            "pending_renewals": settled.waiting,
            "processed_during_window": after.processed - settled.processed,
            "writes_during_window": after.writes - settled.writes,
            "certificate_events_before_window": events_before,
            "metrics_bytes": scraped,
            "memory": memory,
            "malloc_trim": trimmed,
            "issuance": issued,
        }
    finally:
        op.stop()
    run.result(
        scenario,
        n,
        figures,
        {
            "algorithm": "ECDSA-P256",
            "notes": "CPU = utime+stime of the operator from /proc/<pid>/stat over the window; pending "
            "renewals = the waiting= figure of the operator's last Queue idle line (certificates use the "
            "default 90-day duration). memory: the probe's report after the window (bench/probe.py): "
            "bytes reachable from each runtime structure and kopf's per-object memories, each object "
            "counted once (sys.getsizeof), and the RSS right after the operator's modules were imported "
            "(the floor). malloc_trim: RSS before and after glibc's malloc_trim(0), taken after the rest.",
        },
    )
    print(
        summary_line(
            scenario,
            n,
            [
                ("RSS", fmt_mb(figures["rss_bytes"])),
                ("peakRSS", fmt_mb(figures["peak_rss_bytes"])),
                ("floor", fmt_mb(memory["import_floor_rss_bytes"])),
                ("perCert", f"{memory['bytes_per_certificate_over_floor']:.0f}B"),
                ("idleCPU", f"{figures['idle_cpu_seconds']:.2f}s/{window}s"),
                ("pending", str(figures["pending_renewals"])),
                ("issue rate", f"{issued['certificates_per_second']:.1f}/s"),
            ],
        ),
        flush=True,
    )
    if "restart-10k" in wanted:
        restart(run, ns, n, settled.waiting)


def restart(run: Run, ns: str, n: int, pending: int) -> None:
    """A new operator into `n` valid certificates: time until every one is judged (its renewal
    scheduled) and the queue is idle, the writes it made (the API server's audit log), and the cost of
    its first resync (metadata-only paginated lists)."""
    scenario = "restart-10k"
    resync_after = env_int("BENCH_RESYNC_AFTER", 60)
    has_resync = supports(run.variant, "--resync-interval")
    env = {"MTLS_RESYNC_INTERVAL": str(resync_after)} if has_resync else {}
    server = ApiServerWindow(run.c).start()
    epoch0 = time.time()
    op = run.operator(scenario, ns, env)
    sampler = CpuSampler({"operator": op.pid, "apiserver": run.c.pid("kube-apiserver")}).start()
    try:
        deadline = time.monotonic() + 300
        while True:
            op.poll_log()
            if op.idle:
                seen, last = op.idle[-1]
                if last.processed >= n + 1 and last.waiting >= pending and time.monotonic() - seen >= 3:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{scenario}: not steady within 300s (last: {op.idle[-1:]})")
            time.sleep(0.2)
        steady_at = op.idle_logged[-1]
        steady = op.idle[-1][1]
        op.scrape()
        cpu_to_steady = sampler.at(steady_at, "operator")
        rss_steady, hwm_steady = current_rss(op.pid), peak_rss(op.pid)
        startup = server.stop()
        say(f"{scenario}: steady {steady_at - op.started_epoch:.1f}s after the start")
        resync: dict[str, Any] | None = None
        if has_resync:
            resync = measure_resync(run, op, sampler, epoch0 + resync_after)
        time.sleep(2)  # let the audit log catch up with the last requests
        writes = run.operator_writes(epoch0)
        figures: dict[str, Any] = {
            "seconds_to_steady": steady_at - op.started_epoch,
            "seconds_to_started_log": op.ready_at - op.started_at,
            "operator_cpu_seconds_to_steady": cpu_to_steady,
            "rss_bytes_at_steady": rss_steady,
            "peak_rss_bytes": hwm_steady,
            "processed": steady.processed,
            "pending_renewals": steady.waiting,
            "queue_idle_writes": steady.writes,
            "queue_idle_reads": steady.reads,
            "audited_operator_writes": writes,
            "writes": sum(writes.values()),
            "kopf_writes": run.kopf_writes(epoch0),
            "startup_apiserver": startup,
            "resync": resync,
        }
    finally:
        sampler.stop()
        op.stop()
    run.result(
        scenario,
        n,
        figures,
        {
            "notes": "steady = the operator's Queue idle line (log time) once it had processed every "
            "certificate and the issuer and scheduled every renewal, with no newer line for 3 s; measured "
            "from the process start. Writes: the API server's audit log (user agent mtls-operator) from "
            "the start until after the first resync. resync: the first pass of the restarted operator "
            f"(--resync-interval {resync_after}s): its LIST calls from the audit log (first received -> "
            "last completed), operator and kube-apiserver CPU over that window (sampled every 0.2 s, "
            "operator's idle rate before it subtracted), LIST response bytes from the API server's "
            "apiserver_response_sizes.",
        },
    )
    line = [
        ("steady", f"{figures['seconds_to_steady']:.1f}s"),
        ("writes", str(figures["writes"])),
        ("cpu", f"{cpu_to_steady:.1f}s"),
        ("peakRSS", fmt_mb(hwm_steady)),
    ]
    if resync:
        line += [
            ("resync", f"{resync['seconds']:.2f}s"),
            ("resyncCPU", f"{resync['operator_cpu_seconds']:.2f}s"),
            ("resyncLists", str(resync["list_calls"])),
        ]
    print(summary_line(scenario, n, line), flush=True)


def measure_resync(run: Run, op: Operator, sampler: CpuSampler, expected_at: float) -> dict[str, Any]:
    """The first resync of `op`: its LIST calls (audit log), CPU and response bytes."""
    before_text = run.c.metrics_text()
    from harness import delta, response_bytes

    deadline = max(time.time(), expected_at) + 120
    lists: list[Any] = []
    while time.time() < deadline:
        lists = [
            r
            for r in run.c.read_audit()
            if r.verb == "list" and r.user_agent.startswith(OPERATOR_AGENT) and r.received >= expected_at - 1
        ]
        if lists and time.time() - max(r.completed for r in lists) > 5:
            break
        time.sleep(0.5)
    if not lists:
        return {"error": "no resync LIST seen within 120 s of its interval"}
    start = min(r.received for r in lists)
    end = max(r.completed for r in lists)
    time.sleep(1)
    sizes = delta(response_bytes(run.c.metrics_text()), response_bytes(before_text))
    baseline_rate = sampler.between(start - 10, start - 0.2, "operator") / 9.8
    tail = 1.0  # the comparison runs after the last page
    span = end - start + tail + 0.2
    cpu = sampler.between(start - 0.2, end + tail, "operator")
    by_resource: dict[str, int] = {}
    for r in lists:
        by_resource[r.resource] = by_resource.get(r.resource, 0) + 1
    return {
        "seconds": end - start,
        "list_calls": len(lists),
        "list_calls_by_resource": by_resource,
        "operator_cpu_seconds": max(0.0, cpu - baseline_rate * span),
        "operator_cpu_seconds_raw": cpu,
        "apiserver_cpu_seconds": sampler.between(start - 0.2, end + tail, "apiserver"),
        "list_response_bytes": {
            " ".join(k for k in key if k): v for key, v in sizes.items() if key[0] == "LIST"
        },
        "started_after_operator_start": start - op.started_epoch,
    }


# --------------------------------------------------------------------------------------------------
# Scenario 4: renewal storm


def deployment_body(name: str, secrets: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            # No kubelet here: with 0 replicas a rollout completes as soon as the controller observes it.
            "replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "registry.k8s.io/pause:3.10",
                            "volumeMounts": [
                                {"name": f"s{i}", "mountPath": f"/tls/{i}"} for i in range(len(secrets))
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": f"s{i}", "secret": {"secretName": s}} for i, s in enumerate(secrets)
                    ],
                },
            },
        },
    }


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _rate_of(variant: Variant) -> float | None:
    """The issuance rate the idle scenario measured for this variant (sizes the storm's gap)."""
    import json

    from harness import RESULTS

    try:
        doc = json.loads((RESULTS / f"{variant.result_name('idle-10k')}.json").read_text())
        return float(doc["figures"]["issuance"]["certificates_per_second"])
    except (OSError, KeyError, ValueError, TypeError):
        return None


def renewal_storm(run: Run) -> None:
    issue_rate_hint = _rate_of(run.variant)
    n = env_int("BENCH_STORM_N", 10_000)
    deployments = min(env_int("BENCH_STORM_DEPLOYMENTS", 100), n)
    scenario = "renewal-storm"
    ns = run.c.namespace("bench-storm")
    # Renewal is due (duration - renewBefore) after issuance. The brief's 4m/3m gives 1 minute, but the
    # storm must not start before every certificate is issued, so the gap grows with the issuance time
    # expected from the rate measured at 10k (idle scenario), with a margin.
    rate = issue_rate_hint or 40.0
    gap = max(60, math.ceil((n / rate * 1.5 + 30) / 10) * 10)
    duration, renew_before = f"{gap + 180}s", "3m"
    say(f"{scenario}: duration {duration}, renewBefore {renew_before} (renewal due {gap}s after issuance)")
    tracker = CertTracker(renewed_revision=2)
    certs = watch_custom(run.c, ns, CERTS, tracker.on_event)
    op_a = run.operator(scenario + "-issue", ns)
    try:
        run.issuer(op_a, ns, "ECDSA", 256)
        base = op_a.idle[-1][1]
        bodies = [
            certificate_body(
                f"c{i:05d}", "bench-ca", "ECDSA", 256, duration=duration, renewBefore=renew_before
            )
            for i in range(n)
        ]
        issued = run.bulk(ns, tracker, bodies, timeout=300 + n * 0.2, op=op_a)
        op_a.wait_idle(base.issued + n, timeout=180)
        issued["peak_rss_bytes"] = peak_rss(op_a.pid)
    finally:
        op_a.stop()
    renewed_early = tracker.count("renewed")
    # Workloads consuming the Secrets, created while no operator runs: never stamped, so only renewals
    # (revision 2) restart them.
    secrets = [f"c{i:05d}-tls" for i in range(n)]
    per = math.ceil(n / deployments)
    # "blocks": Deployment d mounts certificates d*per .. d*per+per-1, which the operator renews at about
    # the same time (it works through them roughly in name order), so one coalesced restart each: the
    # kind case. "interleaved": Deployment d mounts every certificate i with i % deployments == d, whose
    # renewals are spread over the whole storm: the restart pacing (coalesce, min interval) is exercised.
    layout = os.environ.get("BENCH_STORM_LAYOUT", "blocks")
    for d in range(deployments):
        mine = secrets[d::deployments] if layout == "interleaved" else secrets[d * per : (d + 1) * per]
        run.c.apps.create_namespaced_deployment(ns, deployment_body(f"app{d:03d}", mine))
    rollouts = RolloutTracker()
    deploy_watch = watch_deployments(run.c, ns, rollouts.on_event)
    with tracker.lock:
        due = max(parse_time(v) for v in tracker.renewal_time.values())
    wait_s = (due - datetime.now(UTC)).total_seconds() + 1
    say(f"{scenario}: {n} issued ({renewed_early} renewed already); storm starts in {max(0, wait_s):.0f}s")
    if wait_s > 0:
        time.sleep(wait_s)  # until the last certificate is due: then all are due at once
    server = ApiServerWindow(run.c).start()
    storm_epoch = time.time()
    op_b = run.operator(scenario, ns)
    try:
        wait_until(
            lambda: tracker.count("renewed") >= n,
            600 + n * 0.2,
            f"{n} certificates renewed",
            lambda: f"{tracker.count('renewed')}/{n} renewed, VmHWM {fmt_mb(peak_rss(op_b.pid))}",
        )
        with tracker.lock:
            times = sorted(tracker.renewed.values())
        # Then let the restarts settle: the queue quiet and no new stamp for longer than the coalesce
        # window (10 s), or BENCH_STORM_SETTLE seconds at most (MinInterval pacing can go on for minutes).
        settle_deadline = time.monotonic() + env_int("BENCH_STORM_SETTLE", 120)
        settled = False
        while time.monotonic() < settle_deadline:
            op_b.poll_log()
            now = time.monotonic()
            with rollouts.lock:
                last_restart = rollouts.last_restart_at
            if (
                op_b.idle
                and op_b.idle[-1][1].issued >= n - renewed_early
                and now - op_b.idle[-1][0] >= 2.5
                and now - max(last_restart, times[-1]) >= 12
            ):
                settled = True
                break
            time.sleep(0.5)
        idle = op_b.idle[-1][1]
        apiserver = server.stop()
        time.sleep(1)  # the audit log is written as requests complete: let it catch up
        writes = run.operator_writes(storm_epoch)
        restart_patches = sum(v for k, v in writes.items() if k.startswith("patch deployments"))
        with rollouts.lock:
            restarts, restarted, max_in_flight = (
                rollouts.restarts,
                len(rollouts.restarted),
                rollouts.max_in_flight,
            )
        figures: dict[str, Any] = {
            "drain_seconds": times[-1] - op_b.started_at,
            "drain_seconds_from_operator_ready": times[-1] - op_b.ready_at,
            "first_to_last_renewal_seconds": times[-1] - times[0],
            "renewals_per_second": n / (times[-1] - op_b.started_at),
            "peak_rss_bytes": peak_rss(op_b.pid),
            "api_writes_per_renewal": idle.writes / n,
            "api_writes_per_renewal_without_restarts": (idle.writes - restarts) / n,
            # The same, counted by the API server (audit log, user agent mtls-operator), by kind of write.
            "audited_operator_writes": writes,
            "audited_writes_per_renewal": sum(writes.values()) / n,
            "audited_writes_per_renewal_without_restarts": (sum(writes.values()) - restart_patches) / n,
            "kopf_writes": run.kopf_writes(storm_epoch),
            "apiserver": apiserver,
            "apiserver_cpu_seconds": apiserver["apiserver_cpu_seconds"],
            "operator_cpu_seconds": cpu_seconds(op_b.pid),
            "api_reads_per_renewal": idle.reads / n,
            "deployments": deployments,
            "deployment_layout": layout,
            "secrets_per_deployment": per,
            "rollout_restarts": restarts,
            "deployments_restarted": restarted,
            "max_rollouts_in_flight": max_in_flight,
            "renewed_before_storm": renewed_early,
            "rollouts_settled": settled,
            "duration": duration,
            "renew_before": renew_before,
            "initial_issuance": issued,
        }
    finally:
        op_b.stop()
        certs.stop()
        deploy_watch.stop()
    run.result(
        scenario,
        n,
        figures,
        {
            "algorithm": "ECDSA-P256",
            "notes": "Certificates are issued by a first operator, which is then stopped; once every "
            "renewalTime has passed a second operator starts and finds all N due at once. drain = its "
            "start -> the last certificate seen at revision >= 2 (Ready) on a watch. Writes are the second "
            "operator's Queue idle writes= / N (they include the Deployment patches). In flight = a "
            "Deployment from the watch event with a new mtls.dev/tls-stamp until its rollout is complete "
            "(0 replicas: as soon as the Deployment controller observes it). Restarts counted until the "
            "queue was quiet and no stamp came for 12 s (rollouts_settled), or BENCH_STORM_SETTLE s at most.",
        },
    )
    print(
        summary_line(
            scenario,
            n,
            [
                ("drain", f"{figures['drain_seconds']:.1f}s"),
                ("rate", f"{figures['renewals_per_second']:.1f}/s"),
                ("peakRSS", fmt_mb(figures["peak_rss_bytes"])),
                ("writes/renewal", fmt_num(figures["audited_writes_per_renewal"], 2)),
                ("restarts", str(restarts)),
                ("maxInFlight", str(max_in_flight)),
            ],
        ),
        flush=True,
    )


# --------------------------------------------------------------------------------------------------
# Scenario 5: noise (Secrets and Deployments the operator has nothing to do with)


def create_parallel(clients: int, calls: list[tuple[Callable[..., Any], tuple[Any, ...]]]) -> float:
    """Run create calls from `clients` threads; the seconds it took."""
    started = time.monotonic()
    with ThreadPoolExecutor(clients, thread_name_prefix="bench-noise") as pool:
        for f in [pool.submit(create_with_retry, fn, *args) for fn, args in calls]:
            f.result()
    return time.monotonic() - started


def wait_quiet(sampler: CpuSampler, name: str, per_5s: float, timeout: float) -> float:
    """Wait until `name` used less than `per_5s` CPU seconds in each of two successive 5 s spells."""
    deadline = time.time() + timeout
    quiet = 0
    while time.time() < deadline:
        t = time.time()
        time.sleep(5)  # one spell of the CPU-rate measurement
        quiet = quiet + 1 if sampler.between(t, time.time(), name) < per_5s else 0
        if quiet >= 2:
            return time.time()
    return time.time()


def noise(run: Run) -> None:
    """An operator serving every namespace holds N certificates; then Secrets of ~10 KB and Deployments
    it has nothing to do with are created in another namespace. Its RSS growth and CPU, next to the API
    server's, until both are quiet again."""
    scenario = "noise"
    n = env_int("BENCH_NOISE_CERTS", 1000)
    n_secrets = env_int("BENCH_NOISE_SECRETS", 20_000)
    n_deployments = env_int("BENCH_NOISE_DEPLOYMENTS", 5000)
    ns, junk = run.c.namespace("bench-noise"), run.c.namespace(NOISE_NAMESPACE)
    op = run.operator(scenario, None)
    try:
        run.issuer(op, ns, "ECDSA", 256)
        base = op.idle[-1][1]
        tracker = CertTracker()
        certs = watch_custom(run.c, ns, CERTS, tracker.on_event)
        bodies = [certificate_body(f"c{i:05d}", "bench-ca", "ECDSA", 256) for i in range(n)]
        run.bulk(ns, tracker, bodies, timeout=120 + n * 0.5, op=op)
        certs.stop()
        settled = op.wait_idle(base.issued + n, timeout=120)
        op.scrape()
        sampler = CpuSampler({"operator": op.pid, "apiserver": run.c.pid("kube-apiserver")}).start()
        time.sleep(5)  # a quiet spell before the noise: the baseline RSS
        rss0 = current_rss(op.pid) or 0
        server = ApiServerWindow(run.c).start()
        t0 = time.time()
        blob = base64.b64encode(os.urandom(7680)).decode()  # 10 KB once encoded, as the issue's Secrets
        secrets = [
            (
                run.c.core.create_namespaced_secret,
                (junk, {"metadata": {"name": f"noise-{i:05d}"}, "type": "Opaque", "data": {"blob": blob}}),
            )
            for i in range(n_secrets)
        ]
        secrets_seconds = create_parallel(run.clients, secrets)
        say(f"{scenario}: {n_secrets} Secrets in {secrets_seconds:.0f}s; now {n_deployments} Deployments")
        # Half the Deployments mount one of those Secrets (what the rollout index keeps), half nothing.
        deployments = [
            (
                run.c.apps.create_namespaced_deployment,
                (junk, deployment_body(f"noise-{i:05d}", [f"noise-{i:05d}"] if i % 2 == 0 else [])),
            )
            for i in range(n_deployments)
        ]
        deployments_seconds = create_parallel(run.clients, deployments)
        created = time.time()
        # The controller manager goes on writing (ReplicaSets, Deployment status: events the operator's
        # unfiltered workload watch receives): wait until the operator and the API server are quiet.
        wait_quiet(sampler, "operator", 0.05, 300)
        end = wait_quiet(sampler, "apiserver", 0.5, 300)
        rss1, hwm1 = current_rss(op.pid) or 0, peak_rss(op.pid) or 0
        apiserver = server.stop()
        op_cpu = sampler.between(t0, end, "operator")
        api_cpu = sampler.between(t0, end, "apiserver")
        op.poll_log()
        after = op.idle[-1][1]
        memory = memory_figures(op.report(deep=True), n)
        sampler.stop()
        figures: dict[str, Any] = {
            "certificates": n,
            "noise_secrets": n_secrets,
            "noise_secret_bytes": len(blob),
            "noise_deployments": n_deployments,
            "rss_before_bytes": rss0,
            "rss_after_bytes": rss1,
            "rss_growth_bytes": rss1 - rss0,
            "peak_rss_growth_bytes": max(0, hwm1 - rss0),
            "operator_cpu_seconds": op_cpu,
            "apiserver_cpu_seconds": api_cpu,
            "operator_cpu_percent_of_apiserver": 100 * op_cpu / max(1e-9, api_cpu),
            "noise_seconds": end - t0,
            "create_seconds": created - t0,
            "secrets_create_seconds": secrets_seconds,
            "deployments_create_seconds": deployments_seconds,
            "processed_during_noise": after.processed - settled.processed,
            "writes_during_noise": after.writes - settled.writes,
            "apiserver": apiserver,
            "memory_after": memory,
        }
    finally:
        op.stop()
    run.result(
        scenario,
        n,
        figures,
        {
            "notes": "The operator serves every namespace. After its N certificates are issued, the bench "
            f"creates Secrets of ~10 KB and Deployments (0 replicas; half mount one of those Secrets) in "
            f"{NOISE_NAMESPACE} (not audited). Window: first create -> the operator used < 0.05 CPU-s and "
            "kube-apiserver < 0.5 CPU-s in each of two 5 s spells after the last create (the controller "
            "manager keeps writing ReplicaSets and Deployment status for a while). RSS growth = VmRSS after "
            "- VmRSS before; CPU from /proc/<pid>/stat sampled every 0.2 s.",
        },
    )
    print(
        summary_line(
            scenario,
            n,
            [
                ("RSSgrowth", fmt_mb(figures["rss_growth_bytes"])),
                ("peakGrowth", fmt_mb(figures["peak_rss_growth_bytes"])),
                ("cpu operator/apiserver", f"{op_cpu:.1f}s/{api_cpu:.1f}s"),
                ("ratio", f"{figures['operator_cpu_percent_of_apiserver']:.1f}%"),
                ("window", f"{figures['noise_seconds']:.0f}s"),
            ],
        ),
        flush=True,
    )


# --------------------------------------------------------------------------------------------------
# Scenario 6: bad input


def max_sans_certificate(name: str) -> dict[str, Any]:
    """A certificate with as many and as long SANs as the CRD allows (100 of each kind, longest names)."""

    def dns(i: int) -> str:
        label = "a" * 59 + f"{i:04d}"  # 63-character labels
        return ".".join([label, "b" * 63, "c" * 63, "d" * 55 + ".bench"])  # 253 characters

    def uri(i: int) -> str:
        head = f"spiffe://bench.example/ns/bench/sa/{i:04d}/"
        return head + "p" * (2048 - len(head))

    def email(i: int) -> str:
        return (
            f"{i:04d}" + "e" * 60 + "@" + ("f" * 63 + ".") * 2 + "g" * (254 - 4 - 60 - 1 - 128 - 4) + ".com"
        )

    body = certificate_body(
        name,
        "bench-ca",
        "ECDSA",
        256,
        dnsNames=[dns(i) for i in range(100)],
        # Addresses in a certificate, never contacted.
        ipAddresses=[f"127.0.{i}.1" for i in range(50)] + [f"fd00::{i:x}" for i in range(50)],
        uris=[uri(i) for i in range(100)],
        emailAddresses=[email(i) for i in range(100)],
    )
    del body["spec"]["commonName"]
    return body


def bad_input(run: Run) -> None:
    """Inputs that cost the operator most per object: the largest Secret, the most SANs, a workload with
    1,000 volumes. Each is measured as the longest event-loop stall (the probe's lag monitor: every worker
    waits while the loop is blocked) from the input until the queue is idle again."""
    scenario = "bad-input"
    ns = run.c.namespace("bench-bad")
    op = run.operator(scenario, ns, {"BENCH_LAG": "1", "MTLS_ROLLOUT_COALESCE": "1"})
    steps: dict[str, Any] = {}
    try:
        run.issuer(op, ns, "ECDSA", 256)
        base = op.idle[-1][1]
        tracker = CertTracker()
        certs = watch_custom(run.c, ns, CERTS, tracker.on_event)
        rollouts = RolloutTracker()
        deploy_watch = watch_deployments(run.c, ns, rollouts.on_event)
        bodies = [certificate_body(f"c{i:05d}", "bench-ca", "ECDSA", 256) for i in range(20)]
        run.bulk(ns, tracker, bodies, timeout=120, op=op)
        op.wait_idle(base.issued + 20, timeout=60)

        def step(name: str, act: Callable[[], None], done: Callable[[], bool] | None, what: str = "") -> None:
            """Act, wait until `done` and the queue is idle again (`done` None: nothing to wait for but
            a 5 s spell for the watch event to arrive and be taken in)."""
            say(f"{scenario}: {name}")
            t0, m0 = time.time(), time.monotonic()
            act()
            if done is None:
                time.sleep(5)
            else:
                wait_until(done, 120, what, lambda: "")
                op.wait_idle(0, timeout=120, quiet=3, after=m0)
            t1 = time.time()
            lag = op.report()["lag"]
            stalls = [ms for at, ms in lag["stalls"] if t0 - 1 <= at <= t1]
            steps[name] = {
                "seconds_to_done": t1 - t0,
                "max_stall_seconds": max(stalls, default=0.0) / 1000,
                "stalls_over_10ms": len(stalls),
                "stalls_over_1s": sum(1 for ms in stalls if ms > 1000),
            }
            say(f"{scenario}: {name}: max stall {steps[name]['max_stall_seconds'] * 1000:.0f} ms")

        # 1. The most SANs the CRD allows.
        step(
            "max-sans-certificate",
            lambda: create_custom(run.c, ns, CERTS, max_sans_certificate("sans")),
            lambda: "sans" in tracker.ready or tracker.has_reason("sans"),
            "the max-SANs certificate judged",
        )
        steps["max-sans-certificate"]["ready"] = "sans" in tracker.ready

        # 2. A certificate's Secret overwritten with ~1 MiB of PEM (a leaf, then hundreds of copies of the
        #    CA certificate in tls.crt and ca.crt): the operator must judge it and re-issue.
        secret = run.c.core.read_namespaced_secret("c00000-tls", ns)
        ca_pem = base64.b64decode(secret.data["ca.crt"])
        leaf = base64.b64decode(secret.data["tls.crt"])
        copies = (1_000_000 // 2) // len(ca_pem)
        secret.data["tls.crt"] = base64.b64encode(leaf + ca_pem * copies).decode()
        secret.data["ca.crt"] = base64.b64encode(ca_pem * copies).decode()
        size = sum(len(base64.b64decode(v)) for v in secret.data.values())
        step(
            "1MiB-certificate-secret",
            lambda: run.c.core.replace_namespaced_secret("c00000-tls", ns, secret),
            lambda: tracker.revision("c00000") >= 2,
            "c00000 re-issued",
        )
        steps["1MiB-certificate-secret"]["secret_bytes"] = size

        # 3. An unrelated 1 MiB Secret carrying the label the operator's Secret watch selects.
        step(
            "1MiB-labelled-secret",
            lambda: run.c.core.create_namespaced_secret(
                ns,
                {
                    "metadata": {"name": "big", "labels": {"mtls.dev/secret-role": "ca"}},
                    "type": "Opaque",
                    "data": {"blob": base64.b64encode(os.urandom(1_040_000)).decode()},
                },
            ),
            None,
        )

        # 4. A Deployment with 1,000 Secret volumes (20 of them the operator's), then a renewal of one.
        names = [f"c{i:05d}-tls" for i in range(20)] + [f"other-{i:04d}" for i in range(980)]
        step(
            "1000-volume-workload",
            lambda: run.c.apps.create_namespaced_deployment(ns, deployment_body("wide", names)),
            None,  # indexed by the rollout manager, not queued: nothing logs when it is done
        )
        restarts0 = rollouts.restarts
        step(
            "1000-volume-workload-restart",
            lambda: run.c.custom.patch_namespaced_custom_object(
                GROUP_VERSION[0],
                GROUP_VERSION[1],
                ns,
                CERTS,
                "c00001",
                {"metadata": {"annotations": {"mtls.dev/renew-requested-at": "bench-1"}}},
            ),
            lambda: rollouts.restarts > restarts0,
            "the wide Deployment restarted",
        )
        certs.stop()
        deploy_watch.stop()
        lag = op.report()["lag"]
    finally:
        op.stop()
    figures = {
        "steps": steps,
        "max_stall_seconds": max(s["max_stall_seconds"] for s in steps.values()),
        "overall_max_lag_seconds": lag["max_ms"] / 1000,
        "lag_samples": lag["samples"],
    }
    run.result(
        scenario,
        len(steps),
        figures,
        {
            "notes": "Stall = how late a 20 ms sleep on the operator's event loop woke (bench/probe.py, "
            "BENCH_LAG=1): while the loop runs something synchronous no worker moves. Per step, the "
            "largest stall from the input until the queue was idle for 3 s.",
        },
    )
    print(
        summary_line(
            scenario,
            len(steps),
            [(name, f"{s['max_stall_seconds'] * 1000:.0f}ms") for name, s in steps.items()],
        ),
        flush=True,
    )


# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    names = [a.scenario for a in algorithms()] + [
        "idle-10k",
        "restart-10k",
        "renewal-storm",
        "noise",
        "bad-input",
    ]
    optional = [a.scenario for a in variants()]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "scenarios",
        nargs="*",
        metavar="scenario",
        help=f"default: all of {', '.join(names)}; also {', '.join(optional)}",
    )
    args = p.parse_args(argv)
    wanted = set(args.scenarios or names)
    unknown = sorted(wanted - set(names) - set(optional))
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(names + optional)}")
    logs = Path(tempfile.mkdtemp(prefix="mtls-bench-logs-"))
    started = time.monotonic()
    groups: list[tuple[str, Callable[[Run], None], Sequence[str]]] = []
    for alg in algorithms() + variants():
        if alg.scenario in wanted:
            groups.append((alg.scenario, functools.partial(issuance, alg=alg), ()))
    if wanted & {"idle-10k", "restart-10k"}:
        groups.append(("idle-10k", functools.partial(idle_and_restart, wanted=wanted), ()))
    if "renewal-storm" in wanted:
        groups.append(("renewal-storm", renewal_storm, ()))
    if "noise" in wanted:
        groups.append(("noise", noise, (NOISE_NAMESPACE,)))
    if "bad-input" in wanted:
        groups.append(("bad-input", bad_input, ()))
    failed = []
    for name, scenario, quiet in groups:
        # Each variant on its own fresh control plane, one after the other: the same sitting, the same
        # empty API server, its counters and CPU its own.
        for variant in variants_from_env():
            say(f"{name} [{variant.name}]")
            try:
                with cluster(variant.crd_dir, quiet) as c:
                    scenario(Run(c, logs, variant))
            except Exception as exc:  # one failed scenario must not lose the others' figures
                failed.append(f"{name} [{variant.name}]")
                say(f"{name} [{variant.name}] FAILED: {type(exc).__name__}: {exc}")
    say(f"done in {time.monotonic() - started:.0f}s; operator logs in {logs}")
    if failed:
        say(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
