"""Scenario 5, noise: Secrets and Deployments the operator has nothing to do with, created in another
namespace while it holds N certificates; its RSS growth and CPU next to the API server's.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from control_plane import CERTS, ApiServerWindow
from harness import fmt_mb
from objects import certificate_body, create_with_retry, deployment_body
from procfs import CpuSampler, current_rss, peak_rss
from reporting import print_summary, say
from scenario_run import Run, env_int, memory_figures
from trackers import CertTracker
from watches import watch_custom

NOISE_NAMESPACE = "bench-noise-junk"  # not audited: the API server's cost of the noise is not inflated


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
        blob = base64.b64encode(os.urandom(7680)).decode()  # 10 KB once encoded, as the Secrets
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
    print_summary(
        scenario,
        n,
        [
            ("RSSgrowth", fmt_mb(figures["rss_growth_bytes"])),
            ("peakGrowth", fmt_mb(figures["peak_rss_growth_bytes"])),
            ("cpu operator/apiserver", f"{op_cpu:.1f}s/{api_cpu:.1f}s"),
            ("ratio", f"{figures['operator_cpu_percent_of_apiserver']:.1f}%"),
            ("window", f"{figures['noise_seconds']:.0f}s"),
        ],
    )
