"""pki.bundle: trust bundles are a function of the set of anchors (deduplicated, fixed order), as PEM and as
a Java truststore."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12
from tests.unit.pki_factory import (
    ECDSA_P256,
    ED25519,
    MLDSA_65,
    NOW,
    RSA_2048,
    build_cert,
    key,
    self_signed_ca,
)

from mtls_operator.api.constants import Reason
from mtls_operator.api.tls import TLSMaterialError
from mtls_operator.pki.bundle import bundle_anchors, bundle_pem, bundle_pkcs12_truststore
from mtls_operator.pki.certs import parse_certificate_pem
from mtls_operator.pki.fingerprints import certificate_fingerprint

OLD = build_cert(key(ECDSA_P256, 30), common_name="old root", not_before=NOW - timedelta(days=300))
NEW = self_signed_ca(MLDSA_65).certificate  # valid from NOW
MIDDLE = build_cert(key(RSA_2048, 31), common_name="middle root", not_before=NOW - timedelta(days=10))


@pytest.mark.parametrize(
    "anchors",
    [
        pytest.param([OLD, MIDDLE, NEW], id="keeps the oldest anchor first"),
        pytest.param([NEW, OLD, MIDDLE], id="orders anchors the same whatever the input order"),
        pytest.param([NEW, OLD, NEW, MIDDLE, OLD], id="drops duplicate anchors"),
    ],
)
def test_bundle_pem_is_a_function_of_the_set(anchors: list[x509.Certificate]) -> None:
    body = bundle_pem(anchors)
    assert parse_certificate_pem(body) == [OLD, MIDDLE, NEW]
    assert body == bundle_pem([OLD, MIDDLE, NEW])


def test_same_not_before_is_ordered_by_fingerprint() -> None:
    a = build_cert(key(ED25519, 32), common_name="a", not_before=NOW)
    b = build_cert(key(ED25519, 33), common_name="b", not_before=NOW)
    expected = sorted([a, b], key=certificate_fingerprint)
    assert bundle_anchors([a, b]) == expected
    assert bundle_anchors([b, a]) == expected


@pytest.mark.parametrize(
    ("anchors", "message"),
    [
        pytest.param([], "A trust bundle needs at least one CA certificate.", id="refuses an empty bundle"),
        pytest.param(
            [OLD, build_cert(key(ECDSA_P256, 34), common_name="leaf", is_ca=False)],
            "Certificate 'CN=leaf'",
            id="refuses a certificate that is not a CA",
        ),
        pytest.param(
            [build_cert(key(ECDSA_P256, 35), common_name="v1", is_ca=None)],
            "Certificate 'CN=v1'",
            id="refuses a certificate without basicConstraints",
        ),
    ],
)
def test_bundle_refuses_non_anchors(anchors: list[x509.Certificate], message: str) -> None:
    with pytest.raises(TLSMaterialError) as caught:
        bundle_pem(anchors)
    assert caught.value.reason is Reason.INVALID_SPEC
    assert caught.value.message.startswith(message)


def test_truststore_holds_every_anchor_with_a_stable_alias() -> None:
    store = pkcs12.load_pkcs12(bundle_pkcs12_truststore([NEW, OLD, OLD], b"changeit"), b"changeit")
    assert store.key is None
    assert [c.certificate for c in store.additional_certs] == [OLD, NEW]
    assert [c.friendly_name for c in store.additional_certs] == [
        f"ca-{certificate_fingerprint(OLD)[:16]}".encode(),
        f"ca-{certificate_fingerprint(NEW)[:16]}".encode(),
    ]


def test_truststore_refuses_an_empty_password() -> None:
    with pytest.raises(TLSMaterialError) as caught:
        bundle_pkcs12_truststore([OLD], b"")
    assert caught.value.reason is Reason.INVALID_SPEC


def test_openssl_30_reads_a_truststore_holding_an_ml_dsa_root(tmp_path: Path, openssl: str) -> None:
    (tmp_path / "trust.p12").write_bytes(bundle_pkcs12_truststore([NEW, OLD, MIDDLE], b"changeit"))
    done = subprocess.run(
        [openssl, "pkcs12", "-in", "trust.p12", "-passin", "pass:changeit", "-nokeys"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert parse_certificate_pem(done.stdout.encode()) == [OLD, MIDDLE, NEW]  # ML-DSA too
    assert "2.16.840.1.113894.746875.1.1" in done.stdout or "Trusted key usage" in done.stdout
