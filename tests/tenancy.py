"""A namespace tenant, as an attacker would be: a ServiceAccount whose real RBAC Role lets it manage
MTLSIssuers and MTLSCertificates in its own namespace and nothing else, used through impersonation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from helpers import Cluster, wait_for

GROUP, VERSION = "mtls.dev", "v1alpha1"
TENANT_VERBS = ["create", "get", "list", "watch", "update", "patch", "delete"]


@dataclass
class Tenant:
    namespace: str
    user: str
    custom: Any  # kubernetes CustomObjectsApi acting as the tenant
    core: Any  # kubernetes CoreV1Api acting as the tenant

    def create(self, plural: str, kind: str, name: str, spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": kind,
            "metadata": {"name": name, **meta},
            "spec": spec,
        }
        result: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural, body
        )
        return result

    def issuer(self, name: str, spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
        return self.create("mtlsissuers", "MTLSIssuer", name, spec, **meta)

    def certificate(self, name: str, spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
        return self.create("mtlscertificates", "MTLSCertificate", name, spec, **meta)


def grant_tenant_role(cluster: Cluster, namespace: str, account: str = "tenant") -> str:
    """A ServiceAccount with a Role on the operator's resources in ``namespace`` only; returns its user."""
    from kubernetes import client

    cluster.core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=account))
    )
    cluster.rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name=account),
            rules=[
                client.V1PolicyRule(
                    api_groups=[GROUP], resources=["mtlsissuers", "mtlscertificates"], verbs=TENANT_VERBS
                )
            ],
        ),
    )
    cluster.rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name=account),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name=account),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name=account, namespace=namespace)],
        ),
    )
    return f"system:serviceaccount:{namespace}:{account}"


@contextmanager
def tenant(cluster: Cluster, namespace: str, account: str = "tenant") -> Iterator[Tenant]:
    """Act as a tenant of ``namespace``; waits until its Role applies (and shows it cannot read Secrets)."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    user = grant_tenant_role(cluster, namespace, account)
    api_client = cluster.impersonate(user)
    try:
        who = Tenant(namespace, user, client.CustomObjectsApi(api_client), client.CoreV1Api(api_client))

        def role_applies() -> bool:
            try:
                who.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "mtlsissuers")
            except ApiException as error:
                if error.status == 403:
                    return False
                raise
            return True

        wait_for(role_applies, timeout=30, message="the tenant's Role to take effect")
        with pytest.raises(ApiException) as denied:
            who.core.list_namespaced_secret(namespace)
        assert denied.value.status == 403, "the tenant may not read Secrets (else the attacks prove nothing)"
        yield who
    finally:
        api_client.close()


def snapshot(obj: Any) -> tuple[str, Any, Any, Any]:
    """What must stay byte-for-byte the same on a victim: resourceVersion, data, labels, annotations."""
    meta = obj.metadata
    data = getattr(obj, "data", None)
    return (meta.resource_version, dict(data or {}), dict(meta.labels or {}), dict(meta.annotations or {}))
