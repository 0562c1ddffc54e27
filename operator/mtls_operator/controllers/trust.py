"""Trust bundles and CA rotation with overlap.

Each issuer with ``spec.trustBundle`` publishes its trust anchors (PEM, key ``ca.crt``) to a ConfigMap in
every namespace its selector matches. During a CA rotation the anchors are the old and the new root, so
every relying party trusts the new CA before any peer presents a certificate from it, and keeps trusting
the old one until every leaf has moved and the longest leaf lifetime has passed. Workloads that mount a
bundle are restarted (paced, by the rollout manager) when its content changes.

The rotation itself is the pure state machine of ``policy.ca_rotation``; this module gathers its
observations and performs its actions. Every action is idempotent: the next CA is staged in the Secret
``<secretName>-next`` (created once; a crash leaves it to be adopted), bundles are written only when they
differ, the switch is a status field, and retiring copies the staged CA into the main Secret.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from mtls_operator.api import conditions as cond
from mtls_operator.api.constants import (
    ANN_CA_FOR_ISSUER,
    ANN_ROTATE_REQUESTED,
    LABEL_MANAGED_BY,
    MANAGED_BY_VALUE,
    SECRET_TYPE_TLS,
)
from mtls_operator.api.issuer_policy import (
    CARotationSpec,
    TrustBundleSpec,
    parse_ca_rotation,
    parse_trust_bundle,
)
from mtls_operator.api.models import IssuerSpec, SpecError
from mtls_operator.controllers.rollouts import RolloutManager
from mtls_operator.k8s.api import ApiClient, ApiError
from mtls_operator.k8s.resources import encode_data, read_secret, write_secret
from mtls_operator.pki.bundle import bundle_pem
from mtls_operator.pki.ca import CAKeyPair, create_self_signed_ca, load_ca
from mtls_operator.policy.ca_rotation import (
    Phase,
    RotationAction,
    RotationObservations,
    advance,
    due_for_rotation,
    from_status,
    to_status,
)
from mtls_operator.policy.rollout import CONFIGMAP_PREFIX, SecretVersion

logger = logging.getLogger("mtls_operator.trust")
Key = tuple[str, str]
ANN_BUNDLE_FOR = "mtls.dev/bundle-for"
ANN_BUNDLE_REVISION = "mtls.dev/bundle-revision"
ANN_BUNDLE_DIGEST = "mtls.dev/bundle-digest"
ANN_BUNDLE_UPDATED = "mtls.dev/bundle-updated-at"
BUNDLE_KEY = "ca.crt"
# While the new CA signs, ca.crt of leaves and bundles carry both roots.
OVERLAP_PHASES = frozenset(
    {Phase.NEW_CA_GENERATED, Phase.BUNDLES_OVERLAP, Phase.CONSUMERS_RESTARTED, Phase.LEAVES_REISSUED}
)
SIGN_WITH_NEW = frozenset({Phase.CONSUMERS_RESTARTED, Phase.LEAVES_REISSUED, Phase.OLD_CA_DROPPED})


@dataclass(frozen=True)
class RotationOutcome:
    """What the issuer reconcile takes from the trust manager."""

    active_ca: CAKeyPair | None  # the CA to sign with (the staged one once the rotation switched)
    trust_anchors_pem: bytes | None  # what leaves' ca.crt carry (both roots during the overlap)
    status: dict[str, Any] | None  # status.rotation, None when no rotation ever ran
    recheck: datetime | None


def digest(pem: bytes) -> str:
    return hashlib.sha256(pem).hexdigest()[:20]


class TrustManager:
    def __init__(
        self,
        api: ApiClient,
        rollouts: RolloutManager,
        leaf_counts: Callable[[Key, str], tuple[int, int, timedelta]],
    ) -> None:
        self.api = api
        self.rollouts = rollouts
        self.leaf_counts = leaf_counts  # (issuer, new CA fingerprint) -> (on new CA, total, longest life)
        self.versions: dict[tuple[str, str], SecretVersion] = {}  # (namespace, configmap) -> published
        self.bundle_names: dict[Key, tuple[str, tuple[str, ...]]] = {}  # issuer -> (configmap, namespaces)
        self._staged: dict[Key, tuple[str, CAKeyPair]] = {}  # issuer -> (staged Secret rv, parsed CA)

    # ------------------------------------------------------------------ bundles

    def bundle_version(self, namespace: str, ref: str) -> SecretVersion | str | None:
        """For the rollout manager: the version of a bundle ConfigMap, "unknown" before the first sync."""
        name = ref.removeprefix(CONFIGMAP_PREFIX)
        found = self.versions.get((namespace, name))
        if found is not None:
            return found
        for config_map, namespaces in self.bundle_names.values():
            if config_map == name and namespace in namespaces:
                return "unknown"
        return None

    async def _target_namespaces(self, issuer: Key, spec: TrustBundleSpec) -> tuple[str, ...]:
        sel = spec.namespace_selector
        if not (sel.match_labels or sel.match_expressions):
            return (issuer[0],)  # no selector: the issuer's own namespace only
        path = f"/api/v1/namespaces?labelSelector={quote(str(sel))}"
        try:
            body = await self.api.get(path)
        except ApiError as exc:
            if exc.status == 403:  # namespaced RBAC: publish in the issuer's namespace only
                return (issuer[0],)
            raise
        names = [str((item.get("metadata") or {}).get("name")) for item in body.get("items") or []]
        active = [
            n
            for n, item in zip(names, body.get("items") or [], strict=True)
            if (item.get("status") or {}).get("phase") != "Terminating"
        ]
        return tuple(sorted(set(active) | {issuer[0]}))

    async def publish(self, issuer: Key, spec: TrustBundleSpec, anchors_pem: bytes, now: datetime) -> bool:
        """Make every target ConfigMap hold exactly ``anchors_pem``; True when all of them do."""
        namespaces = await self._target_namespaces(issuer, spec)
        self.bundle_names[issuer] = (spec.config_map_name, namespaces)
        want = digest(anchors_pem)
        done = True
        for ns in namespaces:
            try:
                await self._publish_one(issuer, ns, spec.config_map_name, anchors_pem, want, now)
            except ApiError as exc:
                logger.warning("Cannot publish trust bundle %s/%s: %s", ns, spec.config_map_name, exc)
                done = False
        return done

    async def _publish_one(
        self, issuer: Key, namespace: str, name: str, pem: bytes, want: str, now: datetime
    ) -> None:
        path = f"/api/v1/namespaces/{namespace}/configmaps/{name}"
        current = await self.api.get_or_none(path)
        meta = (current or {}).get("metadata") or {}
        annotations = dict(meta.get("annotations") or {})
        if current is not None and annotations.get(ANN_BUNDLE_FOR) not in (None, f"{issuer[0]}/{issuer[1]}"):
            raise ApiError(
                409, "Conflict", f"ConfigMap {namespace}/{name} belongs to another issuer's bundle"
            )
        if current is not None and (current.get("data") or {}).get(BUNDLE_KEY) == pem.decode():
            self._remember(namespace, name, annotations, want)
            return
        revision = int(annotations.get(ANN_BUNDLE_REVISION) or 0) + 1
        annotations.update(
            {
                ANN_BUNDLE_FOR: f"{issuer[0]}/{issuer[1]}",
                ANN_BUNDLE_REVISION: str(revision),
                ANN_BUNDLE_DIGEST: want,
                ANN_BUNDLE_UPDATED: cond.rfc3339(now) or "",
            }
        )
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {LABEL_MANAGED_BY: MANAGED_BY_VALUE},
                "annotations": annotations,
            },
            "data": {BUNDLE_KEY: pem.decode()},
        }
        if current is None:
            await self.api.request("POST", f"/api/v1/namespaces/{namespace}/configmaps", body=body)
        else:
            body["metadata"]["resourceVersion"] = meta.get("resourceVersion")
            await self.api.request("PUT", path, body=body)
        logger.info("Published trust bundle %s/%s revision %d (%s).", namespace, name, revision, want)
        self._remember(namespace, name, annotations, want)
        self.rollouts.secret_changed(namespace, CONFIGMAP_PREFIX + name)

    def _remember(self, namespace: str, name: str, annotations: Mapping[str, str], want: str) -> None:
        updated = (
            cond.parse_rfc3339(annotations.get(ANN_BUNDLE_UPDATED)) or datetime.fromtimestamp(0).astimezone()
        )
        version = SecretVersion(
            CONFIGMAP_PREFIX + name, want, int(annotations.get(ANN_BUNDLE_REVISION) or 1), updated
        )
        if self.versions.get((namespace, name)) != version:
            self.versions[(namespace, name)] = version
            self.rollouts.secret_changed(namespace, CONFIGMAP_PREFIX + name)

    def consumers_settled(self, issuer: Key) -> bool:
        found = self.bundle_names.get(issuer)
        if found is None:
            return True
        name, namespaces = found
        return all(self.rollouts.settled(ns, CONFIGMAP_PREFIX + name) for ns in namespaces)

    # ------------------------------------------------------------------ rotation

    async def reconcile(
        self,
        issuer: Key,
        obj: Mapping[str, Any],
        spec: IssuerSpec,
        current: CAKeyPair,
        now: datetime,
    ) -> RotationOutcome:
        """Publish bundles and drive a rotation (selfSigned issuers) one level-based step."""
        raw_spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        try:
            bundle = parse_trust_bundle(raw_spec.get("trustBundle"))
            rotation_spec = parse_ca_rotation(raw_spec)
        except SpecError as exc:
            logger.warning("MTLSIssuer %s/%s: %s", issuer[0], issuer[1], exc.message)
            bundle, rotation_spec = None, None
        state = from_status(status.get("rotation"))
        if spec.self_signed is None or (
            state.phase is Phase.STABLE
            and not self._rotation_wanted(obj, rotation_spec, current, now)
            and not await self._staged_exists(issuer, spec)
        ):
            if bundle is not None:
                await self.publish(issuer, bundle, current.root_pem, now)
            return RotationOutcome(
                current, None, status.get("rotation"), self._due_at(rotation_spec, current)
            )

        staged = await self._load_staged(issuer, spec, now)
        # The machine's notion of "current": the staged CA once it switched to signing with it.
        signing = staged if (staged is not None and state.phase in SIGN_WITH_NEW) else current
        old_root = current.root
        anchors = [old_root] + ([staged.root] if staged is not None else [])
        both_pem = bundle_pem(anchors)
        new_only_pem = staged.root_pem if staged is not None else current.root_pem
        published_both = published_new = True
        if bundle is not None:
            target = (
                both_pem if state.phase in OVERLAP_PHASES or state.phase is Phase.STABLE else new_only_pem
            )
            if state.phase is Phase.STABLE and staged is None:
                target = current.root_pem
            ok = await self.publish(issuer, bundle, target, now)
            published_both = ok and target == both_pem and staged is not None
            published_new = ok and target == new_only_pem
        elif staged is not None:
            published_both = state.phase is not Phase.OLD_CA_DROPPED
            published_new = state.phase is Phase.OLD_CA_DROPPED
        new_fp = staged.facts.fingerprint if staged else None
        on_new, total, longest = self.leaf_counts(issuer, new_fp or "")
        observations = RotationObservations(
            current_ca_fingerprint=signing.facts.fingerprint,
            rotation_due=self._rotation_wanted(obj, rotation_spec, current, now),
            staged_ca_fingerprint=new_fp,
            bundles_published_with_both=published_both,
            bundles_published_with_new_only=published_new,
            consumers_restarted=self.consumers_settled(issuer),
            leaves_on_new_ca=on_new,
            leaves_total=total,
            longest_leaf_lifetime=longest,
        )
        new_state, actions = advance(state, observations, now)
        for action in actions:
            if action is RotationAction.GENERATE_NEW_CA:
                staged = await self._generate(issuer, spec, now)
            elif action is RotationAction.RETIRE_OLD_CA and staged is not None:
                await self._retire(issuer, spec, staged)
        if new_state.phase != state.phase:
            logger.info(
                "CA rotation of MTLSIssuer %s/%s: %s -> %s.",
                issuer[0],
                issuer[1],
                state.phase,
                new_state.phase,
            )
        active = staged if (staged is not None and new_state.phase in SIGN_WITH_NEW) else current
        anchors_pem = both_pem if (staged is not None and new_state.phase in OVERLAP_PHASES) else None
        in_progress = new_state.phase is not Phase.STABLE or bool(actions)
        return RotationOutcome(
            active,
            anchors_pem,
            to_status(new_state),
            now + timedelta(seconds=2) if in_progress else self._due_at(rotation_spec, current),
        )

    def _rotation_wanted(
        self, obj: Mapping[str, Any], rotation: CARotationSpec | None, current: CAKeyPair, now: datetime
    ) -> bool:
        requested = cond.parse_rfc3339(
            ((obj.get("metadata") or {}).get("annotations") or {}).get(ANN_ROTATE_REQUESTED)
        )
        # A request made after the current CA was created (strictly: the new CA of a finished rotation
        # is created after the request that started it) and not in the future.
        if requested is not None and current.facts.not_before < requested <= now:
            return True
        if rotation is None or rotation.renew_before is None:
            return False
        return due_for_rotation(current.facts.not_before, current.facts.not_after, rotation.renew_before, now)

    def _due_at(self, rotation: CARotationSpec | None, current: CAKeyPair) -> datetime | None:
        if rotation is None or rotation.renew_before is None:
            return None
        due: datetime = max(current.facts.not_before, current.facts.not_after - rotation.renew_before)
        return due

    @staticmethod
    def _next_name(spec: IssuerSpec) -> str:
        assert spec.self_signed is not None
        return f"{spec.self_signed.secret_name}-next"

    async def _staged_exists(self, issuer: Key, spec: IssuerSpec) -> bool:
        return await read_secret(self.api, issuer[0], self._next_name(spec)) is not None

    async def _load_staged(self, issuer: Key, spec: IssuerSpec, now: datetime) -> CAKeyPair | None:
        secret = await read_secret(self.api, issuer[0], self._next_name(spec))
        if secret is None:
            self._staged.pop(issuer, None)
            return None
        cached = self._staged.get(issuer)
        if cached is not None and cached[0] == secret.resource_version:
            return cached[1]
        ca = load_ca(secret.data, now)
        self._staged[issuer] = (secret.resource_version, ca)
        return ca

    async def _generate(self, issuer: Key, spec: IssuerSpec, now: datetime) -> CAKeyPair | None:
        assert spec.self_signed is not None
        key_pem, cert_pem = create_self_signed_ca(spec.self_signed, now)
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": SECRET_TYPE_TLS,
            "metadata": {
                "name": self._next_name(spec),
                "namespace": issuer[0],
                "labels": {LABEL_MANAGED_BY: MANAGED_BY_VALUE},
                "annotations": {ANN_CA_FOR_ISSUER: issuer[1], "mtls.dev/ca-role": "next"},
            },
            "data": encode_data({"tls.crt": cert_pem, "tls.key": key_pem, "ca.crt": cert_pem}),
        }
        try:
            await write_secret(self.api, body, replace_version=None)
            logger.info("Staged the next CA of MTLSIssuer %s/%s for rotation.", issuer[0], issuer[1])
        except ApiError as exc:
            if not exc.conflict:
                raise
        return await self._load_staged(issuer, spec, now)

    async def _retire(self, issuer: Key, spec: IssuerSpec, staged: CAKeyPair) -> None:
        """The staged CA becomes the issuer's CA Secret; the staged Secret goes."""
        assert spec.self_signed is not None
        main = await read_secret(self.api, issuer[0], spec.self_signed.secret_name)
        nxt = await read_secret(self.api, issuer[0], self._next_name(spec))
        if nxt is None:
            return
        if main is not None and main.data.get("tls.crt") != nxt.data.get("tls.crt"):
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": SECRET_TYPE_TLS,
                "metadata": {
                    "name": spec.self_signed.secret_name,
                    "namespace": issuer[0],
                    "labels": dict(main.labels),
                    "annotations": dict(main.annotations),
                },
                "data": encode_data(dict(nxt.data)),
            }
            await write_secret(self.api, body, replace_version=main.resource_version)
        try:
            await self.api.request(
                "DELETE", f"/api/v1/namespaces/{issuer[0]}/secrets/{self._next_name(spec)}"
            )
        except ApiError as exc:
            if not exc.not_found:
                raise
        self._staged.pop(issuer, None)
        logger.info("Retired the old CA of MTLSIssuer %s/%s.", issuer[0], issuer[1])
