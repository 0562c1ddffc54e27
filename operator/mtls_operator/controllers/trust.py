"""CA rotation with overlap, and which trust anchors an issuer's bundles hold.

Each issuer with ``spec.trustBundle`` publishes its trust anchors (PEM, key ``ca.crt``) to ConfigMaps (and
a ClusterTrustBundle, if asked); :mod:`mtls_operator.controllers.trust_bundles` writes them, this module
decides what they hold.

A CA the operator keeps (selfSigned or intermediate) rotates with an overlap, driven by the pure machine of
:mod:`mtls_operator.policy.ca_rotation`: the next CA is staged in ``<secretName>-next``; every bundle *and
every leaf's ca.crt* (the issuer's and its intermediates') then hold the old and the new root; the
workloads using them restart; only then does the issuer sign with the new CA; the old root leaves the
bundles only after every leaf below it moved and the longest leaf lifetime passed; the new CA then
replaces the old one in the issuer's Secret. Each step is idempotent: a crash resumes from the objects.

This module gathers the rotation's observations (reads), asks the machine, and performs its actions
(writes); crypto runs in the crypto threads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from mtls_operator.api.constants import (
    ANN_CA_FOR_ISSUER,
    ANN_CA_ROLE,
    ANN_ISSUER_UID,
    CA_ROLE_NEXT,
    LABEL_MANAGED_BY,
    LABEL_SECRET_ROLE,
    MANAGED_BY_VALUE,
    SECRET_ROLE_CA,
    SECRET_TYPE_TLS,
    Reason,
)
from mtls_operator.api.errors import ReasonedError, Violation
from mtls_operator.api.objects import Key, ParsedIssuer, next_ca_secret_name
from mtls_operator.controllers.context import Context
from mtls_operator.controllers.rollouts import RolloutManager
from mtls_operator.controllers.trust_bundles import BundleIndex, BundlePublisher
from mtls_operator.k8s.api import ApiError
from mtls_operator.k8s.resources import (
    SecretObject,
    delete_secret,
    encode_data,
    read_secret,
    write_secret,
)
from mtls_operator.pki.bundle import Anchors, anchors_of
from mtls_operator.pki.ca import CAKeyPair, load_ca, self_signed_ca_data
from mtls_operator.pki.intermediate import sign_intermediate
from mtls_operator.policy.ca_rotation import (
    Phase,
    RotationAction,
    RotationObservations,
    RotationState,
    advance,
    due_for_rotation,
)
from mtls_operator.policy.ownership import owns_staged_ca
from mtls_operator.policy.rollout import CONFIGMAP_PREFIX

logger = logging.getLogger("mtls_operator.trust")

ANN_ROTATE_REQUEST = "mtls.dev/rotate-request"  # on the staged CA: the request that started the rotation
# While the new CA is staged or signs, bundles and leaves' ca.crt carry both roots.
OVERLAP_PHASES = frozenset(
    {Phase.NEW_CA_GENERATED, Phase.BUNDLES_OVERLAP, Phase.CONSUMERS_RESTARTED, Phase.LEAVES_REISSUED}
)
SIGN_WITH_NEW = frozenset({Phase.CONSUMERS_RESTARTED, Phase.LEAVES_REISSUED, Phase.OLD_CA_DROPPED})
STEP = timedelta(seconds=2)  # how soon a rotation in progress looks again
PUBLISH_RETRY = timedelta(seconds=30)  # how soon a bundle the API server did not take is written again


@dataclass(frozen=True, slots=True)
class LeafCounts:
    """The leaves below an issuer (its own and its intermediates'), as the rotation observes them."""

    total: int = 0
    on_root: int = 0  # chaining to the root asked about
    trusting: int = 0  # whose ca.crt holds every anchor asked about
    longest_lifetime: timedelta = timedelta(0)
    secrets: tuple[Key, ...] = ()


LeafCounter = Callable[[str | None, frozenset[str]], LeafCounts]  # (new root fp, anchors) -> counts


@dataclass(frozen=True, slots=True)
class TrustOutcome:
    signing_ca: CAKeyPair  # the CA to sign leaves with (the staged one once the rotation switched)
    anchors: Anchors  # what leaves' ca.crt and the bundles hold
    rotation: RotationState | None  # status.rotation; None when no rotation ever ran
    recheck: datetime | None
    problem: Violation | None = None


class TrustManager:
    def __init__(self, ctx: Context, rollouts: RolloutManager, bundles: BundleIndex) -> None:
        self.ctx = ctx
        self.api = ctx.api
        self.in_thread = ctx.in_thread
        self.rollouts = rollouts
        self.bundles = bundles
        self.publisher = BundlePublisher(ctx, rollouts, bundles)
        self._staged: dict[Key, tuple[str, CAKeyPair]] = {}  # issuer -> (staged Secret rv, parsed CA)

    def forget_issuer(self, issuer: Key) -> None:
        self.bundles.targets.pop(issuer, None)
        self._staged.pop(issuer, None)

    def home(self, issuer: ParsedIssuer) -> str:
        """Where the issuer's Secrets live (a cluster issuer's: the cluster resource namespace)."""
        return self.ctx.issuers.home(issuer.key)

    # ------------------------------------------------------------------ reconcile

    async def reconcile(
        self,
        issuer: ParsedIssuer,
        base: CAKeyPair,
        *,
        may_write_ca: bool,
        inherited: Anchors | None,
        parent: CAKeyPair | None,
        leaves: LeafCounter,
        staged_seen: bool,
        now: datetime,
    ) -> TrustOutcome:
        """One level-based step: the CA to sign with, the anchors, the bundles published, the rotation."""
        spec = issuer.spec
        assert spec is not None
        state = issuer.status.rotation or RotationState()
        managed = spec.managed_ca
        wanted = self._rotation_wanted(issuer, base, state, now)
        base_anchors = _merge(anchors_of(base.roots), inherited)
        if managed is None or (state.phase is Phase.STABLE and not wanted and not staged_seen):
            _, problem = await self.publisher.publish_all(issuer, base_anchors, now)
            recheck = self._due_at(issuer, base)
            if problem is not None and problem.reason is Reason.BUNDLE_PUBLISH_FAILED:
                recheck = min(recheck or now + PUBLISH_RETRY, now + PUBLISH_RETRY)
            return TrustOutcome(base, base_anchors, issuer.status.rotation, recheck, problem)

        staged, staged_problem = await self._load_staged(issuer, now)
        if staged_problem is not None:
            await self.publisher.publish_all(issuer, base_anchors, now)
            return TrustOutcome(base, base_anchors, issuer.status.rotation, None, staged_problem)
        if not may_write_ca and (wanted or staged is not None):
            await self.publisher.publish_all(issuer, base_anchors, now)
            why = Violation(
                Reason.CA_SECRET_NOT_MANAGED,
                f"The CA cannot rotate: Secret {spec.ca_secret_name} was not created by mtls-operator for "
                "this issuer (it is used as allowed by mtls.dev/allowed-issuers, never rewritten).",
            )
            return TrustOutcome(base, base_anchors, issuer.status.rotation, None, why)

        # A dual CA rotates all its CAs together: each side of the overlap is every root of one CA Secret.
        old_roots, new_roots = base.roots, staged.roots if staged is not None else ()
        both = _merge(anchors_of([*old_roots, *new_roots]), inherited)
        new_only = _merge(anchors_of(new_roots or old_roots), inherited)
        target = new_only if state.phase is Phase.OLD_CA_DROPPED else both
        published, problem = await self.publisher.publish_all(issuer, target, now)
        counts = leaves(staged.facts.root_fingerprint if staged else None, both.fingerprints)
        signing = staged if (staged is not None and state.phase in SIGN_WITH_NEW) else base
        observations = RotationObservations(
            current_ca_fingerprint=signing.facts.fingerprint,
            rotation_due=wanted,
            staged_ca_fingerprint=staged.facts.fingerprint if staged else None,
            bundles_published_with_both=(
                staged is not None and published and target is both and counts.trusting == counts.total
            ),
            bundles_published_with_new_only=published and target is new_only,
            consumers_restarted=self._settled(issuer.key, counts),
            leaves_on_new_ca=counts.on_root,
            leaves_total=counts.total,
            longest_leaf_lifetime=counts.longest_lifetime,
        )
        new_state, actions = advance(state, observations, now)
        retired = False
        for action in actions:
            if action is RotationAction.GENERATE_NEW_CA:
                staged = await self._generate(issuer, parent, now)
                new_state = replace(new_state, last_request=issuer.rotate_request or new_state.last_request)
            elif action is RotationAction.RETIRE_OLD_CA and staged is not None:
                await self._retire(issuer, staged)
                retired = True
        if new_state.phase != state.phase:
            logger.info(
                "CA rotation of %s %s: %s -> %s.", issuer.kind, issuer.meta.name, state.phase, new_state.phase
            )
        signing = staged if (staged is not None and (retired or new_state.phase in SIGN_WITH_NEW)) else base
        if staged is not None and retired:
            anchors = _merge(anchors_of(staged.roots), inherited)
        elif staged is not None and new_state.phase in OVERLAP_PHASES:
            anchors = _merge(anchors_of([*old_roots, *staged.roots]), inherited)
        elif staged is not None and new_state.phase is Phase.OLD_CA_DROPPED:
            anchors = _merge(anchors_of(staged.roots), inherited)
        else:
            anchors = base_anchors
        in_progress = new_state.phase is not Phase.STABLE or bool(actions)
        return TrustOutcome(
            signing,
            anchors,
            new_state,
            now + STEP if in_progress else self._due_at(issuer, base),
            problem,
        )

    def _rotation_wanted(
        self, issuer: ParsedIssuer, base: CAKeyPair, state: RotationState, now: datetime
    ) -> bool:
        """A rotate request not acted on yet (its token differs from the one recorded), or renewBefore."""
        if issuer.rotate_request is not None and issuer.rotate_request != state.last_request:
            return True
        managed = issuer.spec.managed_ca if issuer.spec else None
        if managed is None or managed.renew_before is None:
            return False
        return due_for_rotation(base.facts.not_before, base.facts.not_after, managed.renew_before, now)

    def _due_at(self, issuer: ParsedIssuer, base: CAKeyPair) -> datetime | None:
        managed = issuer.spec.managed_ca if issuer.spec else None
        if managed is None or managed.renew_before is None:
            return None
        return max(base.facts.not_before, base.facts.not_after - managed.renew_before)

    def _settled(self, issuer: Key, counts: LeafCounts) -> bool:
        """Every workload using the issuer's bundles, or a Secret of a leaf below it, runs what they hold."""
        found = self.bundles.targets.get(issuer)
        refs = [(ns, CONFIGMAP_PREFIX + found[0]) for ns in found[1]] if found else []
        refs += list(counts.secrets)
        return all(self.rollouts.settled(ns, ref) for ns, ref in refs)

    # ------------------------------------------------------------------ the staged CA

    async def _load_staged(
        self, issuer: ParsedIssuer, now: datetime
    ) -> tuple[CAKeyPair | None, Violation | None]:
        assert issuer.spec is not None
        name = next_ca_secret_name(issuer.spec.ca_secret_name)
        secret = await read_secret(self.api, self.home(issuer), name)
        if secret is None:
            self._staged.pop(issuer.key, None)
            return None, None
        if not owns_staged_ca(secret.labels, secret.annotations, issuer.meta.name, issuer.meta.uid):
            return None, Violation(
                Reason.CA_SECRET_NOT_MANAGED,
                f"Secret {name} (where a CA rotation stages the next CA) was not created by mtls-operator "
                "for this issuer: the rotation does not use or overwrite it. Delete it to rotate.",
            )
        cached = self._staged.get(issuer.key)
        if cached is not None and cached[0] == secret.resource_version:
            return cached[1], None
        try:
            ca: CAKeyPair = await self.in_thread(load_ca, secret.data, now)
        except ReasonedError as exc:
            return None, Violation(
                exc.reason, f"The staged next CA in Secret {name} is unusable: {exc.message}"
            )
        self._staged[issuer.key] = (secret.resource_version, ca)
        return ca, None

    async def _generate(
        self, issuer: ParsedIssuer, parent: CAKeyPair | None, now: datetime
    ) -> CAKeyPair | None:
        spec = issuer.spec
        assert spec is not None and spec.managed_ca is not None
        if spec.intermediate is not None:
            if parent is None:
                return None
            inter = spec.intermediate
            key_pem, chain = await self.in_thread(
                sign_intermediate,
                inter.ca,
                parent,
                now,
                inter.path_length,
                inter.permitted_dns,
                inter.excluded_dns,
            )
            data = {"tls.crt": chain, "tls.key": key_pem, "ca.crt": parent.root_pem}
        else:
            data = await self.in_thread(self_signed_ca_data, spec.managed_ca, now)
        annotations = {
            ANN_CA_FOR_ISSUER: issuer.meta.name,
            ANN_ISSUER_UID: issuer.meta.uid,
            ANN_CA_ROLE: CA_ROLE_NEXT,
        }
        if issuer.rotate_request:
            annotations[ANN_ROTATE_REQUEST] = issuer.rotate_request
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": SECRET_TYPE_TLS,
            "metadata": {
                "name": next_ca_secret_name(spec.ca_secret_name),
                "namespace": self.home(issuer),
                "labels": {LABEL_MANAGED_BY: MANAGED_BY_VALUE, LABEL_SECRET_ROLE: SECRET_ROLE_CA},
                "annotations": annotations,
            },
            "data": encode_data(data),
        }
        try:
            await write_secret(self.api, body, replace_version=None)
            logger.info("Staged the next CA of %s %s for rotation.", issuer.kind, issuer.meta.name)
        except ApiError as exc:
            if not exc.conflict:
                raise
        staged, _ = await self._load_staged(issuer, now)
        return staged

    async def _retire(self, issuer: ParsedIssuer, staged: CAKeyPair) -> None:
        """The staged CA becomes the issuer's CA Secret; the staged Secret goes. Both writes are guarded by
        the resourceVersions read, and the caller checked that the issuer owns its CA Secret."""
        assert issuer.spec is not None
        namespace = self.home(issuer)
        main = await read_secret(self.api, namespace, issuer.spec.ca_secret_name)
        nxt = await read_secret(self.api, namespace, next_ca_secret_name(issuer.spec.ca_secret_name))
        if nxt is None:
            return
        if main is not None and main.data.get("tls.crt") != nxt.data.get("tls.crt"):
            await write_secret(
                self.api, _replaced_ca(main, nxt, issuer.meta.uid), replace_version=main.resource_version
            )
        await delete_secret(self.api, namespace, nxt.name, resource_version=nxt.resource_version)
        self._staged.pop(issuer.key, None)
        logger.info("Retired the old CA of %s %s.", issuer.kind, issuer.meta.name)


def _merge(anchors: Anchors, inherited: Anchors | None) -> Anchors:
    return anchors if inherited is None else anchors | inherited


def _replaced_ca(main: SecretObject, staged: SecretObject, issuer_uid: str) -> dict[str, Any]:
    annotations = {**main.annotations, ANN_ISSUER_UID: issuer_uid}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": SECRET_TYPE_TLS,
        "metadata": {
            "name": main.name,
            "namespace": main.namespace,
            "labels": {**main.labels, LABEL_SECRET_ROLE: SECRET_ROLE_CA},
            "annotations": annotations,
        },
        "data": encode_data(dict(staged.data)),
    }
