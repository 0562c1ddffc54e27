"""Private keys: generate, encode, load, and describe them in the terms of ``api.models``.

The operator supports RSA (2048/3072/4096), ECDSA on the NIST curves P-256/P-384/P-521, Ed25519 and
ML-DSA-44/65/87 (FIPS 204). ML-DSA keys are always written as RFC 9881 seed-only PKCS#8; the library
cannot load the expanded or "both" forms, and :func:`load_private_key_pem` says so in a sentence a user
can act on rather than with a parser error.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import TypeAlias

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from mtls_operator.api.constants import Reason
from mtls_operator.api.models import KeyAlgorithm, KeyEncoding, KeySpec
from mtls_operator.api.tls import TLSMaterialError
from mtls_operator.pki.fingerprints import sha256_hex

PrivateKey: TypeAlias = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | mldsa.MLDSA44PrivateKey
    | mldsa.MLDSA65PrivateKey
    | mldsa.MLDSA87PrivateKey
)
PublicKey: TypeAlias = (
    rsa.RSAPublicKey
    | ec.EllipticCurvePublicKey
    | ed25519.Ed25519PublicKey
    | mldsa.MLDSA44PublicKey
    | mldsa.MLDSA65PublicKey
    | mldsa.MLDSA87PublicKey
)

RSA_PUBLIC_EXPONENT = 65537
RSA_SIZES = (2048, 3072, 4096)
_CURVES: dict[int, type[ec.EllipticCurve]] = {256: ec.SECP256R1, 384: ec.SECP384R1, 521: ec.SECP521R1}
_CURVE_SIZES = {"secp256r1": 256, "secp384r1": 384, "secp521r1": 521}

# id-ml-dsa-44/65/87 (NIST CSOR 2.16.840.1.101.3.4.3.17-19), as the DER body of the OBJECT IDENTIFIER.
_MLDSA_OIDS = {
    bytes.fromhex("608648016503040311"): 44,
    bytes.fromhex("608648016503040312"): 65,
    bytes.fromhex("608648016503040313"): 87,
}
_SUPPORTED = "the operator supports RSA, ECDSA, Ed25519 and ML-DSA keys."
_PEM_PRIVATE_KEY = re.compile(rb"-----BEGIN PRIVATE KEY-----(.*?)-----END PRIVATE KEY-----", re.DOTALL)


class UnsupportedKeyError(TLSMaterialError):
    """Well-formed key material of a kind the operator cannot use: an ML-DSA key in the expanded or
    "both" PKCS#8 form, or an algorithm outside RSA, NIST ECDSA, Ed25519 and ML-DSA."""


def generate_private_key(spec: KeySpec) -> PrivateKey:
    """A fresh private key for ``spec``; a size the algorithm lacks (which the spec parser already refuses)
    raises :class:`TLSMaterialError` with reason ``INVALID_SPEC``."""
    if spec.algorithm is KeyAlgorithm.ECDSA:
        curve = _CURVES.get(spec.size)
        if curve is None:
            raise TLSMaterialError(
                f"ECDSA keys come in sizes 256, 384 and 521, not {spec.size}.", Reason.INVALID_SPEC
            )
        return ec.generate_private_key(curve())
    if spec.algorithm is KeyAlgorithm.RSA:
        if spec.size not in RSA_SIZES:
            raise TLSMaterialError(
                f"RSA keys come in sizes 2048, 3072 and 4096, not {spec.size}.", Reason.INVALID_SPEC
            )
        return rsa.generate_private_key(public_exponent=RSA_PUBLIC_EXPONENT, key_size=spec.size)
    if spec.algorithm is KeyAlgorithm.ED25519:
        return ed25519.Ed25519PrivateKey.generate()
    if spec.size == 44:
        return mldsa.MLDSA44PrivateKey.generate()
    if spec.size == 65:
        return mldsa.MLDSA65PrivateKey.generate()
    if spec.size == 87:
        return mldsa.MLDSA87PrivateKey.generate()
    raise TLSMaterialError(
        f"ML-DSA keys come in parameter sets 44, 65 and 87, not {spec.size}.", Reason.INVALID_SPEC
    )


def private_key_to_pem(key: PrivateKey, encoding: KeyEncoding = KeyEncoding.PKCS8) -> bytes:
    """Unencrypted PEM. ``PKCS1`` means the "traditional" form (PKCS#1 for RSA, SEC1 for ECDSA) and is
    ignored for Ed25519 and ML-DSA, which only have PKCS#8 (seed-only for ML-DSA)."""
    traditional = encoding is KeyEncoding.PKCS1 and isinstance(
        key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    )
    fmt = serialization.PrivateFormat.TraditionalOpenSSL if traditional else serialization.PrivateFormat.PKCS8
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def load_private_key_pem(data: bytes, *, name: str = "The private key") -> PrivateKey:
    """Parse an unencrypted PEM private key of a supported algorithm.

    Raises :class:`TLSMaterialError` (reason ``SECRET_CORRUPT``) for anything unusable, and its subclass
    :class:`UnsupportedKeyError` for well-formed keys the operator cannot use. ``name`` begins the message
    (e.g. ``"tls.key"``); the message never contains the bytes.
    """
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise TLSMaterialError(
            f"{name} is encrypted with a password; the operator needs an unencrypted PEM private key."
        ) from None
    except UnsupportedAlgorithm:
        raise UnsupportedKeyError(
            f"{name} uses an algorithm the operator does not support (use RSA, ECDSA, Ed25519 or ML-DSA)."
        ) from None
    except ValueError:
        unsupported = _mldsa_form_problem(data, name)
        if unsupported is not None:
            raise unsupported from None
        raise TLSMaterialError(f"{name} is not a readable PEM private key.") from None
    supported = _as_supported(key)
    if supported is None:
        raise UnsupportedKeyError(f"{name} holds a key of type {_kind(key)}; {_SUPPORTED}")
    key_algorithm_of(supported, name=name)  # rejects curves other than P-256, P-384 and P-521
    return supported


def key_algorithm_of(
    key: PrivateKeyTypes | PublicKeyTypes, *, name: str = "The key"
) -> tuple[KeyAlgorithm, int]:
    """The algorithm and size as ``api.models`` counts them: RSA modulus bits, ECDSA curve bits, ML-DSA
    parameter set (44/65/87), 0 for Ed25519. Raises :class:`UnsupportedKeyError` for anything else."""
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return KeyAlgorithm.RSA, key.key_size
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        size = _CURVE_SIZES.get(key.curve.name)
        if size is None:
            raise UnsupportedKeyError(
                f"{name} is an ECDSA key on curve {key.curve.name}; the operator supports P-256, P-384 "
                "and P-521."
            )
        return KeyAlgorithm.ECDSA, size
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return KeyAlgorithm.ED25519, 0
    if isinstance(key, mldsa.MLDSA44PrivateKey | mldsa.MLDSA44PublicKey):
        return KeyAlgorithm.MLDSA, 44
    if isinstance(key, mldsa.MLDSA65PrivateKey | mldsa.MLDSA65PublicKey):
        return KeyAlgorithm.MLDSA, 65
    if isinstance(key, mldsa.MLDSA87PrivateKey | mldsa.MLDSA87PublicKey):
        return KeyAlgorithm.MLDSA, 87
    raise UnsupportedKeyError(f"{name} holds a key of type {_kind(key)}; {_SUPPORTED}")


def spki_fingerprint(public_key: PublicKeyTypes) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo, lower-case hex (stable across key encodings)."""
    return sha256_hex(_spki_der(public_key))


def keys_match(private_key: PrivateKeyTypes, public_key: PublicKeyTypes) -> bool:
    """Whether ``public_key`` is the public half of ``private_key``."""
    try:
        return _spki_der(private_key.public_key()) == _spki_der(public_key)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False


def _spki_der(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _as_supported(key: PrivateKeyTypes) -> PrivateKey | None:
    if isinstance(
        key,
        rsa.RSAPrivateKey
        | ec.EllipticCurvePrivateKey
        | ed25519.Ed25519PrivateKey
        | mldsa.MLDSA44PrivateKey
        | mldsa.MLDSA65PrivateKey
        | mldsa.MLDSA87PrivateKey,
    ):
        return key
    return None


def _kind(key: object) -> str:
    """A human name for a key type, e.g. ``DSA``, ``Ed448``, ``X25519``."""
    return type(key).__name__.removeprefix("_").removesuffix("PrivateKey").removesuffix("PublicKey")


def _mldsa_form_problem(data: bytes, name: str) -> UnsupportedKeyError | None:
    """If ``data`` is PKCS#8 PEM whose AlgorithmIdentifier is ML-DSA but which the library refused, say
    which form it is in and what to do; otherwise None (it is simply corrupt)."""
    match = _PEM_PRIVATE_KEY.search(data)
    if match is None:
        return None
    try:
        der = base64.b64decode(b"".join(match.group(1).split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    found = _pkcs8_mldsa(der)
    if found is None:
        return None
    size, form = found
    if form == "both":
        return UnsupportedKeyError(
            f"{name} holds an ML-DSA-{size} private key in the PKCS#8 'both' form (seed and expanded key), "
            "which the operator's crypto library cannot load; re-encode it in the RFC 9881 seed-only form, "
            "e.g. with 'openssl pkey -provparam ml-dsa.output_formats=seed-only'."
        )
    if form == "expanded":
        return UnsupportedKeyError(
            f"{name} holds an ML-DSA-{size} private key in the PKCS#8 expanded form, which the operator's "
            "crypto library cannot load and which has no seed to convert from; generate a new key that is "
            "stored in the RFC 9881 seed-only form."
        )
    return None  # a seed-only key the library refused is simply corrupt


def _pkcs8_mldsa(der: bytes) -> tuple[int, str] | None:
    """(parameter set, form) for an ML-DSA PKCS#8 OneAsymmetricKey, form being seed/expanded/both/unknown;
    None when the DER is not PKCS#8 with an ML-DSA AlgorithmIdentifier."""
    outer = _tlv(der, 0)
    if outer is None or outer[0] != 0x30:
        return None
    version = _tlv(der, outer[1], outer[2])
    if version is None or version[0] != 0x02:
        return None
    algorithm = _tlv(der, version[2], outer[2])
    if algorithm is None or algorithm[0] != 0x30:
        return None
    oid = _tlv(der, algorithm[1], algorithm[2])
    if oid is None or oid[0] != 0x06:
        return None
    size = _MLDSA_OIDS.get(der[oid[1] : oid[2]])
    if size is None:
        return None
    private = _tlv(der, algorithm[2], outer[2])
    inner = None if private is None or private[0] != 0x04 else _tlv(der, private[1], private[2])
    forms = {0x80: "seed", 0x04: "expanded", 0x30: "both"}
    return size, "unknown" if inner is None else forms.get(inner[0], "unknown")


def _tlv(der: bytes, pos: int, end: int | None = None) -> tuple[int, int, int] | None:
    """(tag, value start, value end) of the DER element at ``pos``, or None if it does not fit."""
    limit = len(der) if end is None else min(end, len(der))
    if pos + 2 > limit:
        return None
    tag, length = der[pos], der[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > limit:
            return None
        length = int.from_bytes(der[pos : pos + count], "big")
        pos += count
    if pos + length > limit:
        return None
    return tag, pos, pos + length
