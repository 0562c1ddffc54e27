"""pki.keys: generation, PEM encodings, loading (and refusing), algorithm facts, fingerprints."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, x25519
from tests.unit.pki_factory import (
    ECDSA_P256,
    ECDSA_P384,
    ECDSA_P521,
    ED25519,
    MLDSA_44,
    MLDSA_65,
    MLDSA_87,
    RSA_2048,
    key,
    key_pem,
    mldsa_pkcs8_pem,
)

from mtls_operator.api.constants import Reason
from mtls_operator.api.models import KeyAlgorithm, KeyEncoding, KeySpec
from mtls_operator.api.tls import TLSMaterialError
from mtls_operator.pki import keys

ALL_KEYS = (ECDSA_P256, ECDSA_P384, ECDSA_P521, ED25519, RSA_2048, MLDSA_44, MLDSA_65, MLDSA_87)
_NO_ENCRYPTION = serialization.NoEncryption()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(ECDSA_P256, (KeyAlgorithm.ECDSA, 256), id="generates an ECDSA P-256 key"),
        pytest.param(ECDSA_P384, (KeyAlgorithm.ECDSA, 384), id="generates an ECDSA P-384 key"),
        pytest.param(ECDSA_P521, (KeyAlgorithm.ECDSA, 521), id="generates an ECDSA P-521 key"),
        pytest.param(ED25519, (KeyAlgorithm.ED25519, 0), id="generates an Ed25519 key, size 0"),
        pytest.param(RSA_2048, (KeyAlgorithm.RSA, 2048), id="generates an RSA-2048 key"),
        pytest.param(MLDSA_44, (KeyAlgorithm.MLDSA, 44), id="generates an ML-DSA-44 key"),
        pytest.param(MLDSA_65, (KeyAlgorithm.MLDSA, 65), id="generates an ML-DSA-65 key"),
        pytest.param(MLDSA_87, (KeyAlgorithm.MLDSA, 87), id="generates an ML-DSA-87 key"),
    ],
)
def test_generated_keys_have_the_requested_algorithm_and_size(
    spec: KeySpec, expected: tuple[KeyAlgorithm, int]
) -> None:
    private = key(spec)
    assert keys.key_algorithm_of(private) == expected
    assert keys.key_algorithm_of(private.public_key()) == expected


def test_rsa_keys_use_public_exponent_65537() -> None:
    private = key(RSA_2048)
    assert private.public_key().public_numbers().e == 65537  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(KeySpec(KeyAlgorithm.ECDSA, 224), id="refuses an ECDSA size that is not a NIST curve"),
        pytest.param(KeySpec(KeyAlgorithm.RSA, 1024), id="refuses RSA-1024"),
        pytest.param(
            KeySpec(KeyAlgorithm.MLDSA, 50), id="refuses an ML-DSA parameter set that does not exist"
        ),
    ],
)
def test_generate_refuses_sizes_the_algorithm_lacks(spec: KeySpec) -> None:
    with pytest.raises(TLSMaterialError, match="come in") as caught:
        keys.generate_private_key(spec)
    assert caught.value.reason is Reason.INVALID_SPEC


@pytest.mark.parametrize(
    ("spec", "encoding", "header"),
    [
        pytest.param(ECDSA_P256, KeyEncoding.PKCS8, b"PRIVATE KEY", id="writes ECDSA as PKCS#8 by default"),
        pytest.param(ECDSA_P384, KeyEncoding.PKCS1, b"EC PRIVATE KEY", id="writes ECDSA as SEC1 for PKCS1"),
        pytest.param(RSA_2048, KeyEncoding.PKCS8, b"PRIVATE KEY", id="writes RSA as PKCS#8 by default"),
        pytest.param(RSA_2048, KeyEncoding.PKCS1, b"RSA PRIVATE KEY", id="writes RSA as PKCS#1 for PKCS1"),
        pytest.param(ED25519, KeyEncoding.PKCS1, b"PRIVATE KEY", id="ignores PKCS1 for Ed25519"),
        pytest.param(MLDSA_65, KeyEncoding.PKCS1, b"PRIVATE KEY", id="ignores PKCS1 for ML-DSA"),
        pytest.param(MLDSA_87, KeyEncoding.PKCS8, b"PRIVATE KEY", id="writes ML-DSA-87 as PKCS#8"),
    ],
)
def test_pem_encodings_round_trip(spec: KeySpec, encoding: KeyEncoding, header: bytes) -> None:
    original = key(spec)
    data = keys.private_key_to_pem(original, encoding)
    assert data.startswith(b"-----BEGIN " + header + b"-----\n")
    loaded = keys.load_private_key_pem(data)
    assert keys.spki_fingerprint(loaded.public_key()) == keys.spki_fingerprint(original.public_key())


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(MLDSA_44, id="writes ML-DSA-44 in the 128-byte seed-only PKCS#8 form"),
        pytest.param(MLDSA_65, id="writes ML-DSA-65 in the 128-byte seed-only PKCS#8 form"),
        pytest.param(MLDSA_87, id="writes ML-DSA-87 in the 128-byte seed-only PKCS#8 form"),
    ],
)
def test_mldsa_keys_are_written_seed_only(spec: KeySpec) -> None:
    data = keys.private_key_to_pem(key(spec))
    assert len(data) == 128
    der = base64.b64decode(b"".join(data.splitlines()[1:-1]))
    seed = key(spec).private_bytes_raw()  # type: ignore[union-attr]
    assert der.endswith(b"\x04\x22\x80\x20" + seed)  # privateKey OCTET STRING { [0] seed }


@pytest.mark.parametrize(
    ("size", "form", "expected"),
    [
        pytest.param(44, "expanded", "expanded form", id="explains an ML-DSA-44 key in the expanded form"),
        pytest.param(65, "expanded", "expanded form", id="explains an ML-DSA-65 key in the expanded form"),
        pytest.param(65, "both", "'both' form", id="explains an ML-DSA-65 key in the seed-and-expanded form"),
        pytest.param(87, "both", "'both' form", id="explains an ML-DSA-87 key in the seed-and-expanded form"),
    ],
)
def test_mldsa_keys_in_forms_the_library_cannot_load_get_a_specific_message(
    size: int, form: str, expected: str
) -> None:
    with pytest.raises(keys.UnsupportedKeyError) as caught:
        keys.load_private_key_pem(mldsa_pkcs8_pem(size, form), name="tls.key")
    assert caught.value.reason is Reason.SECRET_CORRUPT
    assert caught.value.message.startswith(f"tls.key holds an ML-DSA-{size} private key")
    assert expected in caught.value.message
    assert "BEGIN" not in caught.value.message


def _other(private: object) -> bytes:
    return private.private_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, _NO_ENCRYPTION
    )


@pytest.mark.parametrize(
    ("data", "kind", "fragment"),
    [
        pytest.param(b"", TLSMaterialError, "not a readable PEM private key", id="refuses empty bytes"),
        pytest.param(
            b"\xff\xfe\x00garbage", TLSMaterialError, "not a readable", id="refuses non-UTF-8 garbage"
        ),
        pytest.param(
            key_pem(ECDSA_P256)[:60], TLSMaterialError, "not a readable", id="refuses a truncated PEM key"
        ),
        pytest.param(
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            TLSMaterialError,
            "not a readable",
            id="refuses PEM armour around nonsense",
        ),
        pytest.param(
            key(ECDSA_P256).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"hunter2"),
            ),
            TLSMaterialError,
            "encrypted with a password",
            id="refuses a password-encrypted key with a sentence saying so",
        ),
        pytest.param(
            _other(dsa.generate_private_key(2048)),
            keys.UnsupportedKeyError,
            "holds a key of type DSA",
            id="refuses DSA keys",
        ),
        pytest.param(
            _other(ed448.Ed448PrivateKey.generate()),
            keys.UnsupportedKeyError,
            "holds a key of type Ed448",
            id="refuses Ed448 keys",
        ),
        pytest.param(
            _other(x25519.X25519PrivateKey.generate()),
            keys.UnsupportedKeyError,
            "X25519",
            id="refuses X25519 keys, which cannot sign",
        ),
        pytest.param(
            _other(ec.generate_private_key(ec.SECP256K1())),
            keys.UnsupportedKeyError,
            "curve secp256k1",
            id="refuses ECDSA keys on curves other than P-256, P-384 and P-521",
        ),
    ],
)
def test_load_refuses_unusable_keys_with_a_sentence(
    data: bytes, kind: type[Exception], fragment: str
) -> None:
    with pytest.raises(kind) as caught:
        keys.load_private_key_pem(data, name="tls.key")
    error = caught.value
    assert isinstance(error, TLSMaterialError)
    assert error.reason is Reason.SECRET_CORRUPT
    assert error.message.startswith("tls.key ")
    assert error.message.endswith(".")
    assert fragment in error.message
    assert "BEGIN" not in error.message


def test_spki_fingerprint_is_sha256_of_the_subject_public_key_info() -> None:
    public = key(ECDSA_P256).public_key()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert keys.spki_fingerprint(public) == hashlib.sha256(der).hexdigest()


def test_spki_fingerprint_does_not_depend_on_the_private_key_encoding() -> None:
    original = key(RSA_2048)
    pkcs1 = keys.load_private_key_pem(keys.private_key_to_pem(original, KeyEncoding.PKCS1))
    pkcs8 = keys.load_private_key_pem(keys.private_key_to_pem(original, KeyEncoding.PKCS8))
    assert keys.spki_fingerprint(pkcs1.public_key()) == keys.spki_fingerprint(pkcs8.public_key())


@pytest.mark.parametrize(
    ("private_spec", "private_slot", "public_spec", "public_slot", "expected"),
    [
        pytest.param(ECDSA_P256, 0, ECDSA_P256, 0, True, id="an ECDSA key matches its own public key"),
        pytest.param(RSA_2048, 0, RSA_2048, 0, True, id="an RSA key matches its own public key"),
        pytest.param(ED25519, 0, ED25519, 0, True, id="an Ed25519 key matches its own public key"),
        pytest.param(MLDSA_65, 0, MLDSA_65, 0, True, id="an ML-DSA key matches its own public key"),
        pytest.param(ECDSA_P256, 0, ECDSA_P256, 1, False, id="an ECDSA key does not match another ECDSA key"),
        pytest.param(MLDSA_65, 0, MLDSA_65, 1, False, id="an ML-DSA key does not match another ML-DSA key"),
        pytest.param(MLDSA_44, 0, MLDSA_65, 0, False, id="an ML-DSA-44 key does not match an ML-DSA-65 key"),
        pytest.param(RSA_2048, 0, ECDSA_P256, 0, False, id="an RSA key does not match an ECDSA key"),
    ],
)
def test_keys_match(
    private_spec: KeySpec, private_slot: int, public_spec: KeySpec, public_slot: int, expected: bool
) -> None:
    assert (
        keys.keys_match(key(private_spec, private_slot), key(public_spec, public_slot).public_key())
        is expected
    )


def test_key_algorithm_of_refuses_unsupported_public_keys() -> None:
    with pytest.raises(keys.UnsupportedKeyError, match="holds a key of type Ed448"):
        keys.key_algorithm_of(ed448.Ed448PrivateKey.generate().public_key())
