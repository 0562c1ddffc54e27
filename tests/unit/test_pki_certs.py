"""pki.certs: the conformance suite (every certificate case, every key algorithm as leaf and as CA), then
subject order, chains and cert_facts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store
from tests.unit.pki_factory import (
    ECDSA_P256,
    ECDSA_P384,
    ED25519,
    MLDSA_44,
    MLDSA_65,
    MLDSA_87,
    NOW,
    RSA_2048,
    intermediate_ca,
    key,
    leaf_spec,
    pem,
    self_signed_ca,
)

from mtls_operator.api.constants import Reason
from mtls_operator.api.models import KeyAlgorithm, KeySpec, Subject, Usage
from mtls_operator.api.tls import CertFacts, TLSMaterialError
from mtls_operator.pki import certs, keys
from mtls_operator.pki.ca import CAKeyPair


@dataclass(frozen=True)
class Algorithm:
    """A key algorithm in the conformance suite and what it cannot do."""

    spec: KeySpec
    digest: type[hashes.HashAlgorithm] | None  # what a CA of this algorithm signs with
    webpki_verifiable: bool  # cryptography's PolicyBuilder (a Web PKI profile) accepts it


ALGORITHMS = (
    Algorithm(ECDSA_P256, hashes.SHA256, webpki_verifiable=True),
    Algorithm(ECDSA_P384, hashes.SHA384, webpki_verifiable=True),
    Algorithm(ED25519, None, webpki_verifiable=False),  # the Web PKI profile forbids Ed25519 keys
    Algorithm(RSA_2048, hashes.SHA256, webpki_verifiable=True),
    Algorithm(MLDSA_44, None, webpki_verifiable=True),
    Algorithm(MLDSA_65, None, webpki_verifiable=True),
    Algorithm(MLDSA_87, None, webpki_verifiable=True),
)


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    facts: CertFacts
    leaf: Algorithm
    ca_algorithm: Algorithm
    ca: CAKeyPair
    leaf_key: keys.PrivateKey


def _extension(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_class(kind)


def _key_usage(issued: Issued) -> x509.KeyUsage:
    ext = _extension(issued.cert, x509.KeyUsage)
    assert ext.critical
    assert isinstance(ext.value, x509.KeyUsage)
    return ext.value


def _extended(issued: Issued) -> list[x509.ObjectIdentifier]:
    value = _extension(issued.cert, x509.ExtendedKeyUsage).value
    assert isinstance(value, x509.ExtendedKeyUsage)
    return list(value)


def _is_rsa(issued: Issued) -> bool:
    return issued.leaf.spec.algorithm is KeyAlgorithm.RSA


# ----- the checks each case makes ------------------------------------------------------------------------


def check_common_name_only(issued: Issued) -> None:
    assert issued.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "svc"
    with pytest.raises(x509.ExtensionNotFound):
        _extension(issued.cert, x509.SubjectAlternativeName)
    assert issued.facts.common_name == "svc"
    assert (issued.facts.dns_names, issued.facts.ip_addresses, issued.facts.uris) == ((), (), ())


def check_dns_sans(issued: Issued) -> None:
    ext = _extension(issued.cert, x509.SubjectAlternativeName)
    assert not ext.critical
    assert issued.facts.dns_names == ("a.example.com", "b.example.com")


def check_san_critical_without_subject(issued: Issued) -> None:
    assert len(issued.cert.subject) == 0
    assert _extension(issued.cert, x509.SubjectAlternativeName).critical
    assert issued.facts.common_name is None


def check_ip_sans(issued: Issued) -> None:
    assert issued.facts.ip_addresses == ("10.0.0.1", "2001:db8::1")


def check_uri_san(issued: Issued) -> None:
    assert issued.facts.uris == ("spiffe://cluster.local/ns/default/sa/web",)


def check_email_san(issued: Issued) -> None:
    assert issued.facts.email_addresses == ("ops@example.com",)


def _check_usages(issued: Issued, extended: list[x509.ObjectIdentifier], usages: set[Usage]) -> None:
    ku = _key_usage(issued)
    assert ku.digital_signature
    assert ku.key_encipherment is _is_rsa(issued)
    assert not ku.key_cert_sign
    assert _extended(issued) == extended
    if _is_rsa(issued):
        usages.add(Usage.KEY_ENCIPHERMENT)
    assert issued.facts.usages == {Usage.DIGITAL_SIGNATURE, *usages}


def check_server_auth(issued: Issued) -> None:
    _check_usages(issued, [ExtendedKeyUsageOID.SERVER_AUTH], {Usage.SERVER_AUTH})


def check_client_auth(issued: Issued) -> None:
    _check_usages(issued, [ExtendedKeyUsageOID.CLIENT_AUTH], {Usage.CLIENT_AUTH})


def check_server_and_client_auth(issued: Issued) -> None:
    _check_usages(
        issued,
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        {Usage.SERVER_AUTH, Usage.CLIENT_AUTH},
    )


def check_key_encipherment_only_for_rsa(issued: Issued) -> None:
    _check_usages(issued, [ExtendedKeyUsageOID.SERVER_AUTH], {Usage.SERVER_AUTH})


def check_duration(issued: Issued) -> None:
    assert issued.cert.not_valid_before_utc == NOW.replace(microsecond=0)
    assert issued.cert.not_valid_after_utc - issued.cert.not_valid_before_utc == timedelta(hours=1)
    assert issued.facts.not_after == issued.cert.not_valid_after_utc


def check_capped_at_ca_not_after(issued: Issued) -> None:
    assert issued.cert.not_valid_after_utc == issued.ca.certificate.not_valid_after_utc


def check_chain_verifies(issued: Issued) -> None:
    chain = certs.parse_certificate_pem(certs.chain_pem(issued.cert, issued.ca))
    assert chain[0] == issued.cert
    if issued.leaf.webpki_verifiable and issued.ca_algorithm.webpki_verifiable:
        store = Store([issued.ca.root])
        server = PolicyBuilder().store(store).time(NOW).build_server_verifier(x509.DNSName("web.default.svc"))
        assert server.verify(chain[0], chain[1:])[-1] == issued.ca.root
        client = PolicyBuilder().store(store).time(NOW).build_client_verifier()
        assert client.verify(chain[0], chain[1:]).chain[-1] == issued.ca.root
    else:  # the algorithm declares it cannot go through the Web PKI verifier
        issued.cert.verify_directly_issued_by(issued.ca.certificate)
    assert issued.facts.issuer_fingerprint == issued.ca.facts.fingerprint


def check_key_matches(issued: Issued) -> None:
    assert keys.keys_match(issued.leaf_key, issued.cert.public_key())
    assert (issued.facts.key_algorithm, issued.facts.key_size) == (
        issued.leaf.spec.algorithm,
        issued.leaf.spec.size,
    )


def check_end_entity_profile(issued: Issued) -> None:
    constraints = _extension(issued.cert, x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value == x509.BasicConstraints(ca=False, path_length=None)
    assert not issued.facts.is_ca
    ski = _extension(issued.cert, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(issued.leaf_key.public_key())
    aki = _extension(issued.cert, x509.AuthorityKeyIdentifier).value
    ca_ski = _extension(issued.ca.certificate, x509.SubjectKeyIdentifier).value
    assert isinstance(aki, x509.AuthorityKeyIdentifier)
    assert isinstance(ca_ski, x509.SubjectKeyIdentifier)
    assert aki.key_identifier == ca_ski.key_identifier
    assert issued.cert.serial_number > 0
    assert issued.facts.serial_number == format(issued.cert.serial_number, "x")
    assert issued.cert.issuer == issued.ca.certificate.subject
    digest = issued.cert.signature_hash_algorithm
    expected = issued.ca_algorithm.digest
    assert (digest is None) if expected is None else isinstance(digest, expected)


@dataclass(frozen=True)
class Case:
    sentence: str
    spec: dict[str, object]
    check: Callable[[Issued], None]
    ca_days: int = 365


CASES = (
    Case(
        "issues a certificate with only a common name",
        {"common_name": "svc", "dns_names": ()},
        check_common_name_only,
    ),
    Case(
        "puts DNS names in a non-critical SAN",
        {"dns_names": ("b.example.com", "a.example.com")},
        check_dns_sans,
    ),
    Case(
        "makes the SAN critical when the subject is empty",
        {"common_name": None, "dns_names": ("a.example.com",)},
        check_san_critical_without_subject,
    ),
    Case("puts IP addresses in the SAN", {"ip_addresses": ("2001:db8::1", "10.0.0.1")}, check_ip_sans),
    Case(
        "puts a SPIFFE URI in the SAN",
        {"uris": ("spiffe://cluster.local/ns/default/sa/web",)},
        check_uri_san,
    ),
    Case("puts an email address in the SAN", {"email_addresses": ("ops@example.com",)}, check_email_san),
    Case("limits a server certificate to server auth", {"usages": (Usage.SERVER_AUTH,)}, check_server_auth),
    Case("limits a client certificate to client auth", {"usages": (Usage.CLIENT_AUTH,)}, check_client_auth),
    Case("allows server and client auth by default", {}, check_server_and_client_auth),
    Case(
        "sets keyEncipherment for RSA keys only, even when the spec asks for it",
        {"usages": (Usage.SERVER_AUTH, Usage.KEY_ENCIPHERMENT)},
        check_key_encipherment_only_for_rsa,
    ),
    Case(
        "honours the duration from now truncated to seconds", {"duration": timedelta(hours=1)}, check_duration
    ),
    Case(
        "caps notAfter at the CA's notAfter",
        {"duration": timedelta(days=3650)},
        check_capped_at_ca_not_after,
        ca_days=30,
    ),
    Case("chains to the CA's root", {}, check_chain_verifies),
    Case("certifies the public key it was given", {}, check_key_matches),
    Case("is an end-entity certificate with SKI, AKI and the CA's digest", {}, check_end_entity_profile),
)


def _conformance_params() -> list[object]:
    return [
        pytest.param(
            case,
            leaf,
            ca,
            id=f"{ca.spec.label} CA, {leaf.spec.label} leaf: {case.sentence}",
        )
        for case in CASES
        for ca in ALGORITHMS
        for leaf in ALGORITHMS
    ]


@pytest.mark.parametrize(("case", "leaf", "ca_algorithm"), _conformance_params())
def test_conformance(case: Case, leaf: Algorithm, ca_algorithm: Algorithm) -> None:
    ca = self_signed_ca(ca_algorithm.spec, days=case.ca_days)
    leaf_key = key(leaf.spec)
    spec = leaf_spec(**case.spec, private_key=leaf.spec)
    cert = certs.sign_leaf(spec, leaf_key.public_key(), ca, NOW)
    facts = certs.cert_facts(cert, [ca.certificate])
    case.check(Issued(cert, facts, leaf, ca_algorithm, ca, leaf_key))


# ----- beyond the conformance table ----------------------------------------------------------------------


def test_subject_follows_cert_manager_field_order() -> None:
    subject = Subject(
        organizations=("Acme", "Acme Labs"),
        organizational_units=("Platform",),
        countries=("DE",),
        provinces=("Berlin",),
        localities=("Berlin",),
        street_addresses=("Street 1",),
        postal_codes=("10115",),
        serial_number="1234",
    )
    cert = certs.sign_leaf(leaf_spec(subject=subject), key(ECDSA_P256).public_key(), self_signed_ca(), NOW)
    rdns = [[(a.oid, a.value) for a in rdn] for rdn in cert.subject.rdns]
    assert [[oid for oid, _ in rdn] for rdn in rdns] == [
        [NameOID.COUNTRY_NAME],
        [NameOID.STATE_OR_PROVINCE_NAME],
        [NameOID.LOCALITY_NAME],
        [NameOID.STREET_ADDRESS],
        [NameOID.POSTAL_CODE],
        [NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATION_NAME],  # Go writes one multi-valued RDN
        [NameOID.ORGANIZATIONAL_UNIT_NAME],
        [NameOID.COMMON_NAME],
        [NameOID.SERIAL_NUMBER],
    ]
    assert {v for _, v in rdns[5]} == {"Acme", "Acme Labs"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param(
            {"subject": Subject(countries=("Germany",))},
            "spec.subject.countries cannot go into a certificate subject",
            id="refuses a country that is not a two-letter code",
        ),
        pytest.param(
            {"email_addresses": ("jürgen@example.com",)},
            "spec.emailAddresses: 'jürgen@example.com' cannot go into a certificate",
            id="refuses a non-ASCII email address the parser let through",
        ),
    ],
)
def test_refuses_names_a_certificate_cannot_hold(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(TLSMaterialError) as caught:
        certs.sign_leaf(leaf_spec(**overrides), key(ECDSA_P256).public_key(), self_signed_ca(), NOW)
    assert caught.value.reason is Reason.INVALID_SPEC
    assert caught.value.message.startswith(message)


def test_uses_the_serial_it_is_given() -> None:
    cert = certs.sign_leaf(leaf_spec(), key(ECDSA_P256).public_key(), self_signed_ca(), NOW, serial=0xABC)
    assert certs.cert_facts(cert).serial_number == "abc"


def test_refuses_naive_times() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        certs.sign_leaf(leaf_spec(), key(ECDSA_P256).public_key(), self_signed_ca(), NOW.replace(tzinfo=None))


def test_chain_of_a_leaf_from_a_root_ca_is_the_leaf_alone() -> None:
    ca = self_signed_ca()
    cert = certs.sign_leaf(leaf_spec(), key(ECDSA_P256).public_key(), ca, NOW)
    assert certs.chain_pem(cert, ca) == pem(cert)


@pytest.mark.parametrize(
    "intermediate_spec",
    [
        pytest.param(ECDSA_P256, id="a leaf from an ECDSA intermediate chains through it to the root"),
        pytest.param(MLDSA_65, id="a leaf from an ML-DSA intermediate chains through it to the root"),
        pytest.param(RSA_2048, id="a leaf from an RSA intermediate chains through it to the root"),
    ],
)
def test_chain_of_a_leaf_from_an_intermediate(intermediate_spec: KeySpec) -> None:
    root = self_signed_ca(ECDSA_P384)
    inter = intermediate_ca(root, intermediate_spec)
    cert = certs.sign_leaf(leaf_spec(), key(MLDSA_44).public_key(), inter, NOW)
    chain = certs.parse_certificate_pem(certs.chain_pem(cert, inter))
    assert chain == [cert, inter.certificate]
    verifier = (
        PolicyBuilder()
        .store(Store([root.root]))
        .time(NOW)
        .build_server_verifier(x509.DNSName("web.default.svc"))
    )
    assert verifier.verify(chain[0], chain[1:]) == [cert, inter.certificate, root.root]


def test_cert_facts_names_the_issuer_whose_signature_verifies() -> None:
    ca, other = self_signed_ca(ECDSA_P256), self_signed_ca(MLDSA_65)
    cert = certs.sign_leaf(leaf_spec(), key(ECDSA_P256).public_key(), ca, NOW)
    assert (
        certs.cert_facts(cert, [other.certificate, ca.certificate]).issuer_fingerprint == ca.facts.fingerprint
    )
    assert certs.cert_facts(cert, [other.certificate]).issuer_fingerprint is None
    assert certs.cert_facts(cert).issuer_fingerprint is None


def test_cert_facts_fingerprint_is_sha256_of_the_der() -> None:
    cert = certs.sign_leaf(leaf_spec(), key(ECDSA_P256).public_key(), self_signed_ca(), NOW)
    assert certs.cert_facts(cert).fingerprint == cert.fingerprint(hashes.SHA256()).hex()
