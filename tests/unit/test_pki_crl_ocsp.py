"""pki.crl, pki.ocsp and pki.extensions: revocation data signed by every CA algorithm, read back by
cryptography and, for the classical algorithms, by the openssl command line (OpenSSL 3.0 lacks ML-DSA)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID
from hypothesis import given, settings
from hypothesis import strategies as hst
from tests.unit.pki_factory import (
    CONFORMANCE_KEYS,
    ECDSA_P256,
    ED25519,
    MLDSA_65,
    NOW,
    RSA_2048,
    build_cert,
    key,
    pem,
    self_signed_ca,
)

from mtls_operator.api.constants import Reason
from mtls_operator.api.models import KeySpec
from mtls_operator.api.tls import CAError, TLSMaterialError
from mtls_operator.pki import ca as pki_ca
from mtls_operator.pki import certs, keys
from mtls_operator.pki.crl import RevocationError, RevokedEntry, build_crl, build_crl_pem
from mtls_operator.pki.extensions import revocation_extensions
from mtls_operator.pki.keys import PublicKey
from mtls_operator.pki.ocsp import UNKNOWN, CertStatus, issuer_hashes, respond

CLASSICAL = (ECDSA_P256, ED25519, RSA_2048)
WHOLE = NOW.replace(microsecond=0)

REVOKED = (
    RevokedEntry(0x3, NOW - timedelta(hours=2), "keyCompromise"),
    RevokedEntry(0x1, NOW - timedelta(days=1), "superseded"),
    RevokedEntry(0x2, NOW - timedelta(hours=5)),
    RevokedEntry(0x3, NOW - timedelta(hours=1), "cessationOfOperation"),  # a later duplicate of 0x3
)


def verify(public_key: PublicKey, signature: bytes, data: bytes, digest: hashes.HashAlgorithm | None) -> None:
    """Verify a signature the way a relying party does for the CA's algorithm."""
    if isinstance(public_key, rsa.RSAPublicKey):
        assert digest is not None
        public_key.verify(signature, data, padding.PKCS1v15(), digest)
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        assert digest is not None
        public_key.verify(signature, data, ec.ECDSA(digest))
    else:  # Ed25519 and ML-DSA sign the whole message
        public_key.verify(signature, data)


# ---------------------------------------------------------------------------------------------------------
# CRL


@pytest.mark.parametrize(
    "spec", CONFORMANCE_KEYS, ids=lambda s: f"a {s.label} CA signs a CRL that lists its serials"
)
def test_crl_lists_revoked_serials(spec: KeySpec) -> None:
    ca = self_signed_ca(spec)
    crl = x509.load_der_x509_crl(build_crl(ca, REVOKED, NOW, timedelta(days=1), crl_number=7))

    assert crl.is_signature_valid(ca.private_key.public_key())
    assert crl.issuer == ca.certificate.subject
    assert crl.last_update_utc == WHOLE
    assert crl.next_update_utc == WHOLE + timedelta(days=1)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 7
    assert (
        crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        == ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    )
    assert [r.serial_number for r in crl] == [1, 2, 3]
    entry = crl.get_revoked_certificate_by_serial_number(3)
    assert entry is not None
    assert entry.revocation_date_utc == (NOW - timedelta(hours=2)).replace(microsecond=0)
    assert (
        entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        is x509.ReasonFlags.key_compromise
    )


def test_crl_leaves_out_the_reason_code_for_unspecified() -> None:
    crl = x509.load_der_x509_crl(build_crl(self_signed_ca(ECDSA_P256), REVOKED, NOW, timedelta(hours=6), 1))
    entry = crl.get_revoked_certificate_by_serial_number(2)
    assert entry is not None
    assert len(entry.extensions) == 0


def test_empty_crl_is_valid() -> None:
    ca = self_signed_ca(ECDSA_P256)
    crl = x509.load_der_x509_crl(build_crl(ca, (), NOW, timedelta(hours=6), 0))
    assert len(crl) == 0
    assert crl.is_signature_valid(ca.private_key.public_key())


def test_crl_pem_variant() -> None:
    ca = self_signed_ca(ED25519)
    body = build_crl_pem(ca, REVOKED, NOW, timedelta(days=1), 2)
    assert body.startswith(b"-----BEGIN X509 CRL-----")
    assert x509.load_pem_x509_crl(body).is_signature_valid(ca.private_key.public_key())


def test_crl_is_deterministic_for_the_same_input_except_for_randomised_signatures() -> None:
    ca = self_signed_ca(ED25519)  # Ed25519 signatures are deterministic, so the bytes must be equal
    assert build_crl(ca, REVOKED, NOW, timedelta(days=1), 3) == build_crl(
        ca, tuple(reversed(REVOKED)), NOW, timedelta(days=1), 3
    )


@pytest.mark.parametrize(
    ("revoked", "next_update", "number", "message"),
    [
        pytest.param(
            (RevokedEntry(1, NOW, "stolen"),),
            timedelta(days=1),
            1,
            "Revocation reason 'stolen' is not one of",
            id="refuses an unknown reason",
        ),
        pytest.param(
            (RevokedEntry(1, NOW, "removeFromCRL"),),
            timedelta(days=1),
            1,
            "Revocation reason 'removeFromCRL'",
            id="refuses removeFromCRL, which only delta CRLs may carry",
        ),
        pytest.param(
            (RevokedEntry(1, datetime(2026, 1, 1)),),
            timedelta(days=1),
            1,
            "Serial 1 has a revocation time without",
            id="refuses a naive revocation time",
        ),
        pytest.param(
            (RevokedEntry(0, NOW),),
            timedelta(days=1),
            1,
            "Certificate serial numbers are positive",
            id="refuses a serial of zero",
        ),
        pytest.param(
            (), timedelta(0), 1, "A CRL's nextUpdate must lie after", id="refuses a nextUpdate of now"
        ),
        pytest.param(
            (), timedelta(days=1), -1, "The CRL number must not be negative", id="refuses a negative number"
        ),
    ],
)
def test_crl_refuses_bad_input(
    revoked: tuple[RevokedEntry, ...], next_update: timedelta, number: int, message: str
) -> None:
    with pytest.raises(RevocationError) as caught:
        build_crl(self_signed_ca(ECDSA_P256), revoked, NOW, next_update, number)
    assert caught.value.message.startswith(message)


def test_crl_refuses_a_ca_without_crl_sign() -> None:
    ca_key = key(ECDSA_P256, 11)
    usage = x509.KeyUsage(True, False, False, False, False, True, False, False, False)
    cert = build_cert(ca_key, common_name="no crl sign", key_usage=usage)
    ca = pki_ca.load_ca({"tls.crt": pem(cert), "tls.key": keys.private_key_to_pem(ca_key)}, NOW)
    with pytest.raises(CAError) as caught:
        build_crl(ca, (), NOW, timedelta(days=1), 1)
    assert "lacks cRLSign" in caught.value.message


@pytest.mark.parametrize("spec", CLASSICAL, ids=lambda s: f"openssl reads a {s.label} CRL and verifies it")
def test_openssl_reads_the_crl(spec: KeySpec, tmp_path: Path, openssl: str) -> None:
    ca = self_signed_ca(spec)
    (tmp_path / "crl.der").write_bytes(build_crl(ca, REVOKED, NOW, timedelta(days=1), 42))
    (tmp_path / "ca.pem").write_bytes(ca.root_pem)
    done = subprocess.run(
        [openssl, "crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text", "-CAfile", "ca.pem"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    text = done.stdout + done.stderr
    assert "verify OK" in text
    for serial in ("01", "02", "03"):
        assert f"Serial Number: {serial}" in text
    assert "Key Compromise" in text
    assert "Superseded" in text
    assert "X509v3 CRL Number: \n                42" in text


# ---------------------------------------------------------------------------------------------------------
# OCSP


def leaf_of(ca: pki_ca.CAKeyPair, slot: int = 0) -> x509.Certificate:
    from tests.unit.pki_factory import leaf_spec

    return certs.sign_leaf(leaf_spec(), key(ECDSA_P256, slot).public_key(), ca, NOW, serial=0x1234 + slot)


def request_for(leaf: x509.Certificate, issuer: x509.Certificate, *, nonce: bytes | None = None) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(Encoding.DER)


REVOKED_1234 = RevokedEntry(0x1234, NOW - timedelta(hours=3), "keyCompromise")
LOOKUPS: dict[str, Callable[[int], CertStatus]] = {
    "good": lambda serial: None,
    "revoked": lambda serial: REVOKED_1234 if serial == 0x1234 else None,
    "unknown": lambda serial: UNKNOWN,
}
STATUSES = {
    "good": ocsp.OCSPCertStatus.GOOD,
    "revoked": ocsp.OCSPCertStatus.REVOKED,
    "unknown": ocsp.OCSPCertStatus.UNKNOWN,
}


@pytest.mark.parametrize("answer", ["good", "revoked", "unknown"])
@pytest.mark.parametrize("spec", CONFORMANCE_KEYS, ids=lambda s: s.label)
def test_ocsp_answers_good_revoked_and_unknown(spec: KeySpec, answer: str) -> None:
    ca = self_signed_ca(spec)
    leaf = leaf_of(ca)
    response = ocsp.load_der_ocsp_response(
        respond(request_for(leaf, ca.certificate, nonce=b"n" * 16), ca, LOOKUPS[answer], NOW)
    )

    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert response.certificate_status is STATUSES[answer]
    assert response.serial_number == leaf.serial_number
    assert (response.issuer_name_hash, response.issuer_key_hash) == issuer_hashes(ca.certificate)
    assert response.this_update_utc == WHOLE
    assert response.next_update_utc == WHOLE + timedelta(hours=1)
    assert response.responder_key_hash == (
        ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    )
    assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"n" * 16
    verify(
        ca.private_key.public_key(),
        response.signature,
        response.tbs_response_bytes,
        response.signature_hash_algorithm,
    )
    if answer == "revoked":
        assert response.revocation_time_utc == REVOKED_1234.revoked_at.replace(microsecond=0)
        assert response.revocation_reason is x509.ReasonFlags.key_compromise
    else:
        assert response.revocation_time_utc is None


def test_ocsp_signature_does_not_verify_under_another_ca() -> None:
    ca, other = self_signed_ca(ECDSA_P256), self_signed_ca(ECDSA_P256, slot=1)
    response = ocsp.load_der_ocsp_response(
        respond(request_for(leaf_of(ca), ca.certificate), ca, LOOKUPS["good"], NOW)
    )
    with pytest.raises(InvalidSignature):
        verify(
            other.private_key.public_key(), response.signature, response.tbs_response_bytes, hashes.SHA256()
        )


def test_ocsp_revoked_with_unspecified_reason_carries_no_reason() -> None:
    ca = self_signed_ca(ECDSA_P256)
    entry = RevokedEntry(0x1234, NOW - timedelta(hours=1))
    response = ocsp.load_der_ocsp_response(
        respond(request_for(leaf_of(ca), ca.certificate), ca, lambda s: entry, NOW)
    )
    assert response.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_reason is None


def test_ocsp_asks_lookup_for_the_requested_serial() -> None:
    ca = self_signed_ca(ECDSA_P256)
    asked: list[int] = []
    respond(request_for(leaf_of(ca, slot=3), ca.certificate), ca, lambda s: asked.append(s), NOW)
    assert asked == [0x1234 + 3]


@pytest.mark.parametrize(
    "request_der",
    [
        pytest.param(b"", id="an empty request is malformed"),
        pytest.param(b"\x30\x03\x02\x01\x01", id="a DER sequence that is not an OCSP request is malformed"),
        pytest.param(b"GET / HTTP/1.1\r\n", id="text is malformed"),
    ],
)
def test_ocsp_malformed_request(request_der: bytes) -> None:
    response = ocsp.load_der_ocsp_response(
        respond(request_der, self_signed_ca(ECDSA_P256), LOOKUPS["good"], NOW)
    )
    assert response.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_ocsp_refuses_to_answer_for_another_ca() -> None:
    ca, other = self_signed_ca(ECDSA_P256), self_signed_ca(ECDSA_P256, slot=1)
    request = request_for(leaf_of(other), other.certificate)
    response = ocsp.load_der_ocsp_response(respond(request, ca, LOOKUPS["good"], NOW))
    assert response.response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED


def test_ocsp_echoes_sha256_cert_ids() -> None:
    ca = self_signed_ca(MLDSA_65)
    leaf = leaf_of(ca)
    request = ocsp.OCSPRequestBuilder().add_certificate(leaf, ca.certificate, hashes.SHA256()).build()
    response = ocsp.load_der_ocsp_response(
        respond(request.public_bytes(Encoding.DER), ca, LOOKUPS["good"], NOW)
    )
    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert isinstance(response.hash_algorithm, hashes.SHA256)
    assert response.issuer_key_hash == issuer_hashes(ca.certificate, "sha256")[1]


@pytest.mark.parametrize("answer", ["good", "revoked", "unknown"])
@pytest.mark.parametrize("spec", CLASSICAL, ids=lambda s: s.label)
def test_openssl_verifies_the_ocsp_response(spec: KeySpec, answer: str, tmp_path: Path, openssl: str) -> None:
    ca = self_signed_ca(spec)
    leaf = leaf_of(ca)
    (tmp_path / "ca.pem").write_bytes(ca.root_pem)
    (tmp_path / "leaf.pem").write_bytes(pem(leaf))
    subprocess.run(
        [openssl, "ocsp", "-issuer", "ca.pem", "-cert", "leaf.pem", "-reqout", "req.der"],
        cwd=tmp_path,
        capture_output=True,
        check=True,
    )
    (tmp_path / "resp.der").write_bytes(
        respond((tmp_path / "req.der").read_bytes(), ca, LOOKUPS[answer], NOW)
    )
    attime = ["-attime", str(int(NOW.timestamp()))]  # the CA's validity, as of the test's NOW
    # openssl judges thisUpdate/nextUpdate against the wall clock: allow the distance to the test's NOW.
    skew = ["-validity_period", str(int(abs((datetime.now(UTC) - NOW).total_seconds())) + 3600)]

    # As a client that sent req.der: the signature verifies under the CA and the nonce matches.
    with_nonce = subprocess.run(
        [openssl, "ocsp", "-respin", "resp.der", "-reqin", "req.der", "-CAfile", "ca.pem",
         "-verify_other", "ca.pem", *attime],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "Response verify OK" in with_nonce.stdout + with_nonce.stderr
    assert "Nonce" not in with_nonce.stdout + with_nonce.stderr

    # The status of leaf.pem, with the response printed.
    status = subprocess.run(
        [openssl, "ocsp", "-respin", "resp.der", "-resp_text", "-issuer", "ca.pem", "-cert", "leaf.pem",
         "-no_nonce", "-CAfile", "ca.pem", *attime, *skew],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    text = status.stdout + status.stderr
    assert "Response verify OK" in text
    assert f"leaf.pem: {answer}" in text
    assert "WARNING" not in text
    assert "Serial Number: 1234" in text
    if answer == "revoked":
        assert "Reason: keyCompromise" in text


# ---------------------------------------------------------------------------------------------------------
# Extensions


def test_revocation_extensions_point_at_the_crl_and_ocsp_urls() -> None:
    crl, aia = revocation_extensions("http://ca.example/mesh.crl", "http://ca.example/ocsp")
    assert isinstance(crl, x509.CRLDistributionPoints)
    assert crl[0].full_name == [x509.UniformResourceIdentifier("http://ca.example/mesh.crl")]
    assert isinstance(aia, x509.AuthorityInformationAccess)
    assert aia[0].access_method == AuthorityInformationAccessOID.OCSP
    assert aia[0].access_location == x509.UniformResourceIdentifier("http://ca.example/ocsp")


def test_revocation_extensions_are_optional() -> None:
    assert revocation_extensions(None, None) == []
    assert [type(e) for e in revocation_extensions(None, "http://o.example")] == [
        x509.AuthorityInformationAccess
    ]
    assert [type(e) for e in revocation_extensions("http://c.example/a.crl", None)] == [
        x509.CRLDistributionPoints
    ]


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("ldap://ca.example/cn=crl", id="refuses a non-http scheme"),
        pytest.param("/ca.crl", id="refuses a relative URL"),
        pytest.param("http://ca.example/a b", id="refuses a URL with a space"),
        pytest.param("http://cä.example/", id="refuses a non-ASCII URL"),
    ],
)
def test_revocation_extensions_refuse_bad_urls(url: str) -> None:
    with pytest.raises(TLSMaterialError) as caught:
        revocation_extensions(url, None)
    assert caught.value.reason is Reason.INVALID_SPEC
    assert "spec.revocation.crlURL" in caught.value.message


def test_a_leaf_with_revocation_extensions_carries_them() -> None:
    """What sign_leaf will produce once it adds the extensions: a certificate that cryptography reads."""
    ca = self_signed_ca(ECDSA_P256)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.certificate.subject)
        .public_key(key(ECDSA_P256, 2).public_key())
        .serial_number(5)
        .not_valid_before(datetime(2026, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2026, 2, 1, tzinfo=UTC))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("a.example")]), critical=True)
    )
    for extension in revocation_extensions("http://ca.example/mesh.crl", "http://ca.example/ocsp"):
        builder = builder.add_extension(extension, critical=False)
    cert = builder.sign(ca.private_key, hashes.SHA256())
    assert cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).critical is False
    assert cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).critical is False


FUZZ_CA = self_signed_ca(ECDSA_P256)
VALID_REQUEST = request_for(leaf_of(FUZZ_CA), FUZZ_CA.certificate, nonce=b"x" * 16)


@settings(max_examples=200, deadline=None)
@given(
    data=hst.binary(max_size=300)
    | hst.builds(lambda b, i: VALID_REQUEST[:i] + b, hst.binary(max_size=8), hst.integers(0, 120))
)
def test_ocsp_never_raises_on_client_bytes(data: bytes) -> None:
    """Whatever a client sends, respond returns a parsable OCSP response (never an exception)."""
    response = ocsp.load_der_ocsp_response(respond(data, FUZZ_CA, LOOKUPS["good"], NOW))
    assert response.response_status in (
        ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
        ocsp.OCSPResponseStatus.UNAUTHORIZED,
        ocsp.OCSPResponseStatus.SUCCESSFUL,
    )


@settings(max_examples=50, deadline=None)
@given(
    entries=hst.lists(
        hst.builds(
            RevokedEntry,
            serial=hst.integers(1, 2**159 - 1),
            revoked_at=hst.datetimes(
                min_value=datetime(2020, 1, 1), max_value=datetime(2026, 3, 1), timezones=hst.just(UTC)
            ),
            reason=hst.sampled_from(["unspecified", "keyCompromise", "superseded", "certificateHold"]),
        ),
        max_size=20,
    )
)
def test_crl_lists_each_serial_once_with_its_earliest_revocation(entries: list[RevokedEntry]) -> None:
    crl = x509.load_der_x509_crl(build_crl(FUZZ_CA, entries, NOW, timedelta(days=1), 1))
    earliest: dict[int, datetime] = {}
    for e in entries:
        earliest[e.serial] = min(earliest.get(e.serial, e.revoked_at), e.revoked_at)
    assert [r.serial_number for r in crl] == sorted(earliest)
    for revoked in crl:
        assert revoked.revocation_date_utc == earliest[revoked.serial_number].replace(microsecond=0)
