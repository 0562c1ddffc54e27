"""What one request of each kind a renewal makes costs kube-apiserver and etcd, in CPU milliseconds.

A renewal writes three things: the Secret (a PUT of the whole kubernetes.io/tls Secret), the
MTLSCertificate's status (a merge patch) and one Event. This runs each of them N times, one at a time,
against a throwaway control plane (the bench's: audit log of writes on, as in every scenario) with no
operator, and divides the CPU kube-apiserver and etcd used by N. For scale: a ConfigMap patch and GET, the
status written with a PUT instead, by a ServiceAccount token instead of a client certificate, to a CRD
with no schema at all, and to ours with its CEL rules removed.

    python bench/bench_write_costs.py [N]        # default 1000; writes bench/results/write-costs.json
"""

from __future__ import annotations

import base64
import copy
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client

from control_plane import CERTS, GROUP, VERSION, Cluster, cluster
from objects import certificate_body
from procfs import cpu_seconds, loadavg
from reporting import RESULTS, say

CRD = f"{CERTS}.{GROUP}"
PEM = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n" + b"A" * 900 + b"\n-----END CERTIFICATE-----\n")


def _status(i: int) -> dict[str, Any]:
    """A status like the operator's after a renewal (two conditions, dates, serial, fingerprints)."""
    when = f"2026-11-30T08:{i // 60 % 60:02d}:{i % 60:02d}Z"
    condition = {"lastTransitionTime": when, "observedGeneration": 1, "status": "True"}
    return {
        "conditions": [
            {**condition, "type": "Ready", "reason": "UpToDate", "message": f"Valid until {when} ({i})."},
            {
                **condition,
                "type": "Issuing",
                "status": "False",
                "reason": "Renewing",
                "message": f"Issued {i}.",
            },
        ],
        "revision": i + 1,
        "serialNumber": f"{i:040x}",
        "fingerprint": f"{i:064x}",
        "notBefore": when,
        "notAfter": when,
        "renewalTime": when,
    }


def _cost(c: Cluster, label: str, n: int, one: Callable[[int], Any]) -> dict[str, float]:
    api, etcd = c.pid("kube-apiserver"), c.pid("etcd")
    api0, etcd0, t0 = cpu_seconds(api), cpu_seconds(etcd), time.monotonic()
    for i in range(n):
        one(i)
    figures = {
        "apiserver_cpu_ms": 1000 * (cpu_seconds(api) - api0) / n,
        "etcd_cpu_ms": 1000 * (cpu_seconds(etcd) - etcd0) / n,
        "wall_ms": 1000 * (time.monotonic() - t0) / n,
    }
    say(f"{label}: " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()))
    return figures


def _without_cel(c: Cluster) -> int:
    crd = c.api_client.sanitize_for_serialization(c.apiext.read_custom_resource_definition(CRD))
    removed = 0

    def strip(node: Any) -> None:
        nonlocal removed
        if isinstance(node, dict):
            removed += len(node.pop("x-kubernetes-validations", []))
            for v in node.values():
                strip(v)
        elif isinstance(node, list):
            for v in node:
                strip(v)

    strip(crd["spec"])
    c.apiext.replace_custom_resource_definition(CRD, crd)
    time.sleep(5)  # the API server rebuilds the handler for the new schema
    return removed


def _token_client(c: Cluster, ns: str) -> client.CoreV1Api:
    """A client that authenticates as a ServiceAccount with a bound token (as the operator does in a
    cluster), bound to cluster-admin; the admin client authenticates with a client certificate."""
    c.core.create_namespaced_service_account(ns, {"metadata": {"name": "bench"}})
    client.RbacAuthorizationV1Api(c.api_client).create_cluster_role_binding(
        {
            "metadata": {"name": f"bench-{ns}"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "bench", "namespace": ns}],
        }
    )
    token = c.core.create_namespaced_service_account_token("bench", ns, {"spec": {"expirationSeconds": 3600}})
    cfg = copy.copy(c.api_client.configuration)
    cfg.cert_file = cfg.key_file = None
    cfg.api_key = {"authorization": f"Bearer {token.status.token}"}
    return client.CoreV1Api(client.ApiClient(cfg))


def _schemaless(c: Cluster, ns: str, n: int) -> dict[str, float]:
    """The same status patch to a CRD whose spec and status are any JSON (no schema to coerce or check)."""
    names = {"plural": "blobs", "singular": "blob", "kind": "Blob", "listKind": "BlobList"}
    anything = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    schema = {"type": "object", "properties": {"spec": anything, "status": anything}}
    version = {"name": "v1", "served": True, "storage": True, "subresources": {"status": {}}}
    spec = {"group": "bench.dev", "scope": "Namespaced", "names": names}
    crd = {
        "metadata": {"name": "blobs.bench.dev"},
        "spec": {**spec, "versions": [{**version, "schema": {"openAPIV3Schema": schema}}]},
    }
    c.apiext.create_custom_resource_definition(crd)
    body = {
        **certificate_body("c00000", "bench-ca", "ECDSA", 256),
        "apiVersion": "bench.dev/v1",
        "kind": "Blob",
    }
    deadline = time.monotonic() + 30
    while True:  # until the API server serves the new resource
        try:
            c.custom.create_namespaced_custom_object("bench.dev", "v1", ns, "blobs", body)
            break
        except client.ApiException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)

    def patch(i: int) -> None:
        c.custom.patch_namespaced_custom_object_status(
            "bench.dev", "v1", ns, "blobs", "c00000", {"status": _status(i)}
        )

    return _cost(c, "status patch to a CRD with no schema", n, patch)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    load_start = loadavg()
    with cluster() as c:
        ns = c.namespace("write-costs")
        body = certificate_body("c00000", "bench-ca", "ECDSA", 256)
        c.custom.create_namespaced_custom_object(GROUP, VERSION, ns, CERTS, body)
        secret = {"metadata": {"name": "c00000-tls"}, "type": "kubernetes.io/tls"}
        secret["data"] = {"tls.crt": PEM.decode(), "tls.key": PEM[:300].decode(), "ca.crt": PEM.decode()}
        c.core.create_namespaced_secret(ns, secret)
        c.core.create_namespaced_config_map(ns, {"metadata": {"name": "cm"}, "data": {"a": "0"}})

        def status(i: int) -> None:
            c.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, ns, CERTS, "c00000", {"status": _status(i)}
            )

        def put_secret(i: int) -> None:
            secret["metadata"] = {"name": "c00000-tls", "annotations": {"mtls.dev/revision": str(i)}}
            c.core.replace_namespaced_secret("c00000-tls", ns, secret)

        def event(i: int) -> None:
            ref = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "MTLSCertificate",
                "name": "c00000",
                "namespace": ns,
            }
            c.core.create_namespaced_event(
                ns,
                {
                    "metadata": {"generateName": "c00000."},
                    "involvedObject": ref,
                    "reason": "Issued",
                    "message": f"Issued revision {i}.",
                    "type": "Normal",
                    "source": {"component": "mtls-operator"},
                },
            )

        figures = {
            "status_patch": _cost(c, "MTLSCertificate status merge patch", n, status),
            "secret_put": _cost(c, "Secret PUT (3 KB of data)", n, put_secret),
            "event_create": _cost(c, "Event create", n, event),
            "configmap_patch": _cost(
                c,
                "ConfigMap merge patch",
                n,
                lambda i: c.core.patch_namespaced_config_map("cm", ns, {"data": {"a": str(i)}}),
            ),
            "configmap_get": _cost(
                c, "ConfigMap GET", n, lambda i: c.core.read_namespaced_config_map("cm", ns)
            ),
        }
        current = c.custom.get_namespaced_custom_object_status(GROUP, VERSION, ns, CERTS, "c00000")

        def put_status(i: int) -> None:
            nonlocal current
            current["status"] = _status(2 * n + i)
            current = c.custom.replace_namespaced_custom_object_status(
                GROUP, VERSION, ns, CERTS, "c00000", current
            )

        figures["status_put"] = _cost(c, "MTLSCertificate status PUT (whole object)", n, put_status)
        token = _token_client(c, ns)
        figures["configmap_get_with_token"] = _cost(
            c, "ConfigMap GET, ServiceAccount token", n, lambda i: token.read_namespaced_config_map("cm", ns)
        )
        figures["status_patch_with_token"] = _cost(
            c,
            "status patch, ServiceAccount token",
            n,
            lambda i: client.CustomObjectsApi(token.api_client).patch_namespaced_custom_object_status(
                GROUP, VERSION, ns, CERTS, "c00000", {"status": _status(n + i)}
            ),
        )
        figures["status_patch_schemaless_crd"] = _schemaless(c, ns, n)
        removed = _without_cel(c)
        figures["status_patch_without_cel"] = _cost(
            c, f"status patch, {removed} CEL rules removed", n, status
        )
    result = {"n": n, "figures": figures, "loadavg": {"at_start": load_start, "at_end": loadavg()}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "write-costs.json").write_text(json.dumps(result, indent=2) + "\n")
    renewal = sum(figures[k]["apiserver_cpu_ms"] for k in ("status_patch", "secret_put", "event_create"))
    print(f"bench write-costs N={n}: one renewal's three writes cost kube-apiserver {renewal:.1f} ms of CPU")


if __name__ == "__main__":
    main()
