"""The badge demo (scripts/demo-badges.sh) against the operator, with the manifests `make demo` applies.

`make demo` itself keeps its own control plane in .local/; here the same manifests go into a test
namespace of the shared test cluster, and the same script runs the real handshakes through mtlsctl.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mtls_objects import GROUP, VERSION, wait_issuer_ready, wait_ready

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = [
    "examples/issuer-selfsigned-mldsa.yaml",
    "examples/issuer-selfsigned-ecdsa.yaml",
    "examples/demo-badges-mldsa.yaml",
    "examples/demo-badges-ecdsa.yaml",
]
PLURALS = {"MTLSIssuer": "mtlsissuers", "MTLSCertificate": "mtlscertificates"}

pytestmark = pytest.mark.slow


def test_badge_demo_four_outcomes_per_algorithm(operator: Any, cluster: Any, namespace: str) -> None:
    names: list[tuple[str, str]] = []
    for manifest in MANIFESTS:
        for doc in yaml.safe_load_all((REPO / manifest).read_text()):
            doc["metadata"]["namespace"] = namespace
            cluster.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURALS[doc["kind"]], doc
            )
            names.append((doc["kind"], doc["metadata"]["name"]))
    for kind, name in names:
        if kind == "MTLSIssuer":
            wait_issuer_ready(cluster, namespace, name, timeout=90)
        else:
            wait_ready(cluster, namespace, name, timeout=90)

    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "NAMESPACE": namespace,
        "MTLSCTL": str(Path(sys.executable).parent / "mtlsctl"),
        "PY": sys.executable,
    }
    try:
        proc = subprocess.run(
            ["bash", str(REPO / "scripts" / "demo-badges.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else str(exc.stdout or "")
        pytest.fail(f"the badge demo did not finish in 180 s; it printed:\n{out}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PRIVATE KEY" not in proc.stdout
    outcomes = proc.stdout.split("=== Outcomes ===", 1)[1]
    for algo, sig in (("ML-DSA-65", "ML-DSA-65"), ("ECDSA P-256", "ecdsa-with-SHA256")):
        row = re.compile(rf"^{re.escape(algo)}\s+(\w+)\s+(ok|refused)\s+(\S+)\s+(\S+)\s+(.*)$", re.MULTILINE)
        got = {m[1]: m for m in row.finditer(outcomes)}
        assert set(got) == {"alice", "bob", "mallory", "web"}, outcomes
        for who, result in (("alice", "ok"), ("bob", "ok"), ("mallory", "refused"), ("web", "refused")):
            m = got[who]
            assert (m[2], m[3], m[4]) == (result, "X25519MLKEM768", sig), m[0]
            assert m[5].startswith("as expected"), m[0]


def test_the_migration_act_serves_each_client_the_certificate_it_can_verify(
    operator: Any, cluster: Any, namespace: str
) -> None:
    """scripts/demo-migration.py with examples/demo-migration.yaml: one `mtlsctl serve` holding both pairs
    of a dual certificate; the post-quantum client gets ML-DSA-65, Debian's OpenSSL 3.0 s_client and the
    legacy profile get ECDSA (each row as the client saw it and as the server reported it)."""
    from test_interop import require, which

    require(which("openssl"), "Debian's openssl")  # the legacy row; fails under CI=true when missing
    docs = list(yaml.safe_load_all((REPO / "examples" / "demo-migration.yaml").read_text()))
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
        cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS[doc["kind"]], doc)
    wait_issuer_ready(cluster, namespace, "migration-root", timeout=90)
    for name in ("migration-server", "migration-alice"):
        wait_ready(cluster, namespace, name, timeout=90)
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "NAMESPACE": namespace,
        "MTLSCTL": str(Path(sys.executable).parent / "mtlsctl"),
    }
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo-migration.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    print(proc.stdout)  # the act, as `make demo` shows it (pytest -s)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PRIVATE KEY" not in proc.stdout
    table = proc.stdout.split("the certificate each client got from the same server ===", 1)[1]
    row = re.compile(
        r"^(post-quantum|legacy)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+as expected\s+\((.*)\)$", re.M
    )
    rows = {m[7]: m.groups()[:6] for m in row.finditer(table)}
    assert len(rows) == 3, table
    pqc = ("post-quantum", "X25519MLKEM768", "ML-DSA-65", "mldsa65", "ML-DSA-65", "mldsa65")
    assert rows["mtlsctl handshake (OpenSSL 4), ML-DSA + ECDSA badges"] == pqc, table
    (s_client,) = [v for k, v in rows.items() if k.startswith("openssl s_client (OpenSSL 3.0")]
    ecdsa = ("ECDSA-P256", "ecdsa_secp256r1_sha256", "ECDSA-P256", "ecdsa_secp256r1_sha256")
    assert s_client == ("legacy", "X25519", *ecdsa), table
    assert rows["mtlsctl handshake --profile legacy, ML-DSA + ECDSA badges"] == (
        "legacy",
        "x25519",
        *ecdsa,
    ), table
