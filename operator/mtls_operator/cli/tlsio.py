"""Real TLS 1.3 mutual handshakes through pyOpenSSL on cryptography's bundled OpenSSL (4.x: ML-DSA and
X25519MLKEM768 included). Used by `mtlsctl handshake`/`serve`/`probe`, the demo and the tests.

A server (and a client) may load several certificates of different key algorithms, e.g. the ML-DSA-65
tls.crt and the ECDSA tls-ecdsa.crt of a dual certificate: OpenSSL keeps one per key type and, in each
handshake, presents the one the peer's signature_algorithms allow (ML-DSA to a post-quantum peer, ECDSA to
one that offers only classical schemes). A client *profile* says what this side offers: ``pqc`` is
OpenSSL 4's default (ML-DSA, X25519MLKEM768 and the classical ones), ``legacy`` only the classical
signature schemes and groups of a pre-PQC stack such as OpenSSL 3.0.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from OpenSSL import SSL
from OpenSSL._util import lib as _ssl_lib

from mtls_operator.api.models import KeyAlgorithm, KeySpec
from mtls_operator.pki.keys import UnsupportedKeyError, key_algorithm_of

_PEER_REQUIRED = SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT

# What a pre-PQC TLS 1.3 stack (OpenSSL 3.0, Go < 1.24, ...) offers: classical signature schemes and groups.
LEGACY_SIGALGS = (
    "ecdsa_secp256r1_sha256:ecdsa_secp384r1_sha384:ecdsa_secp521r1_sha512:ed25519:ed448:"
    "rsa_pss_pss_sha256:rsa_pss_pss_sha384:rsa_pss_pss_sha512:"
    "rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:rsa_pss_rsae_sha512:"
    "rsa_pkcs1_sha256:rsa_pkcs1_sha384:rsa_pkcs1_sha512"
)
LEGACY_GROUPS = "X25519:P-256:X448:P-384:P-521"
PROFILES = ("pqc", "legacy")


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


def _blocking_with_deadline(sock: socket.socket, seconds: float) -> None:
    """pyOpenSSL needs a blocking socket; OS-level send/receive timeouts still bound every wait."""
    sock.settimeout(None)
    tv = struct.pack("ll", int(seconds), int((seconds % 1) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)


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


Pairs = tuple[tuple[Path, Path], ...]


def _context(
    cert: Path | None,
    key: Path | None,
    ca: Path | None,
    server: bool,
    extra: Pairs = (),
    profile: str = "pqc",
) -> SSL.Context:
    """A TLS 1.3 context with the (cert, key) pair and the ``extra`` pairs (one per key type: OpenSSL
    presents the one the peer can verify), trusting ``ca`` (None: verify nothing, for a probe)."""
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    pairs = ((cert, key),) if cert is not None and key is not None else ()
    for chain, private in (*pairs, *extra):
        ctx.use_certificate_chain_file(str(chain))
        ctx.use_privatekey_file(str(private))
        ctx.check_privatekey()
    if profile == "legacy":
        _restrict(ctx, LEGACY_SIGALGS, LEGACY_GROUPS)
    elif profile != "pqc":
        raise ValueError(f"unknown client profile {profile!r}: use {' or '.join(PROFILES)}")
    if ca is not None:
        ctx.load_verify_locations(str(ca))
        ctx.set_verify(_PEER_REQUIRED if server else SSL.VERIFY_PEER, _ok)
    else:
        ctx.set_verify(SSL.VERIFY_NONE)
    return ctx


def _restrict(ctx: SSL.Context, sigalgs: str, groups: str) -> None:
    """Offer only these signature schemes (what a client accepts from the server, and signs with) and
    key-exchange groups."""
    raw = ctx._context  # pyOpenSSL wraps neither SSL_CTX_set1_sigalgs_list nor set1_groups_list
    if _ssl_lib.SSL_CTX_set1_sigalgs_list(raw, sigalgs.encode()) != 1:
        raise SSL.Error("cannot set the legacy profile's signature algorithms")
    if _ssl_lib.SSL_CTX_set1_curves_list(raw, groups.encode()) != 1:
        raise SSL.Error("cannot set the legacy profile's groups")


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


def _ok(conn: SSL.Connection, _cert: object, errno: int, depth: int, preverify_ok: int) -> bool:
    if not preverify_ok and conn.get_app_data() is None:
        what = _VERIFY_ERRORS.get(errno, f"X509 verify error {errno}")
        where = "the peer certificate" if depth == 0 else f"certificate {depth} of the peer chain"
        conn.set_app_data(f"{what} at {where}")  # the first failure explains the refusal best
    return bool(preverify_ok)


def _with_verify_error(conn: SSL.Connection, reason: str) -> str:
    detail = conn.get_app_data()
    return f"{reason} ({detail})" if isinstance(detail, str) else reason


def _describe(conn: SSL.Connection) -> dict[str, object]:
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


def client_handshake(
    host: str,
    port: int,
    *,
    cert: Path | None,
    key: Path | None,
    ca: Path,
    server_name: str | None = None,
    message: bytes = b"ping\n",
    timeout: float = 5.0,
    profile: str = "pqc",
    extra: Pairs = (),
) -> HandshakeResult:
    """Connect, complete a mutual TLS 1.3 handshake, send ``message`` and read the echo. ``profile`` and
    ``extra`` (more client certificates, one per key type) as for :func:`probe`."""
    try:
        ctx = _context(cert, key, ca, server=False, extra=extra, profile=profile)
    except SSL.Error as exc:
        return HandshakeResult(False, f"cannot load the client credentials: {_reason(exc)}")
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        return HandshakeResult(False, f"cannot connect to {host}:{port}: {exc}")
    _blocking_with_deadline(sock, timeout)
    conn = SSL.Connection(ctx, sock)
    if server_name:
        conn.set_tlsext_host_name(server_name.encode())  # the name itself is checked after the handshake
    conn.set_connect_state()
    info: dict[str, object] = {}  # what the handshake showed, kept when the peer refuses us afterwards
    try:
        conn.do_handshake()
        info = _describe(conn)
        if server_name and not _matches_name(conn, server_name):
            return HandshakeResult(False, f"the server certificate is not valid for {server_name}", **info)  # type: ignore[arg-type]
        conn.sendall(message)
        echo = conn.recv(4096)
        if not echo:
            return HandshakeResult(False, "the server closed the connection without answering", **info)  # type: ignore[arg-type]
        return HandshakeResult(True, None, echo=echo, **info)  # type: ignore[arg-type]
    except SSL.SysCallError as exc:
        return HandshakeResult(False, f"connection failed: {_reason(exc)}", **info)  # type: ignore[arg-type]
    except SSL.Error as exc:
        return HandshakeResult(False, _with_verify_error(conn, _reason(exc)), **info)  # type: ignore[arg-type]
    except OSError as exc:
        return HandshakeResult(False, f"connection failed: {exc}", **info)  # type: ignore[arg-type]
    finally:
        try:
            conn.shutdown()
        except SSL.Error:
            pass
        sock.close()


def probe(
    host: str,
    port: int,
    *,
    profile: str = "pqc",
    cert: Path | None = None,
    key: Path | None = None,
    ca: Path | None = None,
    server_name: str | None = None,
    extra: Pairs = (),
    timeout: float = 5.0,
    wait: float = 1.0,
) -> HandshakeResult:
    """Which certificate a server presents to a client of ``profile`` (``pqc`` or ``legacy``), and whether
    it accepts this client's certificate (``cert``/``key``, plus ``extra`` pairs: the client then sends the
    one the server's CertificateRequest allows).

    Completes a TLS 1.3 handshake without sending anything, then waits up to ``wait`` seconds for the
    server's verdict on the client (a TLS 1.3 server refuses a client certificate with an alert after the
    handshake). ``ok`` is True when the handshake completed and no alert came. Without ``ca`` the server's
    chain is not verified: the probe only reports what the server chose."""
    try:
        ctx = _context(cert, key, ca, server=False, extra=extra, profile=profile)
    except SSL.Error as exc:
        return HandshakeResult(False, f"cannot load the client credentials: {_reason(exc)}")
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        return HandshakeResult(False, f"cannot connect to {host}:{port}: {exc}")
    _blocking_with_deadline(sock, timeout)
    conn = SSL.Connection(ctx, sock)
    if server_name:
        conn.set_tlsext_host_name(server_name.encode())
    conn.set_connect_state()
    info: dict[str, object] = {}
    try:
        conn.do_handshake()
        info = _describe(conn)
        if ca is not None and server_name and not _matches_name(conn, server_name):
            return HandshakeResult(False, f"the server certificate is not valid for {server_name}", **info)  # type: ignore[arg-type]
        _blocking_with_deadline(sock, wait)
        try:
            conn.recv(1)  # an alert (the client refused), data (a server that speaks first), or nothing
        except SSL.WantReadError:
            pass  # no alert within the wait: the server accepted us
        except SSL.ZeroReturnError:
            pass  # closed cleanly after the handshake: nothing was refused
        return HandshakeResult(True, None, **info)  # type: ignore[arg-type]
    except SSL.SysCallError as exc:
        return HandshakeResult(False, f"connection failed: {_reason(exc)}", **info)  # type: ignore[arg-type]
    except SSL.Error as exc:
        return HandshakeResult(False, _with_verify_error(conn, _reason(exc)), **info)  # type: ignore[arg-type]
    except OSError as exc:
        return HandshakeResult(False, f"connection failed: {exc}", **info)  # type: ignore[arg-type]
    finally:
        try:
            conn.shutdown()
        except SSL.Error:
            pass
        sock.close()


def _matches_name(conn: SSL.Connection, name: str) -> bool:
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


def _reason(exc: Exception) -> str:
    parts = []
    for arg in exc.args:
        if isinstance(arg, list):
            for item in arg:
                if isinstance(item, tuple) and item:
                    parts.append(str(item[-1]))
        else:
            parts.append(str(arg))
    return "; ".join(p for p in parts if p) or type(exc).__name__


def _linger(raw: socket.socket, seconds: float = 1.0) -> None:
    """After refusing a peer, let it read our alert: closing a socket with unread input (the client's
    first bytes of data, sent right after its half of a TLS 1.3 handshake) makes the kernel send a
    reset that can destroy the alert before the client reads it. Half-close, then drain briefly."""
    try:
        raw.shutdown(socket.SHUT_WR)
        raw.settimeout(seconds)
        while raw.recv(4096):
            pass
    except OSError:
        pass


@dataclass
class EchoServer:
    """A small mutual-TLS echo server; each accepted handshake is recorded in ``results``."""

    cert: Path
    key: Path
    ca: Path
    host: str = "127.0.0.1"
    port: int = 0
    results: list[HandshakeResult] = field(default_factory=list)
    on_result: Callable[[HandshakeResult], None] | None = None  # called as each connection ends
    extra: Pairs = ()  # more (certificate, key) pairs, e.g. a dual certificate's tls-ecdsa.crt/.key

    def __post_init__(self) -> None:
        self._ctx = _context(self.cert, self.key, self.ca, server=True, extra=self.extra)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((self.host, self.port))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def serve_forever(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(raw,), daemon=True).start()

    def _handle(self, raw: socket.socket) -> None:
        _blocking_with_deadline(raw, 5.0)
        conn = SSL.Connection(self._ctx, raw)
        conn.set_accept_state()
        try:
            conn.do_handshake()
            info = _describe(conn)
            try:
                data = conn.recv(4096)
            except SSL.ZeroReturnError:  # a probe: the handshake was all it wanted
                data = b""
            if data:
                conn.sendall(data)
            result = HandshakeResult(True, None, echo=data, **info)  # type: ignore[arg-type]
        except (SSL.Error, OSError) as exc:
            result = HandshakeResult(False, _with_verify_error(conn, _reason(exc)))
            _linger(raw)
        else:
            try:
                conn.shutdown()
            except (SSL.Error, OSError):
                pass  # the exchange is done; a peer that hangs up first is no failure
        finally:
            raw.close()
        self.results.append(result)
        if self.on_result is not None:
            self.on_result(result)

    def start(self) -> EchoServer:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._sock.close()
        if self._thread is not None:
            self._thread.join(timeout=2)


__all__ = [
    "PROFILES",
    "EchoServer",
    "HandshakeResult",
    "client_handshake",
    "key_label",
    "probe",
    "tls13_scheme",
]
