"""On the real node: a pod with a ``podCertificate`` projected volume starts, serves mutual TLS with its pod
certificate (trusting a ``clusterTrustBundle`` projection), and is refreshed at ``beginRefreshAt``
without a restart.

The kubelet generates the key, asks the operator's signer with a PodCertificateRequest, writes key and
chain into the pod, and asks again once ``beginRefreshAt`` (plus up to 5 minutes of its own jitter) has
passed; the server reads the files at each connection, so the new certificate is served at once.

How soon can a refresh be seen? kube-apiserver wants ``beginRefreshAt`` at least 10 minutes after
``notBefore`` and ``notBefore`` within 5 minutes of its clock; the signer backdates 3 minutes, so with
``mtls.dev/refresh-before: 50m`` on a one-hour certificate (the shortest allowed) the refresh is due 7
minutes after the first issuance. The kubelet adds 0-5 minutes of jitter, looks every 1-2 minutes, and the
volume follows within its 10 s sync: the new serial shows up 7 to about 15 minutes after the pod started.
"""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from kubernetes import client
from kubernetes.client.rest import ApiException
from node_workloads import PORT, print_wide

from helpers import wait_for
from mtls_objects import create_certificate, secret_data, self_signed, wait_ready
from mtls_operator.testing.node import TOLERATION, Node
from pod_certificates import GROUP, PLURAL, VERSION, answer

pytestmark = pytest.mark.slow

# A server that loads its credentials at every connection: a refreshed volume is served at once.
SERVER = f"""\
import socket, ssl, threading
srv = socket.create_server(("0.0.0.0", {PORT}), backlog=64)
print("serving", flush=True)

def context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain("/identity/chain.pem", "/identity/key.pem")
    ctx.load_verify_locations("/identity/trust.pem")
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx

def handle(conn):
    try:
        with context().wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"ok\\n")
    except (ssl.SSLError, OSError) as exc:
        print("handshake failed:", exc, flush=True)

while True:
    conn, _ = srv.accept()
    threading.Thread(target=handle, args=(conn,), daemon=True).start()
"""


@pytest.fixture
def cluster_issuer(cluster: Any) -> Iterator[str]:
    name = f"t-pcnode-{uuid.uuid4().hex[:6]}"
    yield name
    try:
        cluster.custom.delete_cluster_custom_object("mtls.dev", "v1alpha1", "mtlsclusterissuers", name)
    except ApiException as error:
        if error.status != 404:
            raise


def pod_body(image: str, signer: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "identity", "labels": {"app": "identity"}},
        "spec": {
            "tolerations": [TOLERATION],
            "dnsPolicy": "Default",
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "server",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["python3", "/app/server.py"],
                    "ports": [{"containerPort": PORT}],
                    "readinessProbe": {"tcpSocket": {"port": PORT}, "periodSeconds": 1},
                    "volumeMounts": [
                        {"name": "identity", "mountPath": "/identity", "readOnly": True},
                        {"name": "app", "mountPath": "/app", "readOnly": True},
                    ],
                }
            ],
            "volumes": [
                {
                    "name": "identity",
                    "projected": {
                        "sources": [
                            {
                                "podCertificate": {
                                    "signerName": signer,
                                    "keyType": "ECDSAP256",
                                    "maxExpirationSeconds": 3600,
                                    "keyPath": "key.pem",
                                    "certificateChainPath": "chain.pem",
                                    # Refresh as early as the API allows: notBefore + 10 minutes.
                                    "userAnnotations": {"mtls.dev/refresh-before": "50m"},
                                }
                            },
                            {
                                "clusterTrustBundle": {
                                    "signerName": signer,
                                    "labelSelector": {},
                                    "path": "trust.pem",
                                }
                            },
                        ]
                    },
                },
                {"name": "app", "configMap": {"name": "identity-server"}},
            ],
        },
    }


def requests_of(cluster: Any, namespace: str) -> list[dict[str, Any]]:
    found = cluster.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    return sorted(found, key=lambda r: r["metadata"]["creationTimestamp"])


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_pod_serves_its_pod_certificate_and_is_refreshed_without_a_restart(
    node: Node, operator: Any, cluster: Any, namespace: str, cluster_issuer: str, tmp_path: Path
) -> None:
    issuer, signer = cluster_issuer, f"mtls.dev/{cluster_issuer}"
    cluster.custom.create_cluster_custom_object(
        "mtls.dev",
        "v1alpha1",
        "mtlsclusterissuers",
        {
            "apiVersion": "mtls.dev/v1alpha1",
            "kind": "MTLSClusterIssuer",
            "metadata": {"name": issuer},
            "spec": {
                **self_signed(issuer),
                "clusterTrustBundle": True,
                "podCertificates": {},
                "policy": {"allowedURIs": ["spiffe://{trustDomain}/ns/{namespace}/sa/*"]},
            },
        },
    )
    # The client: an MTLSCertificate of the same cluster issuer, with its own SPIFFE ID.
    create_certificate(
        cluster,
        namespace,
        "client",
        {
            "secretName": "client-tls",
            "issuerRef": {"name": issuer, "kind": "MTLSClusterIssuer"},
            "uris": [f"spiffe://cluster.local/ns/{namespace}/sa/client"],
            "usages": ["client auth"],
        },
    )
    wait_ready(cluster, namespace, "client", timeout=90)
    data = secret_data(cluster, namespace, "client-tls")
    for key in ("tls.crt", "tls.key", "ca.crt"):
        (tmp_path / key).write_bytes(data[key])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # the server is known by its SPIFFE ID, checked below
    context.load_verify_locations(str(tmp_path / "ca.crt"))
    context.load_cert_chain(str(tmp_path / "tls.crt"), str(tmp_path / "tls.key"))

    cluster.core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="identity-server"), data={"server.py": SERVER}),
    )
    started = datetime.now(UTC)
    cluster.core.create_namespaced_pod(namespace, pod_body(node.operator_image, signer))

    def running() -> client.V1Pod | None:
        pod = cluster.core.read_namespaced_pod("identity", namespace)
        ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        return pod if pod.status.phase == "Running" and ready else None

    pod = wait_for(running, timeout=180, interval=1, message="the pod running with its pod certificate")
    print_wide(cluster)

    def served() -> x509.Certificate:
        sock = node.connect(pod.status.pod_ip, PORT, timeout=5.0)
        with context.wrap_socket(sock) as tls:
            der = tls.getpeercert(binary_form=True)
            assert tls.recv(3) == b"ok\n"
        assert der is not None
        return x509.load_der_x509_certificate(der)

    first = served()
    san = first.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"spiffe://cluster.local/ns/{namespace}/sa/default"
    ]
    (request,) = requests_of(cluster, namespace)
    assert (answer(request) or {}).get("reason") == "Issued", request.get("status")
    status = request["status"]
    assert request["spec"]["nodeName"] == node.name
    assert when(status["notBefore"]) == first.not_valid_before_utc
    assert when(status["notAfter"]) - when(status["notBefore"]) == timedelta(hours=1)
    refresh_at = when(status["beginRefreshAt"])
    assert refresh_at == when(status["notBefore"]) + timedelta(minutes=10), "the earliest the API allows"
    print(
        f"pod started {started:%H:%M:%S}, first serial {first.serial_number:x}, "
        f"refresh from {refresh_at:%H:%M:%S}"
    )

    # The kubelet asks again at beginRefreshAt + up to 5 min of jitter, in a pass every 1-2 minutes.
    deadline = (refresh_at - datetime.now(UTC)).total_seconds() + 8 * 60
    second = wait_for(
        lambda: (cert := served()).serial_number != first.serial_number and cert,
        timeout=deadline,
        interval=5,
        message="a refreshed certificate served by the same pod",
        ignore=(OSError, ssl.SSLError),
    )
    seen_at = datetime.now(UTC)
    requests = requests_of(cluster, namespace)
    assert len(requests) == 2, [r["metadata"]["name"] for r in requests]
    refresh = requests[1]
    assert when(refresh["metadata"]["creationTimestamp"]) >= refresh_at, "the kubelet asked at beginRefreshAt"
    assert when(refresh["status"]["notBefore"]) == second.not_valid_before_utc > first.not_valid_before_utc
    after = cluster.core.read_namespaced_pod("identity", namespace)
    assert after.metadata.uid == pod.metadata.uid, "the same pod"
    assert after.status.container_statuses[0].restart_count == 0, "no restart"
    print(
        f"refresh: asked {when(refresh['metadata']['creationTimestamp']):%H:%M:%S} "
        f"({(when(refresh['metadata']['creationTimestamp']) - refresh_at).total_seconds():.0f}s after "
        f"beginRefreshAt), new serial {second.serial_number:x} served at {seen_at:%H:%M:%S}, "
        f"{(seen_at - started).total_seconds() / 60:.1f} min after the pod was created"
    )
