"""Fairness: a flood of PodCertificateRequests from one node starves neither another node's requests nor
the MTLSCertificates the operator issues meanwhile.

One operator (its own process, defaults: 8 certificate workers, 2 signer workers, each node 20 requests at
once then 10 a second). A steady stream of MTLSCertificates (one a second) is issued first alone (the
baseline), then while one node sends 200 requests at once and a second node sends one request a second.
Every time is measured from the client: creation to the first poll (every 0.2 s) that sees the answer.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from helpers import wait_for
from mtls_objects import create_certificate, create_issuer, self_signed, wait_issuer_ready
from operator_process import OperatorProcess
from pod_certificates import GROUP, PLURAL, VERSION, KubeletIdentity, answer

pytestmark = pytest.mark.slow

FLOOD = 200
QUIET = 10
CERTIFICATES = 10
POLL = 0.2


class Watcher:
    """Polls a namespace's MTLSCertificates and PodCertificateRequests; records when each was first seen
    answered (Ready=True, or a terminal condition)."""

    def __init__(self, cluster: Any, namespace: str) -> None:
        self.api_client = client.ApiClient(cluster.api_client.configuration)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.namespace = namespace
        self.answered: dict[tuple[str, str], float] = {}
        self.outcomes: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            certs = self.custom.list_namespaced_custom_object(
                "mtls.dev", "v1alpha1", self.namespace, "mtlscertificates"
            )
            for c in certs["items"]:
                ready = any(
                    x.get("type") == "Ready" and x.get("status") == "True"
                    for x in (c.get("status") or {}).get("conditions") or ()
                )
                if ready:
                    self.answered.setdefault(("cert", c["metadata"]["name"]), now)
            requests = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL)
            for r in requests["items"]:
                found = answer(r)
                if found is not None:
                    self.answered.setdefault(("pcr", r["metadata"]["name"]), now)
                    self.outcomes[r["metadata"]["name"]] = str(found.get("reason"))
            self._stop.wait(max(0.0, POLL - (time.monotonic() - now)))

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.api_client.close()


def stream_certificates(cluster: Any, namespace: str, prefix: str, created: dict[str, float]) -> None:
    """One MTLSCertificate a second."""
    for i in range(CERTIFICATES):
        name = f"{prefix}-{i}"
        created[name] = time.monotonic()
        create_certificate(
            cluster,
            namespace,
            name,
            {"secretName": f"{name}-tls", "issuerRef": {"name": "mesh"}, "dnsNames": [f"{name}.example"]},
        )
        time.sleep(1.0)


def latencies(watcher: Watcher, kind: str, created: dict[str, float]) -> list[float]:
    return [watcher.answered[(kind, name)] - at for name, at in created.items()]


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    return f"n={len(values)} median {statistics.median(ordered):.2f}s p90 {p90:.2f}s max {ordered[-1]:.2f}s"


@pytest.fixture
def kubelets(cluster: Any) -> Iterator[list[KubeletIdentity]]:
    made = [KubeletIdentity.create(cluster, "t-flood"), KubeletIdentity.create(cluster, "t-quiet")]
    yield made
    for identity in made:
        identity.close()


def test_a_flood_from_one_node_starves_neither_another_node_nor_certificates(
    cluster: Any, crds: Any, own_namespace: str, kubelets: list[KubeletIdentity], tmp_path: Path
) -> None:
    namespace = own_namespace
    flooder, quiet = kubelets
    proc = OperatorProcess(
        cluster.kubeconfig, tmp_path / "operator.log", "--namespace", f"{namespace}*"
    ).start()
    try:
        create_issuer(cluster, namespace, "mesh", {**self_signed("mesh"), "podCertificates": {}})
        wait_issuer_ready(cluster, namespace, "mesh")
        signer = f"mtls.dev/{namespace}.mesh"
        with ThreadPoolExecutor(8) as pool:
            flood_pods = list(pool.map(lambda i: flooder.bind_pod(namespace, f"flood-{i}"), range(FLOOD)))
            quiet_pods = list(pool.map(lambda i: quiet.bind_pod(namespace, f"quiet-{i}"), range(QUIET)))

        with Watcher(cluster, namespace) as watcher:
            baseline: dict[str, float] = {}
            stream_certificates(cluster, namespace, "base", baseline)
            wait_for(
                lambda: all(("cert", n) in watcher.answered for n in baseline), timeout=60, message="baseline"
            )

            during: dict[str, float] = {}
            flood_created: dict[str, float] = {}
            quiet_created: dict[str, float] = {}
            lock = threading.Lock()

            def ask(identity: KubeletIdentity, pod: Any, into: dict[str, float]) -> None:
                at = time.monotonic()
                name, _ = identity.request(pod, signer)
                with lock:
                    into[name] = at

            def in_background(work: Callable[[], None]) -> threading.Thread:
                thread = threading.Thread(target=work, daemon=True)
                thread.start()
                return thread

            def quiet_node() -> None:
                for pod in quiet_pods:
                    ask(quiet, pod, quiet_created)
                    time.sleep(1.0)

            start = time.monotonic()
            certs = in_background(lambda: stream_certificates(cluster, namespace, "during", during))
            calm = in_background(quiet_node)
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda pod: ask(flooder, pod, flood_created), flood_pods))
            flood_sent = time.monotonic() - start
            certs.join()
            calm.join()
            wait_for(
                lambda: (
                    all(("pcr", n) in watcher.answered for n in [*flood_created, *quiet_created])
                    and all(("cert", n) in watcher.answered for n in during)
                ),
                timeout=120,
                interval=0.5,
                message="every request and certificate answered",
            )
        flood_done = max(watcher.answered[("pcr", n)] for n in flood_created) - start
        first_flood = min(flood_created.values())
        issued_in_first_second = sum(
            1 for n in flood_created if watcher.answered[("pcr", n)] - first_flood <= 1.0 + POLL
        )
        results = {
            "certificates alone": latencies(watcher, "cert", baseline),
            "certificates during the flood": latencies(watcher, "cert", during),
            "quiet node's requests during the flood": latencies(watcher, "pcr", quiet_created),
            "flooding node's requests": latencies(watcher, "pcr", flood_created),
        }
        print()
        for what, values in results.items():
            print(f"{what}: {summary(values)}")
        print(
            f"flood: {FLOOD} requests sent in {flood_sent:.1f}s, all answered {flood_done:.1f}s after the "
            f"start ({FLOOD / flood_done:.1f}/s); {issued_in_first_second} answered within the first second"
        )
        assert set(watcher.outcomes[n] for n in [*flood_created, *quiet_created]) == {"Issued"}
        # The flooding node is held to its rate: 20 at once, then 10 a second (180 more take >= 18 s).
        assert flood_done >= (FLOOD - 20) / 10 - 1, flood_done
        # ... while the quiet node's requests and the certificates pass as if there were no flood.
        assert max(results["quiet node's requests during the flood"]) < 5.0
        assert max(results["certificates during the flood"]) < max(
            5.0, 2 * max(results["certificates alone"])
        )
    finally:
        proc.stop()
