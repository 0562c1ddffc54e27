"""An OCSP responder's core (RFC 6960, RFC 5019 profile): request bytes in, signed response bytes out.

The CA signs its own responses (it is always an authorised responder for the certificates it issued), so
there is no delegated OCSP signing certificate to issue and rotate. The request's nonce, if any, is echoed.
Works for every CA algorithm the operator supports, ML-DSA included.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final, Literal, TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from mtls_operator.pki.ca import CAKeyPair
from mtls_operator.pki.certs import signature_hash, whole_seconds
from mtls_operator.pki.crl import RevokedEntry, reason_flag

UNKNOWN: Final = "unknown"
CertStatus: TypeAlias = RevokedEntry | Literal["unknown"] | None
"""What ``lookup`` says about a serial: None = good (issued, not revoked), a :class:`RevokedEntry` =
revoked, ``"unknown"`` = this CA never issued it (or the operator does not know)."""

DEFAULT_VALIDITY: Final = timedelta(hours=1)

_HASHES: Final[dict[str, Callable[[], hashes.HashAlgorithm]]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def respond(
    request_der: bytes,
    ca: CAKeyPair,
    lookup: Callable[[int], CertStatus],
    now: datetime,
    validity: timedelta = DEFAULT_VALIDITY,
) -> bytes:
    """A DER OCSPResponse for ``request_der``, signed by ``ca``.

    * unparsable request (or one asking about several certificates) -> ``malformedRequest``;
    * a CertID naming another CA -> ``unauthorized`` (RFC 5019 2.2.3: not authoritative);
    * otherwise ``successful`` with the status ``lookup(serial)`` gives, thisUpdate ``now`` and nextUpdate
      ``now + validity`` (whole seconds); a revoked answer carries the revocation time and reason.
    """
    try:
        request = ocsp.load_der_ocsp_request(request_der)
        serial = request.serial_number
        algorithm = request.hash_algorithm
        name_hash, key_hash = request.issuer_name_hash, request.issuer_key_hash
    except Exception:  # whatever the parser raises on a client's bytes, the request is malformed
        return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    known = algorithm.name in _HASHES
    if not known or (name_hash, key_hash) != issuer_hashes(ca.certificate, algorithm.name):
        return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)

    this_update = whole_seconds(now)
    status = lookup(serial)
    revoked_at: datetime | None = None
    reason: x509.ReasonFlags | None = None
    if status is None:
        cert_status = ocsp.OCSPCertStatus.GOOD
    elif isinstance(status, RevokedEntry):
        cert_status = ocsp.OCSPCertStatus.REVOKED
        revoked_at = whole_seconds(status.revoked_at)
        flag = reason_flag(status.reason)
        reason = None if flag is x509.ReasonFlags.unspecified else flag
    else:
        cert_status = ocsp.OCSPCertStatus.UNKNOWN
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response_by_hash(
            issuer_name_hash=name_hash,
            issuer_key_hash=key_hash,
            serial_number=serial,
            algorithm=_HASHES[algorithm.name](),
            cert_status=cert_status,
            this_update=this_update,
            next_update=this_update + validity,
            revocation_time=revoked_at,
            revocation_reason=reason,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, ca.certificate)
    )
    nonce = _nonce(request)
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    response = builder.sign(ca.private_key, signature_hash(ca.private_key))
    return response.public_bytes(serialization.Encoding.DER)


def issuer_hashes(issuer: x509.Certificate, algorithm: str = "sha1") -> tuple[bytes, bytes]:
    """The CertID's (issuerNameHash, issuerKeyHash) for certificates ``issuer`` signed: the hash of its
    subject DER and of its subjectPublicKey BIT STRING contents (RFC 6960 4.1.1)."""
    name = hashlib.new(algorithm, issuer.subject.public_bytes()).digest()
    spki = issuer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return name, hashlib.new(algorithm, _subject_public_key(spki)).digest()


def _nonce(request: ocsp.OCSPRequest) -> bytes | None:
    try:
        return request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return None
    except (ValueError, x509.DuplicateExtension):
        return None


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(serialization.Encoding.DER)


def _subject_public_key(spki: bytes) -> bytes:
    """The subjectPublicKey bits (without the unused-bits octet) of a DER SubjectPublicKeyInfo."""
    _, body, _ = _tlv(spki, 0)  # SEQUENCE
    _, _, pos = _tlv(spki, body)  # AlgorithmIdentifier
    _, bits, end = _tlv(spki, pos)  # BIT STRING
    return spki[bits + 1 : end]


def _tlv(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, value start, value end) of the DER element at ``pos`` (input is the library's own DER)."""
    tag, length = der[pos], der[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(der[pos : pos + count], "big")
        pos += count
    return tag, pos, pos + length
