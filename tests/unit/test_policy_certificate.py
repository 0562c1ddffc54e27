"""The certificate decision table: each check fires for the state it is named after, and only then."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from mtls_operator.api.certificate_spec import parse_certificate_spec
from mtls_operator.api.constants import Reason
from mtls_operator.api.models import KeyAlgorithm, Usage
from mtls_operator.api.tls import CAFacts, CertFacts, SecretFacts
from mtls_operator.policy.certificate import Action, CertificateInput, IssuerView, SecretView, Violation, plan

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SPEC = parse_certificate_spec(
    {
        "secretName": "web-tls",
        "issuerRef": {"name": "ca"},
        "commonName": "web",
        "dnsNames": ["web.demo.svc"],
        "duration": "24h",
        "renewBefore": "8h",
    }
)
CA = CAFacts(
    "cafp", NOW - timedelta(days=1), NOW + timedelta(days=300), "CN=ca", KeyAlgorithm.ECDSA, 256, "cafp"
)
LEAF = CertFacts(
    serial_number="01",
    fingerprint="leaffp",
    not_before=NOW - timedelta(hours=1),
    not_after=NOW + timedelta(hours=23),
    common_name="web",
    dns_names=("web.demo.svc",),
    ip_addresses=(),
    uris=(),
    email_addresses=(),
    usages=frozenset({Usage.SERVER_AUTH, Usage.CLIENT_AUTH, Usage.DIGITAL_SIGNATURE}),
    is_ca=False,
    key_algorithm=KeyAlgorithm.ECDSA,
    key_size=256,
    issuer_fingerprint="cafp",
)
GOOD = SecretFacts(LEAF, True, True, True, True, False, frozenset({"cafp"}))
VALID_SECRET = SecretView(
    exists=True,
    owner_certificate="web",
    managed=True,
    owned=True,
    facts=GOOD,
    spec_hash=SPEC.identity_hash(),
    revision=1,
)
READY_ISSUER = IssuerView(True, True, Reason.KEY_PAIR_VERIFIED, "ok", CA)


def state(**changes: object) -> CertificateInput:
    base = CertificateInput(
        namespace="demo",
        name="web",
        uid="uid-1",
        generation=1,
        spec=SPEC,
        spec_error=None,
        secret=VALID_SECRET,
        issuer=READY_ISSUER,
        now=NOW,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def facts(**changes: object) -> SecretView:
    return replace(VALID_SECRET, facts=replace(GOOD, **changes))  # type: ignore[arg-type]


def leaf(**changes: object) -> SecretView:
    return replace(VALID_SECRET, facts=replace(GOOD, leaf=replace(LEAF, **changes)))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("inp", "action", "reason"),
    [
        pytest.param(state(), Action.NOTHING, None, id="does nothing while the Secret is valid and not due"),
        pytest.param(
            state(secret=SecretView()), Action.ISSUE, Reason.DOES_NOT_EXIST, id="issues a first one"
        ),
        pytest.param(
            state(secret=SecretView(revision=3)),
            Action.ISSUE,
            Reason.SECRET_MISSING,
            id="re-issues when the Secret was deleted",
        ),
        pytest.param(
            state(secret=replace(VALID_SECRET, facts=None, error=Violation(Reason.SECRET_CORRUPT, "bad"))),
            Action.ISSUE,
            Reason.SECRET_CORRUPT,
            id="re-issues when tls.key is garbage",
        ),
        pytest.param(
            state(secret=facts(key_matches=False)),
            Action.ISSUE,
            Reason.KEY_MISMATCH,
            id="re-issues when tls.key does not match tls.crt",
        ),
        pytest.param(
            state(secret=leaf(dns_names=("other.example",))),
            Action.ISSUE,
            Reason.NAMES_MISMATCH,
            id="re-issues when tls.crt names other hosts",
        ),
        pytest.param(
            state(secret=leaf(key_algorithm=KeyAlgorithm.MLDSA, key_size=65)),
            Action.ISSUE,
            Reason.KEY_SPEC_CHANGED,
            id="re-issues when the key algorithm changed",
        ),
        pytest.param(
            state(secret=facts(signed_by_current_ca=False)),
            Action.ISSUE,
            Reason.ISSUER_CHANGED,
            id="re-issues when tls.crt is from another CA",
        ),
        pytest.param(
            state(secret=facts(ca_bundle_matches=False)),
            Action.ISSUE,
            Reason.CA_BUNDLE_MISMATCH,
            id="re-issues when ca.crt was removed",
        ),
        pytest.param(
            state(secret=replace(VALID_SECRET, spec_hash="old")),
            Action.ISSUE,
            Reason.SPEC_CHANGED,
            id="re-issues when the spec changed in ways names do not show",
        ),
        pytest.param(
            state(now=NOW + timedelta(hours=16)),
            Action.ISSUE,
            Reason.RENEWAL_DUE,
            id="renews once the renewal time has come",
        ),
        pytest.param(
            state(now=NOW + timedelta(hours=30)),
            Action.ISSUE,
            Reason.EXPIRED,
            id="re-issues an expired certificate",
        ),
        pytest.param(
            state(renew_request="2026-11-24T12:00:00Z/a1"),
            Action.ISSUE,
            Reason.MANUAL_RENEWAL,
            id="renews when a renewal request is not fulfilled yet",
        ),
        pytest.param(
            state(
                renew_request="2026-11-24T12:00:00Z/a1",
                secret=replace(VALID_SECRET, fulfilled_renew="2026-11-24T12:00:00Z/a1"),
            ),
            Action.NOTHING,
            None,
            id="acts on a renewal request once: the Secret records that it fulfilled it",
        ),
        pytest.param(
            state(
                renew_request="2026-11-24T12:00:00Z/b2",
                secret=replace(VALID_SECRET, fulfilled_renew="2026-11-24T12:00:00Z/a1"),
            ),
            Action.ISSUE,
            Reason.MANUAL_RENEWAL,
            id="a second request within the same second is another request",
        ),
        pytest.param(
            state(revoke_request="r1"),
            Action.ISSUE,
            Reason.REVOKED,
            id="revokes and replaces on a revocation request",
        ),
        pytest.param(
            state(revoke_request="r1", secret=replace(VALID_SECRET, fulfilled_revoke="r1")),
            Action.NOTHING,
            None,
            id="does not revoke the replacement of a fulfilled revocation request",
        ),
        pytest.param(
            state(issuer=replace(READY_ISSUER, anchors=frozenset({"cafp", "newroot"}))),
            Action.REFRESH_TRUST,
            Reason.CA_BUNDLE_MISMATCH,
            id="rewrites only ca.crt when the trust anchors change (a CA rotation's overlap)",
        ),
        pytest.param(
            state(
                issuer=replace(READY_ISSUER, anchors=frozenset({"cafp", "newroot"})),
                now=NOW + timedelta(hours=16),
            ),
            Action.ISSUE,
            Reason.RENEWAL_DUE,
            id="a renewal due at the same time re-issues (with the new anchors) instead",
        ),
        pytest.param(
            state(secret=SecretView(revision=3), budget_retry_at=NOW + timedelta(minutes=1)),
            Action.WAIT,
            Reason.ISSUANCE_BUDGET_EXCEEDED,
            id="waits when the issuance budget is spent",
        ),
        pytest.param(
            state(secret=replace(VALID_SECRET, owned=False)),
            Action.BLOCKED,
            Reason.SECRET_NOT_MANAGED,
            id="never overwrites a Secret written for another certificate object of the same name",
        ),
        pytest.param(
            state(duplicates=("other",)),
            Action.BLOCKED,
            Reason.DUPLICATE_SECRET_NAME,
            id="writes nothing when two certificates name one Secret",
        ),
        pytest.param(
            state(secret=replace(VALID_SECRET, managed=False, owned=False, owner_certificate=None)),
            Action.BLOCKED,
            Reason.SECRET_NOT_MANAGED,
            id="never overwrites a Secret it does not manage",
        ),
        pytest.param(
            state(spec=None, spec_error=Violation(Reason.INVALID_SPEC, "bad")),
            Action.BLOCKED,
            Reason.INVALID_SPEC,
            id="blocks an invalid spec",
        ),
        pytest.param(
            state(issuer=IssuerView()),
            Action.BLOCKED,
            Reason.ISSUER_NOT_FOUND,
            id="keeps a valid Secret but reports a missing issuer",
        ),
        pytest.param(
            state(issuer=IssuerView(), secret=SecretView()),
            Action.FAIL,
            Reason.ISSUER_NOT_FOUND,
            id="counts a failed attempt when it must issue without an issuer",
        ),
    ],
)
def test_plan(inp: CertificateInput, action: Action, reason: Reason | None) -> None:
    decided = plan(inp)
    assert decided.action is action
    assert (decided.violation.reason if decided.violation else None) == reason


def test_nothing_to_do_looks_again_at_the_renewal_time() -> None:
    decided = plan(state())
    assert decided.next_check == decided.renewal_time
    assert decided.renewal_time is not None
    assert LEAF.not_before < decided.renewal_time < LEAF.not_after


def test_failed_issuance_backs_off_then_retries() -> None:
    failing = state(
        secret=SecretView(revision=1),
        failed_attempts=2,
        last_failure_time=NOW - timedelta(seconds=10),
        last_failure_generation=1,
        last_failure_reason=Reason.ISSUANCE_FAILED,
    )
    waiting = plan(failing)
    assert waiting.action is Action.WAIT
    assert waiting.next_check == NOW - timedelta(seconds=10) + timedelta(seconds=60)
    assert plan(replace(failing, now=NOW + timedelta(seconds=51))).action is Action.ISSUE


def test_a_spec_change_retries_at_once() -> None:
    failing = state(
        secret=SecretView(revision=1),
        failed_attempts=5,
        last_failure_time=NOW,
        last_failure_generation=1,
        last_failure_reason=Reason.ISSUANCE_FAILED,
        generation=2,
    )
    assert plan(failing).action is Action.ISSUE


def test_an_issuer_that_came_back_issues_at_once() -> None:
    was_failing = state(
        secret=SecretView(revision=1),
        failed_attempts=3,
        last_failure_time=NOW,
        last_failure_generation=1,
        last_failure_reason=Reason.ISSUER_NOT_READY,
    )
    assert plan(was_failing).action is Action.ISSUE


def test_rotation_never_reuses_a_matching_key() -> None:
    never = parse_certificate_spec({**_raw(), "privateKey": {"rotationPolicy": "Never"}})
    decided = plan(
        state(
            spec=never,
            secret=replace(VALID_SECRET, spec_hash=never.identity_hash()),
            now=NOW + timedelta(hours=16),
        )
    )
    assert decided.action is Action.ISSUE
    assert decided.reuse_key
    assert not plan(state(now=NOW + timedelta(hours=16))).reuse_key


def _raw() -> dict[str, object]:
    return {
        "secretName": "web-tls",
        "issuerRef": {"name": "ca"},
        "commonName": "web",
        "dnsNames": ["web.demo.svc"],
        "duration": "24h",
        "renewBefore": "8h",
    }
