"""The migration act of `make demo` (docs/post-quantum-migration.md): one server, two kinds of clients.

The operator has issued, from the dual issuer ``migration-root`` (ML-DSA-65 root + ECDSA P-256 root),
``migration-server-tls`` and ``migration-alice-tls``: each Secret holds tls.crt/tls.key (ML-DSA-65),
tls-ecdsa.crt/tls-ecdsa.key (ECDSA P-256) and ca.crt (both roots). One ``mtlsctl serve`` loads both of
the server's pairs; then, with Alice's badges:

* a post-quantum client, ``mtlsctl handshake`` on OpenSSL 4 (holding both badges);
* a legacy client, Debian's OpenSSL 3.0 ``openssl s_client`` (it cannot load an ML-DSA key: the ECDSA
  badge), when an ``openssl`` older than 3.5 is installed;
* a client with the legacy profile, ``mtlsctl handshake --profile legacy`` (the classical signature
  schemes and groups OpenSSL 3.0 offers, holding both badges).

It prints each side's view and a table of the certificate each client got (key type, group, signature
schemes), and exits 1 if the post-quantum client did not get ML-DSA-65 over X25519MLKEM768 or a legacy
one did not get ECDSA. Keys are copied into a private temporary directory and never printed.

Environment: KUBECONFIG, NAMESPACE (default demo), MTLSCTL, KUBECTL, OPENSSL (default: openssl on PATH).
"""

from __future__ import annotations

import base64
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("KUBECONFIG", str(REPO / ".local" / "kubeconfig"))  # make demo's control plane
NAMESPACE = os.environ.get("NAMESPACE", "demo")
MTLSCTL = os.environ.get("MTLSCTL") or str(REPO / ".venv" / "bin" / "mtlsctl")
SERVER_NAME = "api.example.com"
FILES = ("tls.crt", "tls.key", "tls-ecdsa.crt", "tls-ecdsa.key", "ca.crt")
COLOR = sys.stdout.isatty() and "NO_COLOR" not in os.environ
B, G, R, N = ("\033[1m", "\033[32;1m", "\033[31;1m", "\033[0m") if COLOR else ("", "", "", "")


def kubectl() -> str:
    if os.environ.get("KUBECTL"):
        return os.environ["KUBECTL"]
    from mtls_operator.testing.controlplane import default_bin_dir

    return str(default_bin_dir() / "kubectl")


def fetch(secret: str, folder: Path) -> Path:
    """A Secret's files into ``folder`` (keys mode 0600); nothing of them is printed."""
    argv = [kubectl(), "get", "secret", "-n", NAMESPACE, secret, "-o", "json"]
    data = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout)[
        "data"
    ]
    folder.mkdir(mode=0o700)
    for name in FILES:
        if name not in data:
            raise SystemExit(f"demo: Secret {NAMESPACE}/{secret} has no {name}: is it a dual certificate?")
        path = folder / name
        path.touch(mode=0o600)
        path.write_bytes(base64.b64decode(data[name]))
    return folder


def pairs(folder: Path, *stems: str) -> list[str]:
    return [
        arg for s in stems for arg in ("--cert", str(folder / f"{s}.crt"), "--key", str(folder / f"{s}.key"))
    ]


class Server:
    """``mtlsctl serve -o json`` with both pairs; one JSON report per connection, in order."""

    def __init__(self, server: Path, count: int) -> None:
        argv = [
            MTLSCTL,
            "serve",
            "-o",
            "json",
            *pairs(server, "tls", "tls-ecdsa"),
            "--ca",
            str(server / "ca.crt"),
        ]
        self.proc = subprocess.Popen(
            [*argv, "--port", "0", "--count", str(count)], stdout=subprocess.PIPE, text=True
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        listening = self.next(30)
        self.port = int(listening["port"])

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.lines.put(json.loads(line))

    def next(self, timeout: float = 10) -> dict[str, Any]:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            self.stop()
            raise SystemExit(f"demo: mtlsctl serve reported nothing within {timeout:.0f}s") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=10)


def mtlsctl_client(port: int, alice: Path, profile: str) -> dict[str, Any]:
    argv = [
        MTLSCTL,
        "handshake",
        "-o",
        "json",
        "--connect",
        f"127.0.0.1:{port}",
        *pairs(alice, "tls", "tls-ecdsa"),
    ]
    argv += ["--ca", str(alice / "ca.crt"), "--servername", SERVER_NAME, "--profile", profile]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    doc = json.loads(proc.stdout)
    return {
        "ok": doc["ok"],
        "error": doc["error"],
        "group": doc["group"],
        "server_cert": doc["peerKeyAlgorithm"],
        "server_scheme": doc["peerSignatureScheme"],
        "client_cert": doc["localKeyAlgorithm"],
    }


def legacy_openssl() -> tuple[str, str] | None:
    """An ``openssl`` older than 3.5 (no ML-DSA): (path, version), else None."""
    found = os.environ.get("OPENSSL") or shutil.which("openssl")
    if not found:
        return None
    version = subprocess.run([found, "version"], capture_output=True, text=True, check=False).stdout.strip()
    m = re.match(r"OpenSSL (\d+)\.(\d+)\.\S+", version)
    return (found, m[0]) if m and (int(m[1]), int(m[2])) < (3, 5) else None


def s_client(openssl: str, port: int, alice: Path) -> dict[str, Any]:
    argv = [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", SERVER_NAME, "-tls1_3"]
    argv += ["-CAfile", str(alice / "ca.crt"), "-cert", str(alice / "tls-ecdsa.crt")]
    argv += ["-key", str(alice / "tls-ecdsa.key"), "-verify_return_error"]
    proc = subprocess.run(argv, input="ping\n", capture_output=True, text=True, timeout=30, check=False)
    out = proc.stdout + proc.stderr
    temp = re.search(r"Server Temp Key: (\w+)", out)
    sig = re.search(r"Peer signature type: (\S+)", out)
    digest = re.search(r"Peer signing digest: SHA(\d+)", out)
    curves = {"256": ("secp256r1", "ECDSA-P256"), "384": ("secp384r1", "ECDSA-P384")}
    scheme = cert = None
    if sig and digest and sig[1] == "ECDSA" and digest[1] in curves:
        curve, cert = curves[digest[1]]
        scheme = f"ecdsa_{curve}_sha{digest[1]}"
    elif sig:
        scheme = cert = sig[1]
    ok = proc.returncode == 0 and "Verify return code: 0 (ok)" in out
    errors = [line.split(":error:", 1)[1] for line in out.splitlines() if ":error:" in line]
    return {
        "ok": ok,
        "error": None if ok else (errors[-1] if errors else out.strip().splitlines()[-1]),
        "group": temp[1] if temp else None,
        "server_cert": cert,
        "server_scheme": scheme,
        "client_cert": "ECDSA-P256" if ok else None,
    }


def main() -> int:
    started = time.monotonic()
    print(f"\n{B}=== Migration: one server, a post-quantum client and a legacy client ==={N}")
    print(f"$ mtlsctl -n {NAMESPACE} algorithms")
    sys.stdout.flush()
    subprocess.run([MTLSCTL, "-n", NAMESPACE, "algorithms"], check=False, timeout=60)
    openssl = legacy_openssl()
    clients: list[tuple[str, str, Any]] = [
        (
            "post-quantum",
            "mtlsctl handshake (OpenSSL 4), ML-DSA + ECDSA badges",
            lambda p, a: mtlsctl_client(p, a, "pqc"),
        )
    ]
    if openssl is not None:
        clients.append(
            (
                "legacy",
                f"openssl s_client ({openssl[1]}), ECDSA badge",
                lambda p, a: s_client(openssl[0], p, a),
            )
        )
    else:
        print("(no openssl older than 3.5 on this machine: the legacy row is mtlsctl's legacy profile only)")
    clients.append(
        (
            "legacy",
            "mtlsctl handshake --profile legacy, ML-DSA + ECDSA badges",
            lambda p, a: mtlsctl_client(p, a, "legacy"),
        )
    )
    with tempfile.TemporaryDirectory(prefix="mtls-migration.") as tmp:
        server_dir = fetch("migration-server-tls", Path(tmp) / "server")
        alice = fetch("migration-alice-tls", Path(tmp) / "alice")
        server = Server(server_dir, count=len(clients))
        print(
            f"\nmtlsctl serve on 127.0.0.1:{server.port} with migration-server-tls's tls.crt (ML-DSA-65) "
            "and tls-ecdsa.crt (ECDSA P-256)"
        )
        rows = []
        try:
            for kind, what, run in clients:
                got = run(server.port, alice)
                saw = server.next()
                rows.append((kind, what, got, saw))
                verdict = "accepted" if got["ok"] and saw["ok"] else f"FAILED: {got['error'] or saw['error']}"
                print(f"  {kind} client, {what}: {verdict}")
                print(
                    f"    client saw: {got['group']}, server certificate {got['server_cert']} "
                    f"({got['server_scheme']})"
                )
                print(
                    f"    server saw: {saw.get('group')}, presented {saw.get('localKeyAlgorithm')}, "
                    f"client certificate {saw.get('peerKeyAlgorithm')} ({saw.get('peerSignatureScheme')})"
                )
        finally:
            server.stop()
    failures = 0
    print(f"\n{B}=== Migration: the certificate each client got from the same server ==={N}")
    header = (
        "CLIENT",
        "GROUP",
        "SERVER CERT",
        "SERVER SIGNS WITH",
        "CLIENT CERT",
        "CLIENT SIGNS WITH",
        "VERDICT",
    )
    widths = (13, 15, 12, 23, 12, 23)
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=False)) + "  " + header[-1])
    for kind, what, got, saw in rows:
        want = ("ML-DSA-65", "X25519MLKEM768") if kind == "post-quantum" else ("ECDSA-P256", "X25519")
        good = (
            got["ok"]
            and saw["ok"]
            and (got["server_cert"], (got["group"] or "").upper()) == (want[0], want[1].upper())
        )
        failures += not good
        cells = (kind, got["group"] or "-", got["server_cert"] or "-", got["server_scheme"] or "-")
        cells += (saw.get("peerKeyAlgorithm") or "-", saw.get("peerSignatureScheme") or "-")
        verdict = f"{G}as expected{N}" if good else f"{R}UNEXPECTED{N}"
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + f"  {verdict}  ({what})")
    print(f"migration act: {len(rows)} clients in {time.monotonic() - started:.1f}s")
    if failures:
        print(
            f"{R}{failures} client(s) did not get the certificate their stack can verify{N}", file=sys.stderr
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
