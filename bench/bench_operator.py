"""The operator against a real API server: issuance per algorithm, idle at scale, and a renewal storm.

    python bench/bench_operator.py [scenario ...]     # default: all; see --help for the names

One throwaway control plane (etcd, kube-apiserver, kube-controller-manager) serves every scenario; each
scenario gets a fresh namespace and its own operator process (`python -m mtls_operator --namespace <ns>`),
so its `Queue idle: ... writes=W` figures and its VmHWM are its own. Objects are created with the
`kubernetes` client from a few threads; what the operator did is observed through watches, never by
polling objects. Each scenario writes bench/results/<scenario>.json and prints one summary line on stdout
(progress goes to stderr). The aims are reported, not asserted. See docs/benchmarks.md.

Scale with BENCH_N (issuance; RSA uses a fifth), BENCH_IDLE_N, BENCH_STORM_N; BENCH_CLIENTS sets the
creating threads (default 8), BENCH_SINGLE the single-certificate samples (default 20), BENCH_IDLE_WINDOW
the idle window in seconds (default 30).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    CERTS,
    ISSUERS,
    STAMP_ANNOTATION,
    Cluster,
    Operator,
    certificate_body,
    cluster,
    cpu_seconds,
    create_custom,
    current_rss,
    fmt_mb,
    fmt_ms,
    fmt_num,
    issuer_body,
    peak_rss,
    percentile,
    ready_status,
    rollout_complete,
    say,
    summary_line,
    watch_custom,
    watch_deployments,
    watch_secrets,
    write_result,
)

AIMS = {
    "issuance-ecdsa-p256": {"certificates_per_second": 100.0, "single_p50_ms": 150.0},
    "issuance-ed25519": {"single_p50_ms": 150.0},
    "issuance-mldsa65": {"certificates_per_second": 60.0, "single_p50_ms": 150.0},
    "issuance-rsa2048": {"single_p50_ms": 150.0},
    "idle-10k": {"rss_mb": 200.0},
}


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
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_event(self, kind: str, obj: dict[str, Any], t: float) -> None:
        if kind == "DELETED":
            return
        name = obj["metadata"]["name"]
        status = obj.get("status") or {}
        with self.lock:
            if name not in self.ready and ready_status(obj):
                self.ready[name] = t
            if int(status.get("revision") or 0) >= self.renewed_revision and ready_status(obj):
                self.renewed.setdefault(name, t)
            if status.get("renewalTime"):
                self.renewal_time[name] = str(status["renewalTime"])

    def count(self, which: str) -> int:
        with self.lock:
            return len(self.ready if which == "ready" else self.renewed)


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
    def __init__(self, c: Cluster, logs: Path) -> None:
        self.c = c
        self.logs = logs
        self.clients = env_int("BENCH_CLIENTS", 8)

    def operator(self, scenario: str, namespace: str, env: Mapping[str, str] | None = None) -> Operator:
        log = self.logs / f"{scenario}.log"
        say(f"{scenario}: operator log {log}")
        return Operator(self.c.kubeconfig, log, [namespace], env).start()

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
        return {
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
    aims = AIMS.get(alg.scenario, {})
    write_result(
        alg.scenario,
        alg.n,
        figures,
        {
            "algorithm": alg.label,
            "clients": run.clients,
            "operator_env": dict(alg.operator_env),
            "aims": aims,
            "notes": "time-to-Ready from create call return to Ready=True seen on a watch; rate is N / "
            "(last Ready - first create call); writes from the operator's Queue idle line minus the "
            "issuer's; single = create call return -> Secret ADDED on a watch, queue idle between samples.",
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
                ("writes/cert", fmt_num(figures["api_writes_per_certificate"], 2)),
                ("peakRSS", fmt_mb(figures["peak_rss_bytes"])),
                ("single->Secret p50", fmt_ms(figures["single_secret_p50_s"])),
                ("creates", f"{figures['creates_per_second']:.0f}/s"),
            ],
        ),
        flush=True,
    )


# --------------------------------------------------------------------------------------------------
# Scenario 2: idle at scale


def idle_at_scale(run: Run) -> None:
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
        events_before = certs.events
        cpu0, t0 = cpu_seconds(op.pid), time.monotonic()
        time.sleep(window)  # the measurement window itself, not a wait for a condition
        cpu1, t1 = cpu_seconds(op.pid), time.monotonic()
        op.poll_log()
        after = op.idle[-1][1]
        figures: dict[str, Any] = {
            "idle_window_seconds": t1 - t0,
            "idle_cpu_seconds": cpu1 - cpu0,
            "idle_cpu_percent": 100 * (cpu1 - cpu0) / (t1 - t0),
            "rss_bytes": current_rss(op.pid),
            "peak_rss_bytes": peak_rss(op.pid),
            "pending_renewals": settled.waiting,
            "processed_during_window": after.processed - settled.processed,
            "writes_during_window": after.writes - settled.writes,
            "certificate_events_before_window": events_before,
            "issuance": issued,
        }
    finally:
        op.stop()
    write_result(
        scenario,
        n,
        figures,
        {
            "algorithm": "ECDSA-P256",
            "aims": AIMS[scenario],
            "notes": "CPU = utime+stime of the operator from /proc/<pid>/stat over the window; pending "
            "renewals = the waiting= figure of the operator's last Queue idle line (certificates use the "
            "default 90-day duration).",
        },
    )
    print(
        summary_line(
            scenario,
            n,
            [
                ("RSS", fmt_mb(figures["rss_bytes"])),
                ("peakRSS", fmt_mb(figures["peak_rss_bytes"])),
                ("idleCPU", f"{figures['idle_cpu_seconds']:.2f}s/{window}s"),
                ("pending", str(figures["pending_renewals"])),
                ("issue rate", f"{issued['certificates_per_second']:.1f}/s"),
            ],
        ),
        flush=True,
    )


# --------------------------------------------------------------------------------------------------
# Scenario 3: renewal storm


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


def renewal_storm(run: Run, issue_rate_hint: float | None) -> None:
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
    write_result(
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
                ("writes/renewal", fmt_num(figures["api_writes_per_renewal"], 2)),
                ("restarts", str(restarts)),
                ("maxInFlight", str(max_in_flight)),
            ],
        ),
        flush=True,
    )


# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    names = [a.scenario for a in algorithms()] + ["idle-10k", "renewal-storm"]
    optional = [a.scenario for a in variants()]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "scenarios",
        nargs="*",
        metavar="scenario",
        help=f"default: all of {', '.join(names)}; also {', '.join(optional)}",
    )
    args = p.parse_args(argv)
    wanted = args.scenarios or names
    unknown = sorted(set(wanted) - set(names) - set(optional))
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(names + optional)}")
    logs = Path(tempfile.mkdtemp(prefix="mtls-bench-logs-"))
    started = time.monotonic()
    with cluster() as c:
        run = Run(c, logs)
        for alg in algorithms() + variants():
            if alg.scenario in wanted:
                say(f"{alg.scenario}: {alg.n} certificates")
                issuance(run, alg)
        hint = None
        if "idle-10k" in wanted:
            idle_at_scale(run)
            hint = _rate_of("idle-10k")
        if "renewal-storm" in wanted:
            renewal_storm(run, hint or _rate_of("idle-10k"))
    say(f"done in {time.monotonic() - started:.0f}s; operator logs in {logs}")
    return 0


def _rate_of(scenario: str) -> float | None:
    import json

    from harness import RESULTS

    try:
        doc = json.loads((RESULTS / f"{scenario}.json").read_text())
        return float(doc["figures"]["issuance"]["certificates_per_second"])
    except (OSError, KeyError, ValueError, TypeError):
        return None


if __name__ == "__main__":
    sys.exit(main())
