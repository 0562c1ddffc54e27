"""Issuance policy on the issuer, enforced by the operator against the real API server: allowed requests
are issued, denied ones get Ready=False, reason PolicyDenied and the exact violation, and nothing is issued.
A present policy denies by default: what it leaves out (a commonName that is no DNS name of the
certificate, subject attributes, IP addresses, usages beyond mutual TLS) is refused.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography import x509
from kubernetes import client
from kubernetes.client.rest import ApiException
from tests.helpers import Cluster, wait_for

from mtls_objects import (
    condition,
    create_certificate,
    create_issuer,
    get,
    secret_data,
    self_signed,
    wait_condition,
    wait_issuer_ready,
    wait_ready,
)

POLICY = {
    "allowedNamespaces": {"matchLabels": {"team": "a"}},
    "allowedDNSNames": ["*.{namespace}.svc", "*.{namespace}.svc.cluster.local"],
    "allowedURIs": ["spiffe://{trustDomain}/ns/{namespace}/sa/*"],
    "allowedUsages": ["server auth", "client auth"],
    "maxDuration": "720h",
    "allowedAlgorithms": [{"algorithm": "MLDSA", "minSize": 65}, {"algorithm": "ECDSA"}],
    "trustDomain": "example.org",
}


def _secret_exists(cluster: Any, namespace: str, name: str) -> bool:
    return any(s.metadata.name == name for s in cluster.core.list_namespaced_secret(namespace).items)


@pytest.fixture
def team_namespace(cluster: Any, namespace: str) -> str:
    cluster.core.patch_namespace(namespace, {"metadata": {"labels": {"team": "a"}}})
    return namespace


def base(ns: str, **extra: Any) -> dict[str, Any]:
    return {"issuerRef": {"name": "ca"}, "duration": "24h", "dnsNames": [f"web.{ns}.svc"], **extra}


DENIED = [
    pytest.param(
        {"dnsNames": ["web.other.svc"]},
        "dnsNames entry web.other.svc",
        id="denies a name in another namespace",
    ),
    pytest.param(
        {"privateKey": {"algorithm": "RSA", "size": 4096}}, "RSA", id="denies an algorithm not allowed"
    ),
    pytest.param(
        {"privateKey": {"algorithm": "MLDSA", "size": 44}}, "ML-DSA-44", id="denies an ML-DSA size too small"
    ),
    pytest.param({"duration": "2000h"}, "duration", id="denies a duration over the maximum"),
    pytest.param({"usages": ["code signing"]}, "code signing", id="denies a usage not allowed"),
    pytest.param(
        {"uris": ["spiffe://evil.org/ns/x/sa/y"]},
        "spiffe://evil.org",
        id="denies a URI of another trust domain",
    ),
    pytest.param(
        {"commonName": "system:admin"},
        "commonName system:admin is not allowed by MTLSIssuer policy: the policy sets no allowedCommonNames",
        id="denies CN=system:admin, which the policy does not list",
    ),
    pytest.param(
        {"subject": {"organizations": ["system:masters"]}},
        "subject.organizations entry system:masters is not allowed by MTLSIssuer policy: the policy sets no "
        "allowedSubject.organizations, so it allows no organizations.",
        id="denies O=system:masters, which the policy does not list",
    ),
    pytest.param(
        {"usages": ["client auth", "ocsp signing"]},
        "usages entry ocsp signing is not allowed by MTLSIssuer policy: allowed are server auth, client "
        "auth.",
        id="denies ocsp signing, which allowedUsages does not list",
    ),
    pytest.param(
        {"ipAddresses": ["10.96.0.1"]},
        "ipAddresses entry 10.96.0.1 is not allowed by MTLSIssuer policy: the policy sets no allowedIPRanges",
        id="denies an IP address when the policy leaves allowedIPRanges out",
    ),
]


@pytest.mark.parametrize(("change", "fragment"), DENIED)
def test_denied_requests(
    operator: Any, cluster: Any, team_namespace: str, change: dict[str, Any], fragment: str
) -> None:
    ns = team_namespace
    create_issuer(cluster, ns, "ca", {**self_signed("ca"), "policy": POLICY})
    wait_issuer_ready(cluster, ns, "ca")
    create_certificate(cluster, ns, "bad", {**base(ns), "secretName": "bad-tls", **change})
    obj = wait_condition(cluster, ns, "mtlscertificates", "bad", "False", "PolicyDenied")
    ready = condition(obj)
    assert ready is not None
    assert fragment in ready["message"], ready["message"]
    assert not _secret_exists(cluster, ns, "bad-tls")


def test_allowed_requests_and_the_spiffe_helper(operator: Any, cluster: Any, team_namespace: str) -> None:
    ns = team_namespace
    create_issuer(cluster, ns, "ca", {**self_signed("ca"), "policy": POLICY})
    wait_issuer_ready(cluster, ns, "ca")
    create_certificate(
        cluster,
        ns,
        "web",
        {**base(ns), "secretName": "web-tls", "privateKey": {"algorithm": "MLDSA", "size": 65}},
    )
    create_certificate(
        cluster,
        ns,
        "api",
        {
            "issuerRef": {"name": "ca"},
            "duration": "24h",
            "secretName": "api-tls",
            "spiffe": {"serviceAccount": "api"},
        },
    )
    wait_ready(cluster, ns, "web")
    wait_ready(cluster, ns, "api")
    leaf = x509.load_pem_x509_certificate(secret_data(cluster, ns, "api-tls")["tls.crt"])
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"spiffe://example.org/ns/{ns}/sa/api"]


def test_a_namespace_outside_the_selector_is_denied(operator: Any, cluster: Any, namespace: str) -> None:
    create_issuer(cluster, namespace, "ca", {**self_signed("ca"), "policy": POLICY})
    wait_issuer_ready(cluster, namespace, "ca")
    create_certificate(cluster, namespace, "web", {**base(namespace), "secretName": "web-tls"})
    obj = wait_condition(cluster, namespace, "mtlscertificates", "web", "False", "PolicyDenied")
    assert "namespace" in (condition(obj) or {}).get("message", "")
    # Labelling the namespace later lets the same request through: the namespace watch re-judges it.
    cluster.core.patch_namespace(namespace, {"metadata": {"labels": {"team": "a"}}})
    wait_ready(cluster, namespace, "web", timeout=60)
    assert get(cluster, namespace, "mtlscertificates", "web")["status"]["revision"] == 1


def test_an_empty_policy_denies_by_default(operator: Any, cluster: Any, namespace: str) -> None:
    """policy: {} is not "no policy": it allows no name at all, so nothing is issued."""
    create_issuer(cluster, namespace, "ca", {**self_signed("ca"), "policy": {}})
    wait_issuer_ready(cluster, namespace, "ca")
    create_certificate(cluster, namespace, "web", {**base(namespace), "secretName": "web-tls"})
    obj = wait_condition(cluster, namespace, "mtlscertificates", "web", "False", "PolicyDenied")
    assert (condition(obj) or {}).get("message") == (
        f"dnsNames entry web.{namespace}.svc is not allowed by MTLSIssuer policy: the policy sets no "
        "allowedDNSNames, so it allows no DNS names."
    )
    assert not _secret_exists(cluster, namespace, "web-tls")


def _tenant_role(cluster: Cluster, namespace: str, account: str) -> None:
    """A namespace tenant: may write MTLSCertificates, and only read MTLSIssuers."""
    cluster.core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=account))
    )
    cluster.rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name=account),
            rules=[
                client.V1PolicyRule(
                    api_groups=["mtls.dev"],
                    resources=["mtlscertificates"],
                    verbs=["create", "get", "list", "watch", "update", "patch", "delete"],
                ),
                client.V1PolicyRule(
                    api_groups=["mtls.dev"], resources=["mtlsissuers"], verbs=["get", "list"]
                ),
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


def test_a_tenant_gets_no_admin_identity_from_an_admin_owned_issuer(
    operator: Any, cluster: Cluster, team_namespace: str
) -> None:
    """Finding 8, acted out by a tenant with a real Role (impersonation) against an issuer an administrator
    wrote with a policy that lists no commonName, subject attribute or OCSP signing: the API server
    refuses a NUL byte, the operator refuses CN=system:admin, O=system:masters and ocsp signing
    (PolicyDenied condition and Warning event, no Secret), and the tenant cannot write an issuer of its
    own to get around the policy. The issuer is unchanged."""
    ns = team_namespace
    issuer = create_issuer(cluster, ns, "ca", {**self_signed("ca"), "policy": POLICY})
    wait_issuer_ready(cluster, ns, "ca")
    _tenant_role(cluster, ns, "tenant")
    api = ("mtls.dev", "v1alpha1", ns)

    def cert_body(name: str, **spec: Any) -> dict[str, Any]:
        return {
            "apiVersion": "mtls.dev/v1alpha1",
            "kind": "MTLSCertificate",
            "metadata": {"name": name},
            "spec": {**base(ns), "secretName": f"{name}-tls", **spec},
        }

    with cluster.impersonate(f"system:serviceaccount:{ns}:tenant") as api_client:
        tenant = client.CustomObjectsApi(api_client)

        def role_applies() -> bool:
            try:
                tenant.list_namespaced_custom_object(*api, "mtlscertificates")
            except ApiException as exc:
                if exc.status == 403:
                    return False
                raise
            return True

        wait_for(role_applies, timeout=30, message="the tenant's Role to take effect")

        with pytest.raises(ApiException) as nul:
            tenant.create_namespaced_custom_object(
                *api, "mtlscertificates", cert_body("nul", commonName="admin\x00.evil.example")
            )
        assert nul.value.status == 422
        refusal = json.loads(nul.value.body)["message"]
        assert "spec.commonName: Invalid value: " in refusal
        assert "must not contain control characters" in refusal

        with pytest.raises(ApiException) as own_issuer:
            tenant.create_namespaced_custom_object(
                *api,
                "mtlsissuers",
                {
                    "apiVersion": "mtls.dev/v1alpha1",
                    "kind": "MTLSIssuer",
                    "metadata": {"name": "mine"},
                    "spec": self_signed("mine"),
                },
            )
        assert own_issuer.value.status == 403

        tenant.create_namespaced_custom_object(
            *api,
            "mtlscertificates",
            cert_body("admin", commonName="system:admin", subject={"organizations": ["system:masters"]}),
        )
        tenant.create_namespaced_custom_object(
            *api, "mtlscertificates", cert_body("responder", usages=["client auth", "ocsp signing"])
        )

    denied = {
        "admin": "commonName system:admin is not allowed by MTLSIssuer policy: the policy sets no "
        "allowedCommonNames, so a commonName must equal one of the certificate's dnsNames or SPIFFE IDs.",
        "responder": "usages entry ocsp signing is not allowed by MTLSIssuer policy: allowed are server "
        "auth, client auth.",
    }
    for name, message in denied.items():
        obj = wait_condition(cluster, ns, "mtlscertificates", name, "False", "PolicyDenied")
        assert (condition(obj) or {}).get("message") == message
        assert not _secret_exists(cluster, ns, f"{name}-tls")

    def warned() -> bool:
        events = cluster.core.list_namespaced_event(ns).items
        seen = {(e.involved_object.name, e.reason, e.message) for e in events if e.type == "Warning"}
        return all((name, "PolicyDenied", message) in seen for name, message in denied.items())

    wait_for(warned, timeout=15, message="a PolicyDenied Warning event for each denied certificate")
    after = get(cluster, ns, "mtlsissuers", "ca")
    assert after["spec"] == issuer["spec"]
    assert not any(
        i["metadata"]["name"] == "mine"
        for i in cluster.custom.list_namespaced_custom_object(*api, "mtlsissuers")["items"]
    )
