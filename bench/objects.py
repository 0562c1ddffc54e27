"""The objects the scenarios create (issuers, certificates, Deployments) and how: create calls
retried while the API server is busy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from control_plane import GROUP, VERSION

if TYPE_CHECKING:
    from control_plane import Cluster


def private_key(algorithm: str, size: int | None) -> dict[str, Any]:
    """The `privateKey` of an issuer's or a certificate's spec (no size: the algorithm's only one)."""
    key: dict[str, Any] = {"algorithm": algorithm}
    if size is not None:
        key["size"] = size
    return key


def issuer_body(name: str, algorithm: str, size: int | None) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MTLSIssuer",
        "metadata": {"name": name},
        "spec": {
            "selfSigned": {
                "secretName": f"{name}-ca",
                "commonName": f"{name} root",
                "privateKey": private_key(algorithm, size),
            }
        },
    }


def certificate_body(
    name: str, issuer: str, algorithm: str, size: int | None, **spec_extra: Any
) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MTLSCertificate",
        "metadata": {"name": name},
        "spec": {
            "secretName": f"{name}-tls",
            "issuerRef": {"name": issuer},
            "commonName": name,
            "dnsNames": [f"{name}.bench.svc"],
            "privateKey": private_key(algorithm, size),
            **spec_extra,
        },
    }


def create_with_retry(create: Callable[..., Any], *args: Any) -> None:
    """Call a `kubernetes` client create method; retried on 429/5xx and connection errors (the server is
    busy, not wrong). The answer is read raw and dropped (no deserialisation in the bench's threads)."""
    from kubernetes.client.rest import ApiException

    for attempt in range(8):
        try:
            resp = create(*args, _preload_content=False)
            resp.data  # noqa: B018 (read the answer so the connection goes back to the pool)
            resp.release_conn()
            return
        except ApiException as exc:
            if exc.status == 409 or (exc.status != 429 and exc.status < 500) or attempt == 7:
                raise
        except OSError:
            if attempt == 7:
                raise
        time.sleep(0.2 * 2**attempt)


def create_custom(c: Cluster, namespace: str, plural: str, body: Mapping[str, Any]) -> None:
    """Create one custom object (retried as `create_with_retry`)."""
    create_with_retry(c.custom.create_namespaced_custom_object, GROUP, VERSION, namespace, plural, body)


def deployment_body(name: str, secrets: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            # No kubelet here: with 0 replicas a rollout completes as soon as the controller observes it.
            "replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "registry.k8s.io/pause:3.10",
                            "volumeMounts": [
                                {"name": f"s{i}", "mountPath": f"/tls/{i}"} for i in range(len(secrets))
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": f"s{i}", "secret": {"secretName": s}} for i, s in enumerate(secrets)
                    ],
                },
            },
        },
    }
