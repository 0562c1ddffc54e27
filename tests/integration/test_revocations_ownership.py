"""Issue 10, finding 2 (`<issuer>-revocations`): a tenant who may only create MTLSIssuers and
MTLSCertificates in its namespace names an issuer after someone else's ConfigMap. The operator must not
write that ConfigMap (nor read it as a list): it stays byte for byte what its owner wrote, and the issuer
gets a Warning event `RevocationsConflict` (and Revocations.problem() the same reason, for the condition).

The tenant acts through impersonation of a ServiceAccount bound to a Role with exactly those verbs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from tests.helpers import Cluster, wait_for

from mtls_objects import GROUP, VERSION, get
from operator_process import OperatorProcess

TENANT = "tenant"


@pytest.fixture
def tenant(cluster: Cluster, own_namespace: str) -> Iterator[client.CustomObjectsApi]:
    """A ServiceAccount that may create/get/list/watch MTLSIssuers and MTLSCertificates, nothing else."""
    ns = own_namespace
    cluster.core.create_namespaced_service_account(
        ns, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=TENANT))
    )
    cluster.rbac.create_namespaced_role(
        ns,
        client.V1Role(
            metadata=client.V1ObjectMeta(name=TENANT),
            rules=[
                client.V1PolicyRule(
                    api_groups=[GROUP],
                    resources=["mtlsissuers", "mtlscertificates"],
                    verbs=["create", "get", "list", "watch"],
                )
            ],
        ),
    )
    cluster.rbac.create_namespaced_role_binding(
        ns,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name=TENANT),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name=TENANT),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name=TENANT, namespace=ns)],
        ),
    )
    api_client = cluster.impersonate(f"system:serviceaccount:{ns}:{TENANT}")
    try:
        yield client.CustomObjectsApi(api_client)
    finally:
        api_client.close()


def _conflict_events(cluster: Cluster, ns: str, issuer: str) -> list[Any]:
    events = cluster.core.list_namespaced_event(ns, field_selector=f"involvedObject.name={issuer}").items
    return [e for e in events if e.reason == "RevocationsConflict" and e.involved_object.kind == "MTLSIssuer"]


def test_a_tenant_cannot_make_the_operator_write_someone_elses_revocations_config_map(
    cluster: Cluster, crds: Any, own_namespace: str, tenant: client.CustomObjectsApi, tmp_path: Path
) -> None:
    ns = own_namespace
    # Someone else's ConfigMap, named as the operator would name the list of an issuer "victim".
    cluster.core.create_namespaced_config_map(
        ns,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="victim-revocations", labels={"app": "billing"}),
            data={"settings.yaml": "db: billing\nreplicas: 3\n"},
        ),
    )
    before = cluster.core.read_namespaced_config_map("victim-revocations", ns)
    tenant_core = client.CoreV1Api(tenant.api_client)
    with pytest.raises(ApiException) as denied:
        tenant_core.read_namespaced_config_map("victim-revocations", ns)
    assert denied.value.status == 403, "the tenant cannot read (nor write) ConfigMaps itself"

    operator = OperatorProcess(
        cluster.kubeconfig, tmp_path / "operator.log", "--namespace", ns, env={"MTLS_BACKOFF_BASE": "2"}
    ).start()
    try:
        issuer_spec = {
            "selfSigned": {"secretName": "victim-ca", "commonName": "victim root"},
            "revocation": {},
        }
        tenant.create_namespaced_custom_object(
            GROUP,
            VERSION,
            ns,
            "mtlsissuers",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "MTLSIssuer",
                "metadata": {"name": "victim"},
                "spec": issuer_spec,
            },
        )
        cert_spec = {"secretName": "web-tls", "issuerRef": {"name": "victim"}, "dnsNames": ["web.example"]}
        tenant.create_namespaced_custom_object(
            GROUP,
            VERSION,
            ns,
            "mtlscertificates",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "MTLSCertificate",
                "metadata": {"name": "web"},
                "spec": cert_spec,
            },
        )
        events = wait_for(
            lambda: _conflict_events(cluster, ns, "victim"), timeout=60, message="a RevocationsConflict event"
        )
        assert events[0].type == "Warning"
        assert "victim-revocations" in events[0].message and "does not write it" in events[0].message
        # The issuer works otherwise: it signs (its certificates are issued)...
        wait_for(
            lambda: (get(cluster, ns, "mtlscertificates", "web").get("status") or {}).get("serialNumber"),
            timeout=60,
            message="web issued",
        )
        # ...and a revocation through it is refused rather than written into the foreign ConfigMap.
        serial = get(cluster, ns, "mtlscertificates", "web")["status"]["serialNumber"]
        time.sleep(1.1)  # the request must be later than the certificate's notBefore (whole seconds)
        requested = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        cluster.custom.patch_namespaced_custom_object(
            GROUP, VERSION, ns, "mtlscertificates", "web",
            {"metadata": {"annotations": {"mtls.dev/revoke-requested-at": requested}}},
        )  # fmt: skip
        # Give the operator time to act on it (an issuer and a certificate reconcile at least).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.5)
            after = cluster.core.read_namespaced_config_map("victim-revocations", ns)
            assert after.metadata.resource_version == before.metadata.resource_version
        after = cluster.core.read_namespaced_config_map("victim-revocations", ns)
        assert after.data == before.data and after.binary_data is None
        assert after.metadata.labels == before.metadata.labels
        assert after.metadata.annotations == before.metadata.annotations
        assert get(cluster, ns, "mtlscertificates", "web")["status"]["serialNumber"] == serial, (
            "not re-issued as revoked: nothing could record the revocation"
        )
        assert len(_conflict_events(cluster, ns, "victim")) == 1, "one event per problem, not per reconcile"
    finally:
        operator.stop()
        print(operator.tail(40))
