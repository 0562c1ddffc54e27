"""What the Secret carries besides TLS material, and what becomes of it when its certificate goes:
secretTemplate labels and annotations land on it (the operator's own keys are refused by the API server),
and cleanupPolicy Delete lets Kubernetes' garbage collector delete it with its certificate while Retain
keeps it. Read from the cluster: the Secret's metadata and the kube-controller-manager's deletion."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from helpers import wait_for
from mtls_objects import (
    GROUP,
    VERSION,
    create_certificate,
    create_issuer,
    get,
    self_signed,
    wait_issuer_ready,
    wait_ready,
)

SPEC = {"secretName": "web-tls", "issuerRef": {"name": "ca"}, "dnsNames": ["web.example"]}
OWN_KEYS = "keys under mtls.dev/ and app.kubernetes.io/managed-by are the operator's own"  # the CRD's refusal
TEMPLATE = {
    "labels": {"tier": "web", "team": "payments"},
    "annotations": {"reflector.example/allowed": "true", "note": "made for the test"},
}


def _secret(cluster: Any, namespace: str, name: str) -> Any | None:
    try:
        return cluster.core.read_namespaced_secret(name, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def test_secret_template_labels_and_annotations_land_on_the_secret_and_survive_a_renewal(
    operator: Any, cluster: Any, namespace: str
) -> None:
    create_issuer(cluster, namespace, "ca", self_signed("ca"))
    wait_issuer_ready(cluster, namespace, "ca")
    create_certificate(
        cluster,
        namespace,
        "web",
        {
            "secretName": "web-tls",
            "issuerRef": {"name": "ca"},
            "dnsNames": ["web.example"],
            "secretTemplate": TEMPLATE,
        },
    )
    first = wait_ready(cluster, namespace, "web")["status"]

    def carries_template(secret: Any) -> None:
        labels, annotations = secret.metadata.labels or {}, secret.metadata.annotations or {}
        assert TEMPLATE["labels"].items() <= labels.items(), labels
        assert TEMPLATE["annotations"].items() <= annotations.items(), annotations
        # The operator's own keys are there too, and the template's did not replace them.
        assert labels["app.kubernetes.io/managed-by"] == "mtls-operator", labels
        assert annotations["mtls.dev/certificate-name"] == "web", annotations

    secret = cluster.core.read_namespaced_secret("web-tls", namespace)
    carries_template(secret)
    assert secret.metadata.annotations["mtls.dev/revision"] == "1"

    # A renewal rewrites the Secret: the template's keys stay.
    cluster.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "mtlscertificates", "web",
        {"metadata": {"annotations": {"mtls.dev/renew-requested-at": "template-test-1"}}},
    )  # fmt: skip
    wait_for(
        lambda: get(cluster, namespace, "mtlscertificates", "web")["status"].get("revision") == 2,
        timeout=30,
        message="the renewal",
    )
    renewed = cluster.core.read_namespaced_secret("web-tls", namespace)
    assert renewed.metadata.annotations["mtls.dev/serial-number"] != first["serialNumber"]
    carries_template(renewed)


@pytest.mark.parametrize(
    "template",
    [
        pytest.param(
            {"labels": {"mtls.dev/secret-role": "ca"}}, id="refuses the operator's secret-role label"
        ),
        pytest.param(
            {"annotations": {"mtls.dev/certificate-name": "other"}},
            id="refuses the operator's certificate-name annotation",
        ),
        pytest.param(
            {"annotations": {"mtls.dev/revision": "99"}}, id="refuses the operator's revision annotation"
        ),
    ],
)
def test_an_update_cannot_put_the_operators_own_keys_in_the_secret_template(
    operator: Any, cluster: Any, namespace: str, template: dict[str, Any]
) -> None:
    create_issuer(cluster, namespace, "ca", self_signed("ca"))
    wait_issuer_ready(cluster, namespace, "ca")
    spec = {"secretName": "web-tls", "issuerRef": {"name": "ca"}, "dnsNames": ["web.example"]}
    with pytest.raises(ApiException) as created:
        create_certificate(
            cluster, namespace, "bad", {**spec, "secretName": "bad-tls", "secretTemplate": template}
        )
    assert created.value.status == 422, created.value.body
    assert (
        "keys under mtls.dev/ and app.kubernetes.io/managed-by are the operator's own" in created.value.body
    )

    create_certificate(cluster, namespace, "web", spec)
    wait_ready(cluster, namespace, "web")
    before = cluster.core.read_namespaced_secret("web-tls", namespace).metadata
    with pytest.raises(ApiException) as patched:
        cluster.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "mtlscertificates", "web", {"spec": {"secretTemplate": template}}
        )
    assert patched.value.status == 422, patched.value.body
    assert (
        "keys under mtls.dev/ and app.kubernetes.io/managed-by are the operator's own" in patched.value.body
    )
    assert _secret(cluster, namespace, "bad-tls") is None
    after = cluster.core.read_namespaced_secret("web-tls", namespace).metadata
    assert (after.resource_version, after.labels, after.annotations) == (
        before.resource_version,
        before.labels,
        before.annotations,
    )


def test_cleanup_policy_delete_lets_the_secret_go_with_its_certificate_and_retain_keeps_it(
    operator: Any, cluster: Any, namespace: str
) -> None:
    create_issuer(cluster, namespace, "ca", self_signed("ca"))
    wait_issuer_ready(cluster, namespace, "ca")
    for name, policy in (("gone", "Delete"), ("kept", "Retain")):
        create_certificate(
            cluster,
            namespace,
            name,
            {
                "secretName": f"{name}-tls",
                "issuerRef": {"name": "ca"},
                "dnsNames": [f"{name}.example"],
                "cleanupPolicy": policy,
            },
        )
    uids = {name: wait_ready(cluster, namespace, name)["metadata"]["uid"] for name in ("gone", "kept")}
    # Delete: the Secret is owned by its certificate (a controller reference the garbage collector follows).
    owners = cluster.core.read_namespaced_secret("gone-tls", namespace).metadata.owner_references
    assert [(o.kind, o.name, o.uid, o.controller) for o in owners or []] == [
        ("MTLSCertificate", "gone", uids["gone"], True)
    ]
    assert not cluster.core.read_namespaced_secret("kept-tls", namespace).metadata.owner_references
    kept_version = cluster.core.read_namespaced_secret("kept-tls", namespace).metadata.resource_version

    for name in ("gone", "kept"):
        cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "mtlscertificates", name)
    wait_for(
        lambda: _secret(cluster, namespace, "gone-tls") is None,
        timeout=60,
        message="the Secret of the certificate with cleanupPolicy Delete garbage-collected",
    )
    # Retain: by the time the other Secret is gone, this one is still there, unchanged.
    kept = _secret(cluster, namespace, "kept-tls")
    assert kept is not None and kept.metadata.resource_version == kept_version
