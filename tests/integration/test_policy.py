"""Issuance policy on the issuer, enforced by the operator against the real API server: allowed requests
are issued, denied ones get Ready=False, reason PolicyDenied and the exact violation, and nothing is issued.
A present policy denies by default: what it leaves out (a commonName that is no DNS name of the
certificate, subject attributes, IP addresses, usages beyond mutual TLS) is refused.
"""

from __future__ import annotations

from typing import Any

import pytest
from cryptography import x509

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
    # Labelling the namespace later lets the same request through (level-based, within the label cache).
    cluster.core.patch_namespace(namespace, {"metadata": {"labels": {"team": "a"}}})
    cluster.custom.patch_namespaced_custom_object(
        "mtls.dev", "v1alpha1", namespace, "mtlscertificates", "web", {"spec": {"duration": "25h"}}
    )
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
