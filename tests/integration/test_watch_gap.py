"""A watch gap loses nothing: the operator is frozen (SIGSTOP) past its watch timeout while objects are
deleted, on a control plane that compacts etcd every second and serves watches from etcd (no watch cache),
so its watches resume with "410 Gone" and re-list: the DELETED events are never delivered. The periodic
resync then forgets the deleted certificate (no Secret re-created for it, its metric series gone) and
repairs the Secret deleted during the gap, within the resync period."""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from helpers import Cluster, wait_for
from mtls_objects import (
    apply_crds,
    create_certificate,
    create_issuer,
    self_signed,
    wait_issuer_ready,
    wait_ready,
)
from mtls_operator.testing.controlplane import ControlPlane
from operator_process import OperatorProcess

RESYNC = 10  # seconds
GAP_APISERVER_ARGS = ("--watch-cache=false", "--etcd-compaction-interval=1s")


@pytest.fixture(scope="module")
def gap_cluster(controlplane_binaries: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    plane = ControlPlane.start(
        tmp_path_factory.mktemp("gap-plane"),
        bin_dir=controlplane_binaries.bin_dir,
        die_with_parent=True,
        apiserver_args=GAP_APISERVER_ARGS,
    )
    cluster = Cluster.of(plane)
    try:
        apply_crds(cluster)
        yield cluster
    finally:
        cluster.api_client.close()
        plane.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def _secret_exists(cluster: Cluster, namespace: str, name: str) -> bool:
    try:
        cluster.core.read_namespaced_secret(name, namespace)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def test_a_watch_gap_forgets_deleted_objects_and_repairs_deleted_secrets(
    gap_cluster: Cluster, tmp_path: Path
) -> None:
    cluster = gap_cluster
    ns = "gap"
    cluster.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    port = _free_port()
    proc = OperatorProcess(
        cluster.kubeconfig,
        tmp_path / "operator.log",
        "--namespace",
        ns,
        "--metrics-port",
        str(port),
        env={
            "MTLS_RESYNC_INTERVAL": str(RESYNC),
            "MTLS_WATCH_SERVER_TIMEOUT": "3",
            "MTLS_WATCH_CLIENT_TIMEOUT": "5",
        },
    ).start()
    try:
        create_issuer(cluster, ns, "ca", self_signed("ca"))
        wait_issuer_ready(cluster, ns, "ca")
        for name in ("gone", "kept"):
            create_certificate(
                cluster,
                ns,
                name,
                {"secretName": f"{name}-tls", "issuerRef": {"name": "ca"}, "commonName": name},
            )
        for name in ("gone", "kept"):
            wait_ready(cluster, ns, name)
        wait_for(lambda: 'name="gone"' in _metrics(port), timeout=30, message="gone's series exported")

        assert proc.proc is not None
        os.killpg(proc.proc.pid, signal.SIGSTOP)
        try:
            cluster.custom.delete_namespaced_custom_object(
                "mtls.dev", "v1alpha1", ns, "mtlscertificates", "gone"
            )
            cluster.core.delete_namespaced_secret("gone-tls", ns)  # what cleanupPolicy Delete would do
            cluster.core.delete_namespaced_secret("kept-tls", ns)
            # More writes, then past the watch timeouts and two compactions: the operator's resourceVersion
            # is gone from etcd, so its watches can only resume with 410 and a fresh list.
            for i in range(20):
                cluster.core.create_namespaced_config_map(
                    ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"churn-{i}"))
                )
            time.sleep(8)  # the gap itself: longer than the watch timeouts and the compaction interval
        finally:
            os.killpg(proc.proc.pid, signal.SIGCONT)
        resumed = time.monotonic()

        wait_for(
            lambda: _secret_exists(cluster, ns, "kept-tls"),
            timeout=RESYNC * 3,
            message="the Secret deleted during the gap repaired",
        )
        wait_for(
            lambda: 'name="gone"' not in _metrics(port),
            timeout=RESYNC * 3,
            message="the certificate deleted during the gap forgotten",
        )
        assert time.monotonic() - resumed <= RESYNC * 3
        wait_ready(cluster, ns, "kept")
        assert not _secret_exists(cluster, ns, "gone-tls"), "nothing is issued for a deleted certificate"
    finally:
        proc.stop()
