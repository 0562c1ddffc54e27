"""Test material for the pki tests: keys cached per process (RSA is slow), and a certificate builder that
can make the broken CAs and leaves the production code must refuse."""

from __future__ import annotations

import base64
import functools
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from dilithium_py.ml_dsa import ML_DSA_44, ML_DSA_65, ML_DSA_87

from mtls_operator.api.models import (
    CertificateSpec,
    IssuerRef,
    KeyAlgorithm,
    KeySpec,
    SelfSignedCASpec,
)
from mtls_operator.pki import ca as pki_ca
from mtls_operator.pki import certs, keys

# Deliberately not on a whole second, so truncation is visible.
NOW = datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)

ECDSA_P256 = KeySpec(KeyAlgorithm.ECDSA, 256)
ECDSA_P384 = KeySpec(KeyAlgorithm.ECDSA, 384)
ECDSA_P521 = KeySpec(KeyAlgorithm.ECDSA, 521)
ED25519 = KeySpec(KeyAlgorithm.ED25519, 0)
RSA_2048 = KeySpec(KeyAlgorithm.RSA, 2048)
MLDSA_44 = KeySpec(KeyAlgorithm.MLDSA, 44)
MLDSA_65 = KeySpec(KeyAlgorithm.MLDSA, 65)
MLDSA_87 = KeySpec(KeyAlgorithm.MLDSA, 87)

# The conformance set: every algorithm a leaf or a CA may use.
CONFORMANCE_KEYS = (ECDSA_P256, ECDSA_P384, ED25519, RSA_2048, MLDSA_44, MLDSA_65, MLDSA_87)


@functools.cache
def key(spec: KeySpec, slot: int = 0) -> keys.PrivateKey:
    """A private key for ``spec``, the same one for the same ``slot`` for the whole test session."""
    return keys.generate_private_key(spec)


def key_pem(spec: KeySpec, slot: int = 0) -> bytes:
    return keys.private_key_to_pem(key(spec, slot))


def pem(*certificates: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(Encoding.PEM) for c in certificates)


@functools.cache
def self_signed_ca(spec: KeySpec = ECDSA_P256, days: int = 365, slot: int = 0) -> pki_ca.CAKeyPair:
    """A root CA made by the production code, loaded back through :func:`load_ca`."""
    key_pem_bytes, cert_pem = pki_ca.create_self_signed_ca(
        SelfSignedCASpec(
            secret_name="ca",
            common_name=f"{spec.label} root {slot}",
            duration=timedelta(days=days),
            private_key=spec,
        ),
        NOW,
    )
    return pki_ca.load_ca({"tls.crt": cert_pem, "tls.key": key_pem_bytes}, NOW)


def leaf_spec(**overrides: object) -> CertificateSpec:
    fields: dict[str, object] = {
        "secret_name": "web-tls",
        "issuer_ref": IssuerRef("mesh-ca"),
        "common_name": "web",
        "dns_names": ("web.default.svc",),
    }
    fields.update(overrides)
    return CertificateSpec(**fields)  # type: ignore[arg-type]


def build_cert(
    subject_key: keys.PrivateKey,
    *,
    common_name: str = "test",
    issuer: tuple[x509.Certificate, keys.PrivateKey] | None = None,
    is_ca: bool | None = True,
    key_usage: x509.KeyUsage | None = None,
    not_before: datetime = NOW - timedelta(days=1),
    not_after: datetime = NOW + timedelta(days=365),
    dns_names: tuple[str, ...] = (),
) -> x509.Certificate:
    """A certificate built without the production code, so tests can make ones it would never make.

    ``is_ca=None`` leaves basicConstraints out; ``issuer=None`` self-signs.
    """
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    issuer_name, signer = (name, subject_key) if issuer is None else (issuer[0].subject, issuer[1])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key.public_key()), critical=False)
    )
    if is_ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    if dns_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False
        )
    digest = hashes.SHA256() if isinstance(signer, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) else None
    return builder.sign(signer, digest)


def key_usage(*, cert_sign: bool, digital_signature: bool = True) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


@functools.cache
def intermediate_ca(root: pki_ca.CAKeyPair, spec: KeySpec = ECDSA_P256, slot: int = 7) -> pki_ca.CAKeyPair:
    """An intermediate CA signed by ``root``, loaded with ``ca.crt`` = the root."""
    inter_key = key(spec, slot)
    cert = build_cert(
        inter_key,
        common_name="intermediate",
        issuer=(root.certificate, root.private_key),
        key_usage=key_usage(cert_sign=True),
    )
    return pki_ca.load_ca(
        {"tls.crt": pem(cert), "tls.key": keys.private_key_to_pem(inter_key), "ca.crt": root.root_pem}, NOW
    )


def issue(
    ca: pki_ca.CAKeyPair,
    leaf_key_spec: KeySpec = ECDSA_P256,
    *,
    slot: int = 0,
    ca_crt: bytes | None = None,
    **spec: object,
) -> dict[str, bytes]:
    """The data of a healthy TLS Secret issued by ``ca``."""
    leaf_key = key(leaf_key_spec, slot)
    cert = certs.sign_leaf(leaf_spec(**spec), leaf_key.public_key(), ca, NOW)
    return {
        "tls.crt": certs.chain_pem(cert, ca),
        "tls.key": keys.private_key_to_pem(leaf_key),
        "ca.crt": ca.root_pem if ca_crt is None else ca_crt,
    }


def with_changes(data: Mapping[str, bytes], **changes: bytes | None) -> dict[str, bytes]:
    """``data`` with keys replaced (``tls_crt=...``) or removed (``=None``)."""
    out = dict(data)
    for name, value in changes.items():
        secret_key = name.replace("_", ".")
        if value is None:
            out.pop(secret_key, None)
        else:
            out[secret_key] = value
    return out


def _der(tag: int, body: bytes) -> bytes:
    if len(body) < 0x80:
        return bytes([tag, len(body)]) + body
    size = len(body).to_bytes((len(body).bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def mldsa_pkcs8_pem(size: int, form: str) -> bytes:
    """An RFC 9881 PKCS#8 ML-DSA key in the ``expanded`` or ``both`` form (which the library cannot load),
    built from the seed of ``key(ML-DSA-size)`` with dilithium-py."""
    seed = key(KeySpec(KeyAlgorithm.MLDSA, size)).private_bytes_raw()  # type: ignore[union-attr]
    _, expanded = {44: ML_DSA_44, 65: ML_DSA_65, 87: ML_DSA_87}[size].key_derive(seed)
    oid = {44: "608648016503040311", 65: "608648016503040312", 87: "608648016503040313"}[size]
    inner = (
        _der(0x04, expanded) if form == "expanded" else _der(0x30, _der(0x04, seed) + _der(0x04, expanded))
    )
    der = _der(0x30, _der(0x02, b"\x00") + _der(0x30, _der(0x06, bytes.fromhex(oid))) + _der(0x04, inner))
    body = base64.b64encode(der)
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"-----BEGIN PRIVATE KEY-----\n" + b"\n".join(lines) + b"\n-----END PRIVATE KEY-----\n"
