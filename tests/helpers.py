"""Small helpers shared by the test suites."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from mtls_operator.testing.controlplane import ControlPlane

if TYPE_CHECKING:
    from kubernetes import client as k8s

    from api_audit import AuditLog

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.2,
    message: str = "condition",
    *,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call `predicate` until it returns something truthy, and return that; never wait past `timeout`.

    On timeout raise AssertionError naming `message`, the number of tries and the last value (or the last
    ignored exception). Exceptions of the `ignore` types count as "not yet"; any other one propagates.
    """
    deadline = time.monotonic() + timeout
    tries = 0
    last: object = None
    while True:
        tries += 1
        try:
            value = predicate()
        except ignore as error:
            last = error
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:g}s ({tries} tries) waiting for {message}; last value: {last!r}"
            )
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Cluster:
    """What the `cluster` fixture yields: the control plane and clients logged in as a cluster admin."""

    control_plane: ControlPlane
    kubeconfig: Path
    server: str
    version: str
    api_client: k8s.ApiClient
    core: k8s.CoreV1Api
    apps: k8s.AppsV1Api
    rbac: k8s.RbacAuthorizationV1Api
    custom: k8s.CustomObjectsApi
    apiextensions: k8s.ApiextensionsV1Api

    @classmethod
    def of(cls, plane: ControlPlane) -> Cluster:
        """Clients logged in as a cluster admin of ``plane``; close ``api_client`` after use."""
        from kubernetes import client, config

        api_client = config.new_client_from_config(config_file=str(plane.kubeconfig))
        return cls(
            control_plane=plane,
            kubeconfig=plane.kubeconfig,
            server=plane.server,
            version=plane.version(),
            api_client=api_client,
            core=client.CoreV1Api(api_client),
            apps=client.AppsV1Api(api_client),
            rbac=client.RbacAuthorizationV1Api(api_client),
            custom=client.CustomObjectsApi(api_client),
            apiextensions=client.ApiextensionsV1Api(api_client),
        )

    @property
    def audit(self) -> AuditLog:
        """The API server's audit log (the `cluster` fixture starts the plane with audit=True)."""
        from api_audit import AuditLog

        return AuditLog(self.control_plane.audit_log)

    def impersonate(self, user: str) -> k8s.ApiClient:
        """A new ApiClient acting as `user` (e.g. ``system:serviceaccount:ns:name``); close it after use.

        For a service account the API server adds its groups (system:serviceaccounts[:ns]) by itself.
        """
        from kubernetes import config

        api_client = config.new_client_from_config(config_file=str(self.kubeconfig))
        api_client.set_default_header("Impersonate-User", user)
        return api_client
