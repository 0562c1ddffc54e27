"""Real TLS 1.3 mutual handshakes through pyOpenSSL on cryptography's bundled OpenSSL (4.x: ML-DSA and
X25519MLKEM768 included). Used by `mtlsctl handshake`/`serve`/`probe`, the demo and the tests.

A server (and a client) may load several certificates of different key algorithms, e.g. the ML-DSA-65
tls.crt and the ECDSA tls-ecdsa.crt of a dual certificate: OpenSSL keeps one per key type and, in each
handshake, presents the one the peer's signature_algorithms allow (ML-DSA to a post-quantum peer, ECDSA to
one that offers only classical schemes). A client *profile* says what this side offers: ``pqc`` is
OpenSSL 4's default (ML-DSA, X25519MLKEM768 and the classical ones), ``legacy`` only the classical
signature schemes and groups of a pre-PQC stack such as OpenSSL 3.0. What a handshake showed, and why one
failed, is put in words by :mod:`mtls_operator.cli.tls_results`.
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

from mtls_operator.cli.tls_results import (
    HandshakeResult,
    describe,
    error_reason,
    matches_name,
    verify_callback,
    with_verify_error,
)

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


def _blocking_with_deadline(sock: socket.socket, seconds: float) -> None:
    """pyOpenSSL needs a blocking socket; OS-level send/receive timeouts still bound every wait."""
    sock.settimeout(None)
    tv = struct.pack("ll", int(seconds), int((seconds % 1) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)


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
        ctx.set_verify(_PEER_REQUIRED if server else SSL.VERIFY_PEER, verify_callback)
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

    def exchange(conn: SSL.Connection, _: socket.socket, info: dict[str, object]) -> HandshakeResult:
        if server_name and not matches_name(conn, server_name):
            return HandshakeResult(False, f"the server certificate is not valid for {server_name}", **info)  # type: ignore[arg-type]
        conn.sendall(message)
        echo = conn.recv(4096)
        if not echo:
            return HandshakeResult(False, "the server closed the connection without answering", **info)  # type: ignore[arg-type]
        return HandshakeResult(True, None, echo=echo, **info)  # type: ignore[arg-type]

    return _as_client(host, port, cert, key, ca, server_name, timeout, profile, extra, exchange)


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

    def verdict(conn: SSL.Connection, sock: socket.socket, info: dict[str, object]) -> HandshakeResult:
        if ca is not None and server_name and not matches_name(conn, server_name):
            return HandshakeResult(False, f"the server certificate is not valid for {server_name}", **info)  # type: ignore[arg-type]
        _blocking_with_deadline(sock, wait)
        try:
            conn.recv(1)  # an alert (the client refused), data (a server that speaks first), or nothing
        except SSL.WantReadError:
            pass  # no alert within the wait: the server accepted us
        except SSL.ZeroReturnError:
            pass  # closed cleanly after the handshake: nothing was refused
        return HandshakeResult(True, None, **info)  # type: ignore[arg-type]

    return _as_client(host, port, cert, key, ca, server_name, timeout, profile, extra, verdict)


def _as_client(
    host: str,
    port: int,
    cert: Path | None,
    key: Path | None,
    ca: Path | None,
    server_name: str | None,
    timeout: float,
    profile: str,
    extra: Pairs,
    after: Callable[[SSL.Connection, socket.socket, dict[str, object]], HandshakeResult],
) -> HandshakeResult:
    """Connect as a client of ``profile``, complete the handshake, then ``after(conn, sock, info)``
    decides the result; a failure at any step is a result that says why (with what the handshake showed,
    ``info``, when the peer refused us after it), and the connection is always closed."""
    try:
        ctx = _context(cert, key, ca, server=False, extra=extra, profile=profile)
    except SSL.Error as exc:
        return HandshakeResult(False, f"cannot load the client credentials: {error_reason(exc)}")
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
        info = describe(conn)
        return after(conn, sock, info)
    except SSL.SysCallError as exc:
        return HandshakeResult(False, f"connection failed: {error_reason(exc)}", **info)  # type: ignore[arg-type]
    except SSL.Error as exc:
        return HandshakeResult(False, with_verify_error(conn, error_reason(exc)), **info)  # type: ignore[arg-type]
    except OSError as exc:
        return HandshakeResult(False, f"connection failed: {exc}", **info)  # type: ignore[arg-type]
    finally:
        try:
            conn.shutdown()
        except SSL.Error:
            pass
        sock.close()


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
            info = describe(conn)
            try:
                data = conn.recv(4096)
            except SSL.ZeroReturnError:  # a probe: the handshake was all it wanted
                data = b""
            if data:
                conn.sendall(data)
            result = HandshakeResult(True, None, echo=data, **info)  # type: ignore[arg-type]
        except (SSL.Error, OSError) as exc:
            result = HandshakeResult(False, with_verify_error(conn, error_reason(exc)))
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
    "client_handshake",
    "probe",
]
