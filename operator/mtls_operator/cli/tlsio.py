"""Real TLS 1.3 mutual handshakes through pyOpenSSL on cryptography's bundled OpenSSL (4.x: ML-DSA and
X25519MLKEM768 included). Used by `mtlsctl handshake`/`mtlsctl serve`, the demo and the tests."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from OpenSSL import SSL

_PEER_REQUIRED = SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT


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
        }


def _context(cert: Path | None, key: Path | None, ca: Path, server: bool) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    if cert is not None and key is not None:
        ctx.use_certificate_chain_file(str(cert))
        ctx.use_privatekey_file(str(key))
        ctx.check_privatekey()
    ctx.load_verify_locations(str(ca))
    ctx.set_verify(_PEER_REQUIRED if server else SSL.VERIFY_PEER, _ok)
    return ctx


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
    return {
        "protocol": conn.get_protocol_version_name(),
        "cipher": conn.get_cipher_name(),
        "group": group.decode() if isinstance(group, bytes) else group,
        "peer_subjects": tuple(c.subject.rfc4514_string() for c in chain),
        "peer_signature_algorithm": sig,
        "peer_key": key,
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
) -> HandshakeResult:
    """Connect, complete a mutual TLS 1.3 handshake, send ``message`` and read the echo."""
    try:
        ctx = _context(cert, key, ca, server=False)
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

    def __post_init__(self) -> None:
        self._ctx = _context(self.cert, self.key, self.ca, server=True)
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
            data = conn.recv(4096)
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


__all__ = ["EchoServer", "HandshakeResult", "client_handshake"]
