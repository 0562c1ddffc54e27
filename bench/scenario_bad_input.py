"""Scenario 6, bad input: the inputs that cost the operator most per object, each measured as the
longest event-loop stall until the queue is idle again.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable
from typing import Any

from control_plane import CERTS, GROUP, VERSION
from objects import certificate_body, create_custom, deployment_body
from reporting import print_summary, say
from scenario_run import Run, wait_until
from trackers import CertTracker, RolloutTracker
from watches import watch_custom, watch_deployments


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
                GROUP,
                VERSION,
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
    print_summary(
        scenario,
        len(steps),
        [(name, f"{s['max_stall_seconds'] * 1000:.0f}ms") for name, s in steps.items()],
    )
