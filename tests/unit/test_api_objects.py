"""api.objects: watch bodies parsed once into frozen values. The parsers never raise, request tokens are
trimmed and bounded, and a status written by the operator reads back as the same value."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from mtls_operator.api.conditions import Condition, parse_rfc3339, rfc3339
from mtls_operator.api.constants import (
    ANN_RENEW_REQUESTED,
    ANN_REVOKE_REASON,
    ANN_REVOKE_REQUESTED,
    ANN_ROTATE_REQUESTED,
    Reason,
)
from mtls_operator.api.errors import CAError, ReasonedError, RefError, SpecError, TLSMaterialError, Violation
from mtls_operator.api.object_parsers import (
    MAX_REQUEST_TOKEN,
    parse_certificate,
    parse_certificate_status,
    parse_issuer,
    parse_issuer_status,
    parse_token,
)
from mtls_operator.api.objects import CertificateStatus, IssuerStatus, RolloutRecord, next_ca_secret_name
from mtls_operator.api.rotation import Phase, RotationState
from mtls_operator.api.trust_lifecycle import RevocationPolicy

# ---------------------------------------------------------------------------------------------------------
# Bodies as the watch delivers them

CERT_SPEC = {"secretName": "web-tls", "issuerRef": {"name": "mesh"}, "commonName": "web"}
SELF_SIGNED = {"selfSigned": {"secretName": "mesh-ca", "commonName": "Mesh CA"}}


def body(spec: Any, *, annotations: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    metadata = {"namespace": "demo", "name": "web", "uid": "u1", "generation": 3, "resourceVersion": "42"}
    metadata.update(meta)
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"metadata": metadata, "spec": spec}


def test_a_certificate_body_is_parsed_into_its_spec_meta_and_requests() -> None:
    cert = parse_certificate(
        body(
            {**CERT_SPEC, "revocationPolicy": "Revoke"},
            annotations={
                ANN_RENEW_REQUESTED: "  t1/abc ",
                ANN_REVOKE_REQUESTED: "t2",
                ANN_REVOKE_REASON: "keyCompromise",
            },
            deletionTimestamp="2026-01-01T00:00:00Z",
            finalizers=["mtls.dev/revoke-on-delete"],
        )
    )
    assert cert.key == ("demo", "web")
    assert (cert.meta.uid, cert.meta.generation, cert.meta.resource_version) == ("u1", 3, "42")
    assert cert.meta.deleting and cert.meta.finalizers == ("mtls.dev/revoke-on-delete",)
    assert cert.error is None and cert.spec is not None and cert.spec.secret_name == "web-tls"
    assert (cert.secret_name, cert.issuer_name) == ("web-tls", "mesh")
    assert cert.revocation_policy is RevocationPolicy.REVOKE
    assert (cert.requests.renew, cert.requests.revoke, cert.requests.revoke_reason) == (
        "t1/abc",
        "t2",
        "keyCompromise",
    )


@pytest.mark.parametrize(
    ("spec", "secret_name", "issuer_name"),
    [
        pytest.param(
            {**CERT_SPEC, "duration": "forever"},
            "web-tls",
            "mesh",
            id="an invalid spec still names its Secret and issuer for the indexes",
        ),
        pytest.param(
            {**CERT_SPEC, "revocationPolicy": "Sometimes"},
            "web-tls",
            "mesh",
            id="an invalid revocationPolicy makes the spec unusable",
        ),
        pytest.param(
            {"secretName": 7, "issuerRef": "mesh"}, None, None, id="names of the wrong type are not indexed"
        ),
        pytest.param("not a mapping", None, None, id="a spec that is not a mapping is an error, not a crash"),
    ],
)
def test_a_certificate_with_an_unusable_spec_carries_the_reason(
    spec: Any, secret_name: str | None, issuer_name: str | None
) -> None:
    cert = parse_certificate(body(spec))
    assert cert.spec is None
    assert cert.error is not None and cert.error.reason is Reason.INVALID_SPEC and cert.error.message
    assert (cert.secret_name, cert.issuer_name) == (secret_name, issuer_name)


def test_a_certificate_without_requests_asks_for_nothing() -> None:
    cert = parse_certificate(
        body(CERT_SPEC, annotations={ANN_RENEW_REQUESTED: "   ", ANN_REVOKE_REQUESTED: 5})
    )
    assert (cert.requests.renew, cert.requests.revoke, cert.requests.revoke_reason) == (
        None,
        None,
        "unspecified",
    )


@pytest.mark.parametrize(
    ("spec", "names", "parent"),
    [
        pytest.param(
            SELF_SIGNED,
            ("mesh-ca", "mesh-ca-next"),
            None,
            id="a self-signed issuer reads its CA and the staged next CA",
        ),
        pytest.param(
            {
                "intermediate": {
                    "issuerRef": {"name": "root"},
                    "secretName": "team-ca",
                    "commonName": "Team CA",
                }
            },
            ("team-ca", "team-ca-next"),
            "root",
            id="an intermediate reads its CA and the staged next CA and names its parent",
        ),
        pytest.param(
            {"ca": {"secretName": "byo-ca"}}, ("byo-ca",), None, id="a ca issuer reads only its CA Secret"
        ),
        pytest.param({"ca": {}}, (), None, id="an issuer with an unusable spec reads no Secret"),
    ],
)
def test_the_secrets_an_issuer_reads(
    spec: dict[str, Any], names: tuple[str, ...], parent: str | None
) -> None:
    issuer = parse_issuer(body(spec, name="mesh"))
    assert issuer.ca_secret_names == names
    assert issuer.parent == parent


def test_an_issuer_body_is_parsed_with_its_trust_lifecycle_and_rotate_request() -> None:
    issuer = parse_issuer(
        body(
            {**SELF_SIGNED, "trustBundle": {"configMapName": "mesh-bundle"}},
            annotations={ANN_ROTATE_REQUESTED: " r1 "},
            name="mesh",
        )
    )
    assert issuer.error is None and issuer.spec is not None
    assert issuer.trust_bundle is not None and issuer.trust_bundle.config_map_name == "mesh-bundle"
    assert issuer.rotate_request == "r1"


def test_an_issuer_whose_trust_lifecycle_is_invalid_keeps_its_ca_spec_and_the_reason() -> None:
    issuer = parse_issuer(body({**SELF_SIGNED, "trustBundle": {"pkcs12": {}}}, name="mesh"))
    assert issuer.spec is not None and issuer.spec.ca_secret_name == "mesh-ca"
    assert issuer.error is not None and "pkcs12" in issuer.error.message
    assert issuer.ca_secret_names == ("mesh-ca", "mesh-ca-next")


def test_the_staged_next_ca_is_named_after_the_ca_secret() -> None:
    assert next_ca_secret_name("mesh-ca") == "mesh-ca-next"


# ---------------------------------------------------------------------------------------------------------
# Never raise

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12))
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def keyed(keys: list[str], values: st.SearchStrategy[Any] = json_values) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts over the keys a parser looks at (random keys would rarely reach it)."""
    return st.dictionaries(st.sampled_from(keys), values, max_size=len(keys))


SPEC_KEYS = [
    "secretName", "issuerRef", "commonName", "dnsNames", "ipAddresses", "uris", "emailAddresses", "duration",
    "renewBefore", "renewBeforePercentage", "privateKey", "usages", "subject", "pkcs12", "rollout", "spiffe",
    "revocationPolicy", "secretTemplate", "selfSigned", "ca", "intermediate", "policy", "trustBundle",
    "revocation",
]  # fmt: skip
STATUS_KEYS = [
    "conditions", "notBefore", "notAfter", "renewalTime", "serialNumber", "fingerprint", "revision",
    "algorithm", "secretName", "issuerFingerprint", "failedIssuanceAttempts", "lastFailureTime",
    "nextAttemptTime", "rollouts", "requests", "observedGeneration", "type", "subject", "rotation",
]  # fmt: skip
CONDITION = keyed(["type", "status", "reason", "message", "observedGeneration", "lastTransitionTime"])
ROLLOUT = keyed(["kind", "name", "fingerprint", "time"])
# What the API server guarantees of metadata: an object, strings, an integer generation, a list of strings,
# a map of strings.
API_METADATA = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(max_size=8),
        "namespace": st.text(max_size=8),
        "uid": st.text(max_size=8),
        "generation": st.integers(min_value=0),
        "resourceVersion": st.text(max_size=8),
        "deletionTimestamp": st.text(max_size=20),
        "finalizers": st.lists(st.text(max_size=8), max_size=3),
        "annotations": st.dictionaries(
            st.sampled_from(
                [ANN_RENEW_REQUESTED, ANN_REVOKE_REQUESTED, ANN_REVOKE_REASON, ANN_ROTATE_REQUESTED, "x"]
            ),
            st.text(max_size=200),
        ),
    },
)
SPECS = st.one_of(json_values, keyed(SPEC_KEYS))
# Status as the CRD schema shapes it (lists are lists, objects objects), with anything inside.
SHAPED_STATUS = st.one_of(
    st.none(),
    keyed(STATUS_KEYS, json_values).map(
        lambda d: {
            **d,
            **({"conditions": [d["conditions"]]} if "conditions" in d else {}),
            **({"rollouts": [d["rollouts"]]} if "rollouts" in d else {}),
        }
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "conditions": st.lists(CONDITION, max_size=3),
            "rollouts": st.lists(ROLLOUT, max_size=2),
            "requests": keyed(["renew", "revoke"]),
        },
    ),
)
ANY_STATUS = st.one_of(json_values, keyed(STATUS_KEYS))


@given(metadata=API_METADATA, spec=SPECS, status=SHAPED_STATUS)
def test_parsing_never_raises_on_any_spec(metadata: dict[str, Any], spec: Any, status: Any) -> None:
    doc = {"metadata": metadata, "spec": spec, "status": status}
    cert, issuer = parse_certificate(doc), parse_issuer(doc)
    assert (cert.spec is None) is (cert.error is not None)
    assert issuer.spec is not None or issuer.error is not None


@example(status={"rollouts": 1})
@given(status=ANY_STATUS)
def test_parsing_never_raises_on_any_status(status: Any) -> None:
    doc = {"metadata": {"namespace": "demo", "name": "web"}, "spec": CERT_SPEC, "status": status}
    parse_certificate(doc)
    parse_issuer(doc)


@example(metadata=[])
@given(metadata=json_values)
def test_parsing_never_raises_on_any_metadata(metadata: Any) -> None:
    doc = {"metadata": metadata, "spec": CERT_SPEC}
    parse_certificate(doc)
    parse_issuer(doc)


@given(doc=st.dictionaries(st.text(max_size=8), json_values, max_size=4))
def test_parsing_never_raises_on_a_body_without_the_usual_sections(doc: dict[str, Any]) -> None:
    doc.pop("metadata", None)
    assert parse_certificate(doc).spec is None
    assert parse_issuer(doc).spec is None


# ---------------------------------------------------------------------------------------------------------
# Request tokens


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(" 2026-01-01T00:00:00Z/abc \n", "2026-01-01T00:00:00Z/abc", id="a token is trimmed"),
        pytest.param(
            "x" * 500, "x" * MAX_REQUEST_TOKEN, id="a long token is cut to the status field's bound"
        ),
        pytest.param("   ", None, id="a token of only whitespace is no request"),
        pytest.param("", None, id="an empty token is no request"),
        pytest.param(5, None, id="a token that is not a string is no request"),
        pytest.param(None, None, id="no annotation is no request"),
    ],
)
def test_parse_token(value: Any, expected: str | None) -> None:
    assert parse_token(value) == expected


@given(value=st.one_of(st.text(), json_values))
def test_a_token_is_bounded_and_never_empty(value: Any) -> None:
    token = parse_token(value)
    assert token is None or (0 < len(token) <= MAX_REQUEST_TOKEN and token == token.lstrip())


@example(value="a" * (MAX_REQUEST_TOKEN - 1) + " b")
@given(value=st.text())
def test_a_token_copied_to_status_reads_back_the_same(value: str) -> None:
    token = parse_token(value)
    assert parse_token(token) == token


# ---------------------------------------------------------------------------------------------------------
# Status round trips

whole_seconds = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(lambda t: t.replace(microsecond=0))
names = st.text(min_size=1, max_size=20)
tokens = st.text(min_size=1, max_size=MAX_REQUEST_TOKEN).filter(lambda t: parse_token(t) == t)
conditions = st.lists(
    st.builds(
        Condition,
        type=names,
        status=st.booleans(),
        reason=st.text(max_size=20),
        message=st.text(max_size=40),
        observed_generation=st.integers(min_value=0, max_value=2**40),
        last_transition_time=st.one_of(st.none(), whole_seconds.map(rfc3339)),
    ),
    max_size=4,
    unique_by=lambda c: c.type,
).map(lambda cs: tuple(sorted(cs, key=lambda c: c.type)))
optional = st.one_of  # readability below: optional(st.none(), ...)
certificate_statuses = st.builds(
    CertificateStatus,
    conditions=conditions,
    not_before=optional(st.none(), whole_seconds),
    not_after=optional(st.none(), whole_seconds),
    renewal_time=optional(st.none(), whole_seconds),
    serial_number=optional(st.none(), names),
    fingerprint=optional(st.none(), names),
    revision=st.integers(min_value=0, max_value=2**31),
    algorithm=optional(st.none(), names),
    secret_name=optional(st.none(), names),
    issuer_fingerprint=optional(st.none(), names),
    failed_attempts=st.integers(min_value=0, max_value=1000),
    last_failure_time=optional(st.none(), whole_seconds),
    next_attempt_time=optional(st.none(), whole_seconds),
    rollouts=st.lists(st.builds(RolloutRecord, names, names, names, st.text(max_size=20)), max_size=3).map(
        tuple
    ),
    handled_renew=optional(st.none(), tokens),
    handled_revoke=optional(st.none(), tokens),
)
rotations = st.builds(
    RotationState,
    phase=st.sampled_from(Phase),
    old_ca_fingerprint=optional(st.none(), names),
    new_ca_fingerprint=optional(st.none(), names),
    started_at=optional(st.none(), whole_seconds),
    phase_since=optional(st.none(), whole_seconds),
    overlap_since=optional(st.none(), whole_seconds),
    leaves_total=st.integers(min_value=0, max_value=10**6),
    leaves_moved=st.integers(min_value=0, max_value=10**6),
    longest_leaf_lifetime=st.integers(min_value=0, max_value=10**9).map(lambda s: timedelta(seconds=s)),
    last_request=optional(st.none(), names),
)
issuer_statuses = st.builds(
    IssuerStatus,
    conditions=conditions,
    observed_generation=st.integers(min_value=0, max_value=2**40),
    type=optional(st.none(), names),
    secret_name=optional(st.none(), names),
    not_before=optional(st.none(), whole_seconds),
    not_after=optional(st.none(), whole_seconds),
    fingerprint=optional(st.none(), names),
    algorithm=optional(st.none(), names),
    subject=optional(st.none(), names),
    rotation=optional(st.none(), rotations),
)


@given(status=certificate_statuses)
def test_a_certificate_status_reads_back_as_written(status: CertificateStatus) -> None:
    assert parse_certificate_status(status.as_dict()) == status


@given(status=issuer_statuses)
def test_an_issuer_status_reads_back_as_written(status: IssuerStatus) -> None:
    assert parse_issuer_status(status.as_dict()) == status


def test_an_empty_status_is_written_as_nulls_and_reads_back_empty() -> None:
    doc = CertificateStatus().as_dict()
    assert doc["conditions"] == [] and all(v is None for k, v in doc.items() if k != "conditions")
    assert parse_certificate_status(doc) == CertificateStatus()
    assert parse_certificate_status(None) == CertificateStatus()


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("2026-01-01T00:00:00", id="a time without an offset"),
        pytest.param("2026-01-01", id="a date without a time"),
    ],
)
def test_times_read_from_status_are_timezone_aware(text: str) -> None:
    parsed = parse_rfc3339(text)
    assert parsed is not None and parsed.tzinfo is not None


def test_rfc3339_writes_the_same_instant_whatever_the_offset() -> None:
    moment = datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert parse_rfc3339(rfc3339(moment)) == moment


# ---------------------------------------------------------------------------------------------------------
# Errors carry a reason and a sentence


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        pytest.param(SpecError("m"), Reason.INVALID_SPEC, id="a spec error is InvalidSpec"),
        pytest.param(
            TLSMaterialError("m"), Reason.SECRET_CORRUPT, id="unreadable TLS material is SecretCorrupt"
        ),
        pytest.param(CAError("m"), Reason.CA_INVALID, id="an unusable CA is CAInvalid"),
        pytest.param(RefError("m"), Reason.ISSUANCE_FAILED, id="a missing reference fails the issuance"),
        pytest.param(
            CAError("m", Reason.CA_EXPIRED), Reason.CA_EXPIRED, id="a given reason wins over the default"
        ),
    ],
)
def test_every_reasoned_error_becomes_a_violation_with_its_reason(
    error: ReasonedError, reason: Reason
) -> None:
    assert isinstance(error, ValueError)
    assert Violation.of(error) == Violation(reason, "m")
