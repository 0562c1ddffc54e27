"""The issuance policies shipped in examples/ are safe: each allows the example certificates that use its
issuer, and denies the requests a hostile tenant would make (an administrator's name or group, OCSP or code
signing, another namespace's names or SPIFFE IDs, a NUL byte). The server accepts the examples
(tests/integration/test_crd_schema.py, test_examples_are_accepted); the operator enforces a policy as
evaluate() decides (tests/integration/test_policy.py).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from mtls_operator.api.certificate_spec import parse_certificate_spec
from mtls_operator.api.constants import CERTIFICATE_KIND, CLUSTER_ISSUER_KIND, ISSUER_KIND
from mtls_operator.api.issuer_policy import IssuerPolicy, parse_issuer_policy, parse_spiffe, with_spiffe_uri
from mtls_operator.api.models import SpecError
from mtls_operator.policy.certificate import Violation
from mtls_operator.policy.issuance_policy import evaluate

ROOT = Path(__file__).resolve().parents[2]


def _documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc and doc.get("kind") in (CERTIFICATE_KIND, ISSUER_KIND, CLUSTER_ISSUER_KIND):
                yield path.name, doc


DOCUMENTS = list(_documents())
POLICY_ISSUERS = [
    pytest.param(doc, id=f"examples/{file}: {doc['metadata']['name']}")
    for file, doc in DOCUMENTS
    if doc["kind"] in (ISSUER_KIND, CLUSTER_ISSUER_KIND) and doc["spec"].get("policy") is not None
]


def _certificates_of(issuer: Mapping[str, Any]) -> list[dict[str, Any]]:
    kind, name = issuer["kind"], issuer["metadata"]["name"]
    namespace = issuer["metadata"].get("namespace")  # None: a cluster issuer, for any namespace
    return [
        doc
        for _, doc in DOCUMENTS
        if doc["kind"] == CERTIFICATE_KIND
        and namespace in (None, doc["metadata"]["namespace"])
        and doc["spec"]["issuerRef"]["name"] == name
        and doc["spec"]["issuerRef"].get("kind", ISSUER_KIND) == kind
    ]


def judge(policy: IssuerPolicy, spec: Mapping[str, Any], namespace: str) -> Violation | None:
    """What the operator decides for ``spec`` from ``namespace``: parse, add the SPIFFE ID, evaluate."""
    parsed = with_spiffe_uri(
        parse_certificate_spec(spec), parse_spiffe(spec.get("spiffe")), namespace, policy
    )
    return evaluate(policy, parsed, namespace, {"kubernetes.io/metadata.name": namespace})


def test_examples_ship_a_policy() -> None:
    assert POLICY_ISSUERS, "no example issuer has a spec.policy"


@pytest.mark.parametrize("issuer", POLICY_ISSUERS)
def test_the_example_policy_allows_its_example_certificates(issuer: dict[str, Any]) -> None:
    policy = parse_issuer_policy(issuer["spec"]["policy"])
    certificates = _certificates_of(issuer)
    assert certificates, "an example policy comes with an example certificate that it allows"
    for doc in certificates:
        assert judge(policy, doc["spec"], doc["metadata"]["namespace"]) is None, doc["metadata"]["name"]


DANGEROUS = [
    pytest.param(
        {"commonName": "system:admin", "subject": {"organizations": ["system:masters"]}},
        "commonName system:admin is not allowed by MTLSIssuer policy",
        id="denies CN=system:admin, O=system:masters (a cluster-admin client certificate)",
    ),
    pytest.param(
        {"subject": {"organizations": ["system:masters"]}},
        "subject.organizations entry system:masters is not allowed by MTLSIssuer policy",
        id="denies O=system:masters",
    ),
    pytest.param(
        {"subject": {"organizationalUnits": ["platform-admins"]}},
        "subject.organizationalUnits entry platform-admins is not allowed by MTLSIssuer policy",
        id="denies an organizational unit",
    ),
    pytest.param(
        {"subject": {"serialNumber": "0001"}},
        "subject.serialNumber 0001 is not allowed by MTLSIssuer policy",
        id="denies a subject serialNumber",
    ),
    pytest.param(
        {"usages": ["server auth", "ocsp signing"]},
        "usages entry ocsp signing is not allowed by MTLSIssuer policy",
        id="denies ocsp signing (it would sign OCSP answers for the issuer)",
    ),
    pytest.param(
        {"usages": ["code signing"]},
        "usages entry code signing is not allowed by MTLSIssuer policy",
        id="denies code signing",
    ),
    pytest.param(
        {"usages": ["client auth", "email protection"]},
        "usages entry email protection is not allowed by MTLSIssuer policy",
        id="denies email protection",
    ),
    pytest.param(
        {"dnsNames": ["kubernetes.default.svc"]},
        "dnsNames entry kubernetes.default.svc is not allowed by MTLSIssuer policy",
        id="denies the API server's DNS name",
    ),
    pytest.param(
        {"uris": ["spiffe://cluster.local/ns/kube-system/sa/admin"]},
        "uris entry spiffe://cluster.local/ns/kube-system/sa/admin is not allowed by MTLSIssuer policy",
        id="denies another namespace's SPIFFE ID",
    ),
    pytest.param(
        {"spiffe": {"serviceAccount": "orders", "trustDomain": "prod.example"}},
        "uris entry spiffe://prod.example/ns/demo/sa/orders is not allowed by MTLSIssuer policy",
        id="denies a SPIFFE ID in another trust domain",
    ),
    pytest.param(
        {"ipAddresses": ["10.96.0.1"]},
        "ipAddresses entry 10.96.0.1 is not allowed by MTLSIssuer policy",
        id="denies an IP address",
    ),
    pytest.param(
        {"emailAddresses": ["root@example.com"]},
        "emailAddresses entry root@example.com is not allowed by MTLSIssuer policy",
        id="denies an email address",
    ),
    pytest.param(
        {"duration": "87600h"},
        "duration 87600h is longer than the MTLSIssuer policy's maxDuration",
        id="denies a ten-year certificate",
    ),
]


@pytest.mark.parametrize("issuer", POLICY_ISSUERS)
@pytest.mark.parametrize(("change", "denial"), DANGEROUS)
def test_the_example_policy_denies_dangerous_requests(
    issuer: dict[str, Any], change: dict[str, Any], denial: str
) -> None:
    policy = parse_issuer_policy(issuer["spec"]["policy"])
    base = _certificates_of(issuer)[0]
    spec = {**copy.deepcopy(base["spec"]), **change}
    violation = judge(policy, spec, base["metadata"]["namespace"])
    assert violation is not None
    expected = denial.replace("MTLSIssuer policy", f"{issuer['kind']} policy")  # whose policy refuses
    assert violation.message.startswith(expected), violation.message


@pytest.mark.parametrize("issuer", POLICY_ISSUERS)
@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"commonName": "orders.demo.svc\x00.evil.example"}, id="a NUL byte in the commonName"),
        pytest.param({"dnsNames": ["orders.demo.svc\x00.evil.example"]}, id="a NUL byte in a DNS name"),
        pytest.param({"subject": {"organizations": ["demo\x00system:masters"]}}, id="a NUL byte in O"),
    ],
)
def test_a_nul_byte_never_reaches_the_example_policy(issuer: dict[str, Any], change: dict[str, Any]) -> None:
    """Refused before the policy is asked (and by the CRD before that): a glob could otherwise match the
    part before the NUL that a C reader of the certificate would stop at."""
    base = _certificates_of(issuer)[0]
    with pytest.raises(SpecError, match=r"must not contain control characters \(found U\+0000\)\.$"):
        judge(parse_issuer_policy(issuer["spec"]["policy"]), {**base["spec"], **change}, "demo")
