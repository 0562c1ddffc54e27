"""mtlsctl and the post-quantum migration, without a cluster: `probe` and `handshake --profile` against an
in-process dual server (pyOpenSSL on OpenSSL 4, ML-DSA-65 and ECDSA certificates loaded side by side, on
127.0.0.1), `serve` with two pairs, and what `algorithms` makes of a Secret's data."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tests.helpers import wait_for

from mtls_operator.api.certificate_spec import parse_certificate_spec
from mtls_operator.cli import main as cli
from mtls_operator.cli.migration import classify, held_algorithms, wanted_algorithms
from mtls_operator.cli.tlsio import EchoServer
from mtls_operator.pki import ca as pki_ca
from mtls_operator.pki.issuance import issue_tls_material

NOW = datetime.now(UTC)
SERVER = "api.example.com"


def _write(directory: Path, data: dict[str, bytes]) -> None:
    directory.mkdir(parents=True)
    for name, value in data.items():
        path = directory / name
        path.write_bytes(value)
        if name.endswith(".key"):
            path.chmod(0o600)


@pytest.fixture(scope="module")
def dual(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dual CA and, from it, a dual server certificate and a dual client certificate (alice), as files
    named as in the operator's Secrets."""
    from mtls_operator.api.issuer_spec import parse_issuer_spec

    root = tmp_path_factory.mktemp("dual")
    spec = parse_issuer_spec(
        {
            "selfSigned": {
                "secretName": "dual-ca",
                "commonName": "dual root",
                "privateKey": {"algorithm": "MLDSA", "size": 65},
                "additionalPrivateKeys": [{"algorithm": "ECDSA"}],
            }
        }
    )
    assert spec.managed_ca is not None
    ca_data = pki_ca.self_signed_ca_data(spec.managed_ca, NOW)
    ca = pki_ca.load_ca(ca_data, NOW)
    keys = {
        "privateKey": {"algorithm": "MLDSA", "size": 65},
        "additionalPrivateKeys": [{"algorithm": "ECDSA"}],
    }
    for name, fields in (
        ("server", {"dnsNames": [SERVER], "usages": ["server auth"]}),
        ("alice", {"commonName": "alice", "usages": ["client auth"]}),
    ):
        leaf = parse_certificate_spec({"secretName": name, "issuerRef": {"name": "dual"}, **keys, **fields})
        _write(root / name, issue_tls_material(leaf, ca, NOW).data)
    return root


@pytest.fixture
def server(dual: Path) -> Any:
    s = dual / "server"
    srv = EchoServer(
        s / "tls.crt", s / "tls.key", s / "ca.crt", extra=((s / "tls-ecdsa.crt", s / "tls-ecdsa.key"),)
    ).start()
    yield srv
    srv.stop()


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code = cli.main([*argv, "-o", "json"])
    out, err = capsys.readouterr()
    assert out, err
    return code, json.loads(out)


@pytest.mark.parametrize(
    ("profile", "client_cert", "group", "server_cert", "scheme", "accepted"),
    [
        pytest.param(
            "pqc", "tls", "X25519MLKEM768", "ML-DSA-65", "mldsa65", True, id="pqc client, ML-DSA badge"
        ),
        pytest.param(
            "pqc", "tls-ecdsa", "X25519MLKEM768", "ML-DSA-65", "mldsa65", True, id="pqc client, ECDSA badge"
        ),
        pytest.param(
            "legacy",
            "tls-ecdsa",
            "x25519",
            "ECDSA-P256",
            "ecdsa_secp256r1_sha256",
            True,
            id="legacy client, ECDSA badge: the server switches to its ECDSA certificate",
        ),
        pytest.param(
            "legacy",
            "tls",
            "x25519",
            "ECDSA-P256",
            "ecdsa_secp256r1_sha256",
            False,
            id="legacy client cannot sign with an ML-DSA badge: the server wants a certificate",
        ),
    ],
)
def test_probe_reports_the_certificate_the_server_chose_per_profile(
    dual: Path,
    server: EchoServer,
    capsys: pytest.CaptureFixture[str],
    profile: str,
    client_cert: str,
    group: str,
    server_cert: str,
    scheme: str,
    accepted: bool,
) -> None:
    a = dual / "alice"
    code, doc = run_json(
        capsys,
        "probe",
        f"127.0.0.1:{server.port}",
        "--profile",
        profile,
        "--cert",
        str(a / f"{client_cert}.crt"),
        "--key",
        str(a / f"{client_cert}.key"),
        "--ca",
        str(a / "ca.crt"),
        "--servername",
        SERVER,
    )
    assert (doc["group"], doc["peerKeyAlgorithm"], doc["peerSignatureScheme"]) == (group, server_cert, scheme)
    assert doc["ok"] is accepted and code == (0 if accepted else 1), doc
    if not accepted:
        assert "certificate required" in doc["error"]


def test_a_dual_client_sends_the_badge_the_server_can_verify(
    dual: Path, server: EchoServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """`handshake` with both badges: the legacy profile signs with ECDSA, the pqc profile with ML-DSA; the
    server records which client certificate it got and which of its own it presented."""
    a = dual / "alice"
    both = ["--cert", str(a / "tls.crt"), "--key", str(a / "tls.key")]
    both += ["--cert", str(a / "tls-ecdsa.crt"), "--key", str(a / "tls-ecdsa.key")]
    common = ["handshake", "--connect", f"127.0.0.1:{server.port}", "--ca", str(a / "ca.crt")]
    got = {}
    for profile in ("pqc", "legacy"):
        code, doc = run_json(capsys, *common, "--servername", SERVER, "--profile", profile, *both)
        assert code == 0, doc
        got[profile] = (doc["localKeyAlgorithm"], doc["peerKeyAlgorithm"], doc["group"])
    assert got == {
        "pqc": ("ML-DSA-65", "ML-DSA-65", "X25519MLKEM768"),
        "legacy": ("ECDSA-P256", "ECDSA-P256", "x25519"),
    }
    # the server records a handshake on its own thread after closing it: wait for both records
    wait_for(lambda: len(server.results) >= 2, timeout=10, message="the server's record of both handshakes")
    seen = [(r.ok, r.peer_key_algorithm, r.local_key_algorithm) for r in server.results]
    assert seen == [(True, "ML-DSA-65", "ML-DSA-65"), (True, "ECDSA-P256", "ECDSA-P256")]


def test_probe_without_trust_still_says_what_the_server_chose(
    server: EchoServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["probe", f"127.0.0.1:{server.port}", "--profile", "legacy"])
    out, _ = capsys.readouterr()
    assert code == 1  # the server requires a client certificate
    assert out.startswith(f"127.0.0.1:{server.port} presents ECDSA-P256 to a legacy client")
    assert "client certificate  none sent" in out


def test_uneven_cert_and_key_flags_are_refused(dual: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = dual / "alice"
    code = cli.main(["probe", "127.0.0.1:1", "--cert", str(a / "tls.crt")])
    _, err = capsys.readouterr()
    assert code == 1 and "one --key for each --cert" in err


@pytest.mark.parametrize(
    ("held", "kind"),
    [
        pytest.param(["ML-DSA-65", "ECDSA-P256"], "dual", id="an ML-DSA and a classical key are dual"),
        pytest.param(["ECDSA-P256", "ML-DSA-44"], "dual", id="whichever is the main one"),
        pytest.param(["ML-DSA-87"], "post-quantum", id="ML-DSA alone is post-quantum"),
        pytest.param(["ECDSA-P256", "RSA-2048"], "classical", id="classical keys alone are classical"),
        pytest.param([], "missing", id="no readable Secret is missing"),
    ],
)
def test_classify(held: list[str], kind: str) -> None:
    assert classify(held) == kind


def test_held_and_wanted_algorithms(dual: Path) -> None:
    data = {p.name: p.read_bytes() for p in (dual / "server").iterdir()}
    assert held_algorithms(data) == ["ML-DSA-65", "ECDSA-P256"]
    assert held_algorithms({**data, "tls-ecdsa.crt": b"garbage"}) == ["ML-DSA-65"]
    assert wanted_algorithms(
        {"privateKey": {"algorithm": "MLDSA", "size": 65}, "additionalPrivateKeys": [{"algorithm": "RSA"}]}
    ) == ["ML-DSA-65", "RSA-2048"]
    assert wanted_algorithms({}) == ["ECDSA-P256"]
    assert wanted_algorithms({"privateKey": {"algorithm": "DSA"}}) == []


def test_help_lists_the_migration_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 0
    out, _ = capsys.readouterr()
    assert "algorithms" in out and "probe" in out
