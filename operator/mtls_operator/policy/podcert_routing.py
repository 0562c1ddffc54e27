"""Which issuer answers a PodCertificateRequest, and when its node's turn comes: both decided before
anything is read, both pure (``now`` is a parameter).

:func:`choose_signer`: which issuer claims the signer name in the request's namespace (an MTLSIssuer of
that namespace, or an MTLSClusterIssuer), whether two do (``Failed``, ``SignerConflict``), and whether it
is ready (a request waits :data:`ISSUER_GRACE` for an issuer being set up, then ``Failed``,
``IssuerNotReady``). A signer name no issuer claims is left alone: it may be someone else's, or the issuer
may not be watched yet.

:func:`reserve`: each node is served through its own token bucket (:class:`NodeRate`), so one node's
flood waits its turn while other nodes' requests pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from mtls_operator.api.constants import CLUSTER_ISSUER_KIND, Reason
from mtls_operator.api.issuer_policy import IssuerPolicy
from mtls_operator.policy.podcert_request import Decision, Outcome, PodCertRequest

ISSUER_GRACE: Final = timedelta(minutes=2)  # a request waits this long for a claiming issuer to be ready
WAIT_RETRY: Final = timedelta(seconds=5)  # how often a waiting request is looked at again


# ---------------------------------------------------------------------------------------------------------
# Who signs


@dataclass(frozen=True, slots=True)
class SignerIssuer:
    """An issuer that declares the request's signer name (``spec.podCertificates``), as last judged."""

    kind: str
    namespace: str  # "" for an MTLSClusterIssuer
    name: str
    judged: bool = False  # the issuer controller has looked at it since the operator started
    ready: bool = False
    message: str = ""  # why it is not ready
    policy: IssuerPolicy | None = None
    ca_not_after: datetime | None = None  # of the CA that signs now

    @property
    def cluster(self) -> bool:
        return self.kind == CLUSTER_ISSUER_KIND

    @property
    def label(self) -> str:
        """``MTLSIssuer team-a/mesh`` or ``MTLSClusterIssuer mesh``."""
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"


def in_scope(namespace: str, issuers: Iterable[SignerIssuer]) -> tuple[SignerIssuer, ...]:
    """The issuers that may answer a request of ``namespace``: MTLSClusterIssuers (their policy decides
    later whether they admit the namespace) and the MTLSIssuers of that namespace (never another's)."""
    return tuple(
        sorted(
            (i for i in issuers if i.cluster or i.namespace == namespace),
            key=lambda i: (i.kind, i.namespace, i.name),
        )
    )


def choose_signer(
    request: PodCertRequest, claimants: tuple[SignerIssuer, ...], now: datetime
) -> SignerIssuer | Decision:
    """The one issuer that signs ``request`` (``claimants`` are :func:`in_scope`), or what to do instead."""
    if not claimants:
        return Decision(
            None,
            "NoIssuer",
            f"No MTLSIssuer of namespace {request.namespace} and no MTLSClusterIssuer declares signer "
            f"name {request.signer_name}.",
            retry_at=now + WAIT_RETRY,
        )
    if len(claimants) > 1:
        names = ", ".join(c.label for c in claimants)
        return Decision(
            Outcome.FAILED,
            Reason.SIGNER_CONFLICT,
            f"Signer name {request.signer_name} is declared by {names} for namespace "
            f"{request.namespace}: the operator signs only when exactly one issuer claims it. Change "
            "spec.podCertificates.signerName of all but one.",
        )
    signer = claimants[0]
    if signer.ready:
        return signer
    created = request.created or now
    if not signer.judged or now < created + ISSUER_GRACE:
        return Decision(
            None,
            Reason.ISSUER_NOT_READY,
            f"Waiting for {signer.label} to be ready.",
            retry_at=now + WAIT_RETRY,
        )
    why = signer.message or "it has no usable CA."
    return Decision(
        Outcome.FAILED,
        Reason.ISSUER_NOT_READY,
        f"{signer.label}, the signer of {request.signer_name}, is not ready: {why}",
    )


# ---------------------------------------------------------------------------------------------------------
# Fairness: a token bucket per node


@dataclass(frozen=True, slots=True)
class NodeRate:
    """How fast one node's requests are served: ``burst`` at once, then ``per_second``. A kubelet asks
    once per pod certificate volume when a pod starts and once per refresh, so a node of 110 pods starts
    within a few seconds; a node that floods (a bug, a compromised kubelet) is served at this rate while
    every other node and every MTLSCertificate is served as usual."""

    burst: int = 20
    per_second: float = 10.0

    @property
    def interval(self) -> timedelta:
        return timedelta(seconds=1 / max(self.per_second, 1e-3))


def reserve(rate: NodeRate, theoretical: datetime | None, now: datetime) -> tuple[datetime, datetime | None]:
    """Reserve the node's next slot (GCRA, the token bucket written as a time): returns the node's new
    theoretical arrival time and when this request may be served (None: now). A request told to wait
    holds its slot, so waiting requests are served in order, one per interval, each looked at once more."""
    base = max(theoretical, now) if theoretical is not None else now
    after = base + rate.interval
    allowed = after - rate.interval * max(rate.burst, 1)
    return after, (allowed if allowed > now else None)
