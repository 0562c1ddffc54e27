"""Scenario 1, issuance per algorithm: N certificates in a burst (time-to-Ready, rate, writes, CPU),
then single certificates one at a time with the queue idle.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from control_plane import CERTS
from harness import fmt_mb, fmt_ms, fmt_num, percentile
from objects import certificate_body, create_custom
from procfs import peak_rss
from reporting import print_summary
from scenario_run import Run, env_int, wait_until
from trackers import CertTracker, SecretTracker
from watches import watch_custom, watch_secrets


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
    print_summary(
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
    )
