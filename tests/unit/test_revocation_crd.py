"""The revocation fields of the CRDs agree with api.trust_lifecycle's parsers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from mtls_operator.api.models import SpecError
from mtls_operator.api.trust_lifecycle import RevocationPolicy, parse_revocation, parse_revocation_policy

ROOT = Path(__file__).resolve().parents[2]


def _spec(plural: str) -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "crds" / f"mtls.dev_{plural}.yaml").read_text(encoding="utf-8"))
    (version,) = [v for v in doc["spec"]["versions"] if v["name"] == "v1alpha1"]
    spec: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return spec


REVOCATION = _spec("mtlsissuers")["properties"]["revocation"]
POLICY = _spec("mtlscertificates")["properties"]["revocationPolicy"]


def test_revocation_policy_enum_and_default_match_the_model() -> None:
    assert POLICY["enum"] == [p.value for p in RevocationPolicy]
    assert (
        parse_revocation_policy(POLICY["default"]) is parse_revocation_policy(None) is RevocationPolicy.NONE
    )
    assert POLICY["maxLength"] >= max(len(p.value) for p in RevocationPolicy)


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://ca.example/crl/a/b.crl", id="accepts an http URL with a path"),
        pytest.param("https://ca.example:9403/ocsp/a/b", id="accepts https with a port"),
        pytest.param("http://10.0.0.1", id="accepts a bare host"),
        pytest.param("ftp://ca.example/x", id="rejects another scheme"),
        pytest.param("http:///x", id="rejects a missing host"),
        pytest.param("http://ca.example/a b", id="rejects a space"),
        pytest.param("ca.example/x.crl", id="rejects a relative URL"),
    ],
)
@pytest.mark.parametrize("field", ["crlURL", "ocspURL"])
def test_url_pattern_agrees_with_the_parser(field: str, url: str) -> None:
    node = REVOCATION["properties"][field]
    assert node["type"] == "string" and node["maxLength"] == 2048 and node["description"]
    schema_accepts = re.fullmatch(node["pattern"], url) is not None
    try:
        parse_revocation({field: url})
        parser_accepts = True
    except SpecError:
        parser_accepts = False
    assert schema_accepts == parser_accepts
