"""Pure decisions for one MTLSIssuer: is its CA usable, must the operator create or re-sign it, or why not.

Gathered facts go in (:class:`IssuerFacts`: the spec's kind, the CA Secret as found, whose it is, the CA
parsed from it, the parent's state for an intermediate, ``now``); an :class:`IssuerPlan` comes out. The
first problem found wins, and its reason is what the Ready condition shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from mtls_operator.api import conditions as cond
from mtls_operator.api.constants import (
    ANN_ALLOWED_ISSUERS,
    ISSUER_KIND,
    LABEL_SECRET_ROLE,
    SECRET_ROLE_CA,
    Reason,
)
from mtls_operator.api.errors import Violation
from mtls_operator.api.models import KeyAlgorithm, KeySpec
from mtls_operator.api.tls import CAFacts
from mtls_operator.policy.ownership import CASecretAccess


class IssuerAction(StrEnum):
    NOT_READY = "NotReady"  # report why; nothing to write
    CREATE_CA = "CreateCA"  # a CA the operator keeps does not exist yet: create it
    RESIGN = "Resign"  # replace the CA the operator keeps: an intermediate whose parent changed, or expired
    ADD_CA_KEYS = "AddCAKeys"  # a dual CA the operator keeps lacks additional CAs its spec asks for: add them
    READY = "Ready"


@dataclass(frozen=True, slots=True)
class IssuerFacts:
    namespace: str
    name: str
    now: datetime
    spec_error: Violation | None = None
    keeps_ca: bool = False  # selfSigned or intermediate: the operator creates and rotates the CA
    intermediate: bool = False
    parent: str | None = None
    parent_ready: bool = True
    secret_name: str = ""
    secret_exists: bool = False
    access: CASecretAccess | None = None
    ca_error: Violation | None = None  # the Secret's data is not a usable CA
    ca: CAFacts | None = None
    signed_by_parent: bool = True  # an intermediate's CA verifies under the parent's current CA
    kind: str = ISSUER_KIND  # MTLSIssuer or MTLSClusterIssuer, for the sentences
    # additionalPrivateKeys of a CA the operator keeps that its Secret holds no CA for yet
    missing_additional: tuple[KeyAlgorithm, ...] = ()


@dataclass(frozen=True, slots=True)
class IssuerPlan:
    action: IssuerAction
    reason: Reason
    message: str = ""
    recheck_at: datetime | None = None  # look again then at the latest (the CA expires)

    @property
    def ready(self) -> bool:
        return self.action is IssuerAction.READY


def algorithm_label(algorithm: KeyAlgorithm, size: int) -> str:
    return KeySpec(algorithm=algorithm, size=size).label


def _parent(f: IssuerFacts) -> str:
    """The parent, as a sentence names it (a namespaced one with its namespace)."""
    return f"{f.kind} {f.namespace}/{f.parent}" if f.kind == ISSUER_KIND else f"{f.kind} {f.parent}"


def plan_issuer(f: IssuerFacts) -> IssuerPlan:
    where = f"Secret {f.namespace}/{f.secret_name}"
    if f.spec_error is not None:
        return IssuerPlan(IssuerAction.NOT_READY, f.spec_error.reason, f.spec_error.message)
    if f.intermediate and not f.parent_ready:
        return IssuerPlan(
            IssuerAction.NOT_READY,
            Reason.ISSUER_NOT_READY,
            f"The parent {_parent(f)} is not ready, so the intermediate CA cannot be signed yet.",
        )
    if not f.secret_exists:
        if f.keeps_ca:
            return IssuerPlan(IssuerAction.CREATE_CA, Reason.CA_CREATED, f"Creating the CA in {where}.")
        return IssuerPlan(
            IssuerAction.NOT_READY,
            Reason.CA_SECRET_MISSING,
            f"{where} with the CA key pair does not exist.",
        )
    if f.access is CASecretAccess.NOT_MANAGED:
        return IssuerPlan(
            IssuerAction.NOT_READY,
            Reason.CA_SECRET_NOT_MANAGED,
            f"{where} exists and was not created by mtls-operator for this {f.kind}: the operator neither "
            "signs with it nor overwrites it. Choose another secretName, delete the Secret, or let whoever "
            f"may write it allow this issuer with the annotation {ANN_ALLOWED_ISSUERS}={f.name}.",
        )
    if f.access is CASecretAccess.NOT_ALLOWED:
        return IssuerPlan(
            IssuerAction.NOT_READY,
            Reason.CA_SECRET_NOT_ALLOWED,
            f"{where} does not allow this {f.kind} to sign with it: whoever may write the Secret must "
            f"annotate it {ANN_ALLOWED_ISSUERS}={f.name} (and label it {LABEL_SECRET_ROLE}={SECRET_ROLE_CA} "
            "so that its changes are seen at once).",
        )
    expired = (f.ca_error is not None and f.ca_error.reason is Reason.CA_EXPIRED) or (
        f.ca is not None and f.now >= f.ca.not_after
    )
    if expired and f.keeps_ca and f.access is CASecretAccess.OWNED:
        # Nothing can overlap with a CA that can no longer sign: make a new one at once.
        return IssuerPlan(
            IssuerAction.RESIGN,
            Reason.CA_EXPIRED,
            f"The CA in {where} expired (was the operator down?): creating a new CA in its place.",
        )
    if f.ca_error is not None and f.intermediate and f.access is CASecretAccess.OWNED:
        # The operator's own intermediate, damaged (a key that is not the certificate's, garbage): sign a
        # new one, as a leaf is re-issued. Leaves under the old one still chain to the root. A root is
        # never replaced on its own (every peer trusts it): it reports, and an admin decides.
        return IssuerPlan(
            IssuerAction.RESIGN,
            f.ca_error.reason,
            f"{where}: {f.ca_error.message} Signing a new intermediate CA with the parent {_parent(f)}.",
        )
    if f.ca_error is not None:
        return IssuerPlan(IssuerAction.NOT_READY, f.ca_error.reason, f"{where}: {f.ca_error.message}")
    assert f.ca is not None
    if f.intermediate and not f.signed_by_parent:
        if f.access is CASecretAccess.OWNED:
            return IssuerPlan(
                IssuerAction.RESIGN,
                Reason.CA_CREATED,
                f"The parent {_parent(f)} has a new CA: signing the intermediate again.",
            )
        return IssuerPlan(
            IssuerAction.NOT_READY,
            Reason.CA_INVALID,
            f"{where} is not signed by the parent's current CA, and it is not the operator's to sign again.",
        )
    if f.missing_additional and f.keeps_ca and f.access is CASecretAccess.OWNED:
        # Additive: the CA stays; leaves' ca.crt gain the new roots, dual certificates get their pairs.
        wanted = ", ".join(str(a) for a in f.missing_additional)
        return IssuerPlan(
            IssuerAction.ADD_CA_KEYS, Reason.CA_KEYS_ADDED, f"Adding the additional {wanted} CA to {where}."
        )
    if f.now >= f.ca.not_after:
        return IssuerPlan(
            IssuerAction.NOT_READY,
            Reason.CA_EXPIRED,
            f"The CA certificate in Secret {f.secret_name} expired at {f.ca.not_after.isoformat()}.",
        )
    return IssuerPlan(
        IssuerAction.READY,
        Reason.KEY_PAIR_VERIFIED,
        f"The CA {f.ca.subject} ({algorithm_label(f.ca.key_algorithm, f.ca.key_size)}) is valid until "
        f"{cond.rfc3339(f.ca.not_after)}.",
        recheck_at=f.ca.not_after + timedelta(seconds=1),
    )
