"""pki.material: the verdict on a TLS Secret's data, judged against the issuer's CA."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from tests.unit.pki_factory import (
    ECDSA_P256,
    MLDSA_65,
    NOW,
    RSA_2048,
    intermediate_ca,
    issue,
    key_pem,
    leaf_spec,
    pem,
    self_signed_ca,
    with_changes,
)

from mtls_operator.api.constants import Reason
from mtls_operator.api.tls import TLSMaterialError
from mtls_operator.pki import certs, material
from mtls_operator.pki.ca import CAKeyPair
from mtls_operator.pki.issuance import issue_tls_material


@dataclass(frozen=True)
class Verdict:
    key_matches: bool = True
    signed_by_current_ca: bool = True
    ca_bundle_matches: bool = True
    chain_complete: bool = True
    has_keystores: bool = False


def root() -> CAKeyPair:
    return self_signed_ca(ECDSA_P256)


def other_root() -> CAKeyPair:
    return self_signed_ca(ECDSA_P256, slot=1)


def intermediate() -> CAKeyPair:
    return intermediate_ca(self_signed_ca(RSA_2048))


def _leaf_only(data: dict[str, bytes]) -> dict[str, bytes]:
    return with_changes(data, tls_crt=pem(certs.parse_certificate_pem(data["tls.crt"])[0]))


VERDICTS: list[object] = [
    pytest.param(
        lambda: issue(root()), root, Verdict(), id="finds nothing wrong with a freshly issued secret"
    ),
    pytest.param(
        lambda: issue(root(), MLDSA_65), root, Verdict(), id="finds nothing wrong with an ML-DSA leaf"
    ),
    pytest.param(
        lambda: issue(intermediate()),
        intermediate,
        Verdict(),
        id="finds nothing wrong with a leaf from an intermediate that carries its chain",
    ),
    pytest.param(
        lambda: with_changes(issue(root()), tls_key=key_pem(ECDSA_P256, 1)),
        root,
        Verdict(key_matches=False),
        id="sees that tls.key belongs to another certificate",
    ),
    pytest.param(
        lambda: with_changes(issue(root()), tls_key=key_pem(MLDSA_65)),
        root,
        Verdict(key_matches=False),
        id="sees that tls.key is of another algorithm than the certificate",
    ),
    pytest.param(
        lambda: issue(other_root()),
        root,
        Verdict(signed_by_current_ca=False, ca_bundle_matches=False),
        id="sees a certificate from another CA",
    ),
    pytest.param(
        lambda: with_changes(issue(root()), ca_crt=None),
        root,
        Verdict(ca_bundle_matches=False),
        id="sees that ca.crt is missing, without calling it an error",
    ),
    pytest.param(
        lambda: with_changes(issue(root()), ca_crt=b""),
        root,
        Verdict(ca_bundle_matches=False),
        id="treats an empty ca.crt as missing",
    ),
    pytest.param(
        lambda: with_changes(issue(root()), ca_crt=other_root().root_pem),
        root,
        Verdict(ca_bundle_matches=False),
        id="sees that ca.crt holds another root",
    ),
    pytest.param(
        lambda: with_changes(issue(root()), ca_crt=other_root().root_pem + root().root_pem),
        root,
        Verdict(),
        id="accepts a ca.crt bundle that includes the root",
    ),
    pytest.param(
        lambda: _leaf_only(issue(intermediate())),
        intermediate,
        Verdict(chain_complete=False),
        id="sees that tls.crt lacks the intermediate",
    ),
    pytest.param(
        lambda: with_changes(issue(root()), keystore_p12=b"ks", truststore_p12=b"ts"),
        root,
        Verdict(has_keystores=True),
        id="sees both keystores",
    ),
    pytest.param(
        lambda: with_changes(issue(root()), keystore_p12=b"ks"),
        root,
        Verdict(has_keystores=False),
        id="does not count a keystore without its truststore",
    ),
    pytest.param(
        lambda: issue(root()),
        lambda: None,
        Verdict(signed_by_current_ca=False, ca_bundle_matches=False, chain_complete=False),
        id="judges nothing against an unknown issuer",
    ),
]


@pytest.mark.parametrize(("make_data", "make_ca", "expected"), VERDICTS)
def test_verdict(
    make_data: Callable[[], dict[str, bytes]], make_ca: Callable[[], CAKeyPair | None], expected: Verdict
) -> None:
    data, ca = make_data(), make_ca()
    facts = material.inspect_tls_secret(data, ca)
    actual = Verdict(
        key_matches=facts.key_matches,
        signed_by_current_ca=facts.signed_by_current_ca,
        ca_bundle_matches=facts.ca_bundle_matches,
        chain_complete=facts.chain_complete,
        has_keystores=facts.has_keystores,
    )
    assert actual == expected
    leaf = certs.parse_certificate_pem(data["tls.crt"])[0]
    assert facts.leaf == certs.cert_facts(leaf, [ca.certificate] if ca else [])


def test_leaf_facts_name_the_issuing_ca() -> None:
    ca = intermediate()
    facts = material.inspect_tls_secret(issue(ca), ca)
    assert facts.leaf.issuer_fingerprint == ca.facts.fingerprint
    assert facts.leaf.dns_names == ("web.default.svc",)


@pytest.mark.parametrize("ca", [root, intermediate, lambda: self_signed_ca(MLDSA_65)])
def test_issuance_facts_equal_a_cold_inspection_without_verifying_again(ca: Callable[[], CAKeyPair]) -> None:
    """issue_tls_material does not verify the signatures it has just made; what it reports is what
    judging the written Secret cold reads."""
    pair = ca()
    issued = issue_tls_material(leaf_spec(), pair, NOW)
    assert issued.facts == material.inspect_tls_secret(issued.data, pair)
    assert issued.facts.leaf.issuer_fingerprint == pair.facts.fingerprint


def test_just_signed_takes_the_signer_on_trust_and_a_cold_inspection_does_not() -> None:
    """What ``just_signed`` skips: a leaf of another CA passes as the CA's only when the caller says it has
    just signed it (so only issuance may say so)."""
    data = issue(other_root())
    assert not material.inspect_tls_secret(data, root()).signed_by_current_ca
    assert material.inspect_tls_secret(data, root(), just_signed=True).signed_by_current_ca


ERRORS: list[object] = [
    pytest.param(
        lambda d: with_changes(d, tls_crt=None),
        Reason.MISSING_DATA,
        "tls.crt is missing: ",
        id="reports a secret without tls.crt as missing data",
    ),
    pytest.param(
        lambda d: with_changes(d, tls_key=None),
        Reason.MISSING_DATA,
        "tls.key is missing: ",
        id="reports a secret without tls.key as missing data",
    ),
    pytest.param(
        lambda d: with_changes(d, tls_key=b""),
        Reason.MISSING_DATA,
        "tls.key is missing: ",
        id="reports an empty tls.key as missing data",
    ),
    pytest.param(
        lambda d: with_changes(d, tls_crt=b"\x89PNG\r\n"),
        Reason.SECRET_CORRUPT,
        "tls.crt does not hold readable PEM certificates.",
        id="reports garbage in tls.crt as corrupt",
    ),
    pytest.param(
        lambda d: with_changes(d, tls_crt=d["tls.crt"][:200]),
        Reason.SECRET_CORRUPT,
        "tls.crt does not hold readable PEM certificates.",
        id="reports a truncated tls.crt as corrupt",
    ),
    pytest.param(
        lambda d: with_changes(d, tls_key=d["tls.key"][:100]),
        Reason.SECRET_CORRUPT,
        "tls.key is not a readable PEM private key.",
        id="reports a truncated tls.key as corrupt",
    ),
    pytest.param(
        lambda d: with_changes(d, ca_crt=b"not pem"),
        Reason.SECRET_CORRUPT,
        "ca.crt does not hold readable PEM certificates.",
        id="reports garbage in ca.crt as corrupt",
    ),
]


@pytest.mark.parametrize(("damage", "reason", "message"), ERRORS)
def test_unusable_material_raises_tls_material_error(
    damage: Callable[[dict[str, bytes]], dict[str, bytes]], reason: Reason, message: str
) -> None:
    with pytest.raises(TLSMaterialError) as caught:
        material.inspect_tls_secret(damage(issue(root())), root())
    assert caught.value.reason is reason
    assert caught.value.message.startswith(message)
    assert caught.value.message.endswith(".")
