"""pki.ca: the self-signed CA the operator creates, and every reason load_ca refuses a CA Secret."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import NameOID
from tests.unit.pki_factory import (
    ECDSA_P256,
    ECDSA_P384,
    ED25519,
    MLDSA_44,
    MLDSA_65,
    MLDSA_87,
    NOW,
    RSA_2048,
    build_cert,
    key,
    key_pem,
    key_usage,
    mldsa_pkcs8_pem,
    pem,
    self_signed_ca,
    with_changes,
)

from mtls_operator.api.constants import Reason
from mtls_operator.api.models import KeyEncoding, KeySpec, SelfSignedCASpec, Subject
from mtls_operator.api.tls import CAError
from mtls_operator.pki import ca as pki_ca
from mtls_operator.pki import keys
from mtls_operator.pki.fingerprints import certificate_fingerprint

CA_SPECS = (ECDSA_P256, ECDSA_P384, ED25519, RSA_2048, MLDSA_44, MLDSA_65, MLDSA_87)


def ca_secret(spec: KeySpec = ECDSA_P256, slot: int = 3, **cert_options: object) -> dict[str, bytes]:
    """tls.crt/tls.key for a CA certificate built with ``cert_options`` (see ``build_cert``)."""
    private = key(spec, slot)
    cert = build_cert(private, common_name="test CA", **cert_options)  # type: ignore[arg-type]
    return {"tls.crt": pem(cert), "tls.key": keys.private_key_to_pem(private)}


def _valid() -> dict[str, bytes]:
    return ca_secret(key_usage=key_usage(cert_sign=True))


def _intermediate_without_its_root() -> dict[str, bytes]:
    root, other_root = self_signed_ca(slot=0), self_signed_ca(slot=1)
    inter_key = key(ECDSA_P256, 8)
    inter = build_cert(inter_key, common_name="intermediate", issuer=(root.certificate, root.private_key))
    return {
        "tls.crt": pem(inter),
        "tls.key": keys.private_key_to_pem(inter_key),
        "ca.crt": other_root.root_pem,
    }


def _chain_out_of_order() -> dict[str, bytes]:
    root = self_signed_ca(slot=0)
    inter_key = key(ECDSA_P256, 8)
    inter = build_cert(inter_key, common_name="intermediate", issuer=(root.certificate, root.private_key))
    unrelated = self_signed_ca(slot=1).certificate
    return {"tls.crt": pem(inter, unrelated), "tls.key": keys.private_key_to_pem(inter_key)}


def _dsa_key() -> bytes:
    return dsa.generate_private_key(2048).private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


REFUSALS: list[object] = [
    pytest.param(
        lambda: {"tls.key": key_pem(ECDSA_P256)},
        Reason.CA_INVALID,
        "tls.crt is missing: ",
        id="rejects a CA secret without tls.crt",
    ),
    pytest.param(
        lambda: with_changes(_valid(), tls_key=None),
        Reason.CA_INVALID,
        "tls.key is missing: ",
        id="rejects a CA secret without tls.key",
    ),
    pytest.param(
        lambda: with_changes(_valid(), tls_crt=b""),
        Reason.CA_INVALID,
        "tls.crt is missing: ",
        id="rejects a CA secret whose tls.crt is empty",
    ),
    pytest.param(
        lambda: with_changes(_valid(), tls_crt=b"\x00\xffnot a certificate"),
        Reason.CA_INVALID,
        "tls.crt does not hold readable PEM certificates.",
        id="rejects garbage in tls.crt",
    ),
    pytest.param(
        lambda: with_changes(_valid(), tls_key=b"-----BEGIN PRIVATE KEY-----\nAA==\n"),
        Reason.CA_INVALID,
        "tls.key is not a readable PEM private key.",
        id="rejects garbage in tls.key",
    ),
    pytest.param(
        lambda: ca_secret(is_ca=False),
        Reason.CA_NOT_CA,
        "tls.crt is not a CA certificate: its basicConstraints say CA:FALSE.",
        id="rejects a certificate whose basicConstraints say CA:FALSE",
    ),
    pytest.param(
        lambda: ca_secret(is_ca=None),
        Reason.CA_NOT_CA,
        "tls.crt is not a CA certificate: it has no basicConstraints extension.",
        id="rejects a certificate without basicConstraints",
    ),
    pytest.param(
        lambda: ca_secret(key_usage=key_usage(cert_sign=False)),
        Reason.CA_MISSING_KEY_CERT_SIGN,
        "tls.crt cannot sign certificates: its keyUsage extension lacks keyCertSign.",
        id="rejects a CA whose keyUsage lacks keyCertSign",
    ),
    pytest.param(
        lambda: with_changes(_valid(), tls_key=key_pem(ECDSA_P256, 4)),
        Reason.CA_KEY_MISMATCH,
        "tls.key is not the private key of the certificate in tls.crt.",
        id="rejects a CA whose key does not match its certificate",
    ),
    pytest.param(
        lambda: with_changes(_valid(), tls_key=key_pem(MLDSA_65)),
        Reason.CA_KEY_MISMATCH,
        "tls.key is not the private key",
        id="rejects a CA whose key is of another algorithm",
    ),
    pytest.param(
        lambda: ca_secret(not_before=NOW - timedelta(days=30), not_after=NOW - timedelta(seconds=1)),
        Reason.CA_EXPIRED,
        "tls.crt expired at ",
        id="rejects an expired CA",
    ),
    pytest.param(
        lambda: ca_secret(not_before=NOW + timedelta(hours=1)),
        Reason.CA_NOT_YET_VALID,
        "tls.crt is not valid yet: its validity starts at ",
        id="rejects a CA that is not valid yet",
    ),
    pytest.param(
        lambda: with_changes(ca_secret(MLDSA_65, slot=0), tls_key=mldsa_pkcs8_pem(65, "both")),
        Reason.CA_KEY_UNSUPPORTED,
        "tls.key holds an ML-DSA-65 private key in the PKCS#8 'both' form",
        id="rejects an ML-DSA CA key in the seed-and-expanded form with advice",
    ),
    pytest.param(
        lambda: with_changes(ca_secret(MLDSA_87, slot=0), tls_key=mldsa_pkcs8_pem(87, "expanded")),
        Reason.CA_KEY_UNSUPPORTED,
        "tls.key holds an ML-DSA-87 private key in the PKCS#8 expanded form",
        id="rejects an ML-DSA CA key in the expanded form with advice",
    ),
    pytest.param(
        lambda: with_changes(_valid(), tls_key=_dsa_key()),
        Reason.CA_KEY_UNSUPPORTED,
        "tls.key holds a key of type DSA",
        id="rejects a DSA CA key as unsupported",
    ),
    pytest.param(
        _chain_out_of_order,
        Reason.CA_INVALID,
        "tls.crt lists its certificates out of order",
        id="rejects a tls.crt whose chain is out of order",
    ),
    pytest.param(
        _intermediate_without_its_root,
        Reason.CA_INVALID,
        "ca.crt does not hold the certificate that issued",
        id="rejects an intermediate whose ca.crt holds another root",
    ),
    pytest.param(
        lambda: {**_intermediate_without_its_root(), "ca.crt": b"junk"},
        Reason.CA_INVALID,
        "ca.crt does not hold readable PEM certificates.",
        id="rejects an intermediate with garbage in ca.crt",
    ),
]


@pytest.mark.parametrize(("make_data", "reason", "message"), REFUSALS)
def test_load_ca_refuses(make_data: Callable[[], dict[str, bytes]], reason: Reason, message: str) -> None:
    with pytest.raises(CAError) as caught:
        pki_ca.load_ca(make_data(), NOW)
    assert caught.value.reason is reason
    assert caught.value.message.startswith(message)
    assert caught.value.message.endswith(".")
    assert "BEGIN" not in caught.value.message


@pytest.mark.parametrize(
    "spec", [pytest.param(s, id=f"creates a self-signed {s.label} CA") for s in CA_SPECS]
)
def test_create_self_signed_ca(spec: KeySpec) -> None:
    subject = Subject(organizations=("Acme",), countries=("DE",))
    ca_spec = SelfSignedCASpec(
        secret_name="mesh-ca",
        common_name="Mesh CA",
        subject=subject,
        duration=timedelta(days=30),
        private_key=spec,
    )
    key_pem_bytes, cert_pem = pki_ca.create_self_signed_ca(ca_spec, NOW)
    assert key_pem_bytes.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    ca = pki_ca.load_ca({"tls.crt": cert_pem, "tls.key": key_pem_bytes}, NOW)
    cert = ca.certificate

    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value == x509.BasicConstraints(ca=True, path_length=None)
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert (usage.value.key_cert_sign, usage.value.crl_sign, usage.value.digital_signature) == (
        True,
        True,
        True,
    )
    assert not usage.value.key_encipherment
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.key_identifier
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Mesh CA"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Acme"
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)

    assert cert.not_valid_before_utc == NOW.replace(microsecond=0)
    assert cert.not_valid_after_utc == NOW.replace(microsecond=0) + timedelta(days=30)
    assert ca.root == cert
    assert ca.intermediates == ()
    assert ca.issuer_chain == ()
    assert ca.root_pem == ca.chain_pem == cert_pem
    assert (ca.facts.key_algorithm, ca.facts.key_size) == (spec.algorithm, spec.size)
    assert ca.facts.fingerprint == ca.facts.root_fingerprint == certificate_fingerprint(cert)
    assert ca.facts.subject == "CN=Mesh CA,O=Acme,C=DE"


def test_self_signed_ca_key_is_pkcs8_even_when_pkcs1_is_asked() -> None:
    spec = SelfSignedCASpec(
        secret_name="ca", common_name="CA", private_key=KeySpec(encoding=KeyEncoding.PKCS1)
    )
    key_pem_bytes, _ = pki_ca.create_self_signed_ca(spec, NOW)
    assert key_pem_bytes.startswith(b"-----BEGIN PRIVATE KEY-----\n")


def test_ca_key_pair_repr_leaves_out_the_private_key() -> None:
    assert "private_key" not in repr(self_signed_ca())


def test_accepts_a_ca_without_key_usage() -> None:
    ca = pki_ca.load_ca(ca_secret(), NOW)
    assert ca.root == ca.certificate


def _two_level() -> tuple[x509.Certificate, x509.Certificate, x509.Certificate, bytes]:
    """root -> inter1 -> inter2; returns (root, inter1, inter2, inter2's key PEM)."""
    root = self_signed_ca(slot=0)
    inter1_key, inter2_key = key(ECDSA_P256, 10), key(MLDSA_65, 11)
    inter1 = build_cert(inter1_key, common_name="inter1", issuer=(root.certificate, root.private_key))
    inter2 = build_cert(inter2_key, common_name="inter2", issuer=(inter1, inter1_key))
    return root.certificate, inter1, inter2, keys.private_key_to_pem(inter2_key)


@pytest.mark.parametrize(
    ("layout", "expected_intermediates"),
    [
        pytest.param("ca.crt holds the root", 1, id="finds the root in ca.crt for an intermediate CA"),
        pytest.param("tls.crt ends with the root", 1, id="takes a self-signed root at the end of tls.crt"),
        pytest.param(
            "no root anywhere", 0, id="takes the top of tls.crt as the anchor when there is no root"
        ),
    ],
)
def test_intermediate_ca_chains(layout: str, expected_intermediates: int) -> None:
    root, inter1, inter2, inter2_key = _two_level()
    data = {"tls.crt": pem(inter2, inter1), "tls.key": inter2_key}
    if layout == "ca.crt holds the root":
        data["ca.crt"] = pem(root)
    elif layout == "tls.crt ends with the root":
        data["tls.crt"] = pem(inter2, inter1, root)
    ca = pki_ca.load_ca(data, NOW)
    assert ca.certificate == inter2
    expected_root = inter1 if layout == "no root anywhere" else root
    assert ca.root == expected_root
    assert len(ca.intermediates) == expected_intermediates
    assert ca.issuer_chain == (inter2, inter1)[: 1 + expected_intermediates]
    assert ca.root_pem == pem(expected_root)
    assert ca.facts.root_fingerprint == certificate_fingerprint(expected_root)
    assert ca.chain_pem == pem(inter2, *ca.intermediates)
