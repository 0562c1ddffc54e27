"""What an issuer reconcile writes about the issuer: its status (the Ready, TrustBundle, Revocation and
CARotation conditions, the CA's facts, the rotation) and an Event when readiness or a trust problem
changes.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from mtls_operator.api import conditions as cond
from mtls_operator.api.constants import CLUSTER_ISSUER_PLURAL, ISSUER_PLURAL, ConditionType, Reason
from mtls_operator.api.errors import Violation
from mtls_operator.api.objects import AdditionalCAStatus, IssuerStatus, ParsedIssuer
from mtls_operator.controllers.context import Context
from mtls_operator.controllers.revocation import Revocations
from mtls_operator.controllers.trust_bundles import bundle_signer, cluster_bundle_name
from mtls_operator.k8s.api import ApiError
from mtls_operator.k8s.resources import patch_status, post_event
from mtls_operator.policy.issuer import IssuerPlan, algorithm_label
from mtls_operator.policy.status import ready_of, status_patch

if TYPE_CHECKING:  # issuers.py builds the writer; the state is only read here
    from mtls_operator.controllers.issuers import IssuerState

BUNDLE_REASONS = frozenset({Reason.BUNDLE_CONFLICT, Reason.BUNDLE_NOT_ACCEPTED, Reason.BUNDLE_PUBLISH_FAILED})


def _published(issuer: ParsedIssuer) -> str:
    """What the TrustBundle condition says when every bundle the issuer asks for holds its anchors."""
    where = [
        *([f"ConfigMap {issuer.trust_bundle.config_map_name}"] if issuer.trust_bundle is not None else []),
        *(
            [f"ClusterTrustBundle {cluster_bundle_name(bundle_signer(issuer))}"]
            if issuer.cluster_trust_bundle
            else []
        ),
    ]
    return f"{' and '.join(where)} {'hold' if len(where) > 1 else 'holds'} the issuer's trust anchors."


class IssuerStatusWriter:
    def __init__(self, ctx: Context, revocations: Revocations) -> None:
        self.api = ctx.api
        self.issuers = ctx.issuers
        self.revocations = revocations

    async def write(
        self,
        issuer: ParsedIssuer,
        plan: IssuerPlan,
        state: IssuerState,
        rotation: Any,
        problem: Violation | None,
        now: datetime,
    ) -> bool:
        """Patch the status when it changed and post the events that are due; False when the issuer is gone
        (its status patch found nothing), and then nothing else is done."""
        old = issuer.status
        generation = issuer.meta.generation
        view = state.view
        conditions = cond.put(
            old.conditions, ConditionType.READY, view.ready, view.reason, view.message, generation, now
        )
        bundle_problem = problem is not None and problem.reason in BUNDLE_REASONS
        if (issuer.trust_bundle is not None or issuer.cluster_trust_bundle) and view.ready:
            if problem is not None and bundle_problem:
                conditions = cond.put(
                    conditions,
                    ConditionType.TRUST_BUNDLE,
                    False,
                    problem.reason,
                    problem.message,
                    generation,
                    now,
                )
            else:
                conditions = cond.put(
                    conditions,
                    ConditionType.TRUST_BUNDLE,
                    True,
                    Reason.BUNDLE_PUBLISHED,
                    _published(issuer),
                    generation,
                    now,
                )
        revocation_problem = self.revocations.problem(*self.issuers.revocation_ref(issuer.key))
        if revocation_problem is not None:
            conditions = cond.put(
                conditions, ConditionType.REVOCATION, False, revocation_problem[0], revocation_problem[1],
                generation, now,
            )  # fmt: skip
        elif cond.get(conditions, ConditionType.REVOCATION) is not None:
            conditions = cond.put(
                conditions,
                ConditionType.REVOCATION,
                True,
                Reason.REVOCATIONS_PUBLISHED,
                "The issuer's revocation list and CRL are kept.",
                generation,
                now,
            )
        if problem is not None and not bundle_problem:
            conditions = cond.put(
                conditions, ConditionType.CA_ROTATION, False, problem.reason, problem.message, generation, now
            )
        elif cond.get(conditions, ConditionType.CA_ROTATION) is not None and view.ready:
            conditions = cond.put(
                conditions,
                ConditionType.CA_ROTATION,
                True,
                Reason.CAN_ROTATE,
                "Nothing keeps the CA from rotating.",
                generation,
                now,
            )
        ca = view.ca
        new = IssuerStatus(
            conditions=conditions,
            observed_generation=generation,
            type=issuer.spec.kind if issuer.spec else None,
            secret_name=issuer.spec.ca_secret_name if issuer.spec else None,
            not_before=ca.not_before if ca else None,
            not_after=ca.not_after if ca else None,
            fingerprint=ca.fingerprint if ca else None,
            algorithm=algorithm_label(ca.key_algorithm, ca.key_size) if ca else None,
            subject=ca.subject if ca else None,
            rotation=rotation,
            additional_cas=tuple(
                AdditionalCAStatus(
                    algorithm=algorithm_label(a.key_algorithm, a.key_size),
                    fingerprint=a.fingerprint,
                    not_after=a.not_after,
                    subject=a.subject,
                )
                for a in view.additional_cas
            ),
        )
        patch = status_patch(old, new)
        if patch:
            try:
                plural = CLUSTER_ISSUER_PLURAL if issuer.cluster else ISSUER_PLURAL
                await patch_status(self.api, plural, *issuer.key, patch)
            except ApiError as exc:
                if not exc.not_found:
                    raise
                return False
            self.issuers.update_status(issuer.key, new)
        if ready_of(old) != ready_of(new):
            await self._event(issuer, "Normal" if view.ready else "Warning", view.reason, view.message, now)
        if problem is not None:
            kind = ConditionType.TRUST_BUNDLE if bundle_problem else ConditionType.CA_ROTATION
            before = cond.get(old.conditions, kind)
            if before is None or before.reason != problem.reason:
                await self._event(issuer, "Warning", problem.reason, problem.message, now)
        return True

    async def _event(
        self, issuer: ParsedIssuer, kind: str, reason: Reason, message: str, now: datetime
    ) -> None:
        """An Event about the issuer (a cluster issuer's go to the default namespace, as a node's do)."""
        await post_event(
            self.api,
            kind=issuer.kind,
            namespace=issuer.meta.namespace or "default",
            name=issuer.meta.name,
            uid=issuer.meta.uid,
            event_type=kind,
            reason=reason,
            message=message,
            now=now,
        )
