"""The audit log reader (tests/api_audit.py) against the real API server: the tests that count writes and
refusals from it rest on these facts."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from tests.helpers import Cluster, wait_for

from api_audit import audited_identity, kinds, per_certificate


def test_an_audited_identity_is_recorded_write_by_write_and_from_a_mark(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    from kubernetes import config

    identity = audited_identity(cluster.control_plane, "reader-test", tmp_path)
    api = config.new_client_from_config(config_file=str(identity.kubeconfig))
    core = client.CoreV1Api(api)
    audit = cluster.audit
    start = audit.mark()
    try:
        core.create_namespaced_secret(namespace, {"metadata": {"name": "before"}, "stringData": {"a": "b"}})
        mark = audit.mark()
        core.create_namespaced_secret(namespace, {"metadata": {"name": "after"}, "stringData": {"a": "b"}})
        core.patch_namespaced_secret("after", namespace, {"metadata": {"labels": {"x": "y"}}})
        core.read_namespaced_secret("after", namespace)
        core.create_namespaced_event(
            namespace,
            {
                "metadata": {"generateName": "web."},
                "involvedObject": {"kind": "MTLSCertificate", "name": "web", "namespace": namespace},
                "reason": "Issued",
                "message": "A test event.",
            },
        )
    finally:
        api.close()

    writes = wait_for(
        lambda: len(w := audit.writes(identity.user, since=mark)) == 3 and w,
        timeout=10,
        message="three writes after the mark",
    )
    assert [(w.verb, w.resource, w.name, w.code) for w in writes[:2]] == [
        ("create", "secrets", "after", 201),
        ("patch", "secrets", "after", 200),
    ]
    assert writes[2].about == ("MTLSCertificate", "web")
    by_cert = per_certificate(writes, {"web": "after"})
    assert kinds(by_cert["web"]) == {"create secrets": 1, "patch secrets": 1, "create events": 1}
    # Reads of an audited identity are recorded too; the admin's own writes are someone else's.
    reads = [r for r in audit.requests(since=mark, user=identity.user) if r.verb == "get"]
    assert [(r.resource, r.name) for r in reads] == [("secrets", "after")]
    assert len(audit.writes(identity.user, since=start)) == 4  # from the earlier mark: "before" too


def test_a_refused_request_of_a_service_account_is_recorded_as_denied(
    cluster: Cluster, namespace: str
) -> None:
    cluster.core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="nobody"))
    )
    user = f"system:serviceaccount:{namespace}:nobody"
    token = cluster.core.create_namespaced_service_account_token(
        "nobody", namespace, client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[]))
    ).status.token
    configuration = client.Configuration()
    configuration.host = cluster.server
    configuration.ssl_ca_cert = str(cluster.control_plane.ca_file)
    configuration.api_key = {"authorization": f"Bearer {token}"}
    mark = cluster.audit.mark()
    with client.ApiClient(configuration) as api, pytest.raises(ApiException) as refused:
        client.CoreV1Api(api).list_namespaced_secret(namespace)
    assert refused.value.status == 403
    denied = wait_for(
        lambda: cluster.audit.denied(user, since=mark), timeout=10, message="the refusal in the audit log"
    )
    assert [(r.verb, r.resource, r.code) for r in denied] == [("list", "secrets", 403)]
