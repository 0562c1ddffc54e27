"""What a TLS handshake of :mod:`mtls_operator.cli.tlsio` showed, and why one failed, in words: the
:class:`HandshakeResult` (protocol, cipher, group, the peer's chain, key and TLS 1.3 signature scheme, the
certificate this side presented), the peer certificate's name check, the verify callback that keeps the
first X.509 error for the message, and OpenSSL's error stack as one sentence.
"""

from __future__ import annotations

from dataclasses import dataclass

from OpenSSL import SSL

from mtls_operator.api.models import KeyAlgorithm, KeySpec
from mtls_operator.pki.keys import UnsupportedKeyError, key_algorithm_of


def key_label(cert: object) -> str | None:
    """The key of a certificate as the operator names it (ML-DSA-65, ECDSA-P256, RSA-2048, Ed25519)."""
    try:
        algorithm, size = key_algorithm_of(cert.public_key())  # type: ignore[attr-defined]
    except (UnsupportedKeyError, AttributeError, ValueError):
        return None
    return KeySpec(algorithm=algorithm, size=size).label


def tls13_scheme(cert: object) -> str | None:
    """The TLS 1.3 signature scheme a certificate's key signs CertificateVerify with: one per ML-DSA
    parameter set, ECDSA curve and EdDSA key (RFC 8446 4.2.3); an RSA key signs with RSA-PSS, whose hash
    the two sides choose (rsa_pss_rsae_*)."""
    try:
        algorithm, size = key_algorithm_of(cert.public_key())  # type: ignore[attr-defined]
    except (UnsupportedKeyError, AttributeError, ValueError):
        return None
    if algorithm is KeyAlgorithm.MLDSA:
        return f"mldsa{size}"
    if algorithm is KeyAlgorithm.ECDSA:
        return {256: "ecdsa_secp256r1_sha256", 384: "ecdsa_secp384r1_sha384", 521: "ecdsa_secp521r1_sha512"}[
            size
        ]
    if algorithm is KeyAlgorithm.ED25519:
        return "ed25519"
    return "rsa_pss_rsae_*"


@dataclass(frozen=True)
class HandshakeResult:
    ok: bool
    error: str | None = None
    protocol: str | None = None
    cipher: str | None = None
    group: str | None = None
    peer_subjects: tuple[str, ...] = ()
    peer_signature_algorithm: str | None = None
    peer_key: str | None = None
    echo: bytes | None = None
    peer_key_algorithm: str | None = None  # the peer certificate's key, e.g. ML-DSA-65 or ECDSA-P256
    peer_signature_scheme: str | None = None  # the TLS 1.3 scheme the peer's key signed the handshake with
    local_key_algorithm: str | None = None  # the certificate this side presented (a server's choice)

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "error": self.error,
            "protocol": self.protocol,
            "cipher": self.cipher,
            "group": self.group,
            "peerChain": list(self.peer_subjects),
            "peerSignatureAlgorithm": self.peer_signature_algorithm,
            "peerKey": self.peer_key,
            "peerKeyAlgorithm": self.peer_key_algorithm,
            "peerSignatureScheme": self.peer_signature_scheme,
            "localKeyAlgorithm": self.local_key_algorithm,
        }


# X509_V_ERR_* codes a peer's certificate commonly fails with (OpenSSL's x509_vfy.h), for messages.
_VERIFY_ERRORS = {
    2: "unable to get issuer certificate",
    7: "certificate signature failure",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    18: "self-signed certificate",
    19: "self-signed certificate in certificate chain",
    20: "unable to get local issuer certificate",
    21: "unable to verify the first certificate",
    24: "invalid CA certificate",
    26: "unsupported certificate purpose",
    62: "hostname mismatch",
}


def verify_callback(conn: SSL.Connection, _cert: object, errno: int, depth: int, preverify_ok: int) -> bool:
    if not preverify_ok and conn.get_app_data() is None:
        what = _VERIFY_ERRORS.get(errno, f"X509 verify error {errno}")
        where = "the peer certificate" if depth == 0 else f"certificate {depth} of the peer chain"
        conn.set_app_data(f"{what} at {where}")  # the first failure explains the refusal best
    return bool(preverify_ok)


def with_verify_error(conn: SSL.Connection, reason: str) -> str:
    detail = conn.get_app_data()
    return f"{reason} ({detail})" if isinstance(detail, str) else reason


def describe(conn: SSL.Connection) -> dict[str, object]:
    chain = list(conn.get_peer_cert_chain(as_cryptography=True) or [])
    leaf = conn.get_peer_certificate(as_cryptography=True)
    if leaf is not None and (not chain or chain[0] != leaf):
        chain.insert(0, leaf)  # a server's view of the client chain leaves out the client's certificate
    sig = None
    key = None
    if leaf is not None:
        oid = leaf.signature_algorithm_oid
        sig = getattr(oid, "_name", None) or oid.dotted_string
        key = type(leaf.public_key()).__name__.lstrip("_")
    group = conn.get_group_name()
    local = conn.get_certificate(as_cryptography=True)  # the server's choice among its certificates
    return {
        "protocol": conn.get_protocol_version_name(),
        "cipher": conn.get_cipher_name(),
        "group": group.decode() if isinstance(group, bytes) else group,
        "peer_subjects": tuple(c.subject.rfc4514_string() for c in chain),
        "peer_signature_algorithm": sig,
        "peer_key": key,
        "peer_key_algorithm": key_label(leaf) if leaf is not None else None,
        "peer_signature_scheme": tls13_scheme(leaf) if leaf is not None else None,
        "local_key_algorithm": key_label(local) if local is not None else None,
    }


def matches_name(conn: SSL.Connection, name: str) -> bool:
    from cryptography import x509

    cert = conn.get_peer_certificate(as_cryptography=True)
    if cert is None:
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    for dns in san.get_values_for_type(x509.DNSName):
        if dns == name or (dns.startswith("*.") and name.split(".", 1)[-1] == dns[2:]):
            return True
    return name in [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]


def error_reason(exc: Exception) -> str:
    parts = []
    for arg in exc.args:
        if isinstance(arg, list):
            for item in arg:
                if isinstance(item, tuple) and item:
                    parts.append(str(item[-1]))
        else:
            parts.append(str(arg))
    return "; ".join(p for p in parts if p) or type(exc).__name__
