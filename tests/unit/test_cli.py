"""mtlsctl without a cluster: profiles, offline CA and issuance, verification, handshakes, output."""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.helpers import wait_for

from mtls_operator.api.models import KeyAlgorithm, Usage
from mtls_operator.cli import main as cli
from mtls_operator.cli.offline import OfflineError, name_matches, write_private
from mtls_operator.cli.output import Format, Printer
from mtls_operator.cli.profiles import ProfileError, builtin_profiles, ca_spec, leaf_spec, load_profile
from mtls_operator.cli.tlsio import EchoServer
from mtls_operator.pki.keys import load_private_key_pem, spki_fingerprint


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code, out, err = run(capsys, *argv, "-o", "json")
    assert out, err
    return code, json.loads(out)


# ---------------------------------------------------------------------------------------------------------
# Profiles


def test_builtin_profiles_cover_pqc_and_classical_ca_server_and_client() -> None:
    assert set(builtin_profiles()) >= {
        "pqc-ca",
        "pqc-server",
        "pqc-client",
        "classical-ca",
        "classical-server",
        "classical-client",
    }


@pytest.mark.parametrize("name", builtin_profiles())
def test_every_builtin_profile_parses_with_the_operators_parsers(name: str) -> None:
    profile = load_profile(name)
    if profile.kind == "ca":
        spec = ca_spec(profile, "a root")
        assert spec.common_name == "a root"
    else:
        leaf = leaf_spec(profile, common_name="x")
        assert leaf.usages in ((Usage.SERVER_AUTH,), (Usage.CLIENT_AUTH,))


def test_profile_and_flags_become_one_certificate_spec() -> None:
    spec = leaf_spec(
        load_profile("pqc-server"),
        common_name="api",
        dns_names=["api.example.com"],
        ip_addresses=["127.0.0.1"],
        uris=["spiffe://example.com/api"],
        duration="48h",
    )
    assert spec.private_key.algorithm is KeyAlgorithm.MLDSA and spec.private_key.size == 65
    assert spec.dns_names == ("api.example.com",)
    assert spec.ip_addresses == ("127.0.0.1",)
    assert spec.uris == ("spiffe://example.com/api",)
    assert spec.duration.total_seconds() == 48 * 3600


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        pytest.param({"dns_names": ["Not_A_Name"]}, "--dns", id="names the --dns flag for a bad DNS name"),
        pytest.param({"ip_addresses": ["300.1.1.1"]}, "--ip", id="names the --ip flag for a bad address"),
        pytest.param({}, "pass --cn, --dns, --ip or --uri", id="asks for a name when there is none"),
        pytest.param({"common_name": "x", "duration": "5s"}, "duration", id="refuses a too-short duration"),
    ],
)
def test_bad_flags_are_refused_with_a_sentence_about_the_flag(kwargs: dict[str, Any], says: str) -> None:
    with pytest.raises(ProfileError, match=says):
        leaf_spec(load_profile("classical-client"), **kwargs)


def test_unknown_profile_lists_the_builtin_ones() -> None:
    with pytest.raises(ProfileError, match="pqc-ca"):
        load_profile("no-such-profile")


def test_a_profile_file_with_unknown_fields_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"kind": "leaf", "secretName": "x"}))
    with pytest.raises(ProfileError, match="secretName"):
        load_profile(str(path))


def test_a_profile_file_by_path(tmp_path: Path) -> None:
    path = tmp_path / "ed.yaml"
    path.write_text(yaml.safe_dump({"kind": "leaf", "privateKey": {"algorithm": "Ed25519"}}))
    spec = leaf_spec(load_profile(str(path)), common_name="edgy")
    assert spec.private_key.algorithm is KeyAlgorithm.ED25519


def test_a_leaf_profile_cannot_make_a_ca() -> None:
    with pytest.raises(ProfileError, match="ca one"):
        ca_spec(load_profile("pqc-server"), "root")


# ---------------------------------------------------------------------------------------------------------
# Offline PKI through the command line


@pytest.fixture(params=["pqc", "classical"])
def pki(request: pytest.FixtureRequest, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """A CA, a server certificate, a client certificate, and a foreign CA's client certificate."""
    family = request.param
    d = tmp_path
    for ca, name in (("ca", "Root"), ("other", "Other")):
        code, _, err = run(
            capsys, "ca", "init", "--name", name, "--profile", f"{family}-ca", "--dir", str(d / ca)
        )
        assert code == 0, err
    issued = {}
    for who, ca, profile, flags in (
        ("server", "ca", "server", ["--dns", "api.example.com", "--ip", "127.0.0.1"]),
        ("alice", "ca", "client", ["--cn", "alice", "--uri", "spiffe://example.com/alice"]),
        ("mallory", "other", "client", ["--cn", "mallory"]),
    ):
        code, doc = run_json(
            capsys,
            "cert",
            "issue",
            "--ca-dir",
            str(d / ca),
            "--profile",
            f"{family}-{profile}",
            *flags,
            "--out",
            str(d / f"{who}.crt"),
            "--key-out",
            str(d / f"{who}.key"),
            "--ca-out",
            str(d / f"{who}-ca.crt"),
        )
        assert code == 0
        issued[who] = doc
    return {"dir": d, "family": family, "issued": issued}


def test_ca_init_and_cert_issue_write_a_verified_chain_and_private_keys(pki: dict[str, Any]) -> None:
    d = pki["dir"]
    server = pki["issued"]["server"]
    algorithm = "ML-DSA-65" if pki["family"] == "pqc" else "ECDSA-P256"
    assert server["certificate"]["keyAlgorithm"] == algorithm
    assert server["certificate"]["signatureAlgorithm"] in ("ML-DSA-65", "ecdsa-with-SHA256")
    assert server["certificate"]["dnsNames"] == ["api.example.com"]
    assert server["certificate"]["ipAddresses"] == ["127.0.0.1"]
    assert server["certificate"]["usages"] == ["digital signature", "server auth"]
    assert server["chain"]["verified"] and server["keyMatches"]
    server_key = load_private_key_pem((d / "server.key").read_bytes(), name="server.key")
    assert server["certificate"]["publicKeySHA256"] == spki_fingerprint(server_key.public_key())
    assert pki["issued"]["alice"]["certificate"]["uris"] == ["spiffe://example.com/alice"]
    for key in (d / "ca" / "ca.key", d / "server.key", d / "alice.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
        assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert (d / "server-ca.crt").read_bytes() == (d / "ca" / "ca.crt").read_bytes()


def test_output_never_contains_private_key_material(
    pki: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    d = pki["dir"]
    for fmt in ("text", "json", "yaml"):
        code, out, err = run(
            capsys,
            "cert",
            "issue",
            "--ca-dir",
            str(d / "ca"),
            "--profile",
            f"{pki['family']}-client",
            "--cn",
            "bob",
            "--out",
            str(d / "bob.crt"),
            "--key-out",
            str(d / "bob.key"),
            "--force",
            "-o",
            fmt,
        )
        assert code == 0, err
        key_pem = (d / "bob.key").read_bytes().decode()
        body = "".join(key_pem.splitlines()[1:-1])
        for text in (out, err):
            assert "PRIVATE KEY" not in text
            assert body[:24] not in text


def test_issue_refuses_to_replace_a_key_without_force(
    pki: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    d = pki["dir"]
    before = (d / "alice.key").read_bytes()
    code, _, err = run(
        capsys,
        "cert",
        "issue",
        "--ca-dir",
        str(d / "ca"),
        "--profile",
        f"{pki['family']}-client",
        "--cn",
        "alice",
        "--out",
        str(d / "alice.crt"),
        "--key-out",
        str(d / "alice.key"),
    )
    assert code == 1
    assert "--force" in err
    assert (d / "alice.key").read_bytes() == before


@pytest.mark.parametrize(
    ("cert", "ca", "flags", "ok", "problem"),
    [
        pytest.param("server", "ca", ["--purpose", "server", "--dns", "api.example.com"], True, None,
                     id="a server certificate verifies as a server for its name"),
        pytest.param("server", "ca", ["--dns", "127.0.0.1"], True, None, id="an IP SAN matches --dns"),
        pytest.param("alice", "ca", ["--purpose", "client"], True, None,
                     id="a client badge verifies as a client"),
        pytest.param("alice", "ca", ["--purpose", "server"], False, "may not be used as a TLS server",
                     id="a client badge is refused as a server"),
        pytest.param("server", "ca", ["--purpose", "client"], False, "may not be used as a TLS client",
                     id="a server-only certificate is refused as a client"),
        pytest.param("server", "ca", ["--dns", "evil.example.com"], False, "not valid for evil.example.com",
                     id="a name the certificate lacks is refused"),
        pytest.param("mallory", "ca", [], False, "unable to get local issuer certificate",
                     id="a certificate from another CA does not verify"),
        pytest.param("mallory", "other", ["--purpose", "client"], True, None,
                     id="the same certificate verifies under its own CA"),
    ],
)  # fmt: skip
def test_verify(
    pki: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    cert: str,
    ca: str,
    flags: list[str],
    ok: bool,
    problem: str | None,
) -> None:
    d = pki["dir"]
    code, doc = run_json(
        capsys, "verify", "--ca", str(d / ca / "ca.crt"), "--cert", str(d / f"{cert}.crt"), *flags
    )
    assert doc["ok"] is ok, doc["problems"]
    assert code == (0 if ok else 1)
    if problem:
        assert any(problem in p for p in doc["problems"]), doc["problems"]


def test_verify_in_text_is_a_verdict_and_the_reasons(
    pki: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    d = pki["dir"]
    code, out, _ = run(
        capsys,
        "verify",
        "--ca",
        str(d / "ca" / "ca.crt"),
        "--cert",
        str(d / "alice.crt"),
        "--purpose",
        "server",
    )
    assert code == 1
    assert out.splitlines()[0] == "verify CN=alice as a TLS server: FAILED"
    assert "\x1b[" not in out  # no colour when stdout is not a terminal
    assert "may not be used as a TLS server" in out


@pytest.mark.parametrize(
    ("name", "dns", "ips", "matches"),
    [
        ("api.example.com", ["api.example.com"], [], True),
        ("API.example.com", ["api.example.com"], [], True),
        ("a.example.com", ["*.example.com"], [], True),
        ("a.b.example.com", ["*.example.com"], [], False),
        ("example.com", ["*.example.com"], [], False),
        ("10.0.0.1", [], ["10.0.0.1"], True),
        ("other.com", ["api.example.com"], ["10.0.0.1"], False),
    ],
)
def test_name_matching_follows_rfc_6125(name: str, dns: list[str], ips: list[str], matches: bool) -> None:
    assert name_matches(name, dns, ips) is matches


# ---------------------------------------------------------------------------------------------------------
# Handshakes


def test_handshake_reports_group_and_signature_and_fails_with_a_reason(
    pki: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    d = pki["dir"]
    server = EchoServer(d / "server.crt", d / "server.key", d / "ca" / "ca.crt").start()
    try:
        target = f"127.0.0.1:{server.port}"
        common = [
            "handshake",
            "--connect",
            target,
            "--ca",
            str(d / "ca" / "ca.crt"),
            "--servername",
            "api.example.com",
        ]
        code, doc = run_json(capsys, *common, "--cert", str(d / "alice.crt"), "--key", str(d / "alice.key"))
        assert code == 0, doc
        assert doc["protocol"] == "TLSv1.3"
        assert doc["group"] == "X25519MLKEM768"
        assert doc["peerSignatureAlgorithm"] == (
            "ML-DSA-65" if pki["family"] == "pqc" else "ecdsa-with-SHA256"
        )

        code, out, _ = run(capsys, *common, "--cert", str(d / "mallory.crt"), "--key", str(d / "mallory.key"))
        assert code == 1
        assert out.startswith(f"handshake FAILED with {target} (api.example.com): ")
        assert "unknown ca" in out

        code, out, _ = run(capsys, *common, "--cert", str(d / "server.crt"), "--key", str(d / "server.key"))
        assert code == 1
        assert "unsupported certificate" in out
        # the server records a handshake on its own thread after closing it: wait for all three records
        wait_for(lambda: len(server.results) >= 3, timeout=10, message="the server's three verdicts")
    finally:
        server.stop()
    assert [r.ok for r in server.results] == [True, False, False]
    assert "unsupported certificate purpose" in (server.results[2].error or "")


def test_handshake_to_nothing_fails_clearly(pki: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    d = pki["dir"]
    code, doc = run_json(
        capsys,
        "handshake",
        "--connect",
        "127.0.0.1:1",
        "--cert",
        str(d / "alice.crt"),
        "--key",
        str(d / "alice.key"),
        "--ca",
        str(d / "ca" / "ca.crt"),
    )
    assert code == 1
    assert doc["ok"] is False and "cannot connect to 127.0.0.1:1" in doc["error"]


def test_bad_host_port_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "handshake", "--connect", "nowhere", "--cert", "a", "--key", "b", "--ca", "c")
    assert code == 1
    assert "must be HOST:PORT" in err


# ---------------------------------------------------------------------------------------------------------
# Output


def test_tables_align_and_colour_only_on_terminals() -> None:
    stream = io.StringIO()
    printer = Printer(Format.TEXT, stream)
    printer.table(["name", "ready"], [["a", printer.ok(True, "True")], ["longer-name", "False"]])
    assert printer.color is False
    assert stream.getvalue().splitlines() == [
        "NAME          READY",
        "a             True",
        "longer-name   False",
    ]

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert Printer(Format.TEXT, Tty()).color is True
    assert Printer(Format.JSON, Tty()).color is False


def test_yaml_and_json_carry_the_same_document(capsys: pytest.CaptureFixture[str]) -> None:
    _, as_json = run_json(capsys, "profiles")
    code, out, _ = run(capsys, "profiles", "-o", "yaml")
    assert code == 0
    assert yaml.safe_load(out) == as_json
    assert {p["name"] for p in as_json} == set(builtin_profiles())


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys)
    assert code == 0
    for command in ("status", "inspect", "renew", "check", "ca", "cert", "verify", "handshake", "serve"):
        assert command in out


# ---------------------------------------------------------------------------------------------------------
# write_private: a key file is never written through a planted symlink


def _regular_key(path: Path, data: bytes) -> None:
    mode = path.lstat().st_mode
    assert stat.S_ISREG(mode) and stat.S_IMODE(mode) == 0o600, oct(mode)
    assert path.read_bytes() == data


def test_write_private_does_not_follow_a_symlink_at_the_old_temporary_name(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious\n")
    victim.chmod(0o644)
    keys = tmp_path / "keys"
    keys.mkdir()
    planted = keys / ".ca.key.tmp"  # the name write_private used to open with O_CREAT|O_TRUNC
    planted.symlink_to(victim)
    write_private(keys / "ca.key", b"KEY MATERIAL\n")
    assert victim.read_bytes() == b"precious\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644
    assert planted.is_symlink() and planted.readlink() == victim
    _regular_key(keys / "ca.key", b"KEY MATERIAL\n")
    assert sorted(p.name for p in keys.iterdir()) == [".ca.key.tmp", "ca.key"]  # no temporary file left


def test_write_private_replaces_a_symlink_at_the_target_instead_of_writing_through_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious\n")
    target = tmp_path / "tls.key"
    target.symlink_to(victim)
    with pytest.raises(OfflineError, match="already exists; pass --force"):
        write_private(target, b"KEY\n")
    assert target.is_symlink() and victim.read_bytes() == b"precious\n"
    write_private(target, b"KEY\n", force=True)
    assert victim.read_bytes() == b"precious\n"
    _regular_key(target, b"KEY\n")


def test_write_private_refuses_a_dangling_symlink_without_force(tmp_path: Path) -> None:
    target = tmp_path / "tls.key"
    target.symlink_to(tmp_path / "elsewhere" / "key")
    with pytest.raises(OfflineError):
        write_private(target, b"KEY\n")
    assert not (tmp_path / "elsewhere").exists()


def test_write_private_uses_a_new_unpredictable_temporary_name_each_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[tuple[str, int, int]] = []
    real_open = os.open

    def spy(path: Any, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
        opened.append((str(path), flags, mode))
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    write_private(tmp_path / "a.key", b"1")
    write_private(tmp_path / "a.key", b"2", force=True)
    assert len(opened) == 2 and opened[0][0] != opened[1][0]
    for name, flags, mode in opened:
        assert Path(name).parent == tmp_path and Path(name).name.startswith(".a.key.")
        needed = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        assert flags & needed == needed and not flags & os.O_TRUNC
        assert mode == 0o600
    _regular_key(tmp_path / "a.key", b"2")
    assert [p.name for p in tmp_path.iterdir()] == ["a.key"]
