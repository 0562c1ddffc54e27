"""Checks of the TLS material in an operator Secret, made with `cryptography` and the DER bytes directly."""

from __future__ import annotations

import base64

from cryptography import x509
from cryptography.hazmat.primitives import serialization

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

# id-ml-dsa-44/65/87: 2.16.840.1.101.3.4.3.{17,18,19}
MLDSA_OID_LAST_BYTE = {44: 0x11, 65: 0x12, 87: 0x13}


def key_matches_certificate(cert_pem: bytes, key_pem: bytes) -> bool:
    """True when `key_pem` is the private key of the first certificate in `cert_pem`."""
    try:
        leaf = x509.load_pem_x509_certificates(cert_pem)[0]
        key = serialization.load_pem_private_key(key_pem, None)
    except ValueError:
        return False
    return bool(key.public_key().public_bytes(*_SPKI) == leaf.public_key().public_bytes(*_SPKI))


def pem_der(pem: bytes) -> bytes:
    body = b"".join(line for line in pem.splitlines() if line and not line.startswith(b"-----"))
    return base64.b64decode(body)


def mldsa_seed_only_prefix(size: int) -> bytes:
    """PKCS#8 OneAsymmetricKey { version 0, AlgorithmIdentifier { id-ml-dsa-<size> }, privateKey OCTET
    STRING { [0] IMPLICIT OCTET STRING (32-byte seed) } }: RFC 9881's seed-only form, 54 bytes in all;
    this is all of it but the seed."""
    return bytes.fromhex("3034020100300b060960864801650304") + bytes(
        [0x03, MLDSA_OID_LAST_BYTE[size], 0x04, 0x22, 0x80, 0x20]
    )


def mldsa_seed_form_problem(key_pem: bytes, size: int) -> str | None:
    """None when `key_pem` is an unencrypted PKCS#8 ML-DSA-<size> key in RFC 9881's seed-only form, else
    what is wrong with it."""
    if not key_pem.startswith(b"-----BEGIN PRIVATE KEY-----"):
        return f"not an unencrypted PKCS#8 PEM: {key_pem[:30]!r}"
    der = pem_der(key_pem)
    prefix = mldsa_seed_only_prefix(size)
    if len(der) != len(prefix) + 32:
        return f"{len(der)} bytes: not the {len(prefix) + 32}-byte seed-only form"
    if not der.startswith(prefix):
        return f"prefix {der[: len(prefix)].hex()} is not {prefix.hex()}"
    return None
