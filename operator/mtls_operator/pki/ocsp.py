"""An OCSP responder's core (RFC 6960, RFC 5019 profile): request bytes in, signed response bytes out.

The CA signs its own responses (it is always an authorised responder for the certificates it issued), so
there is no delegated OCSP signing certificate to issue and rotate. The request's nonce, if any, is echoed.
Works for every CA algorithm the operator supports, ML-DSA included.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class Question:
    """What an OCSP request asks, once parsed and found to name ``ca``: the serial, the CertID hash
    algorithm and hashes (the answer repeats them), and the nonce, if any."""

    serial: int
    hash_algorithm: str  # "sha1", "sha256", ...
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    nonce: bytes | None = None


def read_request(request_der: bytes, ca: CAKeyPair) -> Question | bytes:
    """The question ``request_der`` asks of ``ca``, or, when there is none to answer, the DER of the
    unsigned response to send instead: ``malformedRequest`` for bytes that are not one OCSP request about
    one certificate, ``unauthorized`` for a CertID naming another CA (RFC 5019 2.2.3). Cheap: no signing."""
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
    return Question(serial, algorithm.name, name_hash, key_hash, _nonce(request))


def sign_answer(
    question: Question,
    ca: CAKeyPair,
    status: CertStatus,
    now: datetime,
    validity: timedelta = DEFAULT_VALIDITY,
) -> bytes:
    """A ``successful`` DER OCSPResponse signed by ``ca`` giving ``status`` for ``question``'s serial:
    thisUpdate ``now`` and nextUpdate ``now + validity`` (whole seconds); a revoked answer carries the
    revocation time and reason; the question's nonce is echoed when it has one."""
    this_update = whole_seconds(now)
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
            issuer_name_hash=question.issuer_name_hash,
            issuer_key_hash=question.issuer_key_hash,
            serial_number=question.serial,
            algorithm=_HASHES[question.hash_algorithm](),
            cert_status=cert_status,
            this_update=this_update,
            next_update=this_update + validity,
            revocation_time=revoked_at,
            revocation_reason=reason,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, ca.certificate)
    )
    if question.nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(question.nonce), critical=False)
    response = builder.sign(ca.private_key, signature_hash(ca.private_key))
    return response.public_bytes(serialization.Encoding.DER)


def try_later() -> bytes:
    """The unsigned ``tryLater`` response: the responder cannot answer for this CA right now."""
    return _unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER)


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
    question = read_request(request_der, ca)
    if isinstance(question, bytes):
        return question
    return sign_answer(question, ca, lookup(question.serial), now, validity)


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
