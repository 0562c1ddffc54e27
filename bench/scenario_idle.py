"""Scenarios 2 and 3: idle at scale (RSS, CPU, memory by structure), then a restart into the same
certificates (time to steady, writes) and its first resync.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

from control_plane import CERTS, ApiServerWindow
from harness import delta, fmt_mb, response_bytes
from measured_operator import Operator
from objects import certificate_body
from procfs import CpuSampler, cpu_seconds, current_rss, peak_rss
from reporting import Variant, print_summary, say
from scenario_run import OPERATOR_AGENT, Run, env_int, memory_figures
from trackers import CertTracker
from watches import watch_custom


def supports(variant: Variant, flag: str) -> bool:
    """Whether the variant's operator has a command-line flag (the "before" tree may lack it)."""
    done = subprocess.run(
        [variant.python, "-m", "mtls_operator", "--help"], capture_output=True, text=True, check=False
    )
    return flag in done.stdout


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
    print_summary(
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
    print_summary(scenario, n, line)


def measure_resync(run: Run, op: Operator, sampler: CpuSampler, expected_at: float) -> dict[str, Any]:
    """The first resync of `op`: its LIST calls (audit log), CPU and response bytes."""
    before_text = run.c.metrics_text()

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
