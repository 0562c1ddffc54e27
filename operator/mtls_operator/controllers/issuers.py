"""The MTLSIssuer reconcile: gather (reads only), decide (:mod:`mtls_operator.policy.issuer`), act (writes).

Gather reads the CA Secret and judges whose it is (:mod:`mtls_operator.policy.ownership`) and what it
holds; the plan says whether the CA is usable, must be created or re-signed, or why not; act writes the CA
Secret when the plan says so (only ever one the operator owns), then the trust step (bundles, rotation),
the revocation list, the status, an event when readiness changes, and the metrics. What certificates need
to know is published as an :class:`IssuerState`, a frozen value they read; nothing here calls into the
certificate controller, it only queues work.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from mtls_operator.api import conditions as cond
from mtls_operator.api.constants import (
    ANN_CA_FOR_ISSUER,
    ANN_ISSUER_UID,
    CLUSTER_ISSUER_PLURAL,
    ISSUER_PLURAL,
    LABEL_MANAGED_BY,
    LABEL_SECRET_ROLE,
    MANAGED_BY_VALUE,
    SECRET_ROLE_CA,
    SECRET_TYPE_TLS,
    ConditionType,
    Reason,
)
from mtls_operator.api.errors import ReasonedError, Violation
from mtls_operator.api.issuer_policy import IssuerPolicy
from mtls_operator.api.models import KeyAlgorithm
from mtls_operator.api.objects import AdditionalCAStatus, IssuerStatus, Key, ParsedIssuer, next_ca_secret_name
from mtls_operator.controllers.context import Context
from mtls_operator.controllers.revocation import Revocations
from mtls_operator.controllers.trust import LeafCounts, TrustManager
from mtls_operator.k8s.api import ApiError
from mtls_operator.k8s.resources import (
    SecretObject,
    encode_data,
    patch_status,
    post_event,
    read_secret,
    relabel_secret,
    write_secret,
)
from mtls_operator.pki.bundle import Anchors, anchors_of
from mtls_operator.pki.ca import CAKeyPair, additional_ca_data, load_ca, self_signed_ca_data
from mtls_operator.pki.intermediate import sign_intermediate
from mtls_operator.policy.certificate import IssuerView
from mtls_operator.policy.issuer import IssuerAction, IssuerFacts, IssuerPlan, algorithm_label, plan_issuer
from mtls_operator.policy.ownership import CASecretAccess, ca_secret_access
from mtls_operator.policy.status import ready_of, status_patch

logger = logging.getLogger("mtls_operator.issuers")
BUNDLE_REASONS = frozenset({Reason.BUNDLE_CONFLICT, Reason.BUNDLE_NOT_ACCEPTED})


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
        self.api = ctx.api
        self.clock = ctx.clock
        self.issuers = ctx.issuers
        self.certificates = ctx.certificates
        self.secrets = ctx.secrets
        self.in_thread = ctx.in_thread
        self.trust = trust
        self.revocations = revocations
        self.states: dict[Key, IssuerState] = {}
        # The CA each issuer's Secret held when last parsed: (Secret rv, parent fingerprint, CA with every
        # additional CA its Secret holds), reused while neither changes.
        self._loaded: dict[Key, tuple[str, str | None, CAKeyPair]] = {}

    # ------------------------------------------------------------------ read-only, for others

    def state(self, key: Key) -> IssuerState | None:
        return self.states.get(key)

    def judged(self, key: Key) -> bool:
        return key in self.states

    def forget(self, key: Key) -> None:
        self.states.pop(key, None)
        self._loaded.pop(key, None)
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
        facts, secret, ca = await self._gather(issuer, previous, parent, now)
        plan = plan_issuer(facts)
        if plan.action in (IssuerAction.CREATE_CA, IssuerAction.RESIGN, IssuerAction.ADD_CA_KEYS):
            written, problem = await self._write_ca(
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
                facts, secret, ca = await self._gather(issuer, previous, parent, now, secret=written)
                plan = plan_issuer(facts)
            else:
                assert problem is not None
                plan = IssuerPlan(IssuerAction.NOT_READY, problem.reason, problem.message)
        state, rotation, problem, recheck = await self._act_trust(
            issuer, plan, ca, secret, facts, parent, now
        )
        self.states[key] = state
        if facts.keeps_ca and facts.access is CASecretAccess.OWNED and secret is not None:
            await self._label_for_watch(issuer, secret)
        await self.revocations.sync_issuer(
            *self.issuers.revocation_ref(key), issuer.revocation, state.ca, uid=issuer.meta.uid
        )
        await self._write_status(issuer, plan, state, rotation, problem, now)
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

    async def _label_for_watch(self, issuer: ParsedIssuer, secret: SecretObject) -> None:
        """A CA Secret an older operator wrote lacks ``mtls.dev/secret-role`` (outside the label-selected
        watch) and perhaps the issuer's UID (adopted because the issuer's status proves it used this CA):
        add both once, data unchanged."""
        annotations = {} if ANN_ISSUER_UID in secret.annotations else {ANN_ISSUER_UID: issuer.meta.uid}
        if secret.labels.get(LABEL_SECRET_ROLE) == SECRET_ROLE_CA and not annotations:
            return
        try:
            await relabel_secret(self.api, secret, {LABEL_SECRET_ROLE: SECRET_ROLE_CA}, annotations)
        except ApiError as exc:
            logger.info(
                "CA Secret %s/%s not labelled for the watch yet: %s", secret.namespace, secret.name, exc
            )
            return
        logger.info("Labelled CA Secret %s/%s for the watch.", secret.namespace, secret.name)

    def _parent(self, issuer: ParsedIssuer) -> IssuerState | None:
        return self.states.get(issuer.parent_key) if issuer.parent_key else None

    # ------------------------------------------------------------------ gather (reads only)

    async def _gather(
        self,
        issuer: ParsedIssuer,
        previous: IssuerState | None,
        parent: IssuerState | None,
        now: datetime,
        *,
        secret: SecretObject | None = None,
    ) -> tuple[IssuerFacts, SecretObject | None, CAKeyPair | None]:
        name = issuer.meta.name
        namespace = self.issuers.home(issuer.key)
        spec = issuer.spec
        base = IssuerFacts(namespace, name, now, spec_error=issuer.error, kind=issuer.kind)
        if spec is None or issuer.error is not None:
            return base, None, None
        facts = replace(
            base,
            keeps_ca=spec.managed_ca is not None,
            intermediate=spec.intermediate is not None,
            parent=issuer.parent,
            parent_ready=parent is not None and parent.view.ready and parent.ca is not None,
            secret_name=spec.ca_secret_name,
        )
        if facts.intermediate and not facts.parent_ready:
            return facts, None, None
        if secret is None:
            secret = await read_secret(self.api, namespace, spec.ca_secret_name)
        self.secrets.observe((namespace, spec.ca_secret_name), secret.resource_version if secret else None)
        if secret is None:
            return facts, None, None
        access = ca_secret_access(
            secret.labels, secret.annotations, name, issuer.meta.uid, keeps_ca=facts.keeps_ca
        )
        if access in (CASecretAccess.NOT_MANAGED, CASecretAccess.NOT_ALLOWED) and not _legacy_own(
            secret, name
        ):
            return replace(facts, secret_exists=True, access=access), secret, None
        parent_ca = parent.ca if parent is not None else None
        parent_fp = parent_ca.facts.fingerprint if parent_ca is not None else None
        ca: CAKeyPair | None = None
        loaded = self._loaded.get(issuer.key)
        if loaded is not None and loaded[:2] == (secret.resource_version, parent_fp):
            ca = loaded[2]  # parsed once, cached while the Secret (and the parent) are unchanged
        if ca is None:
            try:
                ca = await self.in_thread(load_ca, secret.data, now)
            except ReasonedError as exc:
                if access not in (CASecretAccess.OWNED, CASecretAccess.ALLOWED):
                    access = CASecretAccess.NOT_MANAGED if facts.keeps_ca else CASecretAccess.NOT_ALLOWED
                return (
                    replace(facts, secret_exists=True, access=access, ca_error=Violation.of(exc)),
                    secret,
                    None,
                )
        assert ca is not None
        self._loaded[issuer.key] = (secret.resource_version, parent_fp, ca)
        missing: tuple[KeyAlgorithm, ...] = ()
        if spec.managed_ca is not None:
            # A CA the operator keeps signs with the additional CAs its spec asks for (and adds missing ones).
            wanted = [k.algorithm for k in spec.managed_ca.additional_private_keys]
            missing = tuple(a for a in wanted if a not in ca.algorithms)
            ca = ca.only(wanted)
        if access not in (CASecretAccess.OWNED, CASecretAccess.ALLOWED):
            # Written by an older operator, before owner UIDs were recorded: the issuer's own status proves
            # it used this very CA.
            access = ca_secret_access(
                secret.labels,
                secret.annotations,
                name,
                issuer.meta.uid,
                keeps_ca=facts.keeps_ca,
                proven_fingerprint=issuer.status.fingerprint == ca.facts.fingerprint,
            )
            if access not in (CASecretAccess.OWNED, CASecretAccess.ALLOWED):
                return replace(facts, secret_exists=True, access=access), secret, None
        signed_by_parent = True
        if parent_ca is not None:
            signed_by_parent = await self.in_thread(ca.signed_by, parent_ca)
        return (
            replace(
                facts,
                secret_exists=True,
                access=access,
                ca=ca.facts,
                signed_by_parent=signed_by_parent,
                missing_additional=missing,
            ),
            secret,
            ca,
        )

    # ------------------------------------------------------------------ act

    async def _write_ca(
        self,
        issuer: ParsedIssuer,
        parent: IssuerState | None,
        existing: SecretObject | None,
        now: datetime,
        *,
        add: tuple[KeyAlgorithm, ...] | None = None,
    ) -> tuple[SecretObject | None, Violation | None]:
        """Create (or, for an intermediate whose parent changed, replace) the CA Secret of an issuer the
        operator keeps; with ``add``, keep the CA and add the additional CAs of those algorithms (a dual
        CA). (written, None); (None, None) when another writer won; (None, why) when the CA cannot be made
        (a parent that may not sign CAs, a bad path length)."""
        spec = issuer.spec
        assert spec is not None and spec.managed_ca is not None
        try:
            if add is not None and existing is not None:
                extra = await self.in_thread(additional_ca_data, spec.managed_ca, now, add)
                data = {**existing.data, **extra}
                crts = [v for k, v in sorted(extra.items()) if k.endswith(".crt")]
                data["ca.crt"] = existing.data.get("ca.crt", existing.data["tls.crt"]) + b"".join(crts)
            elif spec.intermediate is not None:
                assert parent is not None and parent.ca is not None
                inter = spec.intermediate
                key_pem, chain = await self.in_thread(
                    sign_intermediate,
                    inter.ca,
                    parent.ca,
                    now,
                    inter.path_length,
                    inter.permitted_dns,
                    inter.excluded_dns,
                )
                data = {"tls.crt": chain, "tls.key": key_pem, "ca.crt": parent.ca.root_pem}
            else:
                data = await self.in_thread(self_signed_ca_data, spec.managed_ca, now)
        except ReasonedError as exc:
            return None, Violation.of(exc)
        annotations = dict(existing.annotations) if existing is not None else {}
        annotations.update({ANN_CA_FOR_ISSUER: issuer.meta.name, ANN_ISSUER_UID: issuer.meta.uid})
        labels = dict(existing.labels) if existing is not None else {}
        labels.update({LABEL_MANAGED_BY: MANAGED_BY_VALUE, LABEL_SECRET_ROLE: SECRET_ROLE_CA})
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": SECRET_TYPE_TLS,
            "metadata": {
                "name": spec.ca_secret_name,
                "namespace": self.issuers.home(issuer.key),
                "labels": labels,
                "annotations": annotations,
            },
            "data": encode_data(data),
        }
        try:
            written = await write_secret(
                self.api, body, replace_version=existing.resource_version if existing else None
            )
        except ApiError as exc:
            if exc.conflict:
                return None, None
            raise
        self.secrets.observe((self.issuers.home(issuer.key), spec.ca_secret_name), written.resource_version)
        logger.info("Wrote the %s CA for %s %s.", spec.kind, issuer.kind, _named(issuer.key))
        return written, None

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

    async def _write_status(
        self,
        issuer: ParsedIssuer,
        plan: IssuerPlan,
        state: IssuerState,
        rotation: Any,
        problem: Violation | None,
        now: datetime,
    ) -> None:
        old = issuer.status
        generation = issuer.meta.generation
        view = state.view
        conditions = cond.put(
            old.conditions, ConditionType.READY, view.ready, view.reason, view.message, generation, now
        )
        bundle_problem = problem is not None and problem.reason in BUNDLE_REASONS
        if issuer.trust_bundle is not None and view.ready:
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
                    f"ConfigMap {issuer.trust_bundle.config_map_name} holds the issuer's trust anchors.",
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
                self.issuers.remove(issuer.key)
                self.forget(issuer.key)
                return
            self.issuers.update_status(issuer.key, new)
        if ready_of(old) != ready_of(new):
            await self._event(issuer, "Normal" if view.ready else "Warning", view.reason, view.message, now)
        if problem is not None:
            kind = ConditionType.TRUST_BUNDLE if bundle_problem else ConditionType.CA_ROTATION
            before = cond.get(old.conditions, kind)
            if before is None or before.reason != problem.reason:
                await self._event(issuer, "Warning", problem.reason, problem.message, now)

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


def _named(key: Key) -> str:
    return f"{key[0]}/{key[1]}" if key[0] else key[1]


def _legacy_own(secret: SecretObject, issuer: str) -> bool:
    """A CA Secret an older operator wrote for an issuer of this name, before it recorded owner UIDs."""
    return (
        secret.managed
        and secret.annotations.get(ANN_CA_FOR_ISSUER) == issuer
        and ANN_ISSUER_UID not in secret.annotations
    )


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
