"""Spec parsing at the edge: defaults as cert-manager's, bad input as a SpecError with a sentence."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from mtls_operator.api.certificate_spec import parse_certificate_spec
from mtls_operator.api.durations import format_duration, parse_duration
from mtls_operator.api.issuer_spec import parse_issuer_spec
from mtls_operator.api.models import KeyAlgorithm, SpecError, Usage

BASE: dict[str, Any] = {"secretName": "s", "issuerRef": {"name": "ca"}, "dnsNames": ["a.example.com"]}


def test_defaults_follow_cert_manager_and_mtls_first() -> None:
    spec = parse_certificate_spec(BASE)
    assert spec.private_key.algorithm is KeyAlgorithm.ECDSA
    assert spec.private_key.size == 256
    assert spec.usages == (Usage.SERVER_AUTH, Usage.CLIENT_AUTH)
    assert spec.duration == timedelta(days=90)


def test_mldsa_defaults_to_44() -> None:
    assert parse_certificate_spec({**BASE, "privateKey": {"algorithm": "MLDSA"}}).private_key.size == 44


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        pytest.param({"dnsNames": ["bad_name.example"]}, "DNS name", id="rejects an invalid DNS name"),
        pytest.param({"ipAddresses": ["300.1.1.1"]}, "not an IPv4", id="rejects a bad IP"),
        pytest.param(
            {"duration": "1h", "renewBefore": "2h"}, "at most 90%", id="rejects renewBefore >= duration"
        ),
        pytest.param(
            {"privateKey": {"algorithm": "RSA", "size": 1024}}, "not valid for RSA", id="rejects RSA 1024"
        ),
        pytest.param({"privateKey": {"algorithm": "DSA"}}, "not one of", id="rejects an unknown algorithm"),
        pytest.param(
            {"privateKey": {"algorithm": "MLDSA", "size": 50}}, "44, 65, 87", id="rejects ML-DSA 50"
        ),
        pytest.param(
            {"privateKey": {"algorithm": "MLDSA"}, "keystores": {"pkcs12": {"create": True}}},
            "ML-DSA",
            id="rejects PKCS#12 with ML-DSA",
        ),
        pytest.param({"issuerRef": {}}, "issuerRef.name", id="rejects a missing issuer"),
        pytest.param({"dnsNames": []}, "names nothing", id="rejects a certificate that names nothing"),
        pytest.param({"duration": "soon"}, "duration", id="rejects a duration that is not one"),
        pytest.param({"uris": ["not a uri"]}, "absolute URI", id="rejects a relative URI"),
        pytest.param({"usages": ["world domination"]}, "not a known usage", id="rejects an unknown usage"),
    ],
)
def test_bad_specs_are_refused_with_a_sentence(change: dict[str, Any], fragment: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_certificate_spec({**BASE, **change})
    assert fragment in err.value.message
    assert err.value.message.endswith(".")


# Every code point a certificate name or subject attribute must not hold: C0 (NUL included), DEL, C1.
CONTROL_CHARACTERS = [chr(c) for c in (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0))]


def _with_control(char: str) -> list[Any]:
    return [
        pytest.param({"commonName": f"evil{char}.example"}, "spec.commonName", id="commonName"),
        pytest.param({"dnsNames": [f"a{char}.example.com"]}, "spec.dnsNames", id="dnsNames"),
        pytest.param({"uris": [f"spiffe://td/ns/a{char}/sa/b"]}, "spec.uris", id="uris"),
        pytest.param(
            {"emailAddresses": [f"a{char}@example.com"]}, "spec.emailAddresses", id="emailAddresses"
        ),
        pytest.param(
            {"subject": {"organizations": [f"team{char}"]}}, "spec.subject.organizations", id="organizations"
        ),
        pytest.param(
            {"subject": {"organizationalUnits": [f"ou{char}"]}},
            "spec.subject.organizationalUnits",
            id="organizationalUnits",
        ),
        pytest.param({"subject": {"provinces": [f"p{char}"]}}, "spec.subject.provinces", id="provinces"),
        pytest.param({"subject": {"localities": [f"l{char}"]}}, "spec.subject.localities", id="localities"),
        pytest.param(
            {"subject": {"streetAddresses": [f"s{char}"]}},
            "spec.subject.streetAddresses",
            id="streetAddresses",
        ),
        pytest.param(
            {"subject": {"postalCodes": [f"1{char}"]}}, "spec.subject.postalCodes", id="postalCodes"
        ),
        pytest.param(
            {"subject": {"serialNumber": f"7{char}"}}, "spec.subject.serialNumber", id="serialNumber"
        ),
    ]


@pytest.mark.parametrize(("change", "field"), _with_control("\x00"))
def test_a_nul_byte_is_refused_in_every_name_and_subject_attribute(
    change: dict[str, Any], field: str
) -> None:
    with pytest.raises(SpecError) as err:
        parse_certificate_spec({**BASE, **change})
    assert err.value.message.startswith(f"{field} ")
    assert err.value.message.endswith("must not contain control characters (found U+0000).")
    assert "\x00" not in err.value.message  # the value is quoted with escapes, not copied raw


@pytest.mark.parametrize("char", CONTROL_CHARACTERS, ids=lambda c: f"U+{ord(c):04X}")
def test_every_control_character_is_refused_in_the_common_name(char: str) -> None:
    with pytest.raises(SpecError, match=rf"found U\+{ord(char):04X}\)\.$"):
        parse_certificate_spec({**BASE, "commonName": f"a{char}b"})


@pytest.mark.parametrize(
    "text",
    ["Zürich", "Ünïcödé ✓", "a b", "x" * 64, "\xa0nbsp"],
    ids=["umlaut", "symbols", "space", "64 characters", "no-break space (not a control)"],
)
def test_printable_unicode_is_accepted(text: str) -> None:
    spec = parse_certificate_spec({**BASE, "commonName": text[:64], "subject": {"organizations": [text]}})
    assert spec.subject.organizations == (text,)


@pytest.mark.parametrize(
    ("kind", "field", "where"),
    [
        pytest.param(
            "selfSigned", {"commonName": "root\x00CA"}, "spec.selfSigned.commonName", id="selfSigned CN"
        ),
        pytest.param(
            "selfSigned",
            {"subject": {"organizations": ["corp\x1b[31m"]}},
            "spec.selfSigned.subject.organizations",
            id="selfSigned O with an escape sequence",
        ),
        pytest.param(
            "intermediate",
            {"commonName": "team\x85CA"},
            "spec.intermediate.commonName",
            id="intermediate CN (C1)",
        ),
        pytest.param(
            "intermediate",
            {"subject": {"serialNumber": "1\x7f"}},
            "spec.intermediate.subject.serialNumber",
            id="intermediate subject serialNumber (DEL)",
        ),
    ],
)
def test_control_characters_are_refused_in_the_ca_subject(
    kind: str, field: dict[str, Any], where: str
) -> None:
    doc: dict[str, Any] = {"secretName": "ca", "commonName": "CA", **field}
    if kind == "intermediate":
        doc["issuerRef"] = {"name": "root"}
    with pytest.raises(SpecError) as err:
        parse_issuer_spec({kind: doc})
    assert err.value.message.startswith(f"{where} ")
    assert "must not contain control characters" in err.value.message


def test_issuer_needs_exactly_one_type() -> None:
    with pytest.raises(SpecError, match="exactly one"):
        parse_issuer_spec({})
    with pytest.raises(SpecError, match="exactly one"):
        parse_issuer_spec({"ca": {"secretName": "a"}, "selfSigned": {"secretName": "b", "commonName": "c"}})
    assert parse_issuer_spec({"ca": {"secretName": "a"}}).ca_secret_name == "a"


def test_identity_hash_changes_with_the_names_only() -> None:
    a = parse_certificate_spec(BASE)
    b = parse_certificate_spec({**BASE, "cleanupPolicy": "Delete"})
    c = parse_certificate_spec({**BASE, "dnsNames": ["b.example.com"]})
    assert a.identity_hash() == b.identity_hash() != c.identity_hash()


@pytest.mark.parametrize(
    ("text", "seconds"), [("2160h", 2160 * 3600), ("1h30m", 5400), ("90s", 90), ("0", 0)]
)
def test_go_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)
    assert parse_duration(format_duration(timedelta(seconds=seconds))) == timedelta(seconds=seconds)
