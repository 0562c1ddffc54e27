"""pki.pkcs12: keystore.p12 and truststore.p12 for classical keys; a clear refusal for ML-DSA."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12 as crypto_pkcs12
from tests.unit.pki_factory import (
    ECDSA_P256,
    ED25519,
    MLDSA_65,
    NOW,
    RSA_2048,
    intermediate_ca,
    key,
    leaf_spec,
    self_signed_ca,
)

from mtls_operator.api.constants import Reason
from mtls_operator.api.models import KeySpec
from mtls_operator.api.tls import TLSMaterialError
from mtls_operator.pki import certs, keys
from mtls_operator.pki.ca import CAKeyPair
from mtls_operator.pki.pkcs12 import build_pkcs12

PASSWORD = b"changeit"


def _issue(ca: CAKeyPair, spec: KeySpec) -> tuple[keys.PrivateKey, bytes]:
    leaf_key = key(spec)
    cert = certs.sign_leaf(leaf_spec(private_key=spec), leaf_key.public_key(), ca, NOW)
    return leaf_key, certs.chain_pem(cert, ca)


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(ECDSA_P256, id="packs an ECDSA key with its chain"),
        pytest.param(RSA_2048, id="packs an RSA key with its chain"),
        pytest.param(ED25519, id="packs an Ed25519 key with its chain"),
    ],
)
def test_keystore_holds_key_leaf_and_intermediates_and_truststore_the_root(spec: KeySpec) -> None:
    root = self_signed_ca(RSA_2048)
    ca = intermediate_ca(root)
    leaf_key, chain = _issue(ca, spec)
    keystore, truststore = build_pkcs12(leaf_key, chain, ca.root_pem, PASSWORD, b"web-tls")

    loaded = crypto_pkcs12.load_pkcs12(keystore, PASSWORD)
    assert loaded.key is not None
    assert keys.keys_match(loaded.key, leaf_key.public_key())
    assert loaded.cert is not None
    assert loaded.cert.friendly_name == b"web-tls"
    assert [loaded.cert.certificate, *(c.certificate for c in loaded.additional_certs)] == (
        certs.parse_certificate_pem(chain)
    )

    trusted = crypto_pkcs12.load_pkcs12(truststore, PASSWORD)
    assert trusted.key is None
    assert trusted.cert is None
    assert [c.certificate for c in trusted.additional_certs] == [ca.root]


def test_keystores_do_not_open_with_another_password() -> None:
    leaf_key, chain = _issue(self_signed_ca(), ECDSA_P256)
    keystore, _ = build_pkcs12(leaf_key, chain, self_signed_ca().root_pem, PASSWORD, b"web-tls")
    with pytest.raises(ValueError, match="Invalid password"):
        crypto_pkcs12.load_pkcs12(keystore, b"wrong")


def test_keystore_uses_pbes2_aes256_and_a_sha256_mac(tmp_path: Path, openssl: str) -> None:
    leaf_key, chain = _issue(self_signed_ca(), ECDSA_P256)
    keystore, _ = build_pkcs12(leaf_key, chain, self_signed_ca().root_pem, PASSWORD, b"web-tls")
    path = tmp_path / "keystore.p12"
    path.write_bytes(keystore)
    info = subprocess.run(
        [openssl, "pkcs12", "-info", "-noout", "-in", str(path), "-passin", "pass:changeit"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    assert "MAC: sha256," in info
    assert "PBES2, PBKDF2, AES-256-CBC, Iteration 50000, PRF hmacWithSHA256" in info


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        pytest.param(
            lambda: build_pkcs12(key(MLDSA_65), b"", b"", PASSWORD, b"x"),
            "cannot hold an ML-DSA key",
            id="refuses an ML-DSA key with a sentence saying why",
        ),
        pytest.param(
            lambda: build_pkcs12(key(ECDSA_P256), *_issue(self_signed_ca(), ECDSA_P256)[1:], b"", b"", b"x"),
            "password is empty",
            id="refuses an empty password",
        ),
    ],
)
def test_refusals(make: object, fragment: str) -> None:
    with pytest.raises(TLSMaterialError) as caught:
        make()  # type: ignore[operator]
    assert caught.value.reason is Reason.INVALID_SPEC
    assert fragment in caught.value.message
