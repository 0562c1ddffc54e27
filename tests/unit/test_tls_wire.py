"""The wire reader of the interop tests (tests/tls_wire.py) on handshakes it can check against: pyOpenSSL
on both ends of a loopback relay, with certificates made here; no cluster."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, mldsa
from cryptography.x509.oid import NameOID

from mtls_operator.cli import tlsio
from tls_checks import key_matches_certificate, mldsa_seed_form_problem
from tls_wire import KeyLog, Relay, clear_alerts, negotiated, offered_schemes

NOW = datetime.datetime.now(datetime.UTC)


def _key(kind: str) -> Any:
    return ec.generate_private_key(ec.SECP256R1()) if kind == "ecdsa" else mldsa.MLDSA65PrivateKey.generate()


def _cert(subject: str, key: Any, issuer: x509.Name, signer: Any, ca: bool, kind: str) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(hours=1))
        .not_valid_after(NOW + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("api.example.com")]), critical=False
        )
    return builder.sign(signer, hashes.SHA256() if kind == "ecdsa" else None)


def _badges(tmp: Path, kind: str) -> dict[str, tuple[Path, Path]]:
    """server and alice from one CA, mallory from another; ("ca", (ca.crt, ca.crt)) too."""
    out = {}
    cas = {}
    for ca_name in ("ca", "other"):
        key = _key(kind)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
        cas[ca_name] = (key, _cert(ca_name, key, name, key, True, kind))
    (tmp / "ca.crt").write_bytes(cas["ca"][1].public_bytes(serialization.Encoding.PEM))
    out["ca"] = (tmp / "ca.crt", tmp / "ca.crt")
    for who, ca_name in (("server", "ca"), ("alice", "ca"), ("mallory", "other")):
        key = _key(kind)
        ca_key, ca_cert = cas[ca_name]
        cert = _cert(who, key, ca_cert.subject, ca_key, False, kind)
        (tmp / f"{who}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (tmp / f"{who}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        out[who] = (tmp / f"{who}.crt", tmp / f"{who}.key")
    return out


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> KeyLog:
    log = KeyLog()
    original = tlsio._context

    def with_keylog(*args: Any, **kwargs: Any) -> Any:
        ctx = original(*args, **kwargs)
        ctx.set_keylog_callback(lambda _conn, line: log.add(line))
        return ctx

    monkeypatch.setattr(tlsio, "_context", with_keylog)
    return log


@pytest.mark.parametrize(
    ("kind", "scheme"),
    [
        pytest.param("ecdsa", "ecdsa_secp256r1_sha256", id="reads ecdsa_secp256r1_sha256 for P-256 keys"),
        pytest.param("mldsa", "mldsa65", id="reads mldsa65 for ML-DSA-65 keys"),
    ],
)
def test_the_wire_says_which_scheme_signed_and_which_alert_refused(
    tmp_path: Path, keys: KeyLog, kind: str, scheme: str
) -> None:
    files = _badges(tmp_path, kind)
    ca = files["ca"][0]
    server = tlsio.EchoServer(*files["server"], ca).start()
    relay = Relay(server.port)
    try:
        results = [
            tlsio.client_handshake(
                "127.0.0.1",
                relay.port,
                cert=files[who][0],
                key=files[who][1],
                ca=ca,
                server_name="api.example.com",
            )
            for who in ("alice", "mallory")
        ]
    finally:
        server.stop()
        relay.stop()
    assert [r.ok for r in results] == [True, False], results
    accepted, refused = (negotiated(c, keys) for c in relay.connections)
    assert (accepted.group, accepted.server_scheme, accepted.client_scheme) == (
        "X25519MLKEM768",
        scheme,
        scheme,
    )
    assert accepted.server_data > 0 and accepted.client_data > 0, accepted
    assert refused.client_scheme == scheme and refused.server_data == 0, refused
    assert "unknown_ca" in refused.server_alerts, refused
    assert scheme in offered_schemes(relay.connections[0])
    assert clear_alerts(relay.connections[0].to_client) == []
    # Without the secrets the handshake stays closed.
    with pytest.raises(AssertionError, match="key log has no"):
        negotiated(relay.connections[0], KeyLog())


def test_key_checks_tell_a_matching_key_and_the_seed_form(tmp_path: Path) -> None:
    files = _badges(tmp_path, "mldsa")
    cert, key = (p.read_bytes() for p in files["alice"])
    assert key_matches_certificate(cert, key)
    assert not key_matches_certificate(cert, files["mallory"][1].read_bytes())
    assert mldsa_seed_form_problem(key, 65) is None
    assert mldsa_seed_form_problem(key, 44) is not None  # another parameter set's OID
    garbage = b"-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n"
    assert "bytes" in (mldsa_seed_form_problem(garbage, 65) or "")
