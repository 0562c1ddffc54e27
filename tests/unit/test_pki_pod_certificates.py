"""pki.issuance for pod certificates: the key a PodCertificateRequest asks to certify (stub CSR or PKIX),
and a leaf signed for it that kube-apiserver would accept (its key, its times, the chain, revocation URLs)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa, x25519
from cryptography.x509.oid import AuthorityInformationAccessOID
from tests.unit.pki_factory import ECDSA_P256, MLDSA_65, NOW, intermediate_ca, self_signed_ca

from mtls_operator.api.models import CertificateSpec, IssuerRef, KeyAlgorithm
from mtls_operator.api.tls import TLSMaterialError
from mtls_operator.pki.issuance import issue_for_public_key, requested_key_algorithm
from mtls_operator.pki.keys import UnsupportedKeyError

SPIFFE = "spiffe://cluster.local/ns/team-a/sa/web"
SPEC = CertificateSpec(
    secret_name="",
    issuer_ref=IssuerRef("mesh"),
    uris=(SPIFFE,),
    duration=timedelta(hours=1),
)


def csr(key: object) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    digest = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, digest).public_bytes(serialization.Encoding.DER)  # type: ignore[arg-type]


def pkix(key: object) -> bytes:
    return key.public_key().public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


KUBELET_KEYS = [
    pytest.param(lambda: rsa.generate_private_key(65537, 3072), (KeyAlgorithm.RSA, 3072), id="RSA3072"),
    pytest.param(lambda: ec.generate_private_key(ec.SECP256R1()), (KeyAlgorithm.ECDSA, 256), id="ECDSAP256"),
    pytest.param(lambda: ec.generate_private_key(ec.SECP384R1()), (KeyAlgorithm.ECDSA, 384), id="ECDSAP384"),
    pytest.param(lambda: ec.generate_private_key(ec.SECP521R1()), (KeyAlgorithm.ECDSA, 521), id="ECDSAP521"),
    pytest.param(ed25519.Ed25519PrivateKey.generate, (KeyAlgorithm.ED25519, 0), id="ED25519"),
]


@pytest.mark.parametrize(("make", "expected"), KUBELET_KEYS)
def test_every_kubelet_key_type_is_read_from_the_stub_csr_and_from_pkix(
    make: object, expected: object
) -> None:
    key = make()  # type: ignore[operator]
    assert requested_key_algorithm(csr(key), b"") == expected
    assert requested_key_algorithm(b"", pkix(key)) == expected


@pytest.mark.parametrize(
    ("stub", "public", "error"),
    [
        pytest.param(b"", b"", TLSMaterialError, id="refuses a request with no key at all"),
        pytest.param(b"\x30\x03junk", b"", TLSMaterialError, id="refuses a stub CSR that is not DER"),
        pytest.param(
            b"", pkix(x25519.X25519PrivateKey.generate()), UnsupportedKeyError, id="refuses an X25519 key"
        ),
        pytest.param(
            b"",
            pkix(dsa.generate_private_key(2048)),
            UnsupportedKeyError,
            id="refuses a DSA key",
        ),
        pytest.param(
            csr(ec.generate_private_key(ec.SECP256K1())), b"", UnsupportedKeyError, id="refuses secp256k1"
        ),
    ],
)
def test_keys_that_cannot_be_certified_are_refused_with_a_sentence(
    stub: bytes, public: bytes, error: type[Exception]
) -> None:
    with pytest.raises(error) as refused:
        requested_key_algorithm(stub, public)
    assert refused.type is error and str(refused.value).endswith(".")


@pytest.mark.parametrize("ca_key", [ECDSA_P256, MLDSA_65], ids=["ECDSA-P256 CA", "ML-DSA-65 CA"])
def test_the_leaf_is_issued_for_the_requesters_key_with_the_planned_times(ca_key: object) -> None:
    ca = self_signed_ca(ca_key)  # type: ignore[arg-type]
    requester = ec.generate_private_key(ec.SECP256R1())
    not_before = (NOW - timedelta(minutes=3)).replace(microsecond=0)
    issued = issue_for_public_key(
        SPEC,
        csr(requester),
        b"",
        ca,
        not_before,
        crl_url="http://ca.example/mesh.crl",
        ocsp_url="http://ca.example/ocsp",
    )
    (leaf,) = x509.load_pem_x509_certificates(issued.chain_pem)  # a root CA: the leaf alone
    assert pkix(requester) == leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    leaf.verify_directly_issued_by(ca.certificate)
    assert (leaf.not_valid_before_utc, leaf.not_valid_after_utc) == (
        not_before,
        not_before + timedelta(hours=1),
    )
    assert (issued.leaf.not_before, issued.leaf.not_after) == (
        leaf.not_valid_before_utc,
        leaf.not_valid_after_utc,
    )
    assert issued.leaf.uris == (SPIFFE,) and issued.leaf.serial_number == format(leaf.serial_number, "x")
    points = leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert points[0].full_name == [x509.UniformResourceIdentifier("http://ca.example/mesh.crl")]
    access = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [(a.access_method, a.access_location.value) for a in access] == [
        (AuthorityInformationAccessOID.OCSP, "http://ca.example/ocsp")
    ]


def test_the_chain_carries_the_intermediates_after_the_leaf() -> None:
    root = self_signed_ca(ECDSA_P256)
    inter = intermediate_ca(root)
    issued = issue_for_public_key(SPEC, csr(ed25519.Ed25519PrivateKey.generate()), b"", inter, NOW)
    leaf, *rest = x509.load_pem_x509_certificates(issued.chain_pem)
    assert rest == [inter.certificate]
    leaf.verify_directly_issued_by(inter.certificate)
