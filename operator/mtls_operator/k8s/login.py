"""How the operator logs in: as its ServiceAccount inside a pod, else with a kubeconfig.

In a pod it reaches the API server where the kubelet says it is (``KUBERNETES_SERVICE_HOST`` and
``KUBERNETES_SERVICE_PORT``, as client-go does), not at ``kubernetes.default.svc``, which needs cluster
DNS that not every node has.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import kopf

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def in_cluster_server(env: dict[str, str] | None = None) -> str | None:
    """The API server's URL from the kubelet's environment, or None outside a pod."""
    values = os.environ if env is None else env
    host, port = values.get("KUBERNETES_SERVICE_HOST"), values.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        return None
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    return f"https://{host}:{port}"


def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf's login handler: the ServiceAccount (server from the environment), else the kubeconfig."""
    info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
    if info is not None:
        server = in_cluster_server()
        if server is not None:
            info = kopf.ConnectionInfo(
                server=server,
                ca_path=info.ca_path,
                token=info.token,
                default_namespace=info.default_namespace,
            )
        return info
    kubeconfig: kopf.ConnectionInfo | None = kopf.login_with_kubeconfig(**kwargs)
    return kubeconfig
