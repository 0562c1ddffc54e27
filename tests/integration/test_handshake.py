"""Real mutual-TLS handshakes with certificates taken from the operator's Secrets.

ML-DSA goes through pyOpenSSL on cryptography's bundled OpenSSL 4; classical certificates also through
Python's own `ssl` module (the system OpenSSL), an independent TLS stack. What each handshake negotiated
(group, the signature scheme of each CertificateVerify, the alerts) is read off the wire through a
loopback relay, with the TLS secrets of one side (tests/tls_wire.py).
"""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path
from typing import Any

import pytest

from helpers import wait_for
from mtls_objects import (
    create_certificate,
    create_issuer,
    secret_data,
    self_signed,
    wait_issuer_ready,
    wait_ready,
)
from mtls_operator.cli.tlsio import EchoServer, client_handshake
from tls_wire import KeyLog, Relay, negotiated

HYBRID = "X25519MLKEM768"


def _write(tmp: Path, name: str, data: dict[str, bytes]) -> dict[str, Path]:
    out = {}
    for key in ("tls.crt", "tls.key", "ca.crt"):
        path = tmp / f"{name}-{key}"
        path.write_bytes(data[key])
        out[key] = path
    return out


def _issue_badges(
    cluster: Any, namespace: str, tmp: Path, algo: str, size: int | None
) -> dict[str, dict[str, Path]]:
    key: dict[str, Any] = {"algorithm": algo, **({"size": size} if size else {})}
    create_issuer(cluster, namespace, "ca", self_signed("ca", algo, size))
    create_issuer(cluster, namespace, "other", self_signed("other", algo, size))
    wait_issuer_ready(cluster, namespace, "ca")
    wait_issuer_ready(cluster, namespace, "other")
    specs = {
        "server": ("ca", {"dnsNames": ["api.example.com"], "ipAddresses": ["127.0.0.1"]}),
        "alice": ("ca", {"commonName": "alice", "usages": ["client auth"]}),
        "bob": ("ca", {"commonName": "bob"}),
        "mallory": ("other", {"commonName": "mallory", "usages": ["client auth"]}),
        "server-only": ("ca", {"dnsNames": ["svc.example.com"], "usages": ["server auth"]}),
    }
    for name, (issuer, fields) in specs.items():
        create_certificate(
            cluster,
            namespace,
            name,
            {"secretName": f"{name}-tls", "issuerRef": {"name": issuer}, "privateKey": key, **fields},
        )
    files = {}
    for name in specs:
        wait_ready(cluster, namespace, name, timeout=90)
        files[name] = _write(tmp, name, secret_data(cluster, namespace, f"{name}-tls"))
    return files


@pytest.mark.parametrize(
    ("algo", "size"),
    [pytest.param("MLDSA", 65, id="ML-DSA-65"), pytest.param("ECDSA", 256, id="ECDSA-P256")],
)
def test_badges_with_pyopenssl(
    operator: Any, cluster: Any, namespace: str, tmp_path: Path, tls_keys: KeyLog, algo: str, size: int
) -> None:
    files = _issue_badges(cluster, namespace, tmp_path, algo, size)
    srv = files["server"]
    server = EchoServer(srv["tls.crt"], srv["tls.key"], srv["ca.crt"]).start()
    relay = Relay(server.port)
    try:

        def shake(who: str) -> Any:
            f = files[who]
            return client_handshake(
                "127.0.0.1",
                relay.port,
                cert=f["tls.crt"],
                key=f["tls.key"],
                ca=srv["ca.crt"],
                server_name="api.example.com",
            )

        alice, bob, mallory, server_only = (shake(n) for n in ("alice", "bob", "mallory", "server-only"))
        assert alice.ok, alice.error
        assert bob.ok, bob.error
        assert alice.protocol == "TLSv1.3"
        assert alice.group == "X25519MLKEM768"
        expected_sig = "ML-DSA-65" if algo == "MLDSA" else "ecdsa-with-SHA256"
        assert alice.peer_signature_algorithm == expected_sig
        assert not mallory.ok, "Mallory's certificate is from another CA"
        assert not server_only.ok, "a server-only certificate may not act as a client"
        wait_for(lambda: len(server.results) == 4, timeout=10, message="the server's four verdicts")
    finally:
        server.stop()
        relay.stop()
    # Why each was refused, on both sides: the client got the server's alert, the server says what failed.
    assert mallory.error == "tlsv1 alert unknown ca", mallory
    assert server_only.error == "tls alert unsupported certificate", server_only
    verdicts = [r.error for r in server.results]
    assert verdicts[:2] == [None, None], verdicts
    failed = "certificate verify failed ({} at the peer certificate)"
    assert verdicts[2] == failed.format("unable to get local issuer certificate"), verdicts
    assert verdicts[3] == failed.format("unsupported certificate purpose"), verdicts
    # On the wire: the signature scheme each side's CertificateVerify used, and the alerts.
    scheme = "mldsa65" if algo == "MLDSA" else "ecdsa_secp256r1_sha256"
    wires = [negotiated(c, tls_keys) for c in relay.connections]
    for wire in wires:
        assert (wire.group, wire.server_scheme, wire.client_scheme) == (HYBRID, scheme, scheme), wire
    assert [w.server_data > 0 for w in wires] == [True, True, False, False], wires
    assert [w.server_alerts[:1] for w in wires[2:]] == [("unknown_ca",), ("unsupported_certificate",)], wires


def test_classical_badges_with_python_ssl(
    operator: Any, cluster: Any, namespace: str, tmp_path: Path, tls_keys: KeyLog
) -> None:
    files = _issue_badges(cluster, namespace, tmp_path, "ECDSA", 256)
    srv = files["server"]
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.keylog_filename = str(tls_keys.path)
    server_ctx.load_cert_chain(srv["tls.crt"], srv["tls.key"])
    server_ctx.load_verify_locations(srv["ca.crt"])
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    listener = socket.create_server(("127.0.0.1", 0))
    relay = Relay(listener.getsockname()[1])
    port = relay.port
    outcomes: list[str] = []
    refusals: list[str] = []

    def serve(n: int) -> None:
        for _ in range(n):
            raw, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(raw, server_side=True) as tls:
                    tls.sendall(tls.recv(100))
                    outcomes.append("ok")
            except (ssl.SSLError, OSError) as exc:
                outcomes.append(f"rejected: {exc}")

    thread = threading.Thread(target=serve, args=(3,), daemon=True)
    thread.start()

    def connect(who: str) -> bool:
        f = files[who]
        ctx = ssl.create_default_context(cafile=str(srv["ca.crt"]))
        ctx.load_cert_chain(f["tls.crt"], f["tls.key"])
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                ctx.wrap_socket(raw, server_hostname="api.example.com") as tls,
            ):
                tls.sendall(b"hi")
                return tls.recv(100) == b"hi"
        except (ssl.SSLError, OSError) as exc:
            refusals.append(str(exc))
            return False

    assert connect("alice")
    assert not connect("mallory")
    assert not connect("server-only")
    thread.join(timeout=10)
    listener.close()
    relay.stop()
    assert outcomes[0] == "ok"
    assert all(o.startswith("rejected") for o in outcomes[1:]), outcomes
    # Both sides say why: the server could not chain Mallory's certificate and would not take a
    # server-only one as a client's; each client got the alert.
    assert "unable to get local issuer certificate" in outcomes[1], outcomes
    assert "unsuitable certificate purpose" in outcomes[2], outcomes
    assert "TLSV1_ALERT_UNKNOWN_CA" in refusals[0], refusals
    assert "ALERT_UNSUPPORTED_CERTIFICATE" in refusals[1], refusals
    # On the wire (the server's key log): X25519 (OpenSSL 3.0 has no ML-KEM), ECDSA P-256 on both sides.
    wire = negotiated(relay.connections[0], tls_keys)
    ecdsa = "ecdsa_secp256r1_sha256"
    assert (wire.group, wire.server_scheme, wire.client_scheme) == ("x25519", ecdsa, ecdsa), wire
