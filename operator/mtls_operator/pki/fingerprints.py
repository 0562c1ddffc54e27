"""SHA-256 fingerprints, the one way ``pki`` names a certificate or a public key in status and annotations."""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding


def sha256_hex(der: bytes) -> str:
    """Lower-case hex SHA-256 of ``der``."""
    return hashlib.sha256(der).hexdigest()


def certificate_fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER, lower-case hex (what ``openssl x509 -fingerprint -sha256`` shows)."""
    return sha256_hex(cert.public_bytes(Encoding.DER))
