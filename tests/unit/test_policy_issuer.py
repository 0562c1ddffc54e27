"""policy.issuer.plan_issuer: every branch of the issuer decision, first problem wins."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from mtls_operator.api.constants import ANN_ALLOWED_ISSUERS, Reason
from mtls_operator.api.errors import Violation
from mtls_operator.api.models import KeyAlgorithm
from mtls_operator.api.tls import CAFacts
from mtls_operator.policy.issuer import IssuerAction, IssuerFacts, IssuerPlan, plan_issuer
from mtls_operator.policy.ownership import CASecretAccess

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
CA = CAFacts(
    fingerprint="cafp",
    not_before=NOW - timedelta(days=1),
    not_after=NOW + timedelta(days=300),
    subject="CN=mesh-ca",
    key_algorithm=KeyAlgorithm.ECDSA,
    key_size=256,
    root_fingerprint="cafp",
)
SELF_SIGNED = IssuerFacts(
    namespace="security",
    name="mesh",
    now=NOW,
    keeps_ca=True,
    secret_name="mesh-ca",
    secret_exists=True,
    access=CASecretAccess.OWNED,
    ca=CA,
)
INTERMEDIATE = replace(SELF_SIGNED, intermediate=True, parent="root")
BYO = replace(SELF_SIGNED, keeps_ca=False, access=CASecretAccess.ALLOWED)
SPEC_ERROR = Violation(
    Reason.INVALID_SPEC, "Set exactly one of spec.selfSigned, spec.ca and spec.intermediate."
)
CA_ERROR = Violation(Reason.CA_KEY_MISMATCH, "tls.key is not the key of tls.crt.")


@pytest.mark.parametrize(
    ("facts", "action", "reason", "says"),
    [
        pytest.param(
            replace(SELF_SIGNED, spec_error=SPEC_ERROR, secret_exists=False),
            IssuerAction.NOT_READY,
            Reason.INVALID_SPEC,
            SPEC_ERROR.message,
            id="a spec error wins over everything and is reported as is",
        ),
        pytest.param(
            replace(INTERMEDIATE, parent_ready=False, secret_exists=False),
            IssuerAction.NOT_READY,
            Reason.ISSUER_NOT_READY,
            "The parent MTLSIssuer security/root is not ready",
            id="an intermediate waits for its parent before creating anything",
        ),
        pytest.param(
            replace(SELF_SIGNED, parent_ready=False),
            IssuerAction.READY,
            Reason.KEY_PAIR_VERIFIED,
            "The CA CN=mesh-ca (ECDSA-P256) is valid until",
            id="parent readiness matters only to an intermediate",
        ),
        pytest.param(
            replace(SELF_SIGNED, secret_exists=False, access=None, ca=None),
            IssuerAction.CREATE_CA,
            Reason.CA_CREATED,
            "Creating the CA in Secret security/mesh-ca.",
            id="a kept CA whose Secret does not exist is created",
        ),
        pytest.param(
            replace(INTERMEDIATE, secret_exists=False, access=None, ca=None),
            IssuerAction.CREATE_CA,
            Reason.CA_CREATED,
            "Creating the CA in Secret security/mesh-ca.",
            id="an intermediate whose parent is ready and whose Secret does not exist is created",
        ),
        pytest.param(
            replace(BYO, secret_exists=False, access=None, ca=None),
            IssuerAction.NOT_READY,
            Reason.CA_SECRET_MISSING,
            "Secret security/mesh-ca with the CA key pair does not exist.",
            id="a ca issuer whose Secret does not exist waits for it and creates nothing",
        ),
        pytest.param(
            replace(SELF_SIGNED, access=CASecretAccess.NOT_MANAGED, ca=None),
            IssuerAction.NOT_READY,
            Reason.CA_SECRET_NOT_MANAGED,
            f"{ANN_ALLOWED_ISSUERS}=mesh",
            id="a Secret the operator did not create for this issuer is not managed and says how to fix it",
        ),
        pytest.param(
            replace(BYO, access=CASecretAccess.NOT_ALLOWED, ca=None),
            IssuerAction.NOT_READY,
            Reason.CA_SECRET_NOT_ALLOWED,
            f"annotate it {ANN_ALLOWED_ISSUERS}=mesh",
            id="a bring-your-own CA without the opt-in is not allowed and says how to opt in",
        ),
        pytest.param(
            replace(BYO, access=CASecretAccess.NOT_ALLOWED, ca=None, ca_error=CA_ERROR),
            IssuerAction.NOT_READY,
            Reason.CA_SECRET_NOT_ALLOWED,
            "does not allow this MTLSIssuer",
            id="the missing opt-in is reported before what is wrong with the CA",
        ),
        pytest.param(
            replace(BYO, ca=None, ca_error=CA_ERROR),
            IssuerAction.NOT_READY,
            Reason.CA_KEY_MISMATCH,
            "Secret security/mesh-ca: tls.key is not the key of tls.crt.",
            id="a CA that cannot sign is reported with its own reason and the Secret named",
        ),
        pytest.param(
            replace(INTERMEDIATE, ca=None, ca_error=CA_ERROR),
            IssuerAction.RESIGN,
            Reason.CA_KEY_MISMATCH,
            "tls.key is not the key of tls.crt. Signing a new intermediate CA with the parent MTLSIssuer",
            id="the operator's own intermediate, damaged, is signed again by its parent",
        ),
        pytest.param(
            replace(SELF_SIGNED, ca=None, ca_error=CA_ERROR),
            IssuerAction.NOT_READY,
            Reason.CA_KEY_MISMATCH,
            "Secret security/mesh-ca: tls.key is not the key of tls.crt.",
            id="a damaged root is reported, never replaced on its own (every peer trusts it)",
        ),
        pytest.param(
            replace(INTERMEDIATE, ca=None, ca_error=CA_ERROR, access=CASecretAccess.ALLOWED),
            IssuerAction.NOT_READY,
            Reason.CA_KEY_MISMATCH,
            "tls.key is not the key of tls.crt.",
            id="a damaged intermediate that is not the operator's is reported, not re-signed",
        ),
        pytest.param(
            replace(INTERMEDIATE, signed_by_parent=False),
            IssuerAction.RESIGN,
            Reason.CA_CREATED,
            "The parent MTLSIssuer security/root has a new CA",
            id="an owned intermediate no longer signed by its parent is signed again",
        ),
        pytest.param(
            replace(INTERMEDIATE, signed_by_parent=False, access=CASecretAccess.ALLOWED),
            IssuerAction.NOT_READY,
            Reason.CA_INVALID,
            "it is not the operator's to sign again",
            id="an allowed intermediate no longer signed by its parent is reported, not re-signed",
        ),
        pytest.param(
            replace(SELF_SIGNED, signed_by_parent=False),
            IssuerAction.READY,
            Reason.KEY_PAIR_VERIFIED,
            "is valid until",
            id="the parent signature matters only to an intermediate",
        ),
        pytest.param(
            replace(SELF_SIGNED, now=CA.not_after),
            IssuerAction.RESIGN,
            Reason.CA_EXPIRED,
            "creating a new CA in its place",
            id="a CA the operator keeps, expired at its notAfter exactly, is replaced at once",
        ),
        pytest.param(
            replace(BYO, now=CA.not_after),
            IssuerAction.NOT_READY,
            Reason.CA_EXPIRED,
            "expired at",
            id="an expired bring-your-own CA is reported, never replaced",
        ),
        pytest.param(
            replace(INTERMEDIATE, now=CA.not_after + timedelta(days=1), signed_by_parent=False),
            IssuerAction.RESIGN,
            Reason.CA_EXPIRED,
            "creating a new CA in its place",
            id="an expired owned intermediate is replaced (signed again under its parent)",
        ),
        pytest.param(
            BYO,
            IssuerAction.READY,
            Reason.KEY_PAIR_VERIFIED,
            "The CA CN=mesh-ca (ECDSA-P256) is valid until 2027-09-20T12:00:00Z.",
            id="an allowed bring-your-own CA that is valid is ready",
        ),
    ],
)
def test_plan_issuer(facts: IssuerFacts, action: IssuerAction, reason: Reason, says: str) -> None:
    plan = plan_issuer(facts)
    assert (plan.action, plan.reason) == (action, reason)
    assert says in plan.message
    assert plan.ready is (action is IssuerAction.READY)


def test_a_ready_issuer_looks_again_just_after_its_ca_expires() -> None:
    plan = plan_issuer(SELF_SIGNED)
    assert plan == IssuerPlan(
        IssuerAction.READY,
        Reason.KEY_PAIR_VERIFIED,
        "The CA CN=mesh-ca (ECDSA-P256) is valid until 2027-09-20T12:00:00Z.",
        recheck_at=CA.not_after + timedelta(seconds=1),
    )
    later = plan_issuer(replace(SELF_SIGNED, now=plan.recheck_at))
    assert later.reason is Reason.CA_EXPIRED


@pytest.mark.parametrize(
    "facts",
    [
        pytest.param(replace(SELF_SIGNED, spec_error=SPEC_ERROR), id="a spec error"),
        pytest.param(replace(BYO, secret_exists=False), id="a missing bring-your-own CA"),
        pytest.param(replace(SELF_SIGNED, access=CASecretAccess.NOT_MANAGED), id="a foreign Secret"),
        pytest.param(replace(BYO, ca_error=CA_ERROR), id="a CA that cannot sign"),
        pytest.param(replace(SELF_SIGNED, now=CA.not_after), id="an expired CA"),
    ],
)
def test_an_issuer_that_is_not_ready_schedules_no_recheck_of_its_own(facts: IssuerFacts) -> None:
    assert plan_issuer(facts).recheck_at is None
