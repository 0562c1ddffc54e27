"""Certificates: sign a leaf for a spec, parse PEM, and describe a certificate as :class:`CertFacts`.

Also the small pieces ``ca.py`` shares with leaf signing (subject building, the signature hash for a CA
key, "did this certificate issue that one"), so that both build certificates the same way.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeAlias

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mtls_operator.api.constants import Reason
from mtls_operator.api.models import CertificateSpec, Subject, Usage
from mtls_operator.api.tls import CAError, CertFacts, TLSMaterialError, effective_usages
from mtls_operator.pki.fingerprints import certificate_fingerprint
from mtls_operator.pki.keys import PrivateKey, PublicKey, key_algorithm_of

if TYPE_CHECKING:
    from mtls_operator.pki.ca import CAKeyPair

SignatureHash: TypeAlias = hashes.SHA256 | hashes.SHA384 | hashes.SHA512

EXTENDED_USAGE_OIDS: dict[Usage, x509.ObjectIdentifier] = {
    Usage.SERVER_AUTH: ExtendedKeyUsageOID.SERVER_AUTH,
    Usage.CLIENT_AUTH: ExtendedKeyUsageOID.CLIENT_AUTH,
    Usage.CODE_SIGNING: ExtendedKeyUsageOID.CODE_SIGNING,
    Usage.EMAIL_PROTECTION: ExtendedKeyUsageOID.EMAIL_PROTECTION,
    Usage.OCSP_SIGNING: ExtendedKeyUsageOID.OCSP_SIGNING,
}
_USAGE_BY_OID = {oid: usage for usage, oid in EXTENDED_USAGE_OIDS.items()}

# The order Go's pkix.Name.ToRDNSequence writes (and so cert-manager's certificates carry): C, ST, L,
# STREET, POSTALCODE, O, OU, CN, SERIALNUMBER; several values of one field share one (multi-valued) RDN.
_SUBJECT_FIELDS: tuple[tuple[str, str, x509.ObjectIdentifier], ...] = (
    ("countries", "subject.countries", NameOID.COUNTRY_NAME),
    ("provinces", "subject.provinces", NameOID.STATE_OR_PROVINCE_NAME),
    ("localities", "subject.localities", NameOID.LOCALITY_NAME),
    ("street_addresses", "subject.streetAddresses", NameOID.STREET_ADDRESS),
    ("postal_codes", "subject.postalCodes", NameOID.POSTAL_CODE),
    ("organizations", "subject.organizations", NameOID.ORGANIZATION_NAME),
    ("organizational_units", "subject.organizationalUnits", NameOID.ORGANIZATIONAL_UNIT_NAME),
)

# What can go wrong reading a certificate the library parsed lazily (extensions, public key, names).
READ_ERRORS = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
    x509.InvalidVersion,
)


# ---------------------------------------------------------------------------------------------------------
# Signing


def sign_leaf(
    spec: CertificateSpec,
    public_key: PublicKey,
    ca: CAKeyPair,
    now: datetime,
    serial: int | None = None,
    extensions: Sequence[x509.ExtensionType] = (),
    not_after_limit: datetime | None = None,
) -> x509.Certificate:
    """Issue the end-entity certificate ``spec`` describes for ``public_key``, signed by ``ca``.

    ``extensions`` are added non-critical (e.g. CRL distribution points and the OCSP URL).

    Validity starts at ``now`` truncated to whole seconds and lasts ``spec.duration``, cut short at the
    CA's own notAfter (and at ``not_after_limit``: the certificates of one identity signed by several CAs
    end together). Key usage is :func:`effective_usages` (digitalSignature, keyEncipherment for RSA
    keys only, plus the spec's); extended key usage is the spec's extended usages. The SAN extension is
    critical when the subject is empty (RFC 5280 4.2.1.6).
    """
    algorithm, _ = key_algorithm_of(public_key, name="The public key to certify")
    not_before = whole_seconds(now)
    ca_not_after = ca.certificate.not_valid_after_utc
    not_after = min(whole_seconds(not_before + spec.duration), ca_not_after)
    if not_after_limit is not None:
        not_after = min(not_after, whole_seconds(not_after_limit))
    if not_after <= not_before:
        raise CAError(
            f"The CA certificate expired at {ca_not_after.isoformat()} and cannot issue certificates.",
            Reason.CA_EXPIRED,
        )
    usages = effective_usages(spec.usages, algorithm)
    subject = build_subject(spec.common_name, spec.subject, where="spec")
    names = _subject_alternative_names(spec)
    extended = [EXTENDED_USAGE_OIDS[u] for u in dict.fromkeys(spec.usages) if u in EXTENDED_USAGE_OIDS]

    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.certificate.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number() if serial is None else serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(
                digital_signature=Usage.DIGITAL_SIGNATURE in usages,
                key_encipherment=Usage.KEY_ENCIPHERMENT in usages,
            ),
            critical=True,
        )
    )
    if extended:
        builder = builder.add_extension(x509.ExtendedKeyUsage(extended), critical=False)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=len(subject) == 0)
    builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    builder = builder.add_extension(authority_key_identifier(ca.certificate), critical=False)
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(ca.private_key, signature_hash(ca.private_key))


def chain_pem(cert: x509.Certificate, ca: CAKeyPair) -> bytes:
    """What ``tls.crt`` holds: the leaf, then the CA and its intermediates up to (not including) the root."""
    return certificates_to_pem([cert, *ca.issuer_chain])


def build_subject(common_name: str | None, subject: Subject, *, where: str) -> x509.Name:
    """The subject DN in cert-manager's (Go's) order; raises :class:`TLSMaterialError` (reason
    ``INVALID_SPEC``) naming the field a value cannot go into a certificate from."""
    rdns: list[x509.RelativeDistinguishedName] = []
    fields: list[tuple[tuple[str, ...], str, x509.ObjectIdentifier]] = [
        (getattr(subject, attr), path, oid) for attr, path, oid in _SUBJECT_FIELDS
    ]
    fields.append(((common_name,) if common_name else (), "commonName", NameOID.COMMON_NAME))
    serial = subject.serial_number
    fields.append(((serial,) if serial else (), "subject.serialNumber", NameOID.SERIAL_NUMBER))
    for values, field, oid in fields:
        path = f"{where}.{field}"
        try:
            attributes = [x509.NameAttribute(oid, value) for value in dict.fromkeys(values)]
        except ValueError as exc:
            raise TLSMaterialError(
                f"{path} cannot go into a certificate subject: {exc}.", Reason.INVALID_SPEC
            ) from None
        if attributes:
            rdns.append(x509.RelativeDistinguishedName(attributes))
    return x509.Name(rdns)


def signature_hash(key: PrivateKey) -> SignatureHash | None:
    """The digest a CA key signs with: SHA-256 for RSA and P-256, SHA-384 for P-384, SHA-512 for P-521,
    none for Ed25519 and ML-DSA (their signatures take the whole message)."""
    if isinstance(key, rsa.RSAPrivateKey):
        return hashes.SHA256()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.key_size > 384:
            return hashes.SHA512()
        if key.curve.key_size > 256:
            return hashes.SHA384()
        return hashes.SHA256()
    return None


def authority_key_identifier(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """AKI pointing at ``issuer``: its own SKI if it has one, else one derived from its public key."""
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        ski = x509.SubjectKeyIdentifier.from_public_key(issuer.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def whole_seconds(moment: datetime) -> datetime:
    """``moment`` in UTC without microseconds; refuses naive datetimes."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("Times passed to pki must be timezone-aware.")
    return moment.astimezone(UTC).replace(microsecond=0)


def _key_usage(*, digital_signature: bool, key_encipherment: bool, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def ca_key_usage() -> x509.KeyUsage:
    """keyCertSign, cRLSign and digitalSignature: what a CA certificate the operator creates may do."""
    return _key_usage(digital_signature=True, key_encipherment=False, cert_sign=True)


def _subject_alternative_names(spec: CertificateSpec) -> list[x509.GeneralName]:
    fields: tuple[tuple[str, tuple[str, ...], Callable[[str], x509.GeneralName]], ...] = (
        ("dnsNames", spec.dns_names, x509.DNSName),
        ("ipAddresses", spec.ip_addresses, lambda ip: x509.IPAddress(ipaddress.ip_address(ip))),
        ("uris", spec.uris, x509.UniformResourceIdentifier),
        ("emailAddresses", spec.email_addresses, x509.RFC822Name),
    )
    names: list[x509.GeneralName] = []
    for field, values, make in fields:
        for value in values:
            try:
                names.append(make(value))
            except ValueError:
                raise TLSMaterialError(
                    f"spec.{field}: {value!r} cannot go into a certificate; names must be ASCII "
                    "(encode internationalised domain names as A-labels, xn--...).",
                    Reason.INVALID_SPEC,
                ) from None
    return names


# ---------------------------------------------------------------------------------------------------------
# Parsing and describing


def parse_certificate_pem(data: bytes, *, name: str = "The certificate file") -> list[x509.Certificate]:
    """Every certificate in a PEM bundle, in order; raises :class:`TLSMaterialError` if there are none or
    one does not parse. ``name`` begins the message (e.g. ``"tls.crt"``)."""
    try:
        certs = x509.load_pem_x509_certificates(data)
    except (ValueError, x509.InvalidVersion):  # InvalidVersion is not a ValueError
        raise TLSMaterialError(f"{name} does not hold readable PEM certificates.") from None
    if not certs:
        raise TLSMaterialError(f"{name} does not hold any PEM certificate.")
    return certs


def certificates_to_pem(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(Encoding.PEM) for c in certs)


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer``'s name and public key account for ``cert``'s issuer and signature."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, *READ_ERRORS):
        return False
    return True


def cert_facts(
    cert: x509.Certificate,
    issuer_certs: Sequence[x509.Certificate] = (),
    *,
    name: str = "The certificate",
    signed_by: x509.Certificate | None = None,
) -> CertFacts:
    """What ``cert`` says, in comparable form; ``issuer_fingerprint`` is that of the first of
    ``issuer_certs`` that verifies its signature, or that of ``signed_by`` when the caller has just signed
    ``cert`` with that issuer's key (whose match with the issuer's certificate was checked when it was
    loaded), which is not verified again. Raises :class:`TLSMaterialError` for a certificate whose
    extensions or key cannot be read or whose key algorithm the operator does not support."""
    try:
        return _cert_facts(cert, issuer_certs, name, signed_by)
    except TLSMaterialError:
        raise
    except READ_ERRORS:
        raise TLSMaterialError(f"{name} has extensions or a public key that cannot be read.") from None


def _cert_facts(
    cert: x509.Certificate,
    issuer_certs: Sequence[x509.Certificate],
    name: str,
    signed_by: x509.Certificate | None,
) -> CertFacts:
    public_key = cert.public_key()
    algorithm, size = key_algorithm_of(public_key, name=f"{name}'s public key")
    extensions = cert.extensions
    dns: list[str] = []
    ips: list[str] = []
    uris: list[str] = []
    emails: list[str] = []
    usages: set[Usage] = set()
    is_ca = False
    for ext in extensions:
        value = ext.value
        if isinstance(value, x509.SubjectAlternativeName):
            dns = [n.lower() for n in value.get_values_for_type(x509.DNSName)]
            ips = [str(ip) for ip in value.get_values_for_type(x509.IPAddress)]
            uris = value.get_values_for_type(x509.UniformResourceIdentifier)
            emails = value.get_values_for_type(x509.RFC822Name)
        elif isinstance(value, x509.ExtendedKeyUsage):
            usages.update(_USAGE_BY_OID[oid] for oid in value if oid in _USAGE_BY_OID)
        elif isinstance(value, x509.KeyUsage):
            if value.digital_signature:
                usages.add(Usage.DIGITAL_SIGNATURE)
            if value.key_encipherment:
                usages.add(Usage.KEY_ENCIPHERMENT)
        elif isinstance(value, x509.BasicConstraints):
            is_ca = value.ca
    common_names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = None
    if common_names:
        raw = common_names[0].value
        common_name = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
    issuer_fingerprint = (
        certificate_fingerprint(signed_by)
        if signed_by is not None
        else next((certificate_fingerprint(i) for i in issuer_certs if issued_by(cert, i)), None)
    )
    return CertFacts(
        serial_number=format(cert.serial_number, "x"),
        fingerprint=certificate_fingerprint(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        common_name=common_name,
        dns_names=tuple(sorted(dns)),
        ip_addresses=tuple(sorted(ips)),
        uris=tuple(sorted(uris)),
        email_addresses=tuple(sorted(emails)),
        usages=frozenset(usages),
        is_ca=is_ca,
        key_algorithm=algorithm,
        key_size=size,
        issuer_fingerprint=issuer_fingerprint,
    )
