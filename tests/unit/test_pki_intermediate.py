"""pki.intermediate: root -> intermediate -> leaf chains that verify to the root, for classical, ML-DSA and
mixed algorithms; path length and name constraints; validity capped by the parent."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID
from tests.unit.pki_factory import (
    ECDSA_P256,
    ECDSA_P384,
    ED25519,
    MLDSA_44,
    MLDSA_65,
    NOW,
    RSA_2048,
    issue,
    key,
    key_usage,
    pem,
    self_signed_ca,
)

from mtls_operator.api.constants import Reason
from mtls_operator.api.models import KeySpec, SelfSignedCASpec, Subject
from mtls_operator.api.tls import CAError, TLSMaterialError
from mtls_operator.pki import ca as pki_ca
from mtls_operator.pki import keys
from mtls_operator.pki.certs import parse_certificate_pem
from mtls_operator.pki.fingerprints import certificate_fingerprint
from mtls_operator.pki.intermediate import sign_intermediate


def intermediate_spec(spec: KeySpec = ECDSA_P256, days: int = 90) -> SelfSignedCASpec:
    return SelfSignedCASpec(
        secret_name="unused",
        common_name=f"{spec.label} intermediate",
        subject=Subject(organizations=("mtls-operator tests",)),
        duration=timedelta(days=days),
        private_key=spec,
    )


def make_intermediate(
    parent: pki_ca.CAKeyPair, spec: KeySpec = ECDSA_P256, **kwargs: object
) -> pki_ca.CAKeyPair:
    """What the runtime will do: sign, then load the CA Secret {tls.crt: chain, tls.key, ca.crt: root}."""
    key_pem, chain = sign_intermediate(intermediate_spec(spec), parent, NOW, **kwargs)  # type: ignore[arg-type]
    return pki_ca.load_ca({"tls.crt": chain, "tls.key": key_pem, "ca.crt": parent.root_pem}, NOW)


def verify_leaf(secret: dict[str, bytes], dns_name: str = "web.default.svc") -> list[x509.Certificate]:
    """Verify tls.crt's leaf as a TLS client would: anchors from ca.crt, intermediates from tls.crt."""
    chain = parse_certificate_pem(secret["tls.crt"])
    anchors = parse_certificate_pem(secret["ca.crt"])
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store(anchors))
        .time(NOW)
        .build_server_verifier(x509.DNSName(dns_name))
    )
    return verifier.verify(chain[0], chain[1:])


@pytest.mark.parametrize(
    ("root_spec", "inter_spec", "leaf_spec"),
    [
        pytest.param(
            ECDSA_P256, ECDSA_P256, ECDSA_P256, id="an ECDSA leaf verifies through an ECDSA intermediate"
        ),
        pytest.param(
            MLDSA_65, MLDSA_65, MLDSA_65, id="an ML-DSA leaf verifies through an ML-DSA intermediate"
        ),
        pytest.param(ECDSA_P256, ECDSA_P384, MLDSA_44, id="an ML-DSA leaf verifies under an ECDSA CA"),
        pytest.param(ECDSA_P256, MLDSA_65, ECDSA_P256, id="an ML-DSA intermediate under an ECDSA root"),
        pytest.param(MLDSA_65, ECDSA_P256, ECDSA_P256, id="an ECDSA intermediate under an ML-DSA root"),
        pytest.param(RSA_2048, ECDSA_P384, ECDSA_P256, id="an ECDSA intermediate under an RSA root"),
    ],
)
def test_leaf_verifies_to_the_root_through_the_intermediate(
    root_spec: KeySpec, inter_spec: KeySpec, leaf_spec: KeySpec
) -> None:
    root = self_signed_ca(root_spec)
    inter = make_intermediate(root, inter_spec)
    secret = issue(inter, leaf_spec)

    path = verify_leaf(secret)

    assert [certificate_fingerprint(c) for c in path[1:]] == [
        certificate_fingerprint(inter.certificate),
        certificate_fingerprint(root.certificate),
    ]
    assert inter.root == root.certificate
    assert inter.intermediates == ()
    assert inter.issuer_chain == (inter.certificate,)
    assert inter.facts.root_fingerprint == certificate_fingerprint(root.certificate)
    assert inter.facts.key_algorithm is inter_spec.algorithm


def test_ed25519_intermediate_chains_by_signature() -> None:
    """cryptography's WebPKI verifier refuses Ed25519 (the CA/B profile does); check the links directly."""
    root = self_signed_ca(RSA_2048)
    inter = make_intermediate(root, ED25519)
    leaf, *rest = parse_certificate_pem(issue(inter, ED25519)["tls.crt"])
    assert rest == [inter.certificate]
    leaf.verify_directly_issued_by(inter.certificate)
    inter.certificate.verify_directly_issued_by(root.certificate)
    assert inter.root == root.certificate


def test_two_intermediates_deep() -> None:
    root = self_signed_ca(ECDSA_P256)
    first = make_intermediate(root, ECDSA_P256)
    second = make_intermediate(first, MLDSA_44)

    assert second.intermediates == (first.certificate,)
    assert second.root == root.certificate
    secret = issue(second, ECDSA_P256)
    assert len(parse_certificate_pem(secret["tls.crt"])) == 3  # leaf, second, first; never the root
    assert len(verify_leaf(secret)) == 4


def test_intermediate_certificate_fields() -> None:
    root = self_signed_ca(ECDSA_P256)
    key_pem, chain = sign_intermediate(intermediate_spec(MLDSA_65, days=30), root, NOW, path_length=0)
    cert = parse_certificate_pem(chain)[0]

    assert len(parse_certificate_pem(chain)) == 1  # the root stays out of tls.crt
    assert cert.subject.rfc4514_string() == "CN=ML-DSA-65 intermediate,O=mtls-operator tests"
    assert cert.issuer == root.certificate.subject
    assert cert.not_valid_before_utc == NOW.replace(microsecond=0)
    assert cert.not_valid_after_utc == NOW.replace(microsecond=0) + timedelta(days=30)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign
    assert (
        cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        == root.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    )
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.NameConstraints)
    assert keys.keys_match(keys.load_private_key_pem(key_pem), cert.public_key())
    assert key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")


def test_validity_is_capped_at_the_parents_not_after() -> None:
    root = self_signed_ca(ECDSA_P256, days=30)
    _, chain = sign_intermediate(intermediate_spec(days=3650), root, NOW)
    assert parse_certificate_pem(chain)[0].not_valid_after_utc == root.certificate.not_valid_after_utc


def test_an_expired_parent_cannot_sign() -> None:
    root = self_signed_ca(ECDSA_P256, days=30)
    with pytest.raises(CAError) as caught:
        sign_intermediate(
            intermediate_spec(), root, root.certificate.not_valid_after_utc + timedelta(seconds=1)
        )
    assert caught.value.reason is Reason.CA_EXPIRED


def parent_with_path_length(path_length: int) -> pki_ca.CAKeyPair:
    """A root CA whose basicConstraints carry ``path_length`` (the operator's own roots have none)."""
    parent_key = key(ECDSA_P256, 20 + path_length)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"pathlen {path_length}")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(parent_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(parent_key.public_key()), critical=False)
        .sign(parent_key, hashes.SHA256())
    )
    return pki_ca.load_ca({"tls.crt": pem(cert), "tls.key": keys.private_key_to_pem(parent_key)}, NOW)


@pytest.mark.parametrize(
    ("parent_length", "wanted", "expected"),
    [
        pytest.param(None, None, None, id="no path length under an unconstrained root stays unconstrained"),
        pytest.param(None, 2, 2, id="takes the requested path length under an unconstrained root"),
        pytest.param(2, None, 1, id="defaults to one less than the parent's path length"),
        pytest.param(2, 1, 1, id="takes a path length shorter than the parent's"),
        pytest.param(1, 0, 0, id="path length 0 under path length 1"),
    ],
)
def test_path_length(parent_length: int | None, wanted: int | None, expected: int | None) -> None:
    parent = self_signed_ca(ECDSA_P256) if parent_length is None else parent_with_path_length(parent_length)
    inter = make_intermediate(parent, ECDSA_P256, path_length=wanted)
    assert (
        inter.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length
        == expected
    )
    assert verify_leaf(issue(inter))


@pytest.mark.parametrize(
    ("parent_length", "wanted", "error", "message"),
    [
        pytest.param(
            0, None, CAError, "The parent CA has pathLength 0", id="a parent with path length 0 signs no CA"
        ),
        pytest.param(
            1,
            1,
            TLSMaterialError,
            "spec.intermediate.pathLength 1 must be less than the parent CA's pathLength 1.",
            id="refuses a path length not shorter than the parent's",
        ),
        pytest.param(
            None,
            -1,
            TLSMaterialError,
            "spec.intermediate.pathLength must be 0 or more",
            id="refuses a negative one",
        ),
    ],
)
def test_path_length_refusals(
    parent_length: int | None, wanted: int | None, error: type[Exception], message: str
) -> None:
    parent = self_signed_ca(ECDSA_P256) if parent_length is None else parent_with_path_length(parent_length)
    with pytest.raises(error) as caught:
        sign_intermediate(intermediate_spec(), parent, NOW, path_length=wanted)
    assert caught.value.message.startswith(message)  # type: ignore[attr-defined]


@pytest.mark.parametrize("spec", [ECDSA_P256, MLDSA_65], ids=lambda s: s.label)
def test_name_constraints_confine_leaves(spec: KeySpec) -> None:
    root = self_signed_ca(spec)
    inter = make_intermediate(root, spec, permitted_dns=["team-a.svc"], excluded_dns=["secret.team-a.svc"])
    constraints = inter.certificate.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    assert constraints.value.permitted_subtrees == [x509.DNSName("team-a.svc")]
    assert constraints.value.excluded_subtrees == [x509.DNSName("secret.team-a.svc")]

    assert verify_leaf(issue(inter, dns_names=("web.team-a.svc",), common_name=None), "web.team-a.svc")
    with pytest.raises(verification.VerificationError):
        verify_leaf(issue(inter, dns_names=("web.team-b.svc",), common_name=None), "web.team-b.svc")
    with pytest.raises(verification.VerificationError):
        verify_leaf(issue(inter, dns_names=("secret.team-a.svc",), common_name=None), "secret.team-a.svc")


def test_only_excluded_names() -> None:
    inter = make_intermediate(self_signed_ca(ECDSA_P256), excluded_dns=["kube-system.svc"])
    value = inter.certificate.extensions.get_extension_for_class(x509.NameConstraints).value
    assert value.permitted_subtrees is None
    assert verify_leaf(issue(inter, dns_names=("web.default.svc",), common_name=None))


@pytest.mark.parametrize(
    "bad",
    [pytest.param("*.team-a.svc", id="refuses a wildcard"), pytest.param("Team_A", id="refuses a non-name")],
)
def test_name_constraints_refuse_bad_domains(bad: str) -> None:
    with pytest.raises(TLSMaterialError) as caught:
        sign_intermediate(intermediate_spec(), self_signed_ca(ECDSA_P256), NOW, permitted_dns=[bad])
    assert caught.value.reason is Reason.INVALID_SPEC
    assert "spec.intermediate.nameConstraints.permittedDNSDomains" in caught.value.message


def test_openssl_verifies_the_chain_and_enforces_name_constraints(tmp_path: Path, openssl: str) -> None:
    root = self_signed_ca(ECDSA_P256)
    inter = make_intermediate(root, RSA_2048, permitted_dns=["team-a.svc"])
    (tmp_path / "root.pem").write_bytes(root.root_pem)
    attime = ["-attime", str(int(NOW.timestamp()))]
    for name, dns, ok in (("good", "web.team-a.svc", True), ("bad", "web.team-b.svc", False)):
        chain = parse_certificate_pem(issue(inter, dns_names=(dns,), common_name=None)["tls.crt"])
        (tmp_path / f"{name}.pem").write_bytes(pem(chain[0]))
        (tmp_path / f"{name}-chain.pem").write_bytes(pem(*chain[1:]))
        done = subprocess.run(
            [
                openssl,
                "verify",
                "-CAfile",
                "root.pem",
                "-untrusted",
                f"{name}-chain.pem",
                *attime,
                f"{name}.pem",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert (done.returncode == 0) is ok, done.stdout + done.stderr
        if not ok:
            assert "permitted subtree violation" in done.stdout + done.stderr
