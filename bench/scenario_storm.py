"""Scenario 4, the renewal storm: N certificates issued by one operator, all due at once when a second
one starts; drain time, writes per renewal, Deployment restarts and rollouts in flight.
"""

from __future__ import annotations

import json
import math
import os
import time
from datetime import UTC, datetime
from typing import Any

from control_plane import CERTS, ApiServerWindow
from harness import fmt_mb, fmt_num
from objects import certificate_body, deployment_body
from procfs import cpu_seconds, peak_rss
from reporting import RESULTS, Variant, print_summary, say
from scenario_run import Run, env_int, wait_until
from trackers import CertTracker, RolloutTracker
from watches import watch_custom, watch_deployments

STORM_RATE_FLOOR = 40.0  # renewals a second; the gap is sized so that a storm this slow renews each once


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _rate_of(variant: Variant) -> float | None:
    """The issuance rate the idle scenario measured for this variant (sizes the storm's gap)."""
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
    # expected from the rate measured at 10k (idle scenario), with a margin; and a certificate renewed at
    # the storm's start must not come due again before its end, so the gap also outlasts a storm drained
    # at 40/s (the slowest seen here).
    rate = issue_rate_hint or 40.0
    gap = max(60, math.ceil((max(n / rate * 1.5, n / STORM_RATE_FLOOR) + 30) / 10) * 10)
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
    profiling = run.c.profile_apiserver(op_b.log_path.with_suffix(".apiserver.pprof"))
    try:
        wait_until(
            lambda: tracker.count("renewed") >= n,
            600 + n * 0.2,
            f"{n} certificates renewed",
            lambda: f"{tracker.count('renewed')}/{n} renewed, VmHWM {fmt_mb(peak_rss(op_b.pid))}",
        )
        with tracker.lock:
            times = sorted(tracker.renewed.values())
            renewals = sum(max(0, r - 1) for r in tracker.revisions.values())
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
        if profiling is not None:
            profiling.join()
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
            # Revisions past the first, as the watch last saw them: N unless some came due again in the storm.
            "renewals": renewals,
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
    print_summary(
        scenario,
        n,
        [
            ("drain", f"{figures['drain_seconds']:.1f}s"),
            ("rate", f"{figures['renewals_per_second']:.1f}/s"),
            ("peakRSS", fmt_mb(figures["peak_rss_bytes"])),
            ("writes/renewal", fmt_num(figures["audited_writes_per_renewal"], 2)),
            ("renewals", str(figures["renewals"])),
            ("restarts", str(restarts)),
            ("maxInFlight", str(max_in_flight)),
        ],
    )
