"""The issuing CA: create a self-signed one, and load and vet a CA key pair from a Secret's data.

A CA Secret holds ``tls.crt`` (the CA certificate, optionally followed by the chain above it),
``tls.key`` (its private key) and, when the CA is an intermediate, optionally ``ca.crt`` (the root).
:func:`load_ca` turns that into a :class:`CAKeyPair` or raises :class:`CAError` with the reason an
MTLSIssuer condition shows and a sentence that names the offending key of the Secret.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509

from mtls_operator.api.constants import CA_CRT, TLS_CRT, TLS_KEY, Reason
from mtls_operator.api.models import KeyAlgorithm, KeyEncoding, SelfSignedCASpec
from mtls_operator.api.tls import CAError, CAFacts, TLSMaterialError
from mtls_operator.pki.certs import (
    READ_ERRORS,
    build_subject,
    ca_key_usage,
    certificates_to_pem,
    issued_by,
    parse_certificate_pem,
    signature_hash,
    whole_seconds,
)
from mtls_operator.pki.fingerprints import certificate_fingerprint
from mtls_operator.pki.keys import (
    PrivateKey,
    UnsupportedKeyError,
    generate_private_key,
    key_algorithm_of,
    keys_match,
    load_private_key_pem,
    private_key_to_pem,
)


@dataclass(frozen=True)
class CAKeyPair:
    """A CA that has passed :func:`load_ca`'s checks and can sign leaves."""

    certificate: x509.Certificate
    private_key: PrivateKey = field(repr=False)
    intermediates: tuple[x509.Certificate, ...]  # the CA's chain above it, root excluded
    root: x509.Certificate  # the trust anchor; the CA itself when it is self-signed
    facts: CAFacts

    @property
    def issuer_chain(self) -> tuple[x509.Certificate, ...]:
        """What a leaf's ``tls.crt`` carries after the leaf: the CA and its intermediates, root excluded."""
        return tuple(c for c in (self.certificate, *self.intermediates) if c != self.root)

    @property
    def root_pem(self) -> bytes:
        """The trust anchor, for ``ca.crt`` and truststores."""
        return certificates_to_pem([self.root])

    @property
    def chain_algorithms(self) -> tuple[KeyAlgorithm, ...]:
        """The key algorithms of the CA, its intermediates and the root (the PostQuantum condition)."""
        return tuple(
            key_algorithm_of(c.public_key())[0] for c in (self.certificate, *self.intermediates, self.root)
        )

    def signed_by(self, parent: CAKeyPair) -> bool:
        """Whether this CA's certificate verifies under ``parent``'s CA certificate."""
        return issued_by(self.certificate, parent.certificate)

    @property
    def chain_pem(self) -> bytes:
        """The CA certificate followed by its intermediates."""
        return certificates_to_pem([self.certificate, *self.intermediates])


def create_self_signed_ca(spec: SelfSignedCASpec, now: datetime) -> tuple[bytes, bytes]:
    """A new root CA for ``spec``: (PKCS#8 key PEM, certificate PEM). CA:TRUE without a path length,
    keyCertSign + cRLSign + digitalSignature, SKI and AKI; valid from ``now`` (whole seconds)."""
    key = generate_private_key(spec.private_key)
    not_before = whole_seconds(now)
    subject = build_subject(spec.common_name, spec.subject, where="spec.selfSigned")
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(whole_seconds(not_before + spec.duration))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(ca_key_usage(), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, signature_hash(key))
    )
    return private_key_to_pem(key, KeyEncoding.PKCS8), certificates_to_pem([cert])


def load_ca(data: Mapping[str, bytes], now: datetime) -> CAKeyPair:
    """Load and vet the CA in a Secret's decoded ``data`` as of ``now``; raise :class:`CAError`."""
    for key_name, what in ((TLS_CRT, "the CA certificate"), (TLS_KEY, "the CA's private key")):
        if not data.get(key_name):
            raise CAError(f"{key_name} is missing: the CA secret must hold {what} in {key_name}.")
    try:
        certs = parse_certificate_pem(data[TLS_CRT], name=TLS_CRT)
    except TLSMaterialError as exc:
        raise CAError(exc.message) from None
    cert, above = certs[0], certs[1:]
    try:
        key = load_private_key_pem(data[TLS_KEY], name=TLS_KEY)
    except UnsupportedKeyError as exc:
        raise CAError(exc.message, Reason.CA_KEY_UNSUPPORTED) from None
    except TLSMaterialError as exc:
        raise CAError(exc.message) from None
    try:
        public_key = cert.public_key()
        algorithm, size = key_algorithm_of(public_key, name=f"{TLS_CRT}'s public key")
        extensions = cert.extensions
    except UnsupportedKeyError as exc:
        raise CAError(exc.message, Reason.CA_KEY_UNSUPPORTED) from None
    except READ_ERRORS:
        raise CAError(f"{TLS_CRT} holds a certificate whose key or extensions cannot be read.") from None

    _check_can_sign_certificates(extensions)
    if not keys_match(key, public_key):
        raise CAError(
            f"{TLS_KEY} is not the private key of the certificate in {TLS_CRT}.", Reason.CA_KEY_MISMATCH
        )
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < not_before:
        raise CAError(
            f"{TLS_CRT} is not valid yet: its validity starts at {not_before.isoformat()}.",
            Reason.CA_NOT_YET_VALID,
        )
    if now >= not_after:
        raise CAError(f"{TLS_CRT} expired at {not_after.isoformat()}.", Reason.CA_EXPIRED)

    root = _trust_anchor([cert, *above], data.get(CA_CRT))
    intermediates = tuple(c for c in above if c != root)
    facts = CAFacts(
        fingerprint=certificate_fingerprint(cert),
        not_before=not_before,
        not_after=not_after,
        subject=cert.subject.rfc4514_string(),
        key_algorithm=algorithm,
        key_size=size,
        root_fingerprint=certificate_fingerprint(root),
    )
    return CAKeyPair(certificate=cert, private_key=key, intermediates=intermediates, root=root, facts=facts)


def _check_can_sign_certificates(extensions: x509.Extensions) -> None:
    try:
        constraints = extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise CAError(
            f"{TLS_CRT} is not a CA certificate: it has no basicConstraints extension.", Reason.CA_NOT_CA
        ) from None
    if not constraints.ca:
        raise CAError(
            f"{TLS_CRT} is not a CA certificate: its basicConstraints say CA:FALSE.", Reason.CA_NOT_CA
        )
    try:
        usage = extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return  # no keyUsage extension: every usage is allowed (RFC 5280 4.2.1.3)
    if not usage.key_cert_sign:
        raise CAError(
            f"{TLS_CRT} cannot sign certificates: its keyUsage extension lacks keyCertSign.",
            Reason.CA_MISSING_KEY_CERT_SIGN,
        )


def _trust_anchor(chain: list[x509.Certificate], ca_crt: bytes | None) -> x509.Certificate:
    """The root that ``ca.crt`` and truststores carry.

    ``chain`` is ``tls.crt``: the CA first, then each issuer in turn. Its top is the root when it is
    self-signed; otherwise the root is the certificate in ``ca.crt`` that issued the top, and with no
    ``ca.crt`` the top itself is the anchor the operator knows.
    """
    for position, (child, parent) in enumerate(itertools.pairwise(chain), start=1):
        if not issued_by(child, parent):
            raise CAError(
                f"{TLS_CRT} lists its certificates out of order: certificate {position + 1} did not issue "
                f"certificate {position}; put the CA first, then each issuer in turn."
            )
    top = chain[-1]
    if issued_by(top, top) or not ca_crt:
        return top
    try:
        bundle = parse_certificate_pem(ca_crt, name=CA_CRT)
    except TLSMaterialError as exc:
        raise CAError(exc.message) from None
    for candidate in bundle:
        if candidate == top or issued_by(top, candidate):
            return candidate
    raise CAError(
        f"{CA_CRT} does not hold the certificate that issued {top.issuer.rfc4514_string()!r}, the top of "
        f"the chain in {TLS_CRT}."
    )
