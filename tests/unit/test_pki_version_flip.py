"""A certificate whose version field is not 1, 2 or 3: found by test_pki_fuzz's bit flips (now and then),
pinned here deterministically so that it does not depend on the fuzzer's luck."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from tests.unit.pki_factory import self_signed_ca

from mtls_operator.api.errors import TLSMaterialError
from mtls_operator.pki.certs import parse_certificate_pem

V3 = bytes.fromhex("a003020102")  # [0] EXPLICIT INTEGER 2: the version field of an X.509 v3 certificate


def with_version(number: int) -> bytes:
    der = self_signed_ca().certificate.public_bytes(Encoding.DER)
    assert der.count(V3) == 1
    der = der.replace(V3, V3[:-1] + bytes([number]))
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = b"\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return b"-----BEGIN CERTIFICATE-----\n" + lines + b"\n-----END CERTIFICATE-----\n"


def test_a_certificate_with_an_invalid_version_is_unreadable_material() -> None:
    with pytest.raises(TLSMaterialError):
        parse_certificate_pem(with_version(10), name="tls.crt")
