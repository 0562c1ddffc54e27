"""The CRD schemas in crds/ and `mtls_operator.api.models` agree, without a cluster.

The schema validates at the API server, the parsers validate again in the operator; if they drifted apart a
user could create an object that the operator then refuses (or the other way round). These tests read the
CRD YAML as shipped and compare it with the models: enums with the StrEnums, defaults with the dataclass
defaults, the key sizes in the CEL rule with ``ALLOWED_SIZES``, bounds and patterns with what the parsers
accept, and a set of example specs (including every manifest in examples/) parses the same before and after
the schema's defaults are applied. The real server's verdicts are in tests/integration/test_crd_schema.py.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest
import yaml

from mtls_operator.api.certificate_spec import parse_certificate_spec
from mtls_operator.api.constants import (
    CERTIFICATE_KIND,
    CERTIFICATE_PLURAL,
    CLUSTER_ISSUER_KIND,
    CLUSTER_ISSUER_PLURAL,
    GROUP,
    ISSUER_KIND,
    ISSUER_PLURAL,
    VERSION,
)
from mtls_operator.api.durations import DurationError, parse_duration
from mtls_operator.api.fields import control_character_problem, validate_dns_name
from mtls_operator.api.issuer_spec import parse_issuer_spec
from mtls_operator.api.models import (
    ALLOWED_SIZES,
    DEFAULT_CA_DURATION,
    DEFAULT_CERT_DURATION,
    DEFAULT_USAGES,
    MIN_DURATION,
    MIN_RENEW_BEFORE,
    CertificateSpec,
    CleanupPolicy,
    IssuerRef,
    KeyAlgorithm,
    KeyEncoding,
    KeySpec,
    PKCS12Spec,
    RolloutPolicy,
    RolloutSpec,
    RotationPolicy,
    SecretKeyRef,
    SpecError,
    Usage,
)

ROOT = Path(__file__).resolve().parents[2]


def _load_crd(plural: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(
        (ROOT / "crds" / f"{GROUP}_{plural}.yaml").read_text(encoding="utf-8")
    )
    return doc


CERT_CRD = _load_crd(CERTIFICATE_PLURAL)
ISSUER_CRD = _load_crd(ISSUER_PLURAL)
CLUSTER_ISSUER_CRD = _load_crd(CLUSTER_ISSUER_PLURAL)


def _schema(crd: Mapping[str, Any]) -> dict[str, Any]:
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == VERSION]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


CERT_SPEC = _schema(CERT_CRD)["properties"]["spec"]
ISSUER_SCHEMA = _schema(ISSUER_CRD)
ISSUER_SPEC = ISSUER_SCHEMA["properties"]["spec"]
SELF_SIGNED = ISSUER_SPEC["properties"]["selfSigned"]


def at(schema: Mapping[str, Any], dotted: str) -> dict[str, Any]:
    """The sub-schema at ``dotted``; ``[]`` steps into array items: ``rollout.targets[].kind``."""
    node: Any = schema
    for part in dotted.split("."):
        name, items = (part[:-2], True) if part.endswith("[]") else (part, False)
        node = node["properties"][name]
        if items:
            node = node["items"]
    return dict(node)


def _rules(schema: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(schema.get("x-kubernetes-validations", []))


def _go_match(pattern: str, value: str) -> bool:
    """Match as Go (RE2) does for an OpenAPI pattern: ``$`` is the end of the text, not before a newline."""
    inner = pattern.removeprefix("^").removesuffix("$")
    return re.fullmatch(f"(?:{inner})", value) is not None


def _parses(parse: Callable[[Mapping[str, Any]], object], spec: Mapping[str, Any]) -> bool:
    try:
        parse(spec)
    except SpecError:
        return False
    return True


def _cert(**fields: Any) -> dict[str, Any]:
    return {"secretName": "web-tls", "issuerRef": {"name": "root"}, "dnsNames": ["web.demo.svc"], **fields}


# ---------------------------------------------------------------------------------------------------------
# Names


@pytest.mark.parametrize(
    ("crd", "kind", "plural", "short"),
    [
        pytest.param(CERT_CRD, CERTIFICATE_KIND, CERTIFICATE_PLURAL, "mcert", id="MTLSCertificate"),
        pytest.param(ISSUER_CRD, ISSUER_KIND, ISSUER_PLURAL, "missuer", id="MTLSIssuer"),
    ],
)
def test_names_match_the_constants(crd: dict[str, Any], kind: str, plural: str, short: str) -> None:
    spec = crd["spec"]
    assert crd["metadata"]["name"] == f"{plural}.{GROUP}"
    assert spec["group"] == GROUP
    assert spec["scope"] == "Namespaced"
    assert (spec["names"]["kind"], spec["names"]["plural"]) == (kind, plural)
    assert spec["names"]["shortNames"] == [short]
    assert spec["names"]["categories"] == ["mtls"]
    assert [(v["name"], v["served"], v["storage"]) for v in spec["versions"]] == [(VERSION, True, True)]
    assert spec["versions"][0]["subresources"] == {"status": {}}


# ---------------------------------------------------------------------------------------------------------
# Enums and defaults


@pytest.mark.parametrize(
    ("schema", "path", "enum"),
    [
        pytest.param(CERT_SPEC, "privateKey.algorithm", KeyAlgorithm, id="certificate key algorithm"),
        pytest.param(
            CERT_SPEC, "additionalPrivateKeys[].algorithm", KeyAlgorithm, id="additional key algorithm"
        ),
        pytest.param(
            SELF_SIGNED, "additionalPrivateKeys[].algorithm", KeyAlgorithm, id="additional CA key algorithm"
        ),
        pytest.param(
            CERT_SPEC, "additionalPrivateKeys[].encoding", KeyEncoding, id="additional key encoding"
        ),
        pytest.param(
            CERT_SPEC,
            "additionalPrivateKeys[].rotationPolicy",
            RotationPolicy,
            id="additional key rotation policy",
        ),
        pytest.param(SELF_SIGNED, "privateKey.algorithm", KeyAlgorithm, id="CA key algorithm"),
        pytest.param(
            CERT_SPEC, "privateKey.rotationPolicy", RotationPolicy, id="certificate rotation policy"
        ),
        pytest.param(SELF_SIGNED, "privateKey.rotationPolicy", RotationPolicy, id="CA rotation policy"),
        pytest.param(CERT_SPEC, "privateKey.encoding", KeyEncoding, id="certificate key encoding"),
        pytest.param(SELF_SIGNED, "privateKey.encoding", KeyEncoding, id="CA key encoding"),
        pytest.param(CERT_SPEC, "cleanupPolicy", CleanupPolicy, id="cleanup policy"),
        pytest.param(CERT_SPEC, "rollout.policy", RolloutPolicy, id="rollout policy"),
        pytest.param(CERT_SPEC, "usages[]", Usage, id="usages"),
    ],
)
def test_enum_matches_the_model(schema: dict[str, Any], path: str, enum: type[StrEnum]) -> None:
    assert at(schema, path)["enum"] == [member.value for member in enum]


def test_issuer_ref_kinds_are_the_two_issuer_kinds() -> None:
    kind = at(CERT_SPEC, "issuerRef.kind")
    assert kind["enum"] == [ISSUER_KIND, CLUSTER_ISSUER_KIND]
    assert _parses(parse_certificate_spec, _cert(issuerRef={"name": "root", "kind": CLUSTER_ISSUER_KIND}))
    assert not _parses(parse_certificate_spec, _cert(issuerRef={"name": "root", "kind": "ClusterIssuer"}))


def test_the_cluster_issuer_crd_is_the_issuer_crd_cluster_scoped_plus_cluster_trust_bundle() -> None:
    """MTLSClusterIssuer takes the same spec as MTLSIssuer (the one parser serves both), plus
    clusterTrustBundle; same status and printer columns."""
    version = CLUSTER_ISSUER_CRD["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    spec = dict(schema["properties"]["spec"])
    properties = dict(spec.pop("properties"))
    assert properties.pop("clusterTrustBundle")["type"] == "boolean"
    issuer_spec = dict(ISSUER_SCHEMA["properties"]["spec"])
    assert properties == issuer_spec.pop("properties")
    assert spec == issuer_spec
    assert schema["properties"]["status"] == ISSUER_SCHEMA["properties"]["status"]
    assert (
        version["additionalPrinterColumns"] == ISSUER_CRD["spec"]["versions"][0]["additionalPrinterColumns"]
    )
    names = CLUSTER_ISSUER_CRD["spec"]["names"]
    assert CLUSTER_ISSUER_CRD["spec"]["scope"] == "Cluster"
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        CLUSTER_ISSUER_KIND,
        CLUSTER_ISSUER_PLURAL,
        ["mclusterissuer"],
    )


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "DaemonSet", "Pod", "ReplicaSet", "Job", ""])
def test_rollout_target_kinds_agree(kind: str) -> None:
    in_schema = kind in at(CERT_SPEC, "rollout.targets[].kind")["enum"]
    spec = _cert(rollout={"targets": [{"kind": kind, "name": "web"}]})
    assert _parses(parse_certificate_spec, spec) == in_schema


def _field_default(cls: type, name: str) -> Any:
    (field,) = [f for f in dataclasses.fields(cls) if f.name == name]
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


@pytest.mark.parametrize(
    ("schema", "path", "expected"),
    [
        pytest.param(CERT_SPEC, "privateKey.algorithm", KeySpec().algorithm, id="key algorithm ECDSA"),
        pytest.param(SELF_SIGNED, "privateKey.algorithm", KeySpec().algorithm, id="CA key algorithm ECDSA"),
        pytest.param(CERT_SPEC, "privateKey.rotationPolicy", KeySpec().rotation_policy, id="rotation Always"),
        pytest.param(SELF_SIGNED, "privateKey.rotationPolicy", KeySpec().rotation_policy, id="CA rotation"),
        pytest.param(CERT_SPEC, "privateKey.encoding", KeySpec().encoding, id="encoding PKCS8"),
        pytest.param(SELF_SIGNED, "privateKey.encoding", KeySpec().encoding, id="CA encoding PKCS8"),
        pytest.param(CERT_SPEC, "usages", [u.value for u in DEFAULT_USAGES], id="usages server+client auth"),
        pytest.param(
            CERT_SPEC, "cleanupPolicy", _field_default(CertificateSpec, "cleanup_policy"), id="cleanup Retain"
        ),
        pytest.param(CERT_SPEC, "rollout.policy", RolloutSpec().policy, id="rollout Auto"),
        pytest.param(CERT_SPEC, "issuerRef.kind", _field_default(IssuerRef, "kind"), id="issuer kind"),
        pytest.param(CERT_SPEC, "keystores.pkcs12.create", PKCS12Spec().create, id="pkcs12 off"),
        pytest.param(
            CERT_SPEC,
            "keystores.pkcs12.passwordSecretRef.key",
            _field_default(SecretKeyRef, "key"),
            id="password key",
        ),
        # An object default, so that the defaults inside it apply when the user leaves privateKey out.
        pytest.param(CERT_SPEC, "privateKey", {}, id="privateKey object"),
        pytest.param(SELF_SIGNED, "privateKey", {}, id="CA privateKey object"),
    ],
)
def test_default_matches_the_model(schema: dict[str, Any], path: str, expected: Any) -> None:
    assert at(schema, path)["default"] == expected


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        pytest.param(CERT_SPEC, DEFAULT_CERT_DURATION, id="certificate 2160h"),
        pytest.param(SELF_SIGNED, DEFAULT_CA_DURATION, id="CA 87600h"),
    ],
)
def test_duration_default_matches_the_model(schema: dict[str, Any], expected: Any) -> None:
    assert parse_duration(at(schema, "duration")["default"]) == expected


def test_key_size_has_no_schema_default() -> None:
    """The default size depends on the algorithm (models.DEFAULT_SIZES): the operator fills it in."""
    assert "default" not in at(CERT_SPEC, "privateKey.size")
    assert "default" not in at(SELF_SIGNED, "privateKey.size")


# ---------------------------------------------------------------------------------------------------------
# Key sizes: the CEL rule against ALLOWED_SIZES

_SIZE_CASE = re.compile(r'self\.algorithm == "(\w+)" \? self\.size in \[([0-9, ]+)\]')


def _sizes_in_rule(key_schema: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    (rule,) = [r for r in _rules(key_schema) if r.get("fieldPath") == ".size"]
    return {alg: tuple(int(n) for n in sizes.split(",")) for alg, sizes in _SIZE_CASE.findall(rule["rule"])}


def _schema_accepts_size(key_schema: Mapping[str, Any], algorithm: str, size: int) -> bool:
    """Evaluate the size rule the way the API server does: size unset or 0, or listed for the algorithm."""
    bounds = at({"properties": {"k": key_schema}}, "k.size")
    if not bounds["minimum"] <= size <= bounds["maximum"]:
        return False
    return size == 0 or size in _sizes_in_rule(key_schema).get(algorithm, ())


@pytest.mark.parametrize(
    "key_schema",
    [
        at(CERT_SPEC, "privateKey"),
        at(SELF_SIGNED, "privateKey"),
        at(CERT_SPEC, "additionalPrivateKeys[]"),
        at(SELF_SIGNED, "additionalPrivateKeys[]"),
    ],
)
def test_size_rule_lists_allowed_sizes(key_schema: dict[str, Any]) -> None:
    expected = {str(alg): sizes for alg, sizes in ALLOWED_SIZES.items() if sizes}
    assert _sizes_in_rule(key_schema) == expected
    # The message names the same sizes.
    (rule,) = [r for r in _rules(key_schema) if r.get("fieldPath") == ".size"]
    listed = set(re.findall(r'"(\d+(?:, \d+)*)"', rule["messageExpression"]))
    assert listed == {", ".join(map(str, sizes)) for sizes in expected.values()}


@pytest.mark.parametrize("algorithm", list(KeyAlgorithm))
@pytest.mark.parametrize("size", [0, 1, 44, 50, 65, 87, 256, 384, 512, 521, 1024, 2048, 3072, 4096, 8192])
def test_size_rule_agrees_with_the_parser(algorithm: KeyAlgorithm, size: int) -> None:
    spec = _cert(privateKey={"algorithm": str(algorithm), "size": size})
    in_schema = _schema_accepts_size(at(CERT_SPEC, "privateKey"), str(algorithm), size)
    in_models = _parses(parse_certificate_spec, spec)
    assert in_schema == in_models


# ---------------------------------------------------------------------------------------------------------
# Durations, bounds and patterns

_MIN = re.compile(r'duration\(self\) >= duration\("([^"]+)"\)')


@pytest.mark.parametrize(
    ("schema", "path", "minimum"),
    [
        pytest.param(CERT_SPEC, "duration", MIN_DURATION, id="certificate duration >= 1m"),
        pytest.param(CERT_SPEC, "renewBefore", MIN_RENEW_BEFORE, id="renewBefore >= 5s"),
        pytest.param(SELF_SIGNED, "duration", MIN_DURATION, id="CA duration >= 1m"),
    ],
)
def test_minimum_durations_match_the_model(schema: dict[str, Any], path: str, minimum: Any) -> None:
    (rule,) = _rules(at(schema, path))
    (text,) = _MIN.findall(rule["rule"])
    assert parse_duration(text) == minimum


DURATIONS = ["2160h", "1h30m", "1.5h", "90s", "500ms", "10us", "10µs", "1h0m0s", "0s", "0.5h"]
NOT_DURATIONS = ["90d", "1y", "h", "1", "-1h", "+1h", "1.h", ".5h", "1 h", "1H", "2160h\n", "1e3s"]


@pytest.mark.parametrize("text", DURATIONS + NOT_DURATIONS)
def test_duration_pattern_agrees_with_parse_duration(text: str) -> None:
    pattern = at(CERT_SPEC, "duration")["pattern"]
    assert at(CERT_SPEC, "renewBefore")["pattern"] == at(SELF_SIGNED, "duration")["pattern"] == pattern
    try:
        parse_duration(text)
        parsed = True
    except DurationError:
        parsed = False
    if text.endswith("\n"):
        parsed = False  # parse_duration strips whitespace; the server does not
    assert _go_match(pattern, text) == parsed, text


@pytest.mark.parametrize(
    "name",
    [
        "web",
        "web.demo.svc",
        "*.demo.example.com",
        "xn--bcher-kva.example",
        "10.0.0.1",
        "a" * 63 + ".example",
        "a" * 64 + ".example",
        "Web.demo.svc",
        "*",
        "web.*.svc",
        "*.*.example",
        "-web.demo",
        "web-.demo",
        "web..demo",
        "web.demo.",
        "web_1.demo",
        "",
    ],
)
def test_dns_name_pattern_agrees_with_validate_dns_name(name: str) -> None:
    item = at(CERT_SPEC, "dnsNames[]")
    in_schema = len(name) <= item["maxLength"] and _go_match(item["pattern"], name)
    assert in_schema == (validate_dns_name(name) is None)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("uris", "spiffe://cluster.local/ns/demo/sa/alice"),
        ("uris", "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66"),
        ("uris", "https://example.com/a b"),
        ("uris", "//cluster.local/ns/demo"),
        ("uris", "1http://example.com"),
        ("uris", "spiffe:"),
        ("emailAddresses", "alice@example.com"),
        ("emailAddresses", "alice.example.com"),
        ("emailAddresses", "alice@@example.com"),
        ("emailAddresses", "alice @example.com"),
    ],
)
def test_uri_and_email_patterns_agree_with_the_parser(field: str, value: str) -> None:
    item = at(CERT_SPEC, f"{field}[]")
    in_schema = len(value) <= item["maxLength"] and _go_match(item["pattern"], value)
    assert in_schema == _parses(parse_certificate_spec, _cert(**{field: [value]}))


@pytest.mark.parametrize("percentage", [0, 1, 50, 99, 100])
def test_renew_before_percentage_bounds_agree(percentage: int) -> None:
    bounds = at(CERT_SPEC, "renewBeforePercentage")
    in_schema = bounds["minimum"] <= percentage <= bounds["maximum"]
    assert in_schema == _parses(parse_certificate_spec, _cert(renewBeforePercentage=percentage))


@pytest.mark.parametrize("length", [64, 65])
def test_common_name_bound_agrees(length: int) -> None:
    in_schema = length <= at(CERT_SPEC, "commonName")["maxLength"]
    assert in_schema == _parses(parse_certificate_spec, _cert(commonName="x" * length))


@pytest.mark.parametrize(
    ("schema", "path", "parse", "valid"),
    [
        pytest.param(CERT_SPEC, "", parse_certificate_spec, _cert(), id="certificate"),
        pytest.param(CERT_SPEC, "issuerRef", parse_certificate_spec, _cert(), id="issuerRef"),
        pytest.param(
            ISSUER_SPEC,
            "selfSigned",
            parse_issuer_spec,
            {"selfSigned": {"secretName": "root-ca", "commonName": "root"}},
            id="selfSigned",
        ),
        pytest.param(ISSUER_SPEC, "ca", parse_issuer_spec, {"ca": {"secretName": "corp-ca"}}, id="ca"),
        pytest.param(
            CERT_SPEC,
            "keystores.pkcs12.passwordSecretRef",
            parse_certificate_spec,
            _cert(keystores={"pkcs12": {"create": True, "passwordSecretRef": {"name": "pw"}}}),
            id="passwordSecretRef",
        ),
    ],
)
def test_required_fields_are_required_by_the_parser(
    schema: dict[str, Any], path: str, parse: Callable[[Mapping[str, Any]], object], valid: dict[str, Any]
) -> None:
    required = (at(schema, path) if path else schema)["required"]
    assert _parses(parse, valid)
    for name in required:
        spec = copy.deepcopy(valid)
        parent = spec
        for part in path.split(".") if path else []:
            parent = parent[part]
        del parent[name]
        assert not _parses(parse, spec), f"{path}.{name} is required by the schema but not by the parser"


# ---------------------------------------------------------------------------------------------------------
# Control characters: one CEL rule on every name, subject attribute and policy pattern

_CONTROL_RULE = re.compile(r'^!self\.matches\(r"(\[[^"]+\])"\)$')
_SUBJECT = [
    "organizations[]",
    "organizationalUnits[]",
    "countries[]",
    "provinces[]",
    "localities[]",
    "streetAddresses[]",
    "postalCodes[]",
]
_POLICY = ISSUER_SPEC["properties"]["policy"]
NAME_FIELDS = [
    *[(CERT_SPEC, path) for path in ("commonName", "dnsNames[]", "uris[]", "emailAddresses[]")],
    *[(CERT_SPEC, f"subject.{field}") for field in (*_SUBJECT, "serialNumber")],
    *[
        (ISSUER_SPEC, f"{kind}.{field}")
        for kind in ("selfSigned", "intermediate")
        for field in ("commonName", *(f"subject.{f}" for f in _SUBJECT), "subject.serialNumber")
    ],
    *[
        (_POLICY, path)
        for path in ("allowedCommonNames[]", "allowedDNSNames[]", "allowedURIs[]", "allowedEmails[]")
    ],
    *[(_POLICY, f"allowedSubject.{field}") for field in (*_SUBJECT, "serialNumber[]")],
]


def _control_class(node: Mapping[str, Any]) -> str:
    (rule,) = [r for r in _rules(node) if "matches" in r["rule"]]
    assert "control characters" in rule["message"]
    found = _CONTROL_RULE.match(rule["rule"])
    assert found, rule["rule"]
    return found.group(1)


@pytest.mark.parametrize(
    ("schema", "path"), [pytest.param(schema, path, id=path) for schema, path in NAME_FIELDS]
)
def test_every_name_and_subject_field_refuses_control_characters(schema: dict[str, Any], path: str) -> None:
    node = at(schema, path)
    assert node["type"] == "string"
    assert _control_class(node) == r"[\x00-\x1f\x7f-\x9f]"


def test_the_control_character_rule_agrees_with_the_parser() -> None:
    """RE2 reads ``\\x00`` in a character class as a code point, as Python's re does."""
    (schema, path) = NAME_FIELDS[0]
    rule = re.compile(_control_class(at(schema, path)))
    for code in range(0x3000):
        char = chr(code)
        assert (rule.search(f"a{char}b") is not None) == (control_character_problem(f"a{char}b") is not None)


# ---------------------------------------------------------------------------------------------------------
# Defaults: a spec parses the same before and after the schema's defaults are applied


def apply_defaults(schema: Mapping[str, Any], value: Any) -> Any:
    """Structural defaulting as the API server does it: fill in absent properties, then recurse, so the
    defaults inside an object default (``privateKey: {}``) apply too."""
    if isinstance(value, dict):
        props = schema.get("properties", {})
        out = dict(value)
        for name, sub in props.items():
            if name not in out and "default" in sub:
                out[name] = copy.deepcopy(sub["default"])
        return {k: apply_defaults(props[k], v) if k in props else v for k, v in out.items()}
    if isinstance(value, list) and "items" in schema:
        return [apply_defaults(schema["items"], v) for v in value]
    return value


def _example_specs() -> Iterator[Any]:
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc and doc.get("kind") in (CERTIFICATE_KIND, ISSUER_KIND):
                yield pytest.param(doc["kind"], doc["spec"], id=f"examples/{path.name}")


SPECS = [
    pytest.param(CERTIFICATE_KIND, _cert(), id="minimal certificate"),
    pytest.param(CERTIFICATE_KIND, _cert(privateKey={"algorithm": "MLDSA", "size": 65}), id="ML-DSA-65"),
    pytest.param(CERTIFICATE_KIND, _cert(privateKey={"size": 384}), id="size without algorithm"),
    pytest.param(CERTIFICATE_KIND, _cert(privateKey={"algorithm": "Ed25519"}), id="Ed25519"),
    pytest.param(CERTIFICATE_KIND, _cert(usages=[]), id="empty usages"),
    pytest.param(CERTIFICATE_KIND, _cert(duration="24h", renewBefore="8h"), id="renewBefore"),
    pytest.param(
        CERTIFICATE_KIND,
        _cert(keystores={"pkcs12": {"create": True, "passwordSecretRef": {"name": "pw"}}}),
        id="pkcs12 password key",
    ),
    pytest.param(CERTIFICATE_KIND, _cert(keystores={"pkcs12": {}}), id="pkcs12 not created"),
    pytest.param(
        CERTIFICATE_KIND, _cert(rollout={"targets": [{"kind": "Deployment", "name": "web"}]}), id="rollout"
    ),
    pytest.param(
        ISSUER_KIND, {"selfSigned": {"secretName": "root-ca", "commonName": "root"}}, id="self-signed"
    ),
    pytest.param(
        ISSUER_KIND,
        {"selfSigned": {"secretName": "root-ca", "commonName": "root", "privateKey": {"algorithm": "RSA"}}},
        id="self-signed RSA",
    ),
    pytest.param(ISSUER_KIND, {"ca": {"secretName": "corp-ca"}}, id="ca"),
    *_example_specs(),
]


@pytest.mark.parametrize(("kind", "spec"), SPECS)
def test_schema_defaults_do_not_change_the_parsed_spec(kind: str, spec: dict[str, Any]) -> None:
    schema, parse = (
        (CERT_SPEC, parse_certificate_spec) if kind == CERTIFICATE_KIND else (ISSUER_SPEC, parse_issuer_spec)
    )
    defaulted = apply_defaults(schema, spec)
    assert parse(defaulted) == parse(spec)


def test_examples_exist() -> None:
    kinds = [p.values[0] for p in _example_specs()]
    assert kinds.count(ISSUER_KIND) >= 2
    assert kinds.count(CERTIFICATE_KIND) >= 3


# ---------------------------------------------------------------------------------------------------------
# Hygiene: every field documented, every string, list and map bounded (CEL cost estimates need the bounds)


def _walk(schema: Mapping[str, Any], path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        if path == "" and name in ("apiVersion", "kind", "metadata"):
            continue
        yield from _walk(sub, f"{path}.{name}")
    if "items" in schema:
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize(
    "crd",
    [CERT_CRD, ISSUER_CRD, CLUSTER_ISSUER_CRD],
    ids=[CERTIFICATE_KIND, ISSUER_KIND, CLUSTER_ISSUER_KIND],
)
def test_every_field_is_documented_and_bounded(crd: dict[str, Any]) -> None:
    problems = []
    for path, node in _walk(_schema(crd), ""):
        is_item = path.endswith(("[]", "{}"))
        if not is_item and not node.get("description"):
            problems.append(f"{path or '<root>'}: no description")
        if node.get("type") == "string" and "maxLength" not in node:
            problems.append(f"{path}: string without maxLength")
        if node.get("type") == "array" and "maxItems" not in node:
            problems.append(f"{path}: array without maxItems")
        if isinstance(node.get("additionalProperties"), dict) and "maxProperties" not in node:
            problems.append(f"{path}: map without maxProperties")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------------------
# Additional private keys (dual certificates and dual CAs)


@pytest.mark.parametrize("schema", [CERT_SPEC, SELF_SIGNED], ids=["certificate", "self-signed CA"])
def test_additional_keys_are_a_map_by_algorithm_of_at_most_three(schema: dict[str, Any]) -> None:
    """One pair per algorithm (the API server refuses a duplicate algorithm), as the parser does."""
    from mtls_operator.api.models import MAX_ADDITIONAL_KEYS

    keys = at(schema, "additionalPrivateKeys")
    assert keys["maxItems"] == MAX_ADDITIONAL_KEYS
    assert (keys["x-kubernetes-list-type"], keys["x-kubernetes-list-map-keys"]) == ("map", ["algorithm"])
    assert keys["items"]["required"] == ["algorithm"]
    (rule,) = [r for r in _rules(schema) if r.get("fieldPath") == ".additionalPrivateKeys"]
    assert "self.privateKey.algorithm" in rule["rule"]


@pytest.mark.parametrize("main", list(KeyAlgorithm))
@pytest.mark.parametrize("extra", [[a] for a in KeyAlgorithm] + [[KeyAlgorithm.RSA, KeyAlgorithm.RSA]])
def test_additional_key_algorithms_agree(main: KeyAlgorithm, extra: list[KeyAlgorithm]) -> None:
    """The schema's rules (map key algorithm, other than privateKey.algorithm) and the parser agree."""
    spec = _cert(
        privateKey={"algorithm": str(main)}, additionalPrivateKeys=[{"algorithm": str(a)} for a in extra]
    )
    in_schema = len(set(extra)) == len(extra) and main not in extra
    assert _parses(parse_certificate_spec, spec) == in_schema
