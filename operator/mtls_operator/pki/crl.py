"""Certificate revocation lists (RFC 5280 section 5), signed by the issuing CA.

A CRL lists the serials its CA has revoked. The operator signs one per CA with the CA's own key (no
separate CRL signer), so it works for every CA algorithm the operator supports: ECDSA, RSA, Ed25519 and
ML-DSA (cryptography 50 signs CRLs with ML-DSA; OpenSSL 3.0 cannot read such a CRL, 3.5 can).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mtls_operator.api.constants import Reason
from mtls_operator.api.tls import CAError
from mtls_operator.pki.ca import CAKeyPair
from mtls_operator.pki.certs import READ_ERRORS, authority_key_identifier, signature_hash, whole_seconds

# RFC 5280 CRLReason names as they are spelled in the RFC (and in cryptography's ReasonFlags values).
REASONS: Final[dict[str, x509.ReasonFlags]] = {flag.value: flag for flag in x509.ReasonFlags}
UNSPECIFIED: Final = x509.ReasonFlags.unspecified.value


class RevocationError(ValueError):
    """Revocation data the operator cannot sign: an unknown reason, a duplicate or naive time."""

    def __init__(self, message: str, reason: Reason = Reason.INVALID_SPEC) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class RevokedEntry:
    """One revoked certificate: its serial, when it was revoked, and the RFC 5280 reason name
    (``unspecified``, ``keyCompromise``, ``superseded``, ``cessationOfOperation``, ...)."""

    serial: int
    revoked_at: datetime
    reason: str = UNSPECIFIED


def reason_flag(reason: str) -> x509.ReasonFlags:
    """The ReasonFlags for an RFC 5280 reason name; ``removeFromCRL`` (delta CRLs only) is refused."""
    flag = REASONS.get(reason)
    if flag is None or flag is x509.ReasonFlags.remove_from_crl:
        names = ", ".join(n for n in REASONS if n != x509.ReasonFlags.remove_from_crl.value)
        raise RevocationError(f"Revocation reason {reason!r} is not one of {names}.")
    return flag


def check_can_sign_crls(ca: CAKeyPair) -> None:
    """Raise :class:`CAError` when the CA certificate's keyUsage lacks cRLSign (RFC 5280 4.2.1.3)."""
    try:
        usage = ca.certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    except READ_ERRORS:
        raise CAError("The CA certificate's extensions cannot be read.") from None
    if not usage.crl_sign:
        raise CAError(
            "The CA certificate cannot sign CRLs: its keyUsage extension lacks cRLSign.",
            Reason.CA_MISSING_KEY_CERT_SIGN,
        )


def build_crl(
    ca: CAKeyPair,
    revoked: Sequence[RevokedEntry],
    now: datetime,
    next_update: timedelta,
    crl_number: int,
) -> bytes:
    """A DER CRL signed by ``ca``: thisUpdate ``now`` and nextUpdate ``now + next_update`` (whole
    seconds), cRLNumber ``crl_number`` (callers increase it with every new CRL), AKI of the CA, and one
    entry per serial in ascending order, each with its revocation date and, unless ``unspecified``, its
    reason code. A serial listed twice keeps its earliest revocation."""
    if crl_number < 0:
        raise RevocationError(f"The CRL number must not be negative, not {crl_number}.")
    if next_update <= timedelta(0):
        raise RevocationError("A CRL's nextUpdate must lie after its thisUpdate.")
    check_can_sign_crls(ca)
    this_update = whole_seconds(now)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(this_update)
        .next_update(this_update + next_update)
        .add_extension(x509.CRLNumber(crl_number), critical=False)
        .add_extension(authority_key_identifier(ca.certificate), critical=False)
    )
    for entry in _earliest_per_serial(revoked):
        try:
            revoked_at = whole_seconds(entry.revoked_at)
        except ValueError:
            raise RevocationError(f"Serial {entry.serial:x} has a revocation time without a zone.") from None
        item = _revoked_certificate(entry.serial, revoked_at, entry.reason)
        builder = builder.add_revoked_certificate(item)
    return builder.sign(ca.private_key, signature_hash(ca.private_key)).public_bytes(Encoding.DER)


@functools.lru_cache(maxsize=16384)
def _revoked_certificate(serial: int, revoked_at: datetime, reason: str) -> x509.RevokedCertificate:
    """One CRL entry. Cached: a list is signed again with every change, and building its entries would
    otherwise cost more than the signature (20 ms of 50 at 3,000 entries)."""
    flag = reason_flag(reason)
    item = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(revoked_at)
    if flag is not x509.ReasonFlags.unspecified:  # RFC 5280 5.3.1: leave reasonCode out instead
        item = item.add_extension(x509.CRLReason(flag), critical=False)
    return item.build()


def build_crl_pem(
    ca: CAKeyPair,
    revoked: Sequence[RevokedEntry],
    now: datetime,
    next_update: timedelta,
    crl_number: int,
) -> bytes:
    """:func:`build_crl` as PEM (``-----BEGIN X509 CRL-----``)."""
    der = build_crl(ca, revoked, now, next_update, crl_number)
    return x509.load_der_x509_crl(der).public_bytes(Encoding.PEM)


def _earliest_per_serial(revoked: Sequence[RevokedEntry]) -> list[RevokedEntry]:
    by_serial: dict[int, RevokedEntry] = {}
    for entry in revoked:
        if entry.serial <= 0:
            raise RevocationError(f"Certificate serial numbers are positive, not {entry.serial}.")
        if entry.revoked_at.tzinfo is None:
            raise RevocationError(f"Serial {entry.serial:x} has a revocation time without a zone.")
        seen = by_serial.get(entry.serial)
        if seen is None or entry.revoked_at < seen.revoked_at:
            by_serial[entry.serial] = entry
    return [by_serial[s] for s in sorted(by_serial)]
