"""Issuance policy: which certificates an MTLSIssuer signs, across namespaces, names, URIs, subject
attributes, usages, durations and key algorithms (deny by default once a policy is present); the parser
of spec.policy and spec.spiffe."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from mtls_operator.api.certificate_spec import parse_certificate_spec
from mtls_operator.api.constants import Reason
from mtls_operator.api.fields import LabelSelector
from mtls_operator.api.issuer_policy import (
    DEFAULT_ALLOWED_USAGES,
    SUBJECT_FIELDS,
    AllowedSubject,
    IssuerPolicy,
    SpiffeSpec,
    parse_issuer_policy,
    parse_spiffe,
    spiffe_uri,
    with_spiffe_uri,
)
from mtls_operator.api.issuer_spec import parse_issuer_spec
from mtls_operator.api.models import (
    CertificateSpec,
    IntermediateSpec,
    IssuerRef,
    KeyAlgorithm,
    KeySpec,
    SpecError,
    Subject,
    Usage,
)
from mtls_operator.api.trust_lifecycle import (
    CARotationSpec,
    RevocationPolicy,
    RevocationSpec,
    TrustBundleSpec,
    parse_ca_rotation,
    parse_revocation,
    parse_revocation_policy,
    parse_trust_bundle,
)
from mtls_operator.policy.certificate import Violation
from mtls_operator.policy.issuance_policy import evaluate, glob_matches, selector_matches

TEAM_A = {"kubernetes.io/metadata.name": "team-a", "team": "a", "env": "prod"}
TEAM_B = {"kubernetes.io/metadata.name": "team-b", "team": "b", "env": "dev"}

POLICY = parse_issuer_policy(
    {
        "allowedNamespaces": {
            "matchLabels": {"env": "prod"},
            "matchExpressions": [{"key": "team", "operator": "In", "values": ["a", "c"]}],
        },
        "allowedDNSNames": ["*.{namespace}.svc", "*.{namespace}.svc.cluster.local"],
        "allowedIPRanges": ["10.0.0.0/16", "fd00::/8"],
        "allowedURIs": ["spiffe://{trustDomain}/ns/{namespace}/sa/*"],
        "allowedEmails": ["*@{namespace}.example.com"],
        "allowedUsages": ["server auth", "client auth"],
        "allowedSubject": {"organizations": ["{namespace}"], "organizationalUnits": ["{namespace}-*"]},
        "maxDuration": "720h",
        "allowedAlgorithms": [
            {"algorithm": "ECDSA", "minSize": 256},
            {"algorithm": "RSA", "minSize": 3072},
            {"algorithm": "MLDSA", "minSize": 65},
            {"algorithm": "Ed25519"},
        ],
        "trustDomain": "mesh.example",
    }
)


def cert(**overrides: Any) -> CertificateSpec:
    fields: dict[str, Any] = {
        "secret_name": "api-tls",
        "issuer_ref": IssuerRef("mesh-ca"),
        "dns_names": ("api.team-a.svc", "api.team-a.svc.cluster.local"),
        "duration": timedelta(hours=24),
    }
    fields.update(overrides)
    return CertificateSpec(**fields)


def denied(message: str) -> Violation:
    return Violation(Reason.POLICY_DENIED, message)


@pytest.mark.parametrize(
    ("spec", "namespace", "labels", "expected"),
    [
        pytest.param(cert(), "team-a", TEAM_A, None, id="allows a service name in the requesting namespace"),
        pytest.param(
            cert(dns_names=("api.other.svc",)),
            "team-a",
            TEAM_A,
            denied(
                "dnsNames entry api.other.svc is not allowed by MTLSIssuer policy: allowed are "
                "*.team-a.svc, *.team-a.svc.cluster.local."
            ),
            id="denies a DNS name of another namespace, naming the entry and the rendered patterns",
        ),
        pytest.param(
            cert(dns_names=("api.team-a.svc",)),
            "team-b",
            TEAM_B,
            denied(
                "Namespace team-b is not allowed by MTLSIssuer policy: its labels do not match "
                "allowedNamespaces (env=prod,team in (a,c))."
            ),
            id="denies a namespace whose labels do not match the selector before looking at names",
        ),
        pytest.param(
            cert(dns_names=("x.api.team-a.svc",)),
            "team-a",
            TEAM_A,
            denied(
                "dnsNames entry x.api.team-a.svc is not allowed by MTLSIssuer policy: allowed are "
                "*.team-a.svc, *.team-a.svc.cluster.local."
            ),
            id="a single star matches one DNS label only",
        ),
        pytest.param(
            cert(dns_names=("*.team-a.svc",)),
            "team-a",
            TEAM_A,
            None,
            id="allows a wildcard DNS name that the pattern covers",
        ),
        pytest.param(
            cert(ip_addresses=("10.0.3.4", "fd00::1")),
            "team-a",
            TEAM_A,
            None,
            id="allows IPv4 and IPv6 addresses inside the allowed ranges",
        ),
        pytest.param(
            cert(ip_addresses=("10.1.0.1",)),
            "team-a",
            TEAM_A,
            denied(
                "ipAddresses entry 10.1.0.1 is not allowed by MTLSIssuer policy: allowed are "
                "10.0.0.0/16, fd00::/8."
            ),
            id="denies an IP address outside every allowed range",
        ),
        pytest.param(
            cert(uris=("spiffe://mesh.example/ns/team-a/sa/api",)),
            "team-a",
            TEAM_A,
            None,
            id="allows the SPIFFE ID of a service account in the namespace and trust domain",
        ),
        pytest.param(
            cert(uris=("spiffe://mesh.example/ns/team-b/sa/api",)),
            "team-a",
            TEAM_A,
            denied(
                "uris entry spiffe://mesh.example/ns/team-b/sa/api is not allowed by MTLSIssuer policy: "
                "allowed are spiffe://mesh.example/ns/team-a/sa/*."
            ),
            id="denies the SPIFFE ID of another namespace's service account",
        ),
        pytest.param(
            cert(uris=("spiffe://mesh.example/ns/team-a/sa/api/extra",)),
            "team-a",
            TEAM_A,
            denied(
                "uris entry spiffe://mesh.example/ns/team-a/sa/api/extra is not allowed by MTLSIssuer "
                "policy: allowed are spiffe://mesh.example/ns/team-a/sa/*."
            ),
            id="a single star in a URI pattern does not cross a path segment",
        ),
        pytest.param(
            cert(uris=("spiffe://other.example/ns/team-a/sa/api",)),
            "team-a",
            TEAM_A,
            denied(
                "uris entry spiffe://other.example/ns/team-a/sa/api is not allowed by MTLSIssuer policy: "
                "allowed are spiffe://mesh.example/ns/team-a/sa/*."
            ),
            id="denies a SPIFFE ID in another trust domain",
        ),
        pytest.param(
            cert(email_addresses=("ops@team-a.example.com",)),
            "team-a",
            TEAM_A,
            None,
            id="allows an email address matching the namespace template",
        ),
        pytest.param(
            cert(email_addresses=("ops@evil.example.com",)),
            "team-a",
            TEAM_A,
            denied(
                "emailAddresses entry ops@evil.example.com is not allowed by MTLSIssuer policy: allowed "
                "are *@team-a.example.com."
            ),
            id="denies an email address in another domain",
        ),
        pytest.param(
            cert(usages=(Usage.SERVER_AUTH, Usage.CODE_SIGNING)),
            "team-a",
            TEAM_A,
            denied(
                "usages entry code signing is not allowed by MTLSIssuer policy: allowed are server auth, "
                "client auth."
            ),
            id="denies a usage the policy does not list",
        ),
        pytest.param(
            cert(usages=(Usage.SERVER_AUTH, Usage.DIGITAL_SIGNATURE)),
            "team-a",
            TEAM_A,
            None,
            id="never denies digital signature, which every certificate carries",
        ),
        pytest.param(
            cert(duration=timedelta(hours=721)),
            "team-a",
            TEAM_A,
            denied("duration 721h is longer than the MTLSIssuer policy's maxDuration 720h."),
            id="denies a duration longer than maxDuration",
        ),
        pytest.param(
            cert(duration=timedelta(hours=720)),
            "team-a",
            TEAM_A,
            None,
            id="allows a duration of exactly maxDuration",
        ),
        pytest.param(
            cert(private_key=KeySpec(KeyAlgorithm.RSA, 2048)),
            "team-a",
            TEAM_A,
            denied(
                "privateKey RSA-2048 is not allowed by MTLSIssuer policy: allowed are ECDSA-P256 or larger, "
                "RSA-3072 or larger, ML-DSA-65 or stronger, Ed25519."
            ),
            id="denies an RSA key below the minimum size",
        ),
        pytest.param(
            cert(private_key=KeySpec(KeyAlgorithm.RSA, 4096)),
            "team-a",
            TEAM_A,
            None,
            id="allows an RSA key above the minimum size",
        ),
        pytest.param(
            cert(private_key=KeySpec(KeyAlgorithm.MLDSA, 44)),
            "team-a",
            TEAM_A,
            denied(
                "privateKey ML-DSA-44 is not allowed by MTLSIssuer policy: allowed are ECDSA-P256 or larger, "
                "RSA-3072 or larger, ML-DSA-65 or stronger, Ed25519."
            ),
            id="denies ML-DSA-44 when the policy asks for ML-DSA-65 or stronger",
        ),
        pytest.param(
            cert(private_key=KeySpec(KeyAlgorithm.MLDSA, 87)),
            "team-a",
            TEAM_A,
            None,
            id="allows ML-DSA-87 when the policy asks for ML-DSA-65 or stronger",
        ),
        pytest.param(
            cert(private_key=KeySpec(KeyAlgorithm.ED25519, 0)),
            "team-a",
            TEAM_A,
            None,
            id="allows Ed25519 when the policy lists it",
        ),
        pytest.param(
            cert(subject=Subject(organizations=("team-a",), organizational_units=("team-a-payments",))),
            "team-a",
            TEAM_A,
            None,
            id="allows subject attributes that allowedSubject lists for the namespace",
        ),
        pytest.param(
            cert(subject=Subject(organizations=("system:masters",))),
            "team-a",
            TEAM_A,
            denied(
                "subject.organizations entry system:masters is not allowed by MTLSIssuer policy: allowed "
                "are team-a."
            ),
            id="denies O=system:masters when allowedSubject.organizations does not list it",
        ),
        pytest.param(
            cert(subject=Subject(organizations=("team-a",), countries=("DE",))),
            "team-a",
            TEAM_A,
            denied(
                "subject.countries entry DE is not allowed by MTLSIssuer policy: the policy sets no "
                "allowedSubject.countries, so it allows no countries."
            ),
            id="denies a subject attribute that allowedSubject leaves out",
        ),
        pytest.param(
            cert(common_name="system:admin"),
            "team-a",
            TEAM_A,
            denied(
                "commonName system:admin is not allowed by MTLSIssuer policy: the policy sets no "
                "allowedCommonNames, so a commonName must equal one of the certificate's dnsNames or "
                "SPIFFE IDs."
            ),
            id="denies CN=system:admin when allowedCommonNames is left out",
        ),
        pytest.param(
            cert(common_name="api.team-a.svc"),
            "team-a",
            TEAM_A,
            None,
            id="allows a commonName equal to one of the certificate's DNS names by default",
        ),
        pytest.param(
            cert(usages=(Usage.CLIENT_AUTH, Usage.OCSP_SIGNING)),
            "team-a",
            TEAM_A,
            denied(
                "usages entry ocsp signing is not allowed by MTLSIssuer policy: allowed are server auth, "
                "client auth."
            ),
            id="denies ocsp signing when allowedUsages does not list it",
        ),
        pytest.param(
            cert(dns_names=("api.other.svc",), duration=timedelta(hours=1000)),
            "team-a",
            TEAM_A,
            denied("duration 1000h is longer than the MTLSIssuer policy's maxDuration 720h."),
            id="reports the first violation in check order: duration before names",
        ),
    ],
)
def test_policy_decides_each_request(
    spec: CertificateSpec, namespace: str, labels: dict[str, str], expected: Violation | None
) -> None:
    assert evaluate(POLICY, spec, namespace, labels) == expected


SERVICES = {"allowedDNSNames": ["*.{namespace}.svc", "*.{namespace}.svc.cluster.local"]}
NOT_SET = "the policy sets no"


@pytest.mark.parametrize(
    ("raw", "spec", "expected"),
    [
        pytest.param(
            {},
            cert(dns_names=("anything.example",)),
            "dnsNames entry anything.example is not allowed by MTLSIssuer policy: the policy sets no "
            "allowedDNSNames, so it allows no DNS names.",
            id="an empty policy is not an open one: it allows no DNS name",
        ),
        pytest.param(
            SERVICES,
            cert(),
            None,
            id="a policy that lists the names a certificate asks for allows it",
        ),
        pytest.param(
            {**SERVICES, "allowedURIs": []},
            cert(uris=("spiffe://cluster.local/ns/team-a/sa/x",)),
            "uris entry spiffe://cluster.local/ns/team-a/sa/x is not allowed by MTLSIssuer policy: the "
            "policy allows no URIs.",
            id="an empty list allows nothing of that kind",
        ),
        pytest.param(
            {**SERVICES, "allowedURIs": []},
            cert(),
            None,
            id="an empty list does not deny a certificate that asks for nothing of that kind",
        ),
        pytest.param(
            SERVICES,
            cert(uris=("spiffe://cluster.local/ns/kube-system/sa/admin",)),
            "uris entry spiffe://cluster.local/ns/kube-system/sa/admin is not allowed by MTLSIssuer "
            "policy: the policy sets no allowedURIs, so it allows no URIs.",
            id="a policy that leaves allowedURIs out allows no URI, so no other service account's SPIFFE ID",
        ),
        pytest.param(
            SERVICES,
            cert(ip_addresses=("10.0.0.1",)),
            "ipAddresses entry 10.0.0.1 is not allowed by MTLSIssuer policy: the policy sets no "
            "allowedIPRanges, so it allows no IP addresses.",
            id="a policy that leaves allowedIPRanges out allows no IP address",
        ),
        pytest.param(
            SERVICES,
            cert(email_addresses=("ops@team-a.example.com",)),
            "emailAddresses entry ops@team-a.example.com is not allowed by MTLSIssuer policy: the policy "
            "sets no allowedEmails, so it allows no email addresses.",
            id="a policy that leaves allowedEmails out allows no email address",
        ),
        pytest.param(
            {**SERVICES, "allowedDNSNames": ["**.{namespace}.svc"]},
            cert(dns_names=("a.b.team-a.svc",)),
            None,
            id="a double star crosses DNS labels",
        ),
        pytest.param(
            {"allowedDNSNames": ["*.{namespace}.svc"]},
            cert(dns_names=("team-a.svc",)),
            "dnsNames entry team-a.svc is not allowed by MTLSIssuer policy: allowed are *.team-a.svc.",
            id="a star needs at least one character",
        ),
        pytest.param(
            {"allowedCommonNames": ["{namespace}-*"]},
            cert(common_name="team-b-api"),
            "commonName team-b-api is not allowed by MTLSIssuer policy: allowed are team-a-*.",
            id="denies a common name outside allowedCommonNames",
        ),
        pytest.param(
            {**SERVICES, "allowedCommonNames": ["{namespace}-*"]},
            cert(common_name="team-a-api"),
            None,
            id="allows a common name that allowedCommonNames lists",
        ),
        pytest.param(
            {**SERVICES, "allowedCommonNames": ["{namespace}-*"]},
            cert(common_name="api.team-a.svc"),
            "commonName api.team-a.svc is not allowed by MTLSIssuer policy: allowed are team-a-*.",
            id="once allowedCommonNames is set, a commonName equal to a DNS name must match it too",
        ),
        pytest.param(
            {**SERVICES, "allowedCommonNames": []},
            cert(common_name="api.team-a.svc"),
            "commonName api.team-a.svc is not allowed by MTLSIssuer policy: the policy allows no common "
            "names.",
            id="an empty allowedCommonNames allows no commonName at all",
        ),
        pytest.param(
            {"allowedURIs": ["spiffe://{trustDomain}/ns/{namespace}/sa/*"]},
            cert(
                dns_names=(),
                common_name="spiffe://cluster.local/ns/team-a/sa/web",
                uris=("spiffe://cluster.local/ns/team-a/sa/web",),
            ),
            None,
            id="allows a commonName equal to the certificate's SPIFFE ID by default",
        ),
        pytest.param(
            {"allowedURIs": ["urn:*"]},
            cert(dns_names=(), common_name="urn:admin", uris=("urn:admin",)),
            "commonName urn:admin is not allowed by MTLSIssuer policy: the policy sets no "
            "allowedCommonNames, so a commonName must equal one of the certificate's dnsNames or SPIFFE IDs.",
            id="a commonName equal to a URI that is not a SPIFFE ID is denied by default",
        ),
        pytest.param(
            {**SERVICES, "allowedURIs": ["spiffe://{trustDomain}/ns/{namespace}/sa/*"]},
            cert(uris=("spiffe://cluster.local/ns/team-a/sa/web",)),
            None,
            id="the trust domain defaults to cluster.local",
        ),
        pytest.param(
            {**SERVICES, "allowedIPRanges": []},
            cert(ip_addresses=("10.0.0.1",)),
            "ipAddresses entry 10.0.0.1 is not allowed by MTLSIssuer policy: the policy allows no IP "
            "addresses.",
            id="an empty IP range list allows no IP address",
        ),
        pytest.param(
            {**SERVICES, "allowedIPRanges": ["::/0"]},
            cert(ip_addresses=("10.0.0.1",)),
            "ipAddresses entry 10.0.0.1 is not allowed by MTLSIssuer policy: allowed are ::/0.",
            id="an IPv6 range does not cover IPv4 addresses",
        ),
        pytest.param(
            SERVICES,
            cert(
                usages=(Usage.SERVER_AUTH, Usage.CLIENT_AUTH, Usage.DIGITAL_SIGNATURE, Usage.KEY_ENCIPHERMENT)
            ),
            None,
            id="a policy without allowedUsages allows server auth, client auth, digital signature and key "
            "encipherment",
        ),
        pytest.param(
            SERVICES,
            cert(usages=(Usage.SERVER_AUTH, Usage.OCSP_SIGNING)),
            "usages entry ocsp signing is not allowed by MTLSIssuer policy: the policy sets no "
            "allowedUsages, so allowed are server auth, client auth, digital signature, key encipherment.",
            id="a policy without allowedUsages denies ocsp signing",
        ),
        pytest.param(
            SERVICES,
            cert(usages=(Usage.CODE_SIGNING,)),
            "usages entry code signing is not allowed by MTLSIssuer policy: the policy sets no "
            "allowedUsages, so allowed are server auth, client auth, digital signature, key encipherment.",
            id="a policy without allowedUsages denies code signing",
        ),
        pytest.param(
            SERVICES,
            cert(usages=(Usage.CLIENT_AUTH, Usage.EMAIL_PROTECTION)),
            "usages entry email protection is not allowed by MTLSIssuer policy: the policy sets no "
            "allowedUsages, so allowed are server auth, client auth, digital signature, key encipherment.",
            id="a policy without allowedUsages denies email protection",
        ),
        pytest.param(
            {**SERVICES, "allowedUsages": ["server auth", "ocsp signing"]},
            cert(usages=(Usage.SERVER_AUTH, Usage.OCSP_SIGNING)),
            None,
            id="a policy that lists ocsp signing allows it",
        ),
        pytest.param(
            {**SERVICES, "allowedUsages": ["server auth"]},
            cert(usages=(Usage.SERVER_AUTH, Usage.KEY_ENCIPHERMENT)),
            "usages entry key encipherment is not allowed by MTLSIssuer policy: allowed are server auth.",
            id="a policy that lists its usages allows only those (and digital signature)",
        ),
        pytest.param(
            SERVICES,
            cert(subject=Subject(organizations=("system:masters",))),
            "subject.organizations entry system:masters is not allowed by MTLSIssuer policy: the policy "
            "sets no allowedSubject.organizations, so it allows no organizations.",
            id="a policy without allowedSubject denies O=system:masters",
        ),
        pytest.param(
            SERVICES,
            cert(subject=Subject(serial_number="0001")),
            "subject.serialNumber 0001 is not allowed by MTLSIssuer policy: the policy sets no "
            "allowedSubject.serialNumber, so it allows no subject serial numbers.",
            id="a policy without allowedSubject denies a subject serialNumber",
        ),
        pytest.param(
            {**SERVICES, "allowedSubject": {"organizations": []}},
            cert(subject=Subject(organizations=("team-a",))),
            "subject.organizations entry team-a is not allowed by MTLSIssuer policy: the policy allows no "
            "organizations.",
            id="an empty allowedSubject list allows no value of that attribute",
        ),
        pytest.param(
            {
                **SERVICES,
                "allowedSubject": {
                    "organizationalUnits": ["{namespace} *"],
                    "serialNumber": ["{namespace}-*"],
                },
            },
            cert(subject=Subject(organizational_units=("team-a payments: EU",), serial_number="team-a-7")),
            None,
            id="a star in a subject pattern matches any characters, spaces and colons included",
        ),
        pytest.param(
            {**SERVICES, "allowedSubject": {"organizations": ["Example"]}},
            cert(subject=Subject(organizations=("example",))),
            "subject.organizations entry example is not allowed by MTLSIssuer policy: allowed are Example.",
            id="subject attributes are compared with case",
        ),
        pytest.param(
            SERVICES,
            cert(subject=Subject()),
            None,
            id="a certificate without subject attributes passes a policy without allowedSubject",
        ),
        pytest.param(
            {
                **SERVICES,
                "allowedNamespaces": {"matchExpressions": [{"key": "legacy", "operator": "DoesNotExist"}]},
            },
            cert(),
            None,
            id="DoesNotExist matches a namespace without the label",
        ),
        pytest.param(
            {**SERVICES, "allowedNamespaces": {}},
            cert(),
            None,
            id="an empty namespace selector matches every namespace",
        ),
    ],
)
def test_policy_field_semantics(raw: Any, spec: CertificateSpec, expected: str | None) -> None:
    violation = evaluate(parse_issuer_policy(raw), spec, "team-a", TEAM_A)
    assert (violation.message if violation else None) == expected
    if violation:
        assert violation.reason is Reason.POLICY_DENIED


def test_a_refusal_names_the_kind_of_issuer_whose_policy_refuses() -> None:
    """The sentence says whose policy it is: a namespace's MTLSIssuer or an MTLSClusterIssuer."""
    spec = cert(dns_names=("api.other.svc",), issuer_ref=IssuerRef("mesh", "MTLSClusterIssuer"))
    found = evaluate(POLICY, spec, "team-a", TEAM_A)
    assert found is not None
    expected = "dnsNames entry api.other.svc is not allowed by MTLSClusterIssuer policy: "
    assert found.message.startswith(expected)


@pytest.mark.parametrize(
    ("expression", "labels", "matches"),
    [
        pytest.param({"key": "team", "operator": "In", "values": ["a"]}, {"team": "a"}, True, id="In holds"),
        pytest.param({"key": "team", "operator": "In", "values": ["a"]}, {}, False, id="In needs the key"),
        pytest.param(
            {"key": "team", "operator": "NotIn", "values": ["a"]}, {}, True, id="NotIn holds without the key"
        ),
        pytest.param(
            {"key": "team", "operator": "NotIn", "values": ["a"]}, {"team": "a"}, False, id="NotIn refuses"
        ),
        pytest.param({"key": "team", "operator": "Exists"}, {"team": ""}, True, id="Exists holds"),
        pytest.param({"key": "team", "operator": "DoesNotExist"}, {"team": "a"}, False, id="DoesNotExist"),
    ],
)
def test_selector_follows_kubernetes_semantics(
    expression: dict[str, Any], labels: dict[str, str], matches: bool
) -> None:
    policy = parse_issuer_policy({"allowedNamespaces": {"matchExpressions": [expression]}})
    assert policy.allowed_namespaces is not None
    assert selector_matches(policy.allowed_namespaces, labels) is matches


def test_selector_renders_like_kubectl() -> None:
    policy = parse_issuer_policy(
        {
            "allowedNamespaces": {
                "matchLabels": {"team": "a"},
                "matchExpressions": [
                    {"key": "env", "operator": "NotIn", "values": ["dev"]},
                    {"key": "legacy", "operator": "DoesNotExist"},
                    {"key": "mesh", "operator": "Exists"},
                ],
            }
        }
    )
    assert str(policy.allowed_namespaces) == "team=a,env notin (dev),!legacy,mesh"
    assert str(LabelSelector()) == "(everything)"


@pytest.mark.parametrize(
    ("pattern", "value", "separator", "matches"),
    [
        pytest.param("*.svc", "a.svc", ".", True, id="star matches a label"),
        pytest.param("*.svc", "a.b.svc", ".", False, id="star stops at a dot"),
        pytest.param("**.svc", "a.b.svc", ".", True, id="double star crosses dots"),
        pytest.param("a.svc", "a.svc.evil", ".", False, id="patterns are anchored at the end"),
        pytest.param("a.svc", "evil.a.svc", ".", False, id="patterns are anchored at the start"),
        pytest.param("a+b.svc", "a+b.svc", ".", True, id="regex characters are literal"),
        pytest.param("a.svc", "aXsvc", ".", False, id="a dot is a literal dot"),
    ],
)
def test_glob_matching(pattern: str, value: str, separator: str, matches: bool) -> None:
    assert glob_matches(pattern, value, separator) is matches


def test_policy_parses_every_field() -> None:
    assert POLICY.trust_domain == "mesh.example"
    assert POLICY.max_duration == timedelta(hours=720)
    assert POLICY.allowed_usages == (Usage.SERVER_AUTH, Usage.CLIENT_AUTH)
    assert POLICY.allowed_ip_ranges == ("10.0.0.0/16", "fd00::/8")
    assert POLICY.allowed_subject == AllowedSubject(
        organizations=("{namespace}",), organizational_units=("{namespace}-*",)
    )
    assert parse_issuer_policy(None) == parse_issuer_policy({}) == IssuerPolicy()
    assert DEFAULT_ALLOWED_USAGES == (
        Usage.SERVER_AUTH,
        Usage.CLIENT_AUTH,
        Usage.DIGITAL_SIGNATURE,
        Usage.KEY_ENCIPHERMENT,
    )


def test_allowed_subject_names_every_subject_attribute() -> None:
    assert tuple(SUBJECT_FIELDS) == Subject.__slots__ == AllowedSubject.__slots__


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param([], "spec.policy must be an object.", id="refuses a policy that is not an object"),
        pytest.param(
            {"allowedDNSNames": ["*.{ns}.svc"]},
            "spec.policy.allowedDNSNames: '*.{ns}.svc' uses the unknown template variable {ns}; use "
            "{namespace} or {trustDomain}.",
            id="refuses an unknown template variable",
        ),
        pytest.param(
            {"allowedURIs": ["spiffe://{trustDomain/x"]},
            "spec.policy.allowedURIs: 'spiffe://{trustDomain/x' has an unmatched brace.",
            id="refuses an unmatched brace",
        ),
        pytest.param(
            {"allowedIPRanges": ["10.0.0.1/16"]},
            "spec.policy.allowedIPRanges: '10.0.0.1/16' is not a CIDR range such as 10.0.0.0/8 "
            "(10.0.0.1/16 has host bits set).",
            id="refuses a CIDR with host bits set",
        ),
        pytest.param(
            {"allowedUsages": ["signing"]},
            "spec.policy.allowedUsages: 'signing' is not a known usage",
            id="refuses an unknown usage",
        ),
        pytest.param(
            {"maxDuration": "forever"},
            "spec.policy.maxDuration is invalid",
            id="refuses a duration that does not parse",
        ),
        pytest.param(
            {"maxDuration": "0s"},
            "spec.policy.maxDuration must be longer than 0s.",
            id="refuses a zero maxDuration",
        ),
        pytest.param(
            {"allowedAlgorithms": [{"algorithm": "DSA"}]},
            "spec.policy.allowedAlgorithms[0].algorithm 'DSA' is not one of RSA, ECDSA, Ed25519, MLDSA.",
            id="refuses an unknown algorithm",
        ),
        pytest.param(
            {"allowedAlgorithms": [{"algorithm": "RSA"}, {"algorithm": "RSA", "minSize": 4096}]},
            "spec.policy.allowedAlgorithms[1]: RSA is listed twice.",
            id="refuses an algorithm listed twice",
        ),
        pytest.param(
            {"allowedAlgorithms": [{"algorithm": "MLDSA", "minSize": 100}]},
            "spec.policy.allowedAlgorithms[0].minSize 100 allows no MLDSA key: the largest is 87.",
            id="refuses a minimum size no key reaches",
        ),
        pytest.param(
            {"allowedAlgorithms": [{"algorithm": "Ed25519", "minSize": 256}]},
            "spec.policy.allowedAlgorithms[0].minSize must be left out for Ed25519",
            id="refuses a minimum size for Ed25519",
        ),
        pytest.param(
            {"allowedNamespaces": {"matchExpressions": [{"key": "team", "operator": "In"}]}},
            "spec.policy.allowedNamespaces.matchExpressions[0].values must not be empty for operator In.",
            id="refuses In without values",
        ),
        pytest.param(
            {"allowedNamespaces": {"matchExpressions": [{"key": "team", "operator": "Has"}]}},
            "spec.policy.allowedNamespaces.matchExpressions[0].operator must be In, NotIn, Exists or "
            "DoesNotExist",
            id="refuses an unknown selector operator",
        ),
        pytest.param(
            {"allowedSubject": {"organisations": ["x"]}},
            "spec.policy.allowedSubject: 'organisations' is not a subject attribute (organizations, "
            "organizationalUnits, countries, provinces, localities, streetAddresses, postalCodes, "
            "serialNumber).",
            id="refuses an allowedSubject key that is not a subject attribute",
        ),
        pytest.param(
            {"allowedSubject": ["organizations"]},
            "spec.policy.allowedSubject must be an object.",
            id="refuses an allowedSubject that is not an object",
        ),
        pytest.param(
            {"allowedSubject": {"organizations": ["{team}"]}},
            "spec.policy.allowedSubject.organizations: '{team}' uses the unknown template variable {team}",
            id="refuses an unknown template variable in a subject pattern",
        ),
        pytest.param(
            {"allowedCommonNames": ["admin\x00*"]},
            "spec.policy.allowedCommonNames: 'admin\\x00*' must not contain control characters (found "
            "U+0000).",
            id="refuses a control character in a pattern",
        ),
        pytest.param(
            {"trustDomain": "Mesh.Example"},
            "spec.policy.trustDomain: trust domain 'Mesh.Example' must be 1 to 255 lower-case letters",
            id="refuses an upper-case trust domain",
        ),
    ],
)
def test_parser_refuses_bad_policies(raw: Any, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_issuer_policy(raw)
    assert caught.value.message.startswith(message)
    assert caught.value.reason is Reason.INVALID_SPEC


# ---------------------------------------------------------------------------------------------------------
# SPIFFE


def test_spiffe_uri_is_the_kubernetes_spiffe_id() -> None:
    assert spiffe_uri("team-a", "api", "cluster.local") == "spiffe://cluster.local/ns/team-a/sa/api"


@pytest.mark.parametrize(
    ("raw", "policy", "uri"),
    [
        pytest.param(
            {"serviceAccount": "api"},
            None,
            "spiffe://cluster.local/ns/team-a/sa/api",
            id="defaults to cluster.local",
        ),
        pytest.param(
            {"serviceAccount": "api"},
            POLICY,
            "spiffe://mesh.example/ns/team-a/sa/api",
            id="takes the trust domain of the issuer policy",
        ),
        pytest.param(
            {"serviceAccount": "api", "trustDomain": "other.example"},
            POLICY,
            "spiffe://other.example/ns/team-a/sa/api",
            id="the certificate's own trust domain wins",
        ),
    ],
)
def test_with_spiffe_uri_adds_the_spiffe_id(raw: Any, policy: IssuerPolicy | None, uri: str) -> None:
    spec = with_spiffe_uri(cert(uris=("urn:x",)), parse_spiffe(raw), "team-a", policy)
    assert spec.uris == (uri, "urn:x")
    assert with_spiffe_uri(spec, parse_spiffe(raw), "team-a", policy) == spec


def test_spiffe_certificate_passes_a_spiffe_policy() -> None:
    spec = parse_certificate_spec(
        {"secretName": "api-tls", "issuerRef": {"name": "mesh-ca"}, "commonName": "api", "duration": "24h"}
    )
    spec = with_spiffe_uri(replace(spec, common_name=None), SpiffeSpec("api"), "team-a", POLICY)
    assert evaluate(POLICY, spec, "team-a", TEAM_A) is None
    assert with_spiffe_uri(spec, None, "team-a", POLICY) is spec


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param({}, "spec.spiffe.serviceAccount is required.", id="needs a service account"),
        pytest.param(
            {"serviceAccount": "API"},
            "spec.spiffe.serviceAccount 'API' is not a valid service account name.",
            id="refuses a service account that is not a Kubernetes name",
        ),
        pytest.param(
            {"serviceAccount": "api", "trustDomain": "a/b"},
            "spec.spiffe.trustDomain: trust domain 'a/b' must be",
            id="refuses a trust domain with a slash",
        ),
        pytest.param("api", "spec.spiffe must be an object.", id="refuses a string"),
    ],
)
def test_parse_spiffe_refuses_bad_input(raw: Any, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spiffe(raw)
    assert caught.value.message.startswith(message)


def test_parse_spiffe_absent_is_none() -> None:
    assert parse_spiffe(None) is None
    assert parse_spiffe({"serviceAccount": "api"}) == SpiffeSpec("api", None)


# ---------------------------------------------------------------------------------------------------------
# The other trust-lifecycle fields


def test_parse_revocation() -> None:
    assert parse_revocation(None) is None
    spec = parse_revocation({"crlURL": "http://ca.example/mesh.crl", "ocspURL": "http://ca.example/ocsp"})
    assert spec == RevocationSpec("http://ca.example/mesh.crl", "http://ca.example/ocsp", timedelta(hours=24))
    assert parse_revocation({"crlValidity": "6h"}) == RevocationSpec(None, None, timedelta(hours=6))


def test_parse_trust_bundle() -> None:
    assert parse_trust_bundle(None) is None
    spec = parse_trust_bundle(
        {"configMapName": "mesh-ca-bundle", "namespaceSelector": {"matchLabels": {"mesh": "on"}}}
    )
    assert spec == TrustBundleSpec("mesh-ca-bundle", LabelSelector(match_labels=(("mesh", "on"),)))
    assert parse_trust_bundle({"configMapName": "b"}) == TrustBundleSpec("b")


def parse_intermediate(raw: Any) -> IntermediateSpec | None:
    """The one parser of spec.intermediate, reached through the issuer spec parser."""
    return None if raw is None else parse_issuer_spec({"intermediate": raw}).intermediate


def test_parse_intermediate() -> None:
    assert parse_intermediate(None) is None
    spec = parse_intermediate(
        {
            "issuerRef": {"name": "offline-root"},
            "secretName": "team-a-ca",
            "commonName": "team-a intermediate",
            "duration": "720h",
            "renewBefore": "240h",
            "privateKey": {"algorithm": "MLDSA", "size": 65},
            "pathLength": 0,
            "nameConstraints": {
                "permittedDNSDomains": ["team-a.svc"],
                "excludedDNSDomains": [".kube-system.svc"],
            },
        }
    )
    assert spec is not None
    assert spec.parent == "offline-root"
    assert spec.ca.secret_name == "team-a-ca"
    assert spec.ca.duration == timedelta(hours=720)
    assert spec.ca.renew_before == timedelta(hours=240)
    assert spec.ca.private_key == KeySpec(KeyAlgorithm.MLDSA, 65)
    assert spec.path_length == 0
    assert (spec.permitted_dns, spec.excluded_dns) == (("team-a.svc",), (".kube-system.svc",))
    minimal = parse_intermediate({"issuerRef": {"name": "root"}, "secretName": "s", "commonName": "i"})
    assert minimal is not None
    assert (minimal.ca.duration, minimal.path_length) == (timedelta(days=365), None)


def test_parse_ca_rotation() -> None:
    assert parse_ca_rotation({"selfSigned": {"renewBefore": "720h"}}) == CARotationSpec(timedelta(hours=720))
    assert parse_ca_rotation({"selfSigned": {}}) == CARotationSpec()
    assert parse_ca_rotation({"intermediate": {"renewBefore": "24h"}}) == CARotationSpec(timedelta(hours=24))
    assert parse_ca_rotation({"ca": {"secretName": "a"}}) == CARotationSpec()


def test_parse_revocation_policy() -> None:
    assert parse_revocation_policy(None) is RevocationPolicy.NONE
    assert parse_revocation_policy("Revoke") is RevocationPolicy.REVOKE


@pytest.mark.parametrize(
    ("parse", "raw", "message"),
    [
        pytest.param(
            parse_revocation,
            {"crlURL": "ldap://ca.example/crl"},
            "spec.revocation.crlURL 'ldap://ca.example/crl' must be an absolute http:// URL",
            id="refuses a CRL URL that is not http",
        ),
        pytest.param(
            parse_revocation,
            {"ocspURL": "ocsp.example"},
            "spec.revocation.ocspURL 'ocsp.example' must be an absolute http:// URL",
            id="refuses a relative OCSP URL",
        ),
        pytest.param(
            parse_revocation,
            {"crlValidity": "30s"},
            "spec.revocation.crlValidity must be at least 1m.",
            id="refuses a CRL validity under a minute",
        ),
        pytest.param(
            parse_trust_bundle,
            {},
            "spec.trustBundle.configMapName is required.",
            id="a bundle needs a ConfigMap name",
        ),
        pytest.param(
            parse_trust_bundle,
            {"configMapName": "b", "pkcs12": {"create": True, "passwordSecretRef": {"name": "pw"}}},
            "spec.trustBundle.pkcs12 is not supported yet: the bundle is published as PEM (key ca.crt) "
            "only; remove pkcs12.",
            id="refuses a PKCS#12 bundle, which the operator would never write",
        ),
        pytest.param(
            parse_trust_bundle,
            {"configMapName": "b", "pkcs12": {}},
            "spec.trustBundle.pkcs12 is not supported yet",
            id="refuses even an empty pkcs12",
        ),
        pytest.param(
            parse_intermediate,
            {"secretName": "s", "commonName": "i"},
            "spec.intermediate.issuerRef.name is required.",
            id="an intermediate needs a parent issuer",
        ),
        pytest.param(
            parse_intermediate,
            {"issuerRef": {"name": "r"}, "secretName": "s", "commonName": "i", "pathLength": -1},
            "spec.intermediate.pathLength must be a whole number of 0 or more.",
            id="refuses a negative path length",
        ),
        pytest.param(
            parse_intermediate,
            {
                "issuerRef": {"name": "r"},
                "secretName": "s",
                "commonName": "i",
                "nameConstraints": {"permittedDNSDomains": ["*.svc"]},
            },
            "spec.intermediate.nameConstraints.permittedDNSDomains: '*.svc' is not a DNS domain",
            id="refuses a wildcard name constraint",
        ),
        pytest.param(
            parse_intermediate,
            {
                "issuerRef": {"name": "r"},
                "secretName": "s",
                "commonName": "i",
                "privateKey": {"algorithm": "DSA"},
            },
            "spec.intermediate.privateKey.algorithm 'DSA' is not one of",
            id="refuses an unknown key algorithm",
        ),
        pytest.param(
            parse_ca_rotation,
            {"ca": {"secretName": "a", "rotation": {"nextSecretName": "b"}}},
            "spec.ca.rotation (nextSecretName) is not supported yet: to replace the CA, put the new key pair "
            "in another Secret and change spec.ca.secretName.",
            id="refuses ca.rotation.nextSecretName, which the operator would never act on",
        ),
        pytest.param(
            parse_ca_rotation,
            {"selfSigned": {"renewBefore": "soon"}},
            "spec.selfSigned.renewBefore is invalid",
            id="refuses a renewBefore that does not parse",
        ),
        pytest.param(
            parse_revocation_policy,
            "Delete",
            "spec.revocationPolicy must be None or Revoke.",
            id="refuses Delete",
        ),
    ],
)
def test_trust_lifecycle_parsers_refuse_bad_input(
    parse: Callable[[Any], object], raw: Any, message: str
) -> None:
    with pytest.raises(SpecError) as caught:
        parse(raw)
    assert caught.value.message.startswith(message)
