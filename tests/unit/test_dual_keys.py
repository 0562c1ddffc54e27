"""Dual certificates (issue 15): one identity with more than one key, chosen per peer.

The parser (spec.additionalPrivateKeys, selfSigned.additionalPrivateKeys), the dual CA (tls-<alg>.crt/.key
next to tls.crt), one issuance writing every pair with the same names and lifetime, the reader judging
each pair against the issuer's CA of its algorithm, and the named checks that re-issue when a pair is
missing or wrong. Material comes from the production code; the checks are judged from what the reader
says about it, as the operator judges a Secret.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.unit.pki_factory import NOW, key_pem

from mtls_operator.api.certificate_spec import parse_certificate_spec
from mtls_operator.api.constants import Reason, additional_secret_keys
from mtls_operator.api.errors import CAError, SpecError
from mtls_operator.api.issuer_spec import parse_issuer_spec
from mtls_operator.api.models import KeyAlgorithm, KeyEncoding, KeySpec, SelfSignedCASpec
from mtls_operator.api.tls import SecretFacts
from mtls_operator.observability.metrics import CERT_KEY_EXPIRATION, Metrics
from mtls_operator.pki import ca as pki_ca
from mtls_operator.pki.certs import parse_certificate_pem
from mtls_operator.pki.fingerprints import certificate_fingerprint
from mtls_operator.pki.issuance import issue_tls_material
from mtls_operator.pki.material import inspect_tls_secret
from mtls_operator.policy.certificate import (
    Action,
    CertificateInput,
    IssuerView,
    SecretView,
    plan,
)
from mtls_operator.policy.status import key_expirations, ready_status

ECDSA = {"algorithm": "ECDSA", "size": 256}
MLDSA_65 = {"algorithm": "MLDSA", "size": 65}


def raw_cert(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "secretName": "web-tls",
        "issuerRef": {"name": "dual"},
        "commonName": "web",
        "dnsNames": ["web.demo.svc"],
        "duration": "24h",
        "renewBefore": "8h",
        "privateKey": MLDSA_65,
        "additionalPrivateKeys": [ECDSA],
    }
    return {**base, **fields}


DUAL = parse_certificate_spec(raw_cert())


# ---------------------------------------------------------------------------------------------------------
# The spec


@pytest.mark.parametrize(
    ("additional", "problem"),
    [
        pytest.param([ECDSA], None, id="accepts an ECDSA key next to an ML-DSA one"),
        pytest.param(
            [ECDSA, {"algorithm": "RSA"}, {"algorithm": "Ed25519"}], None, id="accepts one key per algorithm"
        ),
        pytest.param([{"algorithm": "MLDSA"}], "is the main key's", id="refuses the main key's algorithm"),
        pytest.param(
            [ECDSA, {"algorithm": "ECDSA", "size": 384}],
            "is another additional key's",
            id="refuses two keys of one algorithm",
        ),
        pytest.param([{"size": 256}], "algorithm is required", id="refuses a key without an algorithm"),
        pytest.param([{"algorithm": "ECDSA", "size": 255}], "size 255", id="refuses a size ECDSA lacks"),
        pytest.param("ECDSA", "must be a list", id="refuses a string"),
        pytest.param(
            [ECDSA, {"algorithm": "RSA"}, {"algorithm": "Ed25519"}, {"algorithm": "RSA"}],
            "at most 3",
            id="refuses a fourth key",
        ),
    ],
)
def test_additional_private_keys_are_parsed_like_private_key(additional: Any, problem: str | None) -> None:
    if problem is None:
        spec = parse_certificate_spec(raw_cert(additionalPrivateKeys=additional))
        assert [k.algorithm for k in spec.additional_private_keys] == [
            KeyAlgorithm(a["algorithm"]) for a in additional
        ]
        assert spec.key_specs[0] == spec.private_key
        return
    with pytest.raises(SpecError, match=problem):
        parse_certificate_spec(raw_cert(additionalPrivateKeys=additional))


def test_additional_keys_do_not_change_the_identity_hash() -> None:
    """So that adding or removing them alone does not make SpecChanged re-issue: the additional checks
    decide (a key asked for and missing re-issues at once; one no longer asked for waits for the next
    issuance)."""
    single = parse_certificate_spec(raw_cert(additionalPrivateKeys=None))
    assert single.additional_private_keys == ()
    assert single.identity_hash() == DUAL.identity_hash()


def test_a_self_signed_issuer_may_be_a_dual_ca() -> None:
    spec = parse_issuer_spec(
        {
            "selfSigned": {
                "secretName": "dual-ca",
                "commonName": "dual root",
                "privateKey": MLDSA_65,
                "additionalPrivateKeys": [ECDSA],
            }
        }
    )
    assert spec.managed_ca is not None
    assert spec.managed_ca.additional_private_keys == (KeySpec(KeyAlgorithm.ECDSA, 256),)
    with pytest.raises(SpecError, match="main key's"):
        parse_issuer_spec(
            {
                "selfSigned": {
                    "secretName": "dual-ca",
                    "commonName": "dual root",
                    "additionalPrivateKeys": [ECDSA],  # next to the default ECDSA key
                }
            }
        )


# ---------------------------------------------------------------------------------------------------------
# The dual CA


CA_SPEC = SelfSignedCASpec(
    secret_name="dual-ca",
    common_name="dual root",
    duration=timedelta(days=365),
    private_key=KeySpec(KeyAlgorithm.MLDSA, 65),
    additional_private_keys=(KeySpec(KeyAlgorithm.ECDSA, 256),),
)


@functools.cache
def dual_ca_data() -> dict[str, bytes]:
    """One dual CA for the whole session (ML-DSA-65 with an ECDSA P-256 CA)."""
    return pki_ca.self_signed_ca_data(CA_SPEC, NOW)


def dual_ca() -> pki_ca.CAKeyPair:
    return pki_ca.load_ca(dual_ca_data(), NOW)


def test_a_dual_ca_secret_holds_both_cas_and_both_roots() -> None:
    data = dual_ca_data()
    assert set(data) == {"tls.crt", "tls.key", "ca.crt", "tls-ecdsa.crt", "tls-ecdsa.key"}
    ca = dual_ca()
    assert ca.algorithms == {KeyAlgorithm.MLDSA, KeyAlgorithm.ECDSA}
    ecdsa = ca.for_algorithm(KeyAlgorithm.ECDSA)
    assert ecdsa is not None and ecdsa.facts.key_algorithm is KeyAlgorithm.ECDSA
    assert ca.for_algorithm(KeyAlgorithm.MLDSA) is ca
    assert ca.for_algorithm(KeyAlgorithm.RSA) is None
    assert ecdsa.facts.subject == "CN=dual root (ECDSA-P256)"  # no two roots share a subject
    assert [certificate_fingerprint(c) for c in parse_certificate_pem(data["ca.crt"])] == [
        certificate_fingerprint(r) for r in ca.roots
    ]
    assert ca.signing_fingerprint.startswith(ca.facts.fingerprint + "+")
    assert ca.only([]).additional == () and ca.only([]).signing_fingerprint == ca.facts.fingerprint


@pytest.mark.parametrize(
    ("tamper", "reason", "fragment"),
    [
        pytest.param(
            {"tls-ecdsa.key": key_pem(KeySpec(KeyAlgorithm.ECDSA, 256), slot=7)},
            Reason.CA_KEY_MISMATCH,
            "tls-ecdsa.key is not the private key of the certificate in tls-ecdsa.crt",
            id="refuses an additional CA whose key is another",
        ),
        pytest.param(
            {"tls-ecdsa.key": None},
            Reason.CA_INVALID,
            "tls-ecdsa.key is missing",
            id="refuses half a pair",
        ),
        pytest.param(
            {"tls-rsa.crt": "tls-ecdsa.crt", "tls-rsa.key": "tls-ecdsa.key"},
            Reason.CA_KEY_UNSUPPORTED,
            "tls-rsa.crt holds a ECDSA CA certificate",
            id="refuses a CA under another algorithm's name",
        ),
        pytest.param(
            {"tls-mldsa.crt": "tls.crt", "tls-mldsa.key": "tls.key"},
            Reason.CA_KEY_UNSUPPORTED,
            "second MLDSA CA",
            id="refuses an additional CA of the main CA's algorithm",
        ),
    ],
)
def test_load_ca_refuses_a_broken_additional_ca(
    tamper: dict[str, bytes | str | None], reason: Reason, fragment: str
) -> None:
    data = dict(dual_ca_data())
    for name, value in tamper.items():
        if value is None:
            data.pop(name)
        else:
            data[name] = data[value] if isinstance(value, str) else value
    with pytest.raises(CAError) as caught:
        pki_ca.load_ca(data, NOW)
    assert caught.value.reason is reason
    assert fragment in caught.value.message
    assert "PRIVATE KEY" not in caught.value.message


# ---------------------------------------------------------------------------------------------------------
# One issuance, every pair


def issue(spec: Any = DUAL, ca: pki_ca.CAKeyPair | None = None, **kwargs: Any) -> dict[str, bytes]:
    return issue_tls_material(spec, ca or dual_ca(), NOW, **kwargs).data


def leaf_of(data: dict[str, bytes], name: str) -> x509.Certificate:
    return parse_certificate_pem(data[name])[0]


def test_one_issuance_writes_both_pairs_with_the_same_identity() -> None:
    data = issue()
    assert set(data) == {"tls.crt", "tls.key", "ca.crt", "tls-ecdsa.crt", "tls-ecdsa.key"}
    main, extra = leaf_of(data, "tls.crt"), leaf_of(data, "tls-ecdsa.crt")
    assert (main.subject, main.not_valid_before_utc, main.not_valid_after_utc) == (
        extra.subject,
        extra.not_valid_before_utc,
        extra.not_valid_after_utc,
    )
    san = x509.SubjectAlternativeName
    assert main.extensions.get_extension_for_class(san) == extra.extensions.get_extension_for_class(san)
    assert main.signature_algorithm_oid.dotted_string == "2.16.840.1.101.3.4.3.18"  # id-ml-dsa-65
    assert extra.signature_algorithm_oid == x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256
    ca = dual_ca()
    ecdsa_ca = ca.for_algorithm(KeyAlgorithm.ECDSA)
    assert ecdsa_ca is not None
    extra.verify_directly_issued_by(ecdsa_ca.certificate)
    main.verify_directly_issued_by(ca.certificate)
    assert len(parse_certificate_pem(data["ca.crt"])) == 2  # both roots

    facts = inspect_tls_secret(data, ca)
    (pair,) = facts.additional
    assert (pair.algorithm, pair.key_matches, pair.signed_by_current_ca, pair.chain_complete) == (
        KeyAlgorithm.ECDSA,
        True,
        True,
        True,
    )
    assert pair.key_encoding is KeyEncoding.PKCS8


def test_the_pairs_end_together_at_the_earliest_ca_expiry() -> None:
    short = replace(CA_SPEC, duration=timedelta(days=30))
    ca = pki_ca.load_ca(pki_ca.self_signed_ca_data(short, NOW), NOW)
    ecdsa_ca = ca.for_algorithm(KeyAlgorithm.ECDSA)
    assert ecdsa_ca is not None
    # The ML-DSA CA from another (longer-lived) Secret, the ECDSA CA of the short one.
    mixed = replace(dual_ca(), additional=(ecdsa_ca,))
    data = issue(replace(DUAL, duration=timedelta(days=90)), mixed)
    ends = {leaf_of(data, n).not_valid_after_utc for n in ("tls.crt", "tls-ecdsa.crt")}
    assert ends == {ecdsa_ca.certificate.not_valid_after_utc}


def test_an_issuer_without_a_ca_of_the_algorithm_cannot_sign_the_additional_key() -> None:
    single = dual_ca().only([])
    with pytest.raises(CAError) as caught:
        issue(ca=single)
    assert caught.value.reason is Reason.ADDITIONAL_KEY_UNSUPPORTED
    assert "holds no ECDSA CA" in caught.value.message


def test_rotation_policy_never_keeps_the_additional_key() -> None:
    first = issue()
    again = issue(existing_additional_keys={KeyAlgorithm.ECDSA: first["tls-ecdsa.key"]})
    assert again["tls-ecdsa.key"] == first["tls-ecdsa.key"]
    assert again["tls-ecdsa.crt"] != first["tls-ecdsa.crt"]
    assert issue()["tls-ecdsa.key"] != first["tls-ecdsa.key"]


def test_pkcs1_encoding_of_an_additional_key_is_seen() -> None:
    spec = parse_certificate_spec(raw_cert(additionalPrivateKeys=[{**ECDSA, "encoding": "PKCS1"}]))
    data = issue(spec)
    assert data["tls-ecdsa.key"].startswith(b"-----BEGIN EC PRIVATE KEY-----")
    (pair,) = inspect_tls_secret(data, dual_ca()).additional
    assert pair.key_encoding is KeyEncoding.PKCS1


# ---------------------------------------------------------------------------------------------------------
# The checks, judged from what the reader says about a Secret


def judged(data: dict[str, bytes], ca: pki_ca.CAKeyPair | None = None) -> SecretFacts:
    return inspect_tls_secret(data, ca or dual_ca())


@functools.cache
def issued() -> tuple[tuple[str, bytes], ...]:
    return tuple(issue().items())


def state(data: dict[str, bytes] | None = None, spec: Any = DUAL, **changes: Any) -> CertificateInput:
    ca = changes.pop("ca", None) or dual_ca()
    facts = judged(dict(issued()) if data is None else data, ca)
    view = IssuerView(
        True,
        True,
        Reason.KEY_PAIR_VERIFIED,
        "ok",
        ca.facts,
        anchors=frozenset(certificate_fingerprint(r) for r in ca.roots),
        additional_cas=tuple(a.facts for a in ca.additional),
    )
    secret = SecretView(
        exists=True,
        owner_certificate="web",
        managed=True,
        owned=True,
        facts=facts,
        spec_hash=spec.identity_hash(),
        revision=1,
    )
    base = CertificateInput(
        namespace="demo",
        name="web",
        uid="uid-1",
        generation=1,
        spec=spec,
        spec_error=None,
        secret=secret,
        issuer=view,
        now=NOW + timedelta(minutes=1),
    )
    return replace(base, **changes)


def tampered(**changes: bytes | None) -> dict[str, bytes]:
    data = dict(issued())
    for name, value in changes.items():
        name = name.replace("_", "-", 1).replace("_", ".")
        if value is None:
            data.pop(name)
        else:
            data[name] = value
    return data


def other_issuance(name: str) -> bytes:
    """``name`` from an issuance of the same spec by another dual CA."""
    return issue(ca=pki_ca.load_ca(pki_ca.self_signed_ca_data(CA_SPEC, NOW), NOW))[name]


RSA_SPEC = parse_certificate_spec(raw_cert(additionalPrivateKeys=[ECDSA, {"algorithm": "RSA"}]))
P384_SPEC = parse_certificate_spec(raw_cert(additionalPrivateKeys=[{"algorithm": "ECDSA", "size": 384}]))
PKCS1_SPEC = parse_certificate_spec(raw_cert(additionalPrivateKeys=[{**ECDSA, "encoding": "PKCS1"}]))
OTHER_NAMES = parse_certificate_spec(raw_cert(dnsNames=["api.demo.svc"]))


@pytest.mark.parametrize(
    ("make", "action", "reason"),
    [
        pytest.param(lambda: state(), Action.NOTHING, None, id="does nothing while both pairs are valid"),
        pytest.param(
            lambda: state(tampered(tls_ecdsa_crt=None, tls_ecdsa_key=None)),
            Action.ISSUE,
            Reason.ADDITIONAL_KEY_MISSING,
            id="re-issues when the ECDSA pair is missing",
        ),
        pytest.param(
            lambda: state(spec=RSA_SPEC, ca=_with_rsa_ca()),
            Action.ISSUE,
            Reason.ADDITIONAL_KEY_MISSING,
            id="re-issues when the spec asks for one more key",
        ),
        pytest.param(
            lambda: state(tampered(tls_ecdsa_key=key_pem(KeySpec(KeyAlgorithm.ECDSA, 256), slot=3))),
            Action.ISSUE,
            Reason.ADDITIONAL_KEY_MISMATCH,
            id="re-issues when tls-ecdsa.key does not match tls-ecdsa.crt",
        ),
        pytest.param(
            lambda: state(spec=P384_SPEC),
            Action.ISSUE,
            Reason.KEY_SPEC_CHANGED,
            id="re-issues when the additional key's size changed",
        ),
        pytest.param(
            lambda: state(spec=PKCS1_SPEC),
            Action.ISSUE,
            Reason.KEY_SPEC_CHANGED,
            id="re-issues when the additional key's encoding changed",
        ),
        pytest.param(
            lambda: state(
                tampered(tls_ecdsa_crt=other_issuance("tls-ecdsa.crt"), tls_ecdsa_key=None)
                | {"tls-ecdsa.key": issue(ca=dual_ca())["tls-ecdsa.key"]}
            ),
            Action.ISSUE,
            Reason.ADDITIONAL_KEY_MISMATCH,
            id="re-issues a pair whose halves come from two issuances",
        ),
        pytest.param(
            lambda: state(tampered() | _pair_of(issue(OTHER_NAMES))),
            Action.ISSUE,
            Reason.ADDITIONAL_CERT_MISMATCH,
            id="re-issues when tls-ecdsa.crt names other hosts than tls.crt",
        ),
        pytest.param(
            lambda: state(
                tampered() | _pair_of(issue_tls_material(DUAL, dual_ca(), NOW + timedelta(hours=1)).data)
            ),
            Action.ISSUE,
            Reason.ADDITIONAL_CERT_MISMATCH,
            id="re-issues when the pairs' lifetimes differ",
        ),
        pytest.param(
            lambda: state(tampered() | _pair_of(issue(ca=_other_dual_ca()))),
            Action.ISSUE,
            Reason.ISSUER_CHANGED,
            id="re-issues when tls-ecdsa.crt is from another ECDSA CA",
        ),
        pytest.param(
            lambda: state(ca=dual_ca().only([])),
            Action.BLOCKED,
            Reason.ADDITIONAL_KEY_UNSUPPORTED,
            id="blocks when the issuer holds no ECDSA CA",
        ),
        pytest.param(
            lambda: state(spec=replace(DUAL, additional_private_keys=())),
            Action.NOTHING,
            None,
            id="keeps a pair the spec no longer asks for until the next issuance",
        ),
    ],
)
def test_dual_checks(make: Any, action: Action, reason: Reason | None) -> None:
    decided = plan(make())
    assert decided.action is action, decided
    assert (decided.violation.reason if decided.violation else None) == reason


def test_half_a_pair_is_missing_data_which_re_issues() -> None:
    from mtls_operator.api.tls import TLSMaterialError

    with pytest.raises(TLSMaterialError) as caught:
        judged(tampered(tls_ecdsa_key=None))
    assert caught.value.reason is Reason.MISSING_DATA
    assert "tls-ecdsa.key is missing" in caught.value.message


def _pair_of(data: dict[str, bytes]) -> dict[str, bytes]:
    crt, key = additional_secret_keys("ECDSA")
    return {crt: data[crt], key: data[key]}


@functools.cache
def _with_rsa_ca() -> pki_ca.CAKeyPair:
    """The dual CA with an RSA CA too."""
    rsa = replace(CA_SPEC, additional_private_keys=(KeySpec(KeyAlgorithm.RSA, 2048),))
    extra = pki_ca.load_ca(pki_ca.self_signed_ca_data(rsa, NOW), NOW).additional
    return replace(dual_ca(), additional=(*dual_ca().additional, *extra))


@functools.cache
def _other_dual_ca() -> pki_ca.CAKeyPair:
    """The same ML-DSA CA with another ECDSA CA: an ECDSA leaf of it is from another ECDSA CA."""
    other = pki_ca.load_ca(pki_ca.self_signed_ca_data(CA_SPEC, NOW), NOW)
    return replace(dual_ca(), additional=other.additional)


def test_rotation_policy_never_plans_to_keep_the_additional_key() -> None:
    never = parse_certificate_spec(raw_cert(additionalPrivateKeys=[{**ECDSA, "rotationPolicy": "Never"}]))
    decided = plan(state(spec=never, renew_request="r1"))
    assert decided.action is Action.ISSUE and decided.reuse_additional == {KeyAlgorithm.ECDSA}
    assert plan(state(renew_request="r1")).reuse_additional == frozenset()
    assert plan(state(spec=never, revoke_request="x")).reuse_additional == frozenset()


@pytest.mark.parametrize(
    ("main", "extra"),
    [
        pytest.param(m, e, id=f"{m} with an additional {e} key")
        for m in KeyAlgorithm
        for e in KeyAlgorithm
        if m is not e  # an additional key has an algorithm of its own
    ],
)
def test_every_algorithm_pair_the_operator_issues_passes_every_check(
    main: KeyAlgorithm, extra: KeyAlgorithm
) -> None:
    """Conformance: any main and additional algorithm, issued by a CA pair of the same algorithms."""
    ca_spec = replace(
        CA_SPEC,
        private_key=KeySpec(main, _size(main)),
        additional_private_keys=(KeySpec(extra, _size(extra)),),
    )
    ca = pki_ca.load_ca(pki_ca.self_signed_ca_data(ca_spec, NOW), NOW)
    spec = parse_certificate_spec(
        raw_cert(privateKey={"algorithm": str(main)}, additionalPrivateKeys=[{"algorithm": str(extra)}])
    )
    data = issue(spec, ca)
    assert plan(state(data, spec, ca=ca)).action is Action.NOTHING


def _size(algorithm: KeyAlgorithm) -> int:
    return {KeyAlgorithm.RSA: 2048, KeyAlgorithm.ECDSA: 256, KeyAlgorithm.ED25519: 0, KeyAlgorithm.MLDSA: 44}[
        algorithm
    ]


# ---------------------------------------------------------------------------------------------------------
# Status and metrics


def test_status_names_every_key_and_each_additional_certificate() -> None:
    from mtls_operator.api.object_parsers import parse_certificate_status
    from mtls_operator.api.objects import CertificateStatus

    facts = judged(dict(issued()))
    status = ready_status(
        CertificateStatus(),
        spec=DUAL,
        generation=1,
        facts=facts,
        revision=1,
        renewal_time=None,
        issuer_fingerprint=None,
        chain=(KeyAlgorithm.MLDSA,),
        fulfilled=(None, None),
        block=None,
        now=NOW,
    )
    assert status.key_algorithms == ("ML-DSA-65", "ECDSA-P256")
    doc = status.as_dict()
    (extra,) = doc["additionalCertificates"]
    assert extra["secretKey"] == "tls-ecdsa.crt"
    assert extra["notAfter"] == doc["notAfter"]
    assert parse_certificate_status(doc) == status  # read back as written: no needless status patch


def test_the_key_expiry_gauge_has_one_series_per_key_algorithm() -> None:
    facts = judged(dict(issued()))
    metrics = Metrics()
    metrics.observe_certificate(
        "demo",
        "web",
        "dual",
        not_after=facts.leaf.not_after,
        renewal_time=None,
        ready=True,
        reason="UpToDate",
        keys=key_expirations(facts),
    )
    text = metrics.render().decode()
    lines = sorted(line for line in text.splitlines() if line.startswith(CERT_KEY_EXPIRATION + "{"))
    assert [line.split("algorithm=")[1].split('"')[1] for line in lines] == ["ECDSA-P256", "ML-DSA-65"]
    metrics.forget_certificate("demo", "web")
    assert CERT_KEY_EXPIRATION + "{" not in metrics.render().decode()


# ---------------------------------------------------------------------------------------------------------
# The readers stay total on the additional slots


ADDITIONAL_SLOTS = ("tls-ecdsa.crt", "tls-ecdsa.key", "tls-rsa.crt", "tls-ed25519.key")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    slot=st.sampled_from(ADDITIONAL_SLOTS),
    payload=st.one_of(
        st.binary(max_size=2048),
        st.sampled_from([b"", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"]),
        st.builds(lambda cut: dict(issued())["tls-ecdsa.crt"][:cut], st.integers(0, 600)),
    ),
    leaf=st.booleans(),
)
def test_random_bytes_in_an_additional_slot_give_typed_errors_only(
    slot: str, payload: bytes, leaf: bool
) -> None:
    from mtls_operator.api.tls import TLSMaterialError

    data = {**(dict(issued()) if leaf else dual_ca_data()), slot: payload}
    messages: list[str] = []
    for read, error in (
        (lambda: judged(data), TLSMaterialError),
        (lambda: pki_ca.load_ca(data, NOW), CAError),
    ):
        try:
            read()
        except error as exc:  # anything else fails the test
            messages.append(exc.message)
    for message in messages:
        assert message.endswith(".") and "-----BEGIN" not in message
        if len(payload) >= 16:
            assert payload[:16].decode("latin-1") not in message


def test_freshly_issued_facts_equal_what_a_full_inspection_reads() -> None:
    """Issuance does not verify the signatures it has just made (each CA's key was matched to its
    certificate when loaded); the facts it returns are those of judging the Secret cold."""
    ca = dual_ca()
    issued = issue_tls_material(DUAL, ca, NOW)
    assert issued.facts == inspect_tls_secret(issued.data, ca)
    assert issued.facts.signed_by_current_ca and issued.facts.chain_complete
    assert [a.signed_by_current_ca for a in issued.facts.additional] == [True]
