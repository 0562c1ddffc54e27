"""Workloads that really run on the test node, and a client that handshakes with them.

The workloads run the operator image (it has Python; nothing else is needed) with `SERVER`, a mutual-TLS
server that loads the mounted ``kubernetes.io/tls`` Secret (tls.crt, tls.key, ca.crt) once, at start, as
most servers do: only a restart makes it serve a renewed certificate. On SIGTERM it keeps serving for
`DRAIN_SECONDS` (its endpoint is already marked not ready by then), then exits.

The client plays the Service: it reads the EndpointSlices from the API server, as kube-proxy would, and
handshakes with a ready endpoint. Pod addresses exist only inside the node's network namespace, so each
connection is made there (`Node.connect`).
"""

from __future__ import annotations

import datetime
import itertools
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from kubernetes import client

from helpers import wait_for
from mtls_objects import (
    create_certificate,
    create_issuer,
    secret_data,
    self_signed,
    wait_issuer_ready,
    wait_ready,
)
from mtls_operator.testing.node import TOLERATION, Node

PORT = 8443
DRAIN_SECONDS = 5
SERVER = f"""\
import os, signal, socket, ssl, sys, threading
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("/tls/tls.crt", "/tls/tls.key")
ctx.load_verify_locations(os.environ.get("TRUST", "/tls/ca.crt"))
ctx.verify_mode = ssl.CERT_REQUIRED
srv = socket.create_server(("0.0.0.0", {PORT}), backlog=128)
print("serving", open("/tls/tls.crt").read().count("BEGIN CERTIFICATE"), "certificate(s)", flush=True)

def drain(*_):
    print("SIGTERM: draining for {DRAIN_SECONDS}s", flush=True)
    threading.Timer({DRAIN_SECONDS}, lambda: os._exit(0)).start()

signal.signal(signal.SIGTERM, drain)

def handle(conn):
    try:
        with ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"ok\\n")
    except (ssl.SSLError, OSError):
        pass

while True:
    conn, _ = srv.accept()
    threading.Thread(target=handle, args=(conn,), daemon=True).start()
"""


def server_configmap(namespace: str, name: str = "tls-server") -> client.V1ConfigMap:
    return client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=name, namespace=namespace), data={"server.py": SERVER}
    )


def server_pod_spec(
    image: str, secret: str, script: str = "tls-server", bundle: str | None = None
) -> client.V1PodSpec:
    """A pod running `SERVER` from the operator image, with the Secret at /tls and a readiness probe.

    With `bundle` (a trust-bundle ConfigMap) it trusts the bundle's ca.crt, mounted at /trust, for clients.
    """
    mounts = [
        client.V1VolumeMount(name="tls", mount_path="/tls", read_only=True),
        client.V1VolumeMount(name="app", mount_path="/app", read_only=True),
    ]
    volumes = [
        client.V1Volume(name="tls", secret=client.V1SecretVolumeSource(secret_name=secret)),
        client.V1Volume(name="app", config_map=client.V1ConfigMapVolumeSource(name=script)),
    ]
    env = []
    if bundle is not None:
        mounts.append(client.V1VolumeMount(name="trust", mount_path="/trust", read_only=True))
        volumes.append(client.V1Volume(name="trust", config_map=client.V1ConfigMapVolumeSource(name=bundle)))
        env.append(client.V1EnvVar(name="TRUST", value="/trust/ca.crt"))
    return client.V1PodSpec(
        tolerations=[client.V1Toleration(**TOLERATION)],
        dns_policy="Default",
        termination_grace_period_seconds=DRAIN_SECONDS + 10,
        automount_service_account_token=False,
        containers=[
            client.V1Container(
                name="server",
                image=image,
                image_pull_policy="Never",
                command=["python3", "/app/server.py"],
                env=env,
                ports=[client.V1ContainerPort(container_port=PORT, name="tls")],
                # The kubelet connects to the pod's address: ready once the server listens.
                readiness_probe=client.V1Probe(
                    tcp_socket=client.V1TCPSocketAction(port=PORT), period_seconds=1, failure_threshold=1
                ),
                volume_mounts=mounts,
            )
        ],
        volumes=volumes,
    )


def template(app: str, spec: client.V1PodSpec) -> client.V1PodTemplateSpec:
    return client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels={"app": app}), spec=spec)


def ready_endpoints(cluster: Any, namespace: str, service: str) -> list[str]:
    """Addresses of the ready endpoints of `service`, from its EndpointSlices (what kube-proxy reads)."""
    discovery = client.DiscoveryV1Api(cluster.api_client)
    slices = discovery.list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={service}"
    ).items
    return sorted(
        address
        for s in slices
        for endpoint in s.endpoints or []
        if endpoint.conditions is not None and endpoint.conditions.ready
        for address in endpoint.addresses
    )


def service(namespace: str, app: str) -> client.V1Service:
    return client.V1Service(
        metadata=client.V1ObjectMeta(name=app, namespace=namespace),
        spec=client.V1ServiceSpec(
            selector={"app": app}, ports=[client.V1ServicePort(port=PORT, target_port=PORT, name="tls")]
        ),
    )


def running_pods(cluster: Any, namespace: str, app: str) -> list[client.V1Pod]:
    pods = cluster.core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
    return [
        p
        for p in pods
        if p.metadata.deletion_timestamp is None
        and p.status.phase == "Running"
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]


def client_context(cluster: Any, namespace: str, client_secret: str, tmp: Path) -> ssl.SSLContext:
    """An mTLS client context from an issued client certificate's Secret (files written under `tmp`)."""
    data = secret_data(cluster, namespace, client_secret)
    tmp.mkdir(parents=True, exist_ok=True)
    for key in ("tls.crt", "tls.key", "ca.crt"):
        (tmp / key).write_bytes(data[key])
        (tmp / key).chmod(0o600)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(str(tmp / "ca.crt"))
    context.load_cert_chain(str(tmp / "tls.crt"), str(tmp / "tls.key"))
    return context


def handshake(node: Node, context: ssl.SSLContext, address: str, server_name: str) -> int:
    """One mutual-TLS handshake with a pod; returns the serial number of the certificate it served."""
    sock = node.connect(address, PORT, timeout=5.0)
    with context.wrap_socket(sock, server_hostname=server_name) as tls:
        der = tls.getpeercert(binary_form=True)
        tls.recv(3)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


@dataclass
class Attempt:
    at: float
    address: str
    serial: int | None
    error: str | None = None


@dataclass
class Prober:
    """Handshake with a ready endpoint of `service` every `interval` seconds, in a thread, until stopped."""

    node: Node
    cluster: Any
    namespace: str
    service: str
    context: ssl.SSLContext
    server_name: str
    interval: float = 0.2
    attempts: list[Attempt] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        turn = itertools.count()
        next_at = time.monotonic()
        while not self._stop.is_set():
            addresses = ready_endpoints(self.cluster, self.namespace, self.service)
            now = time.monotonic()
            if not addresses:
                self.attempts.append(Attempt(now, "", None, "no ready endpoint"))
            else:
                address = addresses[next(turn) % len(addresses)]
                try:
                    serial = handshake(self.node, self.context, address, self.server_name)
                    self.attempts.append(Attempt(now, address, serial))
                except (OSError, ssl.SSLError) as error:
                    self.attempts.append(Attempt(now, address, None, f"{type(error).__name__}: {error}"))
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def start(self) -> Prober:
        self._thread = threading.Thread(target=self._run, name="prober", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    @property
    def failed(self) -> list[Attempt]:
        return [a for a in self.attempts if a.error is not None]

    def seen(self, serial: int) -> set[str]:
        """The addresses that served `serial`."""
        return {a.address for a in self.attempts if a.serial == serial}


def wait_rollout(
    cluster: Any, namespace: str, name: str, kind: str = "Deployment", timeout: float = 120
) -> None:
    """Until every replica runs the current template and is ready, and no old pod is left."""

    def done() -> bool:
        if kind == "Deployment":
            d = cluster.apps.read_namespaced_deployment(name, namespace)
            s = d.status
            return bool(
                s.observed_generation == d.metadata.generation
                and s.updated_replicas == d.spec.replicas
                and s.ready_replicas == d.spec.replicas
                and (s.replicas or 0) == d.spec.replicas
            )
        if kind == "StatefulSet":
            st = cluster.apps.read_namespaced_stateful_set(name, namespace)
            s = st.status
            return bool(
                s.observed_generation == st.metadata.generation
                and s.current_revision == s.update_revision
                and s.ready_replicas == st.spec.replicas
            )
        ds = cluster.apps.read_namespaced_daemon_set(name, namespace)
        s = ds.status
        return bool(
            s.observed_generation == ds.metadata.generation
            and s.updated_number_scheduled == s.desired_number_scheduled
            and s.number_ready == s.desired_number_scheduled
            and s.number_available == s.desired_number_scheduled
            and s.desired_number_scheduled > 0
        )

    wait_for(done, timeout=timeout, interval=0.5, message=f"{kind} {namespace}/{name} rolled out")


ANN_RENEW = "mtls.dev/renew-requested-at"
# Restarts as soon as the renewal is written (the defaults pace restarts over minutes).


def request_renewal(cluster: Any, namespace: str, name: str) -> None:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    cluster.custom.patch_namespaced_custom_object(
        "mtls.dev",
        "v1alpha1",
        namespace,
        "mtlscertificates",
        name,
        {"metadata": {"annotations": {ANN_RENEW: stamp}}},
    )


def issue_server_and_client(cluster: Any, namespace: str, server: str) -> None:
    create_issuer(cluster, namespace, "ca", self_signed("ca"))
    wait_issuer_ready(cluster, namespace, "ca")
    create_certificate(
        cluster,
        namespace,
        server,
        {"issuerRef": {"name": "ca"}, "secretName": f"{server}-tls", "dnsNames": [server]},
    )
    create_certificate(
        cluster,
        namespace,
        "client",
        {
            "issuerRef": {"name": "ca"},
            "secretName": "client-tls",
            "commonName": "client",
            "usages": ["client auth"],
        },
    )
    wait_ready(cluster, namespace, server)
    wait_ready(cluster, namespace, "client")


def print_wide(cluster: Any) -> str:
    """`kubectl get nodes,pods -A -o wide`, printed (for the record of a run) and returned."""
    from mtls_operator.testing.controlplane import find_binaries

    out = subprocess.run(
        [
            str(find_binaries().kubectl),
            "--kubeconfig",
            str(cluster.kubeconfig),
            "get",
            "nodes,pods",
            "-A",
            "-o",
            "wide",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    print(out)
    return out
