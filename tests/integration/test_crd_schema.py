"""The CRDs in crds/, as shipped, against a real kube-apiserver.

The API server is the first line of validation: what the schema and its CEL rules reject never reaches the
operator, and the user sees the reason at `kubectl apply` time. These tests install both CRDs (the server
refuses a CRD whose CEL rules exceed the cost budget, so that is checked too), then check that

* bad specs are rejected with 422 and a message the user can act on,
* good specs are accepted with the documented defaults filled in,
* the server and `mtls_operator.api.models` agree: a bad spec is also refused by the parser (except for
  the few cases in ``STRICTER_THAN_MODELS``, where the schema deliberately refuses earlier what would fail
  later anyway), and a good spec parses to the same value before and after the server's defaulting.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from mtls_operator.api.certificate_spec import parse_certificate_spec
from mtls_operator.api.constants import (
    API_VERSION,
    CERTIFICATE_KIND,
    CERTIFICATE_PLURAL,
    CLUSTER_ISSUER_KIND,
    CLUSTER_ISSUER_PLURAL,
    GROUP,
    ISSUER_KIND,
    ISSUER_PLURAL,
    VERSION,
)
from mtls_operator.api.issuer_policy import parse_issuer_policy
from mtls_operator.api.issuer_spec import parse_issuer_spec
from mtls_operator.api.models import SpecError
from mtls_operator.api.trust_lifecycle import parse_ca_rotation, parse_revocation, parse_trust_bundle

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CRD_FILES = sorted((ROOT / "crds").glob("*.yaml"))
EXAMPLE_FILES = sorted((ROOT / "examples").glob("*.yaml"))
PLURALS = {CERTIFICATE_KIND: CERTIFICATE_PLURAL, ISSUER_KIND: ISSUER_PLURAL}


def parse_issuer(spec: Mapping[str, Any]) -> object:
    """Every parser the operator runs on an MTLSIssuer spec (the CA, the policy when present, the trust
    bundle, the rotation settings, the revocation URLs), as one value."""
    policy = spec.get("policy")
    return (
        parse_issuer_spec(spec),
        None if policy is None else parse_issuer_policy(policy),
        parse_trust_bundle(spec.get("trustBundle")),
        parse_ca_rotation(spec),
        parse_revocation(spec.get("revocation")),
    )


PARSERS: dict[str, Callable[[Mapping[str, Any]], object]] = {
    CERTIFICATE_KIND: parse_certificate_spec,
    ISSUER_KIND: parse_issuer,
}
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"
_DELETE = object()


# ---------------------------------------------------------------------------------------------------------
# Installing the CRDs


def _apiext(cluster: Any) -> Any:
    """The ApiextensionsV1Api: ``apiextensions`` in tests/conftest.py, ``apiext`` in older briefs."""
    return getattr(cluster, "apiextensions", None) or cluster.apiext


def _apply_crd(cluster: Any, body: dict[str, Any]) -> None:
    """Create the CRD, or replace the one already there (optimistic concurrency, so retry on 409)."""
    name = body["metadata"]["name"]
    try:
        _apiext(cluster).create_custom_resource_definition(body)
        return
    except ApiException as exc:
        if exc.status != 409:
            raise AssertionError(f"the API server refused CRD {name}: {_message(exc)}") from None
    for _ in range(10):
        current = _apiext(cluster).read_custom_resource_definition(name)
        replacement = copy.deepcopy(body)
        replacement["metadata"]["resourceVersion"] = current.metadata.resource_version
        try:
            _apiext(cluster).replace_custom_resource_definition(name, replacement)
            return
        except ApiException as exc:
            if exc.status != 409:
                raise AssertionError(f"the API server refused CRD {name}: {_message(exc)}") from None
    raise AssertionError(f"could not replace CRD {name}: it kept changing under us")


def _wait_established(cluster: Any, name: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        crd = _apiext(cluster).read_custom_resource_definition(name)
        conditions = {c.type: c for c in ((crd.status and crd.status.conditions) or [])}
        names = conditions.get("NamesAccepted")
        if names is not None and names.status == "False":
            raise AssertionError(f"CRD {name}: names not accepted: {names.message}")
        established = conditions.get("Established")
        if established is not None and established.status == "True":
            return crd
        if time.monotonic() > deadline:
            raise AssertionError(f"CRD {name} not Established after {timeout}s: {conditions}")
        time.sleep(0.2)


@pytest.fixture(scope="session")
def installed_crds(cluster: Any) -> dict[str, Any]:
    """Every CRD from crds/, created or replaced, Established and served; returns them by kind."""
    assert len(CRD_FILES) == 3, f"expected three CRDs in crds/, found {CRD_FILES}"
    installed = {}
    for path in CRD_FILES:
        body = yaml.safe_load(path.read_text(encoding="utf-8"))
        _apply_crd(cluster, body)
        installed[body["spec"]["names"]["kind"]] = _wait_established(cluster, body["metadata"]["name"])
    # Established means the names are reserved; the endpoint may need a moment more to be served.
    deadline = time.monotonic() + 30
    for plural in PLURALS.values():
        while True:
            try:
                cluster.custom.list_namespaced_custom_object(GROUP, VERSION, "default", plural)
                break
            except ApiException as exc:
                if exc.status != 404 or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    return installed


# ---------------------------------------------------------------------------------------------------------
# Helpers


def _message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message", exc.body))
    except ValueError:
        return str(exc.body)


def _with(base: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    """``base`` with top-level ``changes``; a change to ``_DELETE`` removes the key."""
    spec = copy.deepcopy(dict(base))
    for key, value in changes.items():
        if value is _DELETE:
            spec.pop(key, None)
        else:
            spec[key] = value
    return spec


CERT = {"secretName": "web-tls", "issuerRef": {"name": "root"}, "dnsNames": ["web.demo.svc"]}
SELF_SIGNED = {"selfSigned": {"secretName": "root-ca", "commonName": "demo root CA"}}


def cert(**changes: Any) -> dict[str, Any]:
    return _with(CERT, **changes)


def self_signed(**changes: Any) -> dict[str, Any]:
    return {"selfSigned": _with(SELF_SIGNED["selfSigned"], **changes)}


def _create(cluster: Any, namespace: str, kind: str, spec: Any, name: str = "subject") -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}}
    if spec is not _DELETE:
        body["spec"] = spec
    result: dict[str, Any] = cluster.custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURALS[kind], body
    )
    return result


def _dig(doc: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


# ---------------------------------------------------------------------------------------------------------
# Bad specs: rejected by the server with 422, with a message that says what to fix

# Rejected by the schema, accepted by parse_*_spec: the schema refuses earlier what would fail later (an
# invalid Secret name, a country the X.509 library refuses) or what the parser silently ignores.
STRICTER_THAN_MODELS = {
    "rejects an IPv4-mapped IPv6 address",
    "rejects duplicate DNS names",
    "rejects a secretName that is not a DNS subdomain",
    "rejects a three-letter country code",
    "rejects the same rollout target twice",
    "rejects rotationPolicy Never on a CA key",
    "rejects encoding PKCS1 on a CA key",
}

MLDSA_65 = {"algorithm": "MLDSA", "size": 65}

BAD_SPECS = [
    # --- additional private keys (a dual certificate, a dual CA)
    (
        "rejects an additional key of the main key's algorithm",
        CERTIFICATE_KIND,
        cert(privateKey=MLDSA_65, additionalPrivateKeys=[{"algorithm": "MLDSA", "size": 44}]),
        ("spec.additionalPrivateKeys: Invalid value: ", "other than privateKey.algorithm"),
    ),
    (
        "rejects an additional ECDSA key next to the default ECDSA key",
        CERTIFICATE_KIND,
        cert(additionalPrivateKeys=[{"algorithm": "ECDSA"}]),
        ("spec.additionalPrivateKeys: Invalid value: ", "other than privateKey.algorithm"),
    ),
    (
        "rejects two additional keys of one algorithm",
        CERTIFICATE_KIND,
        cert(
            privateKey=MLDSA_65,
            additionalPrivateKeys=[{"algorithm": "ECDSA"}, {"algorithm": "ECDSA", "size": 384}],
        ),
        "spec.additionalPrivateKeys[1]: Duplicate value",
    ),
    (
        "rejects four additional keys",
        CERTIFICATE_KIND,
        cert(
            privateKey=MLDSA_65,
            additionalPrivateKeys=[{"algorithm": a} for a in ("ECDSA", "RSA", "Ed25519", "MLDSA")],
        ),
        "must have at most 3 items",
    ),
    (
        "rejects an additional key without an algorithm",
        CERTIFICATE_KIND,
        cert(privateKey=MLDSA_65, additionalPrivateKeys=[{"size": 256}]),
        "spec.additionalPrivateKeys[0].algorithm: Required value",
    ),
    (
        "rejects an additional ECDSA key of size 255",
        CERTIFICATE_KIND,
        cert(privateKey=MLDSA_65, additionalPrivateKeys=[{"algorithm": "ECDSA", "size": 255}]),
        "spec.additionalPrivateKeys[0].size: Invalid value: size 255 is not valid for ECDSA",
    ),
    (
        "rejects a dual CA whose additional key is of the CA key's algorithm",
        ISSUER_KIND,
        self_signed(privateKey=MLDSA_65, additionalPrivateKeys=[{"algorithm": "MLDSA", "size": 87}]),
        ("spec.selfSigned.additionalPrivateKeys: Invalid value: ", "other than privateKey.algorithm"),
    ),
    # --- a CA key: what applies to certificates only
    (
        "rejects rotationPolicy Never on a CA key",
        ISSUER_KIND,
        self_signed(privateKey={"algorithm": "ECDSA", "rotationPolicy": "Never"}),
        "rotationPolicy Never is for certificates; a CA gets a new key at every CA rotation",
    ),
    (
        "rejects encoding PKCS1 on a CA key",
        ISSUER_KIND,
        self_signed(privateKey={"algorithm": "RSA", "encoding": "PKCS1"}),
        "encoding PKCS1 is for certificates; a CA key is stored as PKCS#8",
    ),
    # --- private key: algorithm and size
    (
        "rejects RSA 1024",
        CERTIFICATE_KIND,
        cert(privateKey={"algorithm": "RSA", "size": 1024}),
        "spec.privateKey.size: Invalid value: size 1024 is not valid for RSA: use one of 2048, 3072, 4096",
    ),
    (
        "rejects ML-DSA 50",
        CERTIFICATE_KIND,
        cert(privateKey={"algorithm": "MLDSA", "size": 50}),
        "size 50 is not valid for MLDSA: use one of 44, 65, 87",
    ),
    (
        "rejects ECDSA 2048",
        CERTIFICATE_KIND,
        cert(privateKey={"algorithm": "ECDSA", "size": 2048}),
        "size 2048 is not valid for ECDSA: use one of 256, 384, 521",
    ),
    (
        "rejects an ECDSA size given without the algorithm",
        CERTIFICATE_KIND,
        cert(privateKey={"size": 4096}),
        "size 4096 is not valid for ECDSA",
    ),
    (
        "rejects a size on an Ed25519 key",
        CERTIFICATE_KIND,
        cert(privateKey={"algorithm": "Ed25519", "size": 256}),
        "Ed25519 keys have a fixed size: leave size unset or 0, not 256",
    ),
    (
        "rejects an unknown key algorithm",
        CERTIFICATE_KIND,
        cert(privateKey={"algorithm": "DSA"}),
        'spec.privateKey.algorithm: Unsupported value: "DSA"',
    ),
    (
        "rejects the algorithm spelled ML-DSA",
        CERTIFICATE_KIND,
        cert(privateKey={"algorithm": "ML-DSA", "size": 65}),
        'Unsupported value: "ML-DSA": supported values: "RSA", "ECDSA", "Ed25519", "MLDSA"',
    ),
    (
        "rejects an unknown rotation policy",
        CERTIFICATE_KIND,
        cert(privateKey={"rotationPolicy": "Sometimes"}),
        'spec.privateKey.rotationPolicy: Unsupported value: "Sometimes"',
    ),
    (
        "rejects an unknown key encoding",
        CERTIFICATE_KIND,
        cert(privateKey={"encoding": "DER"}),
        'spec.privateKey.encoding: Unsupported value: "DER"',
    ),
    # --- lifetime and renewal
    (
        "rejects a duration in days",
        CERTIFICATE_KIND,
        cert(duration="90d"),
        "spec.duration in body should match",
    ),
    (
        "rejects a duration under one minute",
        CERTIFICATE_KIND,
        cert(duration="30s"),
        'spec.duration: Invalid value: "30s": must be at least 1m',
    ),
    (
        "rejects renewBefore equal to duration",
        CERTIFICATE_KIND,
        cert(duration="24h", renewBefore="24h"),
        "renewBefore (24h) must be at most 90% of duration (24h)",
    ),
    (
        "rejects renewBefore longer than the default duration",
        CERTIFICATE_KIND,
        cert(renewBefore="2200h"),
        "renewBefore (2200h) must be at most 90% of duration (2160h)",
    ),
    (
        "rejects a renewBefore that would renew a one-minute certificate in a loop",
        CERTIFICATE_KIND,
        cert(duration="1m", renewBefore="59s"),
        "renewBefore (59s) must be at most 90% of duration (1m), so that a certificate lives a while",
    ),
    (
        "rejects renewBefore under five seconds",
        CERTIFICATE_KIND,
        cert(renewBefore="1s"),
        'spec.renewBefore: Invalid value: "1s": must be at least 5s',
    ),
    (
        "rejects renewBefore together with renewBeforePercentage",
        CERTIFICATE_KIND,
        cert(renewBefore="24h", renewBeforePercentage=25),
        "set only one of renewBefore and renewBeforePercentage",
    ),
    (
        "rejects a renewBeforePercentage of 99 (a renewal loop for short certificates)",
        CERTIFICATE_KIND,
        cert(renewBeforePercentage=99),
        "spec.renewBeforePercentage: Invalid value: 99: spec.renewBeforePercentage in body should be less "
        "than or equal to 90",
    ),
    (
        "rejects renewBeforePercentage of 0",
        CERTIFICATE_KIND,
        cert(renewBeforePercentage=0),
        "should be greater than or equal to 1",
    ),
    # --- names
    (
        "rejects a secretTemplate annotation that would claim the Secret for the operator",
        CERTIFICATE_KIND,
        cert(secretTemplate={"annotations": {"mtls.dev/allowed-issuers": "evil"}}),
        "keys under mtls.dev/ and app.kubernetes.io/managed-by are the operator's own",
    ),
    (
        "rejects a secretTemplate managed-by label",
        CERTIFICATE_KIND,
        cert(secretTemplate={"labels": {"app.kubernetes.io/managed-by": "mtls-operator"}}),
        "keys under mtls.dev/ and app.kubernetes.io/managed-by are the operator's own",
    ),
    (
        "rejects a certificate that names nothing",
        CERTIFICATE_KIND,
        cert(dnsNames=_DELETE),
        "the certificate names nothing: set at least one of commonName, dnsNames, ipAddresses, uris, "
        "emailAddresses or spiffe",
    ),
    (
        "rejects an empty commonName as the only name",
        CERTIFICATE_KIND,
        cert(dnsNames=[], commonName=""),
        "the certificate names nothing",
    ),
    (
        "rejects a commonName longer than 64 characters",
        CERTIFICATE_KIND,
        cert(commonName="x" * 65),
        "spec.commonName: Too long: may not be more than 64",
    ),
    (
        "rejects a malformed IP address",
        CERTIFICATE_KIND,
        cert(ipAddresses=["10.0.0.1", "10.0.0.256"]),
        'spec.ipAddresses[1]: Invalid value: "10.0.0.256": must be an IPv4 or IPv6 address',
    ),
    (
        "rejects an IPv4-mapped IPv6 address",
        CERTIFICATE_KIND,
        cert(ipAddresses=["::ffff:10.0.0.1"]),
        'Invalid value: "::ffff:10.0.0.1": must be an IPv4 or IPv6 address',
    ),
    (
        "rejects an upper-case DNS name",
        CERTIFICATE_KIND,
        cert(dnsNames=["Web.demo.svc"]),
        "spec.dnsNames[0] in body should match",
    ),
    (
        "rejects a bare wildcard DNS name",
        CERTIFICATE_KIND,
        cert(dnsNames=["*"]),
        "spec.dnsNames[0] in body should match",
    ),
    (
        "rejects a wildcard that is not the first label",
        CERTIFICATE_KIND,
        cert(dnsNames=["web.*.svc"]),
        "spec.dnsNames[0] in body should match",
    ),
    (
        "rejects duplicate DNS names",
        CERTIFICATE_KIND,
        cert(dnsNames=["web.demo.svc", "web.demo.svc"]),
        'spec.dnsNames[1]: Duplicate value: "web.demo.svc"',
    ),
    (
        "rejects a URI without a scheme",
        CERTIFICATE_KIND,
        cert(uris=["//cluster.local/ns/demo"]),
        "spec.uris[0] in body should match",
    ),
    (
        "rejects an email address without @",
        CERTIFICATE_KIND,
        cert(emailAddresses=["alice.example.com"]),
        "spec.emailAddresses[0] in body should match",
    ),
    (
        "rejects a three-letter country code",
        CERTIFICATE_KIND,
        cert(subject={"countries": ["DEU"]}),
        "spec.subject.countries[0]: Too long: may not be more than 2",
    ),
    # --- usages, issuer, secret
    (
        "rejects an unknown usage",
        CERTIFICATE_KIND,
        cert(usages=["server auth", "cert sign"]),
        'spec.usages[1]: Unsupported value: "cert sign"',
    ),
    (
        "rejects an issuerRef of kind ClusterIssuer",
        CERTIFICATE_KIND,
        cert(issuerRef={"name": "root", "kind": "ClusterIssuer"}),
        'spec.issuerRef.kind: Unsupported value: "ClusterIssuer": supported values: "MTLSIssuer"',
    ),
    (
        "rejects an issuerRef without a name",
        CERTIFICATE_KIND,
        cert(issuerRef={"kind": "MTLSIssuer"}),
        "spec.issuerRef.name: Required value",
    ),
    (
        "rejects a certificate without issuerRef",
        CERTIFICATE_KIND,
        cert(issuerRef=_DELETE),
        "spec.issuerRef: Required value",
    ),
    (
        "rejects a certificate without secretName",
        CERTIFICATE_KIND,
        cert(secretName=_DELETE),
        "spec.secretName: Required value",
    ),
    (
        "rejects a secretName that is not a DNS subdomain",
        CERTIFICATE_KIND,
        cert(secretName="Web_TLS"),
        "spec.secretName in body should match",
    ),
    ("rejects a certificate without spec", CERTIFICATE_KIND, _DELETE, "spec: Required value"),
    (
        "rejects a PKCS#12 keystore for an ML-DSA key",
        CERTIFICATE_KIND,
        cert(privateKey={"algorithm": "MLDSA", "size": 65}, keystores={"pkcs12": {"create": True}}),
        "spec.keystores.pkcs12.create: Invalid value: PKCS#12 keystores cannot hold ML-DSA keys",
    ),
    (
        "rejects a keystore password reference without a name",
        CERTIFICATE_KIND,
        cert(keystores={"pkcs12": {"create": True, "passwordSecretRef": {"key": "pw"}}}),
        "spec.keystores.pkcs12.passwordSecretRef.name: Required value",
    ),
    (
        "rejects a label value that is not a string",
        CERTIFICATE_KIND,
        cert(secretTemplate={"labels": {"tier": 1}}),
        'spec.secretTemplate.labels.tier: Invalid value: "integer": spec.secretTemplate.labels.tier in body '
        "must be of type string",
    ),
    (
        "rejects an unknown cleanupPolicy",
        CERTIFICATE_KIND,
        cert(cleanupPolicy="Orphan"),
        'spec.cleanupPolicy: Unsupported value: "Orphan": supported values: "Retain", "Delete"',
    ),
    # --- rollout
    (
        "rejects an unknown rollout policy",
        CERTIFICATE_KIND,
        cert(rollout={"policy": "Manual"}),
        'spec.rollout.policy: Unsupported value: "Manual"',
    ),
    (
        "rejects a rollout target of kind Pod",
        CERTIFICATE_KIND,
        cert(rollout={"targets": [{"kind": "Pod", "name": "web"}]}),
        'spec.rollout.targets[0].kind: Unsupported value: "Pod"',
    ),
    (
        "rejects a rollout target without a name",
        CERTIFICATE_KIND,
        cert(rollout={"targets": [{"kind": "Deployment"}]}),
        "spec.rollout.targets[0].name: Required value",
    ),
    (
        "rejects the same rollout target twice",
        CERTIFICATE_KIND,
        cert(
            rollout={
                "targets": [{"kind": "Deployment", "name": "web"}, {"kind": "Deployment", "name": "web"}]
            }
        ),
        "spec.rollout.targets[1]: Duplicate value",
    ),
    # --- issuers
    (
        "rejects an issuer with both selfSigned and ca",
        ISSUER_KIND,
        {**SELF_SIGNED, "ca": {"secretName": "corp-ca"}},
        "set exactly one of selfSigned, ca and intermediate",
    ),
    (
        "rejects an issuer with neither selfSigned nor ca",
        ISSUER_KIND,
        {},
        "set exactly one of selfSigned, ca and intermediate",
    ),
    ("rejects an issuer without spec", ISSUER_KIND, _DELETE, "spec: Required value"),
    (
        "rejects a self-signed issuer without commonName",
        ISSUER_KIND,
        self_signed(commonName=_DELETE),
        "spec.selfSigned.commonName: Required value",
    ),
    (
        "rejects a self-signed issuer with an empty commonName",
        ISSUER_KIND,
        self_signed(commonName=""),
        'spec.selfSigned.commonName: Invalid value: "": spec.selfSigned.commonName in body should be at '
        "least 1",
    ),
    (
        "rejects a self-signed issuer without secretName",
        ISSUER_KIND,
        self_signed(secretName=_DELETE),
        "spec.selfSigned.secretName: Required value",
    ),
    (
        "rejects a self-signed RSA 1024 CA",
        ISSUER_KIND,
        self_signed(privateKey={"algorithm": "RSA", "size": 1024}),
        "spec.selfSigned.privateKey.size: Invalid value: size 1024 is not valid for RSA",
    ),
    (
        "rejects a self-signed ML-DSA 50 CA",
        ISSUER_KIND,
        self_signed(privateKey={"algorithm": "MLDSA", "size": 50}),
        "size 50 is not valid for MLDSA: use one of 44, 65, 87",
    ),
    (
        "rejects a CA lifetime under one minute",
        ISSUER_KIND,
        self_signed(duration="59s"),
        'spec.selfSigned.duration: Invalid value: "59s": must be at least 1m',
    ),
    (
        "rejects a CA lifetime in years",
        ISSUER_KIND,
        self_signed(duration="10y"),
        "spec.selfSigned.duration in body should match",
    ),
    ("rejects a ca issuer without secretName", ISSUER_KIND, {"ca": {}}, "spec.ca.secretName: Required value"),
    # --- control characters: NUL, the other C0 controls, DEL and C1 controls never reach a certificate
    (
        "rejects a NUL byte in the commonName",
        CERTIFICATE_KIND,
        cert(commonName="api.demo.svc\x00.evil.example"),
        ("spec.commonName: Invalid value: ", "must not contain control characters"),
    ),
    (
        "rejects a newline in the commonName",
        CERTIFICATE_KIND,
        cert(commonName="alice\nCN=admin"),
        ("spec.commonName: Invalid value: ", "must not contain control characters"),
    ),
    (
        "rejects a C1 control (U+0085) in the commonName",
        CERTIFICATE_KIND,
        cert(commonName="alice\x85"),
        "must not contain control characters",
    ),
    (
        "rejects DEL in a subject organization",
        CERTIFICATE_KIND,
        cert(subject={"organizations": ["demo\x7f"]}),
        ("spec.subject.organizations[0]: Invalid value: ", "must not contain control characters"),
    ),
    (
        "rejects a NUL byte in the subject serialNumber",
        CERTIFICATE_KIND,
        cert(subject={"serialNumber": "7\x00"}),
        ("spec.subject.serialNumber: Invalid value: ", "must not contain control characters"),
    ),
    (
        "rejects a NUL byte in a DNS name",
        CERTIFICATE_KIND,
        cert(dnsNames=["web.demo.svc\x00.evil.example"]),
        ("spec.dnsNames[0]: Invalid value: ", "must not contain control characters"),
    ),
    (
        "rejects a NUL byte in a URI",
        CERTIFICATE_KIND,
        cert(uris=["spiffe://cluster.local/ns/demo/sa/a\x00b"]),
        ("spec.uris[0]: Invalid value: ", "must not contain control characters"),
    ),
    (
        "rejects an escape character in an email address",
        CERTIFICATE_KIND,
        cert(emailAddresses=["a\x1b[2J@example.com"]),
        ("spec.emailAddresses[0]: Invalid value: ", "must not contain control characters"),
    ),
    (
        "rejects a NUL byte in a self-signed CA's commonName",
        ISSUER_KIND,
        self_signed(commonName="root\x00CA"),
        ("spec.selfSigned.commonName: Invalid value: ", "must not contain control characters"),
    ),
    (
        "rejects a control character in a self-signed CA's subject",
        ISSUER_KIND,
        self_signed(subject={"organizationalUnits": ["ops\x01"]}),
        ("spec.selfSigned.subject.organizationalUnits[0]: Invalid value: ", "must not contain control"),
    ),
    (
        "rejects a NUL byte in an intermediate CA's commonName",
        ISSUER_KIND,
        {
            "intermediate": {
                "issuerRef": {"name": "root"},
                "secretName": "team-ca",
                "commonName": "team\x00CA",
            }
        },
        ("spec.intermediate.commonName: Invalid value: ", "must not contain control characters"),
    ),
    (
        "rejects a control character in a policy pattern",
        ISSUER_KIND,
        {**SELF_SIGNED, "policy": {"allowedSubject": {"organizations": ["team\x00*"]}}},
        ("spec.policy.allowedSubject.organizations[0]: Invalid value: ", "must not contain control"),
    ),
    # --- fields the operator would ignore are refused instead
    (
        "rejects trustBundle.pkcs12, which is not supported yet",
        ISSUER_KIND,
        {
            **SELF_SIGNED,
            "trustBundle": {
                "configMapName": "root-bundle",
                "pkcs12": {"create": True, "passwordSecretRef": {"name": "pw"}},
            },
        },
        ("spec.trustBundle.pkcs12: Invalid value: ", "trustBundle.pkcs12 is not supported yet"),
    ),
    (
        "rejects ca.rotation.nextSecretName, which is not supported yet",
        ISSUER_KIND,
        {"ca": {"secretName": "corp-ca", "rotation": {"nextSecretName": "corp-ca-next"}}},
        ("spec.ca.rotation: Invalid value: ", "ca.rotation (nextSecretName) is not supported yet"),
    ),
]


@pytest.mark.parametrize(
    ("kind", "spec", "fragment"),
    [pytest.param(kind, spec, fragment, id=id_) for id_, kind, spec, fragment in BAD_SPECS],
)
def test_bad_spec_is_rejected(
    cluster: Any,
    installed_crds: Any,
    namespace: str,
    request: pytest.FixtureRequest,
    kind: str,
    spec: Any,
    fragment: str | tuple[str, ...],
) -> None:
    with pytest.raises(ApiException) as caught:
        _create(cluster, namespace, kind, spec)
    message = _message(caught.value)
    assert caught.value.status == 422, message
    for part in (fragment,) if isinstance(fragment, str) else fragment:
        assert part in message

    behaviour = request.node.callspec.id
    parse = PARSERS[kind]
    if behaviour in STRICTER_THAN_MODELS:
        parse({} if spec is _DELETE else spec)  # documented: the parser lets this one through
    else:
        with pytest.raises(SpecError):
            parse({} if spec is _DELETE else spec)


def test_bad_spec_table_is_well_formed() -> None:
    ids = [row[0] for row in BAD_SPECS]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 20
    assert set(ids) >= STRICTER_THAN_MODELS


# ---------------------------------------------------------------------------------------------------------
# Good specs: accepted, with defaults filled in

CERT_DEFAULTS = {
    "secretName": "web-tls",
    "issuerRef": {"name": "root", "kind": "MTLSIssuer"},
    "dnsNames": ["web.demo.svc"],
    "usages": ["server auth", "client auth"],
    "duration": "2160h",
    "privateKey": {"algorithm": "ECDSA", "rotationPolicy": "Always", "encoding": "PKCS8"},
    "cleanupPolicy": "Retain",
    "revocationPolicy": "None",
}

GOOD_SPECS = [
    (
        "accepts a minimal certificate and fills in every default",
        CERTIFICATE_KIND,
        cert(),
        {"": CERT_DEFAULTS},
    ),
    (
        "accepts an ML-DSA-65 key renewed at 25 percent",
        CERTIFICATE_KIND,
        cert(privateKey={"algorithm": "MLDSA", "size": 65}, renewBeforePercentage=25),
        {
            "privateKey": {"algorithm": "MLDSA", "size": 65, "rotationPolicy": "Always", "encoding": "PKCS8"},
            "renewBeforePercentage": 25,
        },
    ),
    (
        "accepts ML-DSA-87",
        CERTIFICATE_KIND,
        cert(privateKey={"algorithm": "MLDSA", "size": 87}),
        {"privateKey.size": 87},
    ),
    (
        "accepts Ed25519 with size 0",
        CERTIFICATE_KIND,
        cert(privateKey={"algorithm": "Ed25519", "size": 0}),
        {"privateKey.algorithm": "Ed25519", "privateKey.size": 0},
    ),
    (
        "accepts Ed25519 without a size",
        CERTIFICATE_KIND,
        cert(privateKey={"algorithm": "Ed25519"}),
        {"privateKey": {"algorithm": "Ed25519", "rotationPolicy": "Always", "encoding": "PKCS8"}},
    ),
    (
        "accepts RSA 4096 in PKCS#1 with a PKCS#12 keystore",
        CERTIFICATE_KIND,
        cert(
            privateKey={"algorithm": "RSA", "size": 4096, "encoding": "PKCS1"},
            keystores={"pkcs12": {"create": True, "passwordSecretRef": {"name": "p12-password"}}},
        ),
        {
            "privateKey.encoding": "PKCS1",
            "keystores": {
                "pkcs12": {"create": True, "passwordSecretRef": {"name": "p12-password", "key": "password"}}
            },
        },
    ),
    (
        "accepts an ML-DSA key with a keystore that is not created",
        CERTIFICATE_KIND,
        cert(privateKey={"algorithm": "MLDSA"}, keystores={"pkcs12": {}}),
        {"keystores.pkcs12.create": False},
    ),
    (
        "accepts ECDSA P-521 that is never rotated",
        CERTIFICATE_KIND,
        cert(privateKey={"algorithm": "ECDSA", "size": 521, "rotationPolicy": "Never"}),
        {"privateKey.rotationPolicy": "Never", "privateKey.size": 521},
    ),
    (
        "accepts a key size without the algorithm, defaulting to ECDSA",
        CERTIFICATE_KIND,
        cert(privateKey={"size": 384}),
        {"privateKey.algorithm": "ECDSA", "privateKey.size": 384},
    ),
    (
        "accepts a certificate named only by IP addresses",
        CERTIFICATE_KIND,
        cert(dnsNames=_DELETE, ipAddresses=["10.0.0.1", "fd00::1", "2001:db8::ffff:10.0.0.1"]),
        {"ipAddresses": ["10.0.0.1", "fd00::1", "2001:db8::ffff:10.0.0.1"]},
    ),
    (
        "accepts a client certificate named only by a SPIFFE URI",
        CERTIFICATE_KIND,
        cert(dnsNames=_DELETE, uris=["spiffe://cluster.local/ns/demo/sa/alice"], usages=["client auth"]),
        {"usages": ["client auth"]},
    ),
    (
        "accepts a certificate named only by an email address",
        CERTIFICATE_KIND,
        cert(
            dnsNames=_DELETE, emailAddresses=["alice@example.com"], usages=["email protection", "client auth"]
        ),
        {"emailAddresses": ["alice@example.com"]},
    ),
    (
        "accepts a certificate named only by its commonName",
        CERTIFICATE_KIND,
        cert(dnsNames=_DELETE, commonName="alice"),
        {"commonName": "alice"},
    ),
    (
        "accepts a wildcard DNS name",
        CERTIFICATE_KIND,
        cert(dnsNames=["*.demo.example.com", "demo.example.com"]),
        {"dnsNames": ["*.demo.example.com", "demo.example.com"]},
    ),
    (
        "accepts compound and fractional durations",
        CERTIFICATE_KIND,
        cert(duration="1h30m", renewBefore="0.5h"),
        {"duration": "1h30m", "renewBefore": "0.5h"},
    ),
    (
        "accepts the shortest lifetime with renewBefore at 90% of it",
        CERTIFICATE_KIND,
        cert(duration="1m", renewBefore="54s"),
        {"duration": "1m"},
    ),
    (
        "accepts renewBefore at its minimum of five seconds",
        CERTIFICATE_KIND,
        cert(renewBefore="5s"),
        {"renewBefore": "5s"},
    ),
    (
        "accepts an empty usages list, which means the default",
        CERTIFICATE_KIND,
        cert(usages=[]),
        {"usages": []},
    ),
    (
        "accepts every usage",
        CERTIFICATE_KIND,
        cert(
            usages=[
                "server auth",
                "client auth",
                "digital signature",
                "key encipherment",
                "code signing",
                "email protection",
                "ocsp signing",
            ]
        ),
        {"usages.6": "ocsp signing"},
    ),
    (
        "accepts rollout targets and defaults the policy to Auto",
        CERTIFICATE_KIND,
        cert(
            rollout={
                "targets": [{"kind": "Deployment", "name": "web"}, {"kind": "StatefulSet", "name": "db"}]
            }
        ),
        {"rollout.policy": "Auto", "rollout.targets.1": {"kind": "StatefulSet", "name": "db"}},
    ),
    (
        "accepts rollout policy None",
        CERTIFICATE_KIND,
        cert(rollout={"policy": "None"}),
        {"rollout.policy": "None"},
    ),
    (
        "accepts a secret template with labels and annotations",
        CERTIFICATE_KIND,
        cert(secretTemplate={"labels": {"tier": "web"}, "annotations": {"reflector/enabled": "true"}}),
        {"secretTemplate.labels.tier": "web"},
    ),
    (
        "accepts a full subject",
        CERTIFICATE_KIND,
        cert(
            commonName="web",
            subject={
                "organizations": ["Example"],
                "organizationalUnits": ["Platform"],
                "countries": ["DE"],
                "provinces": ["Berlin"],
                "localities": ["Berlin"],
                "streetAddresses": ["Unter den Linden 1"],
                "postalCodes": ["10117"],
                "serialNumber": "web-01",
            },
        ),
        {"subject.countries": ["DE"]},
    ),
    (
        "accepts cleanupPolicy Delete",
        CERTIFICATE_KIND,
        cert(cleanupPolicy="Delete"),
        {"cleanupPolicy": "Delete"},
    ),
    (
        "accepts a self-signed root with the default lifetime and key",
        ISSUER_KIND,
        SELF_SIGNED,
        {
            "": {
                "selfSigned": {
                    "secretName": "root-ca",
                    "commonName": "demo root CA",
                    "duration": "87600h",
                    "privateKey": {"algorithm": "ECDSA", "rotationPolicy": "Always", "encoding": "PKCS8"},
                }
            }
        },
    ),
    (
        "accepts a self-signed ML-DSA-87 root",
        ISSUER_KIND,
        self_signed(
            privateKey={"algorithm": "MLDSA", "size": 87},
            duration="43800h",
            subject={"organizations": ["Example"]},
        ),
        {"selfSigned.privateKey.size": 87, "selfSigned.duration": "43800h"},
    ),
    (
        "accepts an ML-DSA-65 certificate with an additional ECDSA key, defaults filled in",
        CERTIFICATE_KIND,
        cert(privateKey=MLDSA_65, additionalPrivateKeys=[{"algorithm": "ECDSA", "size": 256}]),
        {
            "additionalPrivateKeys": [
                {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always", "encoding": "PKCS8"}
            ]
        },
    ),
    (
        "accepts an ECDSA certificate with additional ML-DSA and RSA keys",
        CERTIFICATE_KIND,
        cert(
            additionalPrivateKeys=[
                {"algorithm": "MLDSA", "size": 87, "rotationPolicy": "Never"},
                {"algorithm": "RSA", "encoding": "PKCS1"},
            ]
        ),
        {"additionalPrivateKeys.0.rotationPolicy": "Never", "additionalPrivateKeys.1.encoding": "PKCS1"},
    ),
    (
        "accepts a dual ML-DSA-65 and ECDSA root",
        ISSUER_KIND,
        self_signed(privateKey=MLDSA_65, additionalPrivateKeys=[{"algorithm": "ECDSA"}]),
        {"selfSigned.additionalPrivateKeys.0.algorithm": "ECDSA"},
    ),
    (
        "accepts a CA from a Secret",
        ISSUER_KIND,
        {"ca": {"secretName": "corp-intermediate"}},
        {"": {"ca": {"secretName": "corp-intermediate"}}},
    ),
    (
        "accepts a policy that allows subject attributes by pattern",
        ISSUER_KIND,
        {
            **SELF_SIGNED,
            "policy": {
                "allowedDNSNames": ["*.{namespace}.svc"],
                "allowedSubject": {
                    "organizations": ["{namespace}"],
                    "organizationalUnits": ["{namespace}-*"],
                    "countries": ["DE"],
                    "serialNumber": ["{namespace}-*"],
                },
            },
        },
        {"policy.allowedSubject.organizationalUnits": ["{namespace}-*"]},
    ),
    (
        "accepts printable Unicode in names and subject attributes",
        CERTIFICATE_KIND,
        cert(
            commonName="Zürich büro ✓", subject={"organizations": ["Ünïcödé GmbH"], "localities": ["Zürich"]}
        ),
        {"commonName": "Zürich büro ✓"},
    ),
]


@pytest.mark.parametrize(
    ("kind", "spec", "expected"),
    [pytest.param(kind, spec, expected, id=id_) for id_, kind, spec, expected in GOOD_SPECS],
)
def test_good_spec_is_accepted_with_defaults(
    cluster: Any,
    installed_crds: Any,
    namespace: str,
    kind: str,
    spec: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    created = _create(cluster, namespace, kind, spec)
    stored = created["spec"]
    for path, value in expected.items():
        assert (_dig(stored, path) if path else stored) == value, path
    # The parser reads the defaulted spec exactly as it reads the one the user wrote: same defaults.
    parse = PARSERS[kind]
    assert parse(stored) == parse(spec)


def test_examples_are_accepted(cluster: Any, installed_crds: Any, namespace: str) -> None:
    assert EXAMPLE_FILES, "examples/ is empty"
    cluster_issuers: list[str] = []  # cluster-scoped: outlive the namespace, so deleted here
    try:
        for path in EXAMPLE_FILES:
            for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
                if not doc or doc.get("apiVersion") != API_VERSION:
                    continue
                try:
                    if doc["kind"] == CLUSTER_ISSUER_KIND:
                        name = f"{namespace}-{doc['metadata']['name']}"
                        body = {
                            "apiVersion": API_VERSION,
                            "kind": CLUSTER_ISSUER_KIND,
                            "metadata": {"name": name},
                        }
                        cluster.custom.create_cluster_custom_object(
                            GROUP, VERSION, CLUSTER_ISSUER_PLURAL, {**body, "spec": doc["spec"]}
                        )
                        cluster_issuers.append(name)
                    else:
                        _create(cluster, namespace, doc["kind"], doc["spec"], name=doc["metadata"]["name"])
                except ApiException as exc:
                    raise AssertionError(f"{path.name}: {_message(exc)}") from None
    finally:
        for name in cluster_issuers:
            cluster.custom.delete_cluster_custom_object(GROUP, VERSION, CLUSTER_ISSUER_PLURAL, name)


def test_secret_name_may_change(cluster: Any, installed_crds: Any, namespace: str) -> None:
    created = _create(cluster, namespace, CERTIFICATE_KIND, cert())
    created["spec"]["secretName"] = "web-tls-2"
    replaced = cluster.custom.replace_namespaced_custom_object(
        GROUP, VERSION, namespace, CERTIFICATE_PLURAL, "subject", created
    )
    assert replaced["spec"]["secretName"] == "web-tls-2"


# ---------------------------------------------------------------------------------------------------------
# Names, status and printer columns


def test_names_short_names_and_categories(installed_crds: dict[str, Any]) -> None:
    cert_names = installed_crds[CERTIFICATE_KIND].spec.names
    issuer_names = installed_crds[ISSUER_KIND].spec.names
    assert (cert_names.plural, cert_names.short_names, cert_names.categories) == (
        CERTIFICATE_PLURAL,
        ["mcert"],
        ["mtls"],
    )
    assert (issuer_names.plural, issuer_names.short_names, issuer_names.categories) == (
        ISSUER_PLURAL,
        ["missuer"],
        ["mtls"],
    )
    cluster_names = installed_crds[CLUSTER_ISSUER_KIND].spec.names
    assert (cluster_names.plural, cluster_names.short_names) == ("mtlsclusterissuers", ["mclusterissuer"])
    for kind, crd in installed_crds.items():
        assert crd.spec.scope == ("Cluster" if kind == CLUSTER_ISSUER_KIND else "Namespaced")
        assert [(v.name, v.served, v.storage) for v in crd.spec.versions] == [(VERSION, True, True)]


CERT_STATUS = {
    "observedGeneration": 1,
    "conditions": [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Issued",
            "message": "Certificate is up to date.",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
            "observedGeneration": 1,
        },
        {
            "type": "Issuing",
            "status": "False",
            "reason": "UpToDate",
            "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
            "observedGeneration": 1,
        },
    ],
    "notBefore": "2026-01-01T00:00:00Z",
    "notAfter": "2026-04-01T00:00:00Z",
    "renewalTime": "2026-03-02T00:00:00Z",
    "serialNumber": "5f0c3a9d2e",
    "fingerprint": "ab" * 32,
    "revision": 3,
    "lastFailureTime": "2025-12-31T23:00:00Z",
    "failedIssuanceAttempts": 0,
    "nextAttemptTime": "2025-12-31T23:05:00Z",
    "algorithm": "ML-DSA-65",
    "secretName": "web-tls",
    "issuerFingerprint": "cd" * 32,
    "requests": {"renew": "2026-01-01T00:00:04Z/1f2e3d", "revoke": "2026-01-01T00:00:05Z/4c5b6a"},
    "keyAlgorithms": ["ML-DSA-65", "ECDSA-P256"],
    "additionalCertificates": [
        {
            "algorithm": "ECDSA-P256",
            "secretKey": "tls-ecdsa.crt",
            "notBefore": "2026-01-01T00:00:00Z",
            "notAfter": "2026-04-01T00:00:00Z",
            "serialNumber": "7a1b",
            "fingerprint": "12" * 32,
        }
    ],
}
ISSUER_STATUS = {
    "observedGeneration": 1,
    "conditions": [
        {
            "type": "Ready",
            "status": "True",
            "reason": "KeyPairVerified",
            "message": "CA is valid.",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
            "observedGeneration": 1,
        }
    ],
    "type": "SelfSigned",
    "notBefore": "2026-01-01T00:00:00Z",
    "notAfter": "2036-01-01T00:00:00Z",
    "serialNumber": "01",
    "fingerprint": "ef" * 32,
    "algorithm": "ECDSA-P256",
    "subject": "CN=demo root CA",
    "secretName": "root-ca",
    "additionalCAs": [
        {
            "algorithm": "ECDSA-P256",
            "fingerprint": "34" * 32,
            "notAfter": "2036-01-01T00:00:00Z",
            "subject": "CN=demo root CA (ECDSA-P256)",
        }
    ],
}


@pytest.mark.parametrize(
    ("kind", "spec", "status"),
    [
        pytest.param(CERTIFICATE_KIND, CERT, CERT_STATUS, id="keeps every certificate status field"),
        pytest.param(ISSUER_KIND, SELF_SIGNED, ISSUER_STATUS, id="keeps every issuer status field"),
    ],
)
def test_status_fields_are_declared(
    cluster: Any, installed_crds: Any, own_namespace: str, kind: str, spec: Any, status: dict[str, Any]
) -> None:
    # own_namespace: no operator of the suite writes these statuses meanwhile
    namespace = own_namespace
    created = _create(cluster, namespace, kind, spec)
    patched = cluster.custom.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        PLURALS[kind],
        "subject",
        {"spec": {"ignored": True}, "status": {**status, "undeclared": "pruned"}},
    )
    assert patched["status"] == status  # every field kept, the undeclared one pruned
    assert patched["spec"] == created["spec"]  # the status subresource ignores spec


def _table(cluster: Any, namespace: str, plural: str) -> tuple[list[str], dict[str, list[Any]]]:
    table = cluster.custom.list_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, _headers={"Accept": TABLE}
    )
    columns = [c["name"] for c in table["columnDefinitions"]]
    rows = {row["cells"][0]: row["cells"] for row in table["rows"]}
    return columns, rows


KEYS_CELL = '["ML-DSA-65","ECDSA-P256"]'  # how the API server's Table renders a list of strings


def test_certificate_printer_columns_tell_the_story(
    cluster: Any, installed_crds: Any, own_namespace: str
) -> None:
    namespace = own_namespace  # no operator of the suite rewrites the status under test
    _create(cluster, namespace, CERTIFICATE_KIND, cert())
    cluster.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, CERTIFICATE_PLURAL, "subject", {"status": CERT_STATUS}
    )
    columns, rows = _table(cluster, namespace, CERTIFICATE_PLURAL)
    assert columns == [
        "Name",
        "Ready",
        "Secret",
        "Issuer",
        "Algorithm",
        "Keys",
        "NotAfter",
        "RenewAt",
        "Status",
        "Age",
    ]
    row = dict(zip(columns, rows["subject"], strict=True))
    assert (row["Ready"], row["Secret"], row["Issuer"], row["Algorithm"]) == (
        "True",
        "web-tls",
        "root",
        "ML-DSA-65",
    )
    assert row["Keys"] == KEYS_CELL, row
    assert (row["NotAfter"], row["RenewAt"]) == ("2026-04-01T00:00:00Z", "2026-03-02T00:00:00Z")
    assert row["Status"] == "Certificate is up to date."


def test_issuer_printer_columns_tell_the_story(cluster: Any, installed_crds: Any, own_namespace: str) -> None:
    namespace = own_namespace  # no operator of the suite rewrites the status under test
    _create(cluster, namespace, ISSUER_KIND, SELF_SIGNED)
    cluster.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, ISSUER_PLURAL, "subject", {"status": ISSUER_STATUS}
    )
    columns, rows = _table(cluster, namespace, ISSUER_PLURAL)
    assert columns == ["Name", "Ready", "Type", "Algorithm", "NotAfter", "Status", "Age"]
    row = dict(zip(columns, rows["subject"], strict=True))
    assert (row["Ready"], row["Type"], row["Algorithm"], row["NotAfter"]) == (
        "True",
        "SelfSigned",
        "ECDSA-P256",
        "2036-01-01T00:00:00Z",
    )
