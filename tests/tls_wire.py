"""What a TLS 1.3 handshake negotiated, read off the wire: a loopback relay records the bytes of each
connection, and a key log (NSS format, from whichever side can write one) opens the encrypted handshake.

The signature scheme each side used is the first two bytes of its CertificateVerify (RFC 8446 4.4.3),
which TLS 1.3 sends encrypted under the handshake traffic secrets; the group is the ServerHello's
key_share (sent in the clear). Nothing here trusts either peer's own report of the handshake.
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

# TLS SignatureScheme code points (RFC 8446, draft-ietf-tls-mldsa) and NamedGroup ones (RFC 8446,
# draft-ietf-tls-ecdhe-mlkem).
SIGNATURE_SCHEMES = {
    0x0403: "ecdsa_secp256r1_sha256",
    0x0503: "ecdsa_secp384r1_sha384",
    0x0603: "ecdsa_secp521r1_sha512",
    0x0804: "rsa_pss_rsae_sha256",
    0x0805: "rsa_pss_rsae_sha384",
    0x0806: "rsa_pss_rsae_sha512",
    0x0807: "ed25519",
    0x0809: "rsa_pss_pss_sha256",
    0x0904: "mldsa44",
    0x0905: "mldsa65",
    0x0906: "mldsa87",
}
GROUPS = {0x001D: "x25519", 0x0017: "secp256r1", 0x0018: "secp384r1", 0x11EC: "X25519MLKEM768"}
# cipher suite -> (AEAD, key length, hash)
_SUITES = {
    0x1301: (AESGCM, 16, hashes.SHA256()),
    0x1302: (AESGCM, 32, hashes.SHA384()),
    0x1303: (ChaCha20Poly1305, 32, hashes.SHA256()),
}
_HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
_HANDSHAKE, _APPLICATION_DATA, _CHANGE_CIPHER_SPEC, _ALERT = 22, 23, 20, 21
_CLIENT_HELLO, _SERVER_HELLO, _CERTIFICATE_VERIFY, _FINISHED = 1, 2, 15, 20


class KeyLog:
    """An NSS key log: lines ``LABEL <client_random hex> <secret hex>``, from a file or added one by one."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._lines: list[str] = []
        self._lock = threading.Lock()

    def add(self, line: bytes | str) -> None:
        with self._lock:
            self._lines.append(line.decode() if isinstance(line, bytes) else line)

    def secrets(self, client_random: bytes) -> dict[str, bytes]:
        lines = list(self._lines)
        if self.path is not None and self.path.exists():
            lines += self.path.read_text().splitlines()
        out = {}
        for line in lines:
            parts = line.split()
            if len(parts) == 3 and parts[1].lower() == client_random.hex():
                out[parts[0]] = bytes.fromhex(parts[2])
        return out


@dataclass
class Connection:
    """The bytes one connection carried, each direction in order."""

    to_server: bytearray = field(default_factory=bytearray)
    to_client: bytearray = field(default_factory=bytearray)


class Relay:
    """A TCP relay on 127.0.0.1 in front of ``127.0.0.1:upstream``: connect to ``port`` instead, and find
    what each connection carried in ``connections`` (in the order they were accepted)."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.connections: list[Connection] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connection = Connection()
            self.connections.append(connection)
            thread = threading.Thread(target=self._pump, args=(client, connection), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _pump(self, client: socket.socket, connection: Connection) -> None:
        try:
            server = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
        except OSError:
            client.close()
            return
        sides = {client: (server, connection.to_server), server: (client, connection.to_client)}
        with selectors.DefaultSelector() as selector, client, server:
            for sock in sides:
                selector.register(sock, selectors.EVENT_READ)
            open_reads = 2
            while open_reads and not self._stop.is_set():
                for key, _ in selector.select(timeout=0.2):
                    sock: socket.socket = key.fileobj  # type: ignore[assignment]
                    other, record = sides[sock]
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        selector.unregister(sock)
                        open_reads -= 1
                        try:
                            other.shutdown(socket.SHUT_WR)
                        except OSError:
                            pass
                        continue
                    record += data
                    try:
                        other.sendall(data)
                    except OSError:
                        pass

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=2)


ALERTS = {
    0: "close_notify",
    40: "handshake_failure",
    42: "bad_certificate",
    43: "unsupported_certificate",
    45: "certificate_expired",
    46: "certificate_unknown",
    48: "unknown_ca",
    51: "decrypt_error",
    80: "internal_error",
    116: "certificate_required",
}


@dataclass(frozen=True)
class Negotiated:
    """What one TLS 1.3 handshake negotiated, as the bytes on the wire say."""

    group: str | None
    server_scheme: str | None  # from the server's CertificateVerify
    client_scheme: str | None  # from the client's CertificateVerify (None: it sent none)
    server_alerts: tuple[str, ...] = ()  # the alerts the server sent encrypted (close_notify included)
    client_alerts: tuple[str, ...] = ()
    server_data: int = 0  # bytes of application data the server sent (an echo)
    client_data: int = 0


def _records(data: bytes) -> list[tuple[bytes, bytes]]:
    """(header, fragment) of each complete TLS record."""
    out, at = [], 0
    while at + 5 <= len(data):
        length = struct.unpack("!H", data[at + 3 : at + 5])[0]
        if at + 5 + length > len(data):
            break
        out.append((data[at : at + 5], data[at + 5 : at + 5 + length]))
        at += 5 + length
    return out


def _messages(data: bytes) -> list[tuple[int, bytes]]:
    """(type, body) of each complete handshake message in a handshake byte stream."""
    out, at = [], 0
    while at + 4 <= len(data):
        length = int.from_bytes(data[at + 1 : at + 4], "big")
        if at + 4 + length > len(data):
            break
        out.append((data[at], data[at + 4 : at + 4 + length]))
        at += 4 + length
    return out


def _clear_handshake(data: bytes) -> bytes:
    return b"".join(fragment for header, fragment in _records(data) if header[0] == _HANDSHAKE)


def _expand_label(secret: bytes, label: bytes, length: int, algorithm: hashes.HashAlgorithm) -> bytes:
    full = b"tls13 " + label
    info = struct.pack("!H", length) + bytes([len(full)]) + full + b"\x00"
    return HKDFExpand(algorithm, length, info).derive(secret)


@dataclass
class _Flight:
    """What one side sent encrypted: its handshake messages (under its handshake traffic secret) and the
    alerts (under either secret)."""

    messages: list[tuple[int, bytes]] = field(default_factory=list)
    alerts: list[int] = field(default_factory=list)
    application_data: int = 0  # bytes of application data, once the handshake was done


def _decrypt(data: bytes, secrets: list[bytes], suite: int) -> _Flight:
    """Decrypt one side's records: under ``secrets[0]`` (handshake) until its Finished, then under
    ``secrets[1]`` (application, when known). Stops at the first record it cannot open."""
    from cryptography.exceptions import InvalidTag

    aead, key_length, algorithm = _SUITES[suite]

    def keys(secret: bytes) -> tuple[AESGCM | ChaCha20Poly1305, bytes]:
        key = _expand_label(secret, b"key", key_length, algorithm)
        return aead(key), _expand_label(secret, b"iv", 12, algorithm)

    flight = _Flight()
    epoch, (cipher, iv), seq, stream = 0, keys(secrets[0]), 0, b""
    for header, fragment in _records(data):
        if header[0] != _APPLICATION_DATA:
            continue
        nonce = bytes(a ^ b for a, b in zip(iv, seq.to_bytes(12, "big"), strict=True))
        seq += 1
        try:
            plain = cipher.decrypt(nonce, fragment, header).rstrip(b"\x00")
        except InvalidTag:
            break
        kind, content = plain[-1], plain[:-1]
        if kind == _ALERT and len(content) >= 2:
            flight.alerts.append(content[1])
        elif kind == _APPLICATION_DATA:
            flight.application_data += len(content)
        elif kind == _HANDSHAKE and epoch == 0:
            stream += content
            flight.messages = _messages(stream)
            if any(message == _FINISHED for message, _ in flight.messages):
                if len(secrets) < 2:
                    break
                epoch, (cipher, iv), seq = 1, keys(secrets[1]), 0
    return flight


def _extensions(body: bytes, at: int) -> dict[int, bytes]:
    total = struct.unpack("!H", body[at : at + 2])[0]
    out, at, end = {}, at + 2, at + 2 + total
    while at + 4 <= end:
        kind, length = struct.unpack("!HH", body[at : at + 4])
        out[kind] = body[at + 4 : at + 4 + length]
        at += 4 + length
    return out


def client_random(connection: Connection) -> bytes | None:
    hellos = _messages(_clear_handshake(bytes(connection.to_server)))
    return hellos[0][1][2:34] if hellos and hellos[0][0] == _CLIENT_HELLO else None


def offered_schemes(connection: Connection) -> list[str]:
    """The signature schemes the client offered in its ClientHello (signature_algorithms, in the clear)."""
    hellos = _messages(_clear_handshake(bytes(connection.to_server)))
    assert hellos and hellos[0][0] == _CLIENT_HELLO, "the connection carried no ClientHello"
    body = hellos[0][1]
    at = 34
    at += 1 + body[at]  # legacy_session_id
    at += 2 + struct.unpack("!H", body[at : at + 2])[0]  # cipher_suites
    at += 1 + body[at]  # legacy_compression_methods
    listed = _extensions(body, at).get(13, b"")[2:]
    codes = [struct.unpack("!H", listed[i : i + 2])[0] for i in range(0, len(listed), 2)]
    return [SIGNATURE_SCHEMES.get(code, f"0x{code:04x}") for code in codes]


def clear_alerts(data: bytes | bytearray) -> list[str]:
    """The alerts one side sent in the clear (before any handshake key), e.g. a refused ClientHello."""
    return [ALERTS.get(f[1], str(f[1])) for h, f in _records(bytes(data)) if h[0] == _ALERT and len(f) >= 2]


def keys_known(connection: Connection, keys: KeyLog) -> bool:
    """True when the key log holds this connection's handshake secrets."""
    random = client_random(connection)
    return random is not None and "SERVER_HANDSHAKE_TRAFFIC_SECRET" in keys.secrets(random)


def negotiated(connection: Connection, keys: KeyLog) -> Negotiated:
    """Decode one recorded TLS 1.3 handshake; AssertionError when its bytes or keys fall short."""
    random = client_random(connection)
    assert random is not None, "the connection carried no ClientHello"
    server_hello = next(
        (
            body
            for kind, body in _messages(_clear_handshake(bytes(connection.to_client)))
            if kind == _SERVER_HELLO and body[2:34] != _HRR_RANDOM
        ),
        None,
    )
    assert server_hello is not None, "the connection carried no ServerHello"
    at = 34
    at += 1 + server_hello[at]  # legacy_session_id_echo
    suite = struct.unpack("!H", server_hello[at : at + 2])[0]
    extensions = _extensions(server_hello, at + 3)
    group = None
    if 51 in extensions:  # key_share: NamedGroup first
        code = struct.unpack("!H", extensions[51][:2])[0]
        group = GROUPS.get(code, f"0x{code:04x}")
    secrets = keys.secrets(random)
    missing = {"SERVER_HANDSHAKE_TRAFFIC_SECRET", "CLIENT_HANDSHAKE_TRAFFIC_SECRET"} - set(secrets)
    assert not missing, f"the key log has no {sorted(missing)} for client_random {random.hex()}"

    def flight(data: bytearray, side: str) -> _Flight:
        handshake = secrets[f"{side}_HANDSHAKE_TRAFFIC_SECRET"]
        application = secrets.get(f"{side}_TRAFFIC_SECRET_0")
        return _decrypt(bytes(data), [handshake, *([application] if application else [])], suite)

    def scheme(sent: _Flight) -> str | None:
        for kind, body in sent.messages:
            if kind == _CERTIFICATE_VERIFY:
                code = struct.unpack("!H", body[:2])[0]
                return SIGNATURE_SCHEMES.get(code, f"0x{code:04x}")
        return None

    server, client = flight(connection.to_client, "SERVER"), flight(connection.to_server, "CLIENT")
    return Negotiated(
        group=group,
        server_scheme=scheme(server),
        client_scheme=scheme(client),
        server_alerts=tuple(ALERTS.get(a, str(a)) for a in server.alerts),
        client_alerts=tuple(ALERTS.get(a, str(a)) for a in client.alerts),
        server_data=server.application_data,
        client_data=client.application_data,
    )
