"""The MTLSIssuer reconcile: gather (reads only), decide (:mod:`mtls_operator.policy.issuer`), act (writes).

Gather reads the CA Secret and judges whose it is (:mod:`mtls_operator.policy.ownership`) and what it
holds; the plan says whether the CA is usable, must be created or re-signed, or why not; act writes the CA
Secret when the plan says so (only ever one the operator owns), then the trust step (bundles, rotation),
the revocation list, the status, an event when readiness changes, and the metrics. The CA Secret's reads
and writes are in :mod:`mtls_operator.controllers.issuer_ca`, the status and events in
:mod:`mtls_operator.controllers.issuer_status`. What certificates need
to know is published as an :class:`IssuerState`, a frozen value they read; nothing here calls into the
certificate controller, it only queues work.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from mtls_operator.api.errors import Violation
from mtls_operator.api.issuer_policy import IssuerPolicy
from mtls_operator.api.objects import Key, ParsedIssuer, next_ca_secret_name
from mtls_operator.controllers.context import Context
from mtls_operator.controllers.issuer_ca import CASecrets
from mtls_operator.controllers.issuer_status import IssuerStatusWriter
from mtls_operator.controllers.revocation import Revocations
from mtls_operator.controllers.trust import LeafCounts, TrustManager
from mtls_operator.k8s.resources import SecretObject
from mtls_operator.pki.bundle import Anchors, anchors_of
from mtls_operator.pki.ca import CAKeyPair
from mtls_operator.policy.certificate import IssuerView
from mtls_operator.policy.issuer import IssuerAction, IssuerFacts, IssuerPlan, plan_issuer
from mtls_operator.policy.ownership import CASecretAccess


@dataclass(frozen=True)
class IssuerState:
    """What the certificates of an issuer (and its intermediates) read about it."""

    view: IssuerView
    ca: CAKeyPair | None = None  # the CA that signs now (mid-rotation: the staged one once switched)
    base_ca: CAKeyPair | None = None  # the CA in the issuer's Secret
    base_rv: str | None = None
    parent_fp: str | None = None
    anchors: Anchors | None = None  # what leaves' ca.crt carry
    policy: IssuerPolicy | None = None
    may_write_ca: bool = False


class IssuerController:
    def __init__(self, ctx: Context, trust: TrustManager, revocations: Revocations) -> None:
        self.ctx = ctx
        self.clock = ctx.clock
        self.issuers = ctx.issuers
        self.certificates = ctx.certificates
        self.secrets = ctx.secrets
        self.trust = trust
        self.revocations = revocations
        self.states: dict[Key, IssuerState] = {}
        self.ca_secrets = CASecrets(ctx)
        self.status_writer = IssuerStatusWriter(ctx, revocations)

    # ------------------------------------------------------------------ read-only, for others

    def state(self, key: Key) -> IssuerState | None:
        return self.states.get(key)

    def judged(self, key: Key) -> bool:
        return key in self.states

    def forget(self, key: Key) -> None:
        self.states.pop(key, None)
        self.ca_secrets.forget(key)
        self.trust.forget_issuer(key)
        self.revocations.forget_issuer(*self.issuers.revocation_ref(key))
        self.ctx.metrics.forget_issuer(*key)

    # ------------------------------------------------------------------ reconcile

    async def reconcile(self, key: Key) -> None:
        issuer = self.issuers.get(key)
        if issuer is None:
            return
        now = self.clock.now()
        previous = self.states.get(key)
        parent = self._parent(issuer)
        facts, secret, ca = await self.ca_secrets.gather(issuer, previous, parent, now)
        plan = plan_issuer(facts)
        if plan.action in (IssuerAction.CREATE_CA, IssuerAction.RESIGN, IssuerAction.ADD_CA_KEYS):
            written, problem = await self.ca_secrets.write_ca(
                issuer,
                parent,
                secret if plan.action is not IssuerAction.CREATE_CA else None,
                now,
                add=facts.missing_additional if plan.action is IssuerAction.ADD_CA_KEYS else None,
            )
            if written is None and problem is None:
                self.ctx.work.add_issuer(key)  # lost a race: the next pass reads the winner's CA
                return
            if written is not None:
                facts, secret, ca = await self.ca_secrets.gather(
                    issuer, previous, parent, now, secret=written
                )
                plan = plan_issuer(facts)
            else:
                assert problem is not None
                plan = IssuerPlan(IssuerAction.NOT_READY, problem.reason, problem.message)
        state, rotation, problem, recheck = await self._act_trust(
            issuer, plan, ca, secret, facts, parent, now
        )
        self.states[key] = state
        if facts.keeps_ca and facts.access is CASecretAccess.OWNED and secret is not None:
            await self.ca_secrets.label_for_watch(issuer, secret)
        await self.revocations.sync_issuer(
            *self.issuers.revocation_ref(key), issuer.revocation, state.ca, uid=issuer.meta.uid
        )
        if not await self.status_writer.write(issuer, plan, state, rotation, problem, now):
            self.issuers.remove(key)
            self.forget(key)
        self.ctx.metrics.observe_issuer(
            key[0],
            key[1],
            ca_not_after=state.view.ca.not_after if state.view.ca else None,
            ready=state.view.ready,
            reason=str(state.view.reason),
        )
        if _changed_for_leaves(previous, state):
            for cert in self.certificates.of_issuer(key):
                self.ctx.work.add_certificate(cert)
            for child in self.issuers.children(key):
                self.ctx.work.add_issuer(child)
        when = now + self.ctx.config.issuer_recheck
        for candidate in (plan.recheck_at, recheck):
            if candidate is not None and candidate < when:
                when = candidate
        self.ctx.work.schedule_issuer(key, when)

    def _parent(self, issuer: ParsedIssuer) -> IssuerState | None:
        return self.states.get(issuer.parent_key) if issuer.parent_key else None

    async def _act_trust(
        self,
        issuer: ParsedIssuer,
        plan: IssuerPlan,
        ca: CAKeyPair | None,
        secret: SecretObject | None,
        facts: IssuerFacts,
        parent: IssuerState | None,
        now: datetime,
    ) -> tuple[IssuerState, Any, Violation | None, datetime | None]:
        """The state certificates read, after the trust step (bundles, rotation) for a ready issuer."""
        view = IssuerView(True, plan.ready, plan.reason, plan.message)
        if not plan.ready or ca is None or issuer.spec is None:
            return IssuerState(view, policy=issuer.policy), issuer.status.rotation, None, None
        parent_fp = parent.ca.facts.fingerprint if parent is not None and parent.ca is not None else None
        inherited = parent.anchors if parent is not None else None
        spec = issuer.spec
        owned = facts.access is CASecretAccess.OWNED
        staged_seen = (
            self.secrets.resource_version(
                (self.issuers.home(issuer.key), next_ca_secret_name(spec.ca_secret_name))
            )
            is not None
        )
        outcome = await self.trust.reconcile(
            issuer,
            ca,
            may_write_ca=owned,
            inherited=inherited,
            parent=parent.ca if parent is not None else None,
            leaves=lambda new_root, anchors: self.leaf_counts(issuer.key, new_root, anchors),
            staged_seen=staged_seen,
            now=now,
        )
        signing = outcome.signing_ca
        if signing is not ca:
            view = replace(
                view,
                message=f"Signing with the new CA {signing.facts.subject} during a CA rotation.",
            )
        view = replace(
            view,
            ca=signing.facts,
            chain_algorithms=signing.chain_algorithms,
            anchors=outcome.anchors.fingerprints,
            additional_cas=tuple(a.facts for a in signing.additional),
        )
        state = IssuerState(
            view=view,
            ca=signing,
            base_ca=ca,
            base_rv=secret.resource_version if secret is not None else None,
            parent_fp=parent_fp,
            anchors=outcome.anchors,
            policy=issuer.policy,
            may_write_ca=owned,
        )
        return state, outcome.rotation, outcome.problem, outcome.recheck

    # ------------------------------------------------------------------ leaves, for the rotation

    def leaf_counts(self, issuer: Key, new_root: str | None, anchors: frozenset[str]) -> LeafCounts:
        """The judged leaves of ``issuer`` and of every intermediate below it."""
        total = on_root = trusting = 0
        longest = timedelta(0)
        secrets: list[Key] = []
        pending = [issuer]
        seen: set[Key] = set()
        while pending:
            current = pending.pop()
            if current in seen:
                continue
            seen.add(current)
            pending.extend(self.issuers.children(current))
            state = self.states.get(current)
            for cert_key in self.certificates.of_issuer(current):
                verdict = self.secrets.verdict(cert_key)
                facts = verdict.view.facts if verdict is not None else None
                if verdict is None or facts is None:
                    continue
                total += 1
                secrets.append((cert_key[0], verdict.secret_name))
                longest = max(longest, facts.leaf.not_after - facts.leaf.not_before)
                if anchors <= facts.ca_bundle_fingerprints:
                    trusting += 1
                signing = state.ca if state is not None else None
                if (
                    new_root is not None
                    and signing is not None
                    and facts.signed_by_current_ca
                    and verdict.ca_fingerprint == signing.signing_fingerprint
                    and signing.facts.root_fingerprint == new_root
                ):
                    on_root += 1
        return LeafCounts(total, on_root, trusting, longest, tuple(secrets))


def _changed_for_leaves(previous: IssuerState | None, state: IssuerState) -> bool:
    """Whether the certificates of the issuer (and its intermediates) must look again."""
    if previous is None:
        return True
    before, after = previous.view, state.view
    return (
        (before.ca.fingerprint if before.ca else None) != (after.ca.fingerprint if after.ca else None)
        or before.ready != after.ready
        or before.anchors != after.anchors
        or before.additional_cas != after.additional_cas
        or previous.policy != state.policy
    )


def anchors_from(ca: CAKeyPair) -> Anchors:
    return anchors_of([ca.root])
