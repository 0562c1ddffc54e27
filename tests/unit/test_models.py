"""Spec parsing at the edge: defaults as cert-manager's, bad input as a SpecError with a sentence."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from mtls_operator.api.durations import format_duration, parse_duration
from mtls_operator.api.models import (
    KeyAlgorithm,
    SpecError,
    Usage,
    parse_certificate_spec,
    parse_issuer_spec,
)

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
