"""Trust bundles: an issuer's trust anchors (PEM, key ``ca.crt``) published to a ConfigMap in its own
namespace and in every namespace its selector matches *whose admin accepted it* (the namespace annotation
``mtls.dev/accept-trust-bundles-from``), and, if asked, as a ClusterTrustBundle of its signer name. A
ConfigMap or ClusterTrustBundle of that name the operator did not write for this issuer is never touched:
the issuer reports ``BundleConflict``. :class:`BundleIndex` records what each published bundle holds, for
the rollout manager; :class:`~mtls_operator.controllers.trust.TrustManager` decides which anchors to
publish (both roots during a CA rotation's overlap).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from mtls_operator.api import conditions as cond
from mtls_operator.api.constants import LABEL_MANAGED_BY, MANAGED_BY_VALUE, Reason
from mtls_operator.api.errors import Violation
from mtls_operator.api.fields import LabelSelector
from mtls_operator.api.objects import Key, ParsedIssuer, signer_name
from mtls_operator.api.trust_lifecycle import TrustBundleSpec
from mtls_operator.controllers.context import Context
from mtls_operator.controllers.rollouts import RolloutManager
from mtls_operator.k8s.api import ApiError
from mtls_operator.k8s.resources import (
    list_namespaces,
    read_cluster_trust_bundle,
    read_config_map,
    write_cluster_trust_bundle,
    write_config_map,
)
from mtls_operator.pki.bundle import Anchors
from mtls_operator.policy.issuance_policy import selector_matches
from mtls_operator.policy.ownership import (
    ANN_BUNDLE_FOR,
    ANN_BUNDLE_FOR_UID,
    namespace_accepts_bundle,
    owns_bundle,
)
from mtls_operator.policy.rollout import CONFIGMAP_PREFIX, SecretVersion

logger = logging.getLogger("mtls_operator.trust")

ANN_BUNDLE_REVISION = "mtls.dev/bundle-revision"
LABEL_ISSUER = "mtls.dev/issuer"  # on a ClusterTrustBundle: the MTLSClusterIssuer it is of
ANN_BUNDLE_DIGEST = "mtls.dev/bundle-digest"
ANN_BUNDLE_UPDATED = "mtls.dev/bundle-updated-at"
BUNDLE_KEY = "ca.crt"


def digest(pem: bytes) -> str:
    return hashlib.sha256(pem).hexdigest()[:20]


class BundleIndex:
    """The bundles the operator publishes and what each holds: written by the trust manager, read by the
    rollout manager's view of managed versions."""

    def __init__(self) -> None:
        self.versions: dict[Key, SecretVersion] = {}  # (namespace, configmap) -> what it holds
        self.targets: dict[Key, tuple[str, tuple[str, ...]]] = {}  # issuer -> (configmap, namespaces)

    def bundle_version(self, namespace: str, ref: str) -> SecretVersion | bool | None:
        """The version a bundle ConfigMap holds; True when it is a bundle not yet synced; None when it is
        not a bundle the operator publishes."""
        name = ref.removeprefix(CONFIGMAP_PREFIX)
        found = self.versions.get((namespace, name))
        if found is not None:
            return found
        for config_map, namespaces in self.targets.values():
            if config_map == name and namespace in namespaces:
                return True
        return None


class BundlePublisher:
    """Makes an issuer's bundles hold the anchors asked for; tells the rollout manager when one changed."""

    def __init__(self, ctx: Context, rollouts: RolloutManager, bundles: BundleIndex) -> None:
        self.api = ctx.api
        self.namespaces = ctx.namespaces
        self.rollouts = rollouts
        self.bundles = bundles

    async def publish_all(
        self, issuer: ParsedIssuer, anchors: Anchors, now: datetime
    ) -> tuple[bool, Violation | None]:
        """Make every accepted target ConfigMap (and the ClusterTrustBundle, if asked) hold exactly
        ``anchors``: (all of them do, the problem)."""
        spec = issuer.trust_bundle
        accepted: tuple[str, ...] = ()
        refused: tuple[str, ...] = ()
        if spec is None:
            self.bundles.targets.pop(issuer.key, None)
        else:
            accepted, refused = await self._target_namespaces(issuer, spec)
            self.bundles.targets[issuer.key] = (spec.config_map_name, accepted)
        conflicts: list[str] = []
        failed: list[str] = []  # what the API server refused or failed to write, and its answer
        for namespace in accepted:
            assert spec is not None
            try:
                if not await self._publish_one(issuer, namespace, spec.config_map_name, anchors, now):
                    conflicts.append(namespace)
            except ApiError as exc:
                logger.warning("Cannot publish trust bundle %s/%s: %s", namespace, spec.config_map_name, exc)
                failed.append(f"ConfigMap {spec.config_map_name} in {namespace} ({_answer(exc)})")
        if issuer.cluster_trust_bundle:
            name = cluster_bundle_name(bundle_signer(issuer))
            try:
                if not await self._publish_cluster_bundle(issuer, anchors):
                    return False, Violation(
                        Reason.BUNDLE_CONFLICT,
                        f"ClusterTrustBundle {name} was not written by mtls-operator for this issuer; it is "
                        "left unchanged.",
                    )
            except ApiError as exc:
                logger.warning("Cannot publish the ClusterTrustBundle of %s: %s", issuer.meta.name, exc)
                failed.append(f"ClusterTrustBundle {name} ({_answer(exc)})")
        if conflicts and spec is not None:
            return False, Violation(
                Reason.BUNDLE_CONFLICT,
                f"ConfigMap {spec.config_map_name} in {', '.join(conflicts)} was not written by "
                "mtls-operator for this issuer; it is left unchanged. Delete it or choose another "
                "configMapName.",
            )
        if failed:
            shown = "; ".join(failed[:3]) + (f"; and {len(failed) - 3} more" if len(failed) > 3 else "")
            return False, Violation(
                Reason.BUNDLE_PUBLISH_FAILED,
                f"The trust anchors could not be written to {shown}. The operator tries again.",
            )
        if refused:
            return True, Violation(
                Reason.BUNDLE_NOT_ACCEPTED,
                f"The trust bundle is not published to {', '.join(refused)}: those namespaces do not accept "
                f"bundles from {issuer.meta.namespace}/{issuer.meta.name} (their admin sets the annotation "
                "mtls.dev/accept-trust-bundles-from).",
            )
        return True, None

    async def _target_namespaces(
        self, issuer: ParsedIssuer, spec: TrustBundleSpec
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(namespaces to publish into, selected namespaces that did not accept it)."""
        own = issuer.meta.namespace
        selector = spec.namespace_selector
        if not (selector.match_labels or selector.match_expressions) and not issuer.cluster:
            return (own,), ()
        candidates: dict[str, Mapping[str, str]] = {}
        if self.namespaces.watched:
            for name, info in self.namespaces:
                if not info.terminating and selector_matches(selector, info.labels):
                    candidates[name] = info.annotations
        else:
            try:
                for ns in await list_namespaces(self.api, _selector_text(selector)):
                    if not ns.terminating:
                        candidates[ns.name] = ns.annotations
            except ApiError as exc:
                if exc.status != 403:
                    raise
        if issuer.cluster:
            # An MTLSClusterIssuer is the cluster admin's: its selector is the admin's word.
            return tuple(sorted(candidates)), ()
        accepted = sorted(
            {own} | {n for n, a in candidates.items() if namespace_accepts_bundle(n, a, issuer.key)}
        )
        refused = sorted(n for n, a in candidates.items() if not namespace_accepts_bundle(n, a, issuer.key))
        return tuple(accepted), tuple(refused)

    async def _publish_one(
        self, issuer: ParsedIssuer, namespace: str, name: str, anchors: Anchors, now: datetime
    ) -> bool:
        """Write the bundle when it differs; False when the ConfigMap exists and is not the issuer's."""
        current = await read_config_map(self.api, namespace, name)
        want = digest(anchors.pem)
        pem = anchors.pem.decode()
        if current is not None:
            holds = current.data.get("ca.crt") == pem
            if not owns_bundle(
                current.labels, current.annotations, issuer.key, issuer.meta.uid, holds_current_anchors=holds
            ):
                return False
            if holds and current.annotations.get(ANN_BUNDLE_FOR_UID) == issuer.meta.uid:
                self._remember(namespace, name, current.annotations, want)
                return True
        previous = dict(current.annotations) if current is not None else {}
        try:
            revision = int(previous.get(ANN_BUNDLE_REVISION) or 0) + 1
        except ValueError:
            revision = 1
        annotations = {
            **previous,
            ANN_BUNDLE_FOR: f"{issuer.key[0]}/{issuer.key[1]}",
            ANN_BUNDLE_FOR_UID: issuer.meta.uid,
            ANN_BUNDLE_REVISION: str(revision),
            ANN_BUNDLE_DIGEST: want,
            ANN_BUNDLE_UPDATED: cond.rfc3339(now) or "",
        }
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {**(current.labels if current else {}), LABEL_MANAGED_BY: MANAGED_BY_VALUE},
                "annotations": annotations,
            },
            "data": {BUNDLE_KEY: pem},
        }
        try:
            await write_config_map(
                self.api, body, replace_version=current.resource_version if current else None
            )
        except ApiError as exc:
            if exc.conflict:
                return True  # someone wrote first: the next pass reads and decides again
            raise
        logger.info("Published trust bundle %s/%s revision %d (%s).", namespace, name, revision, want)
        self._remember(namespace, name, annotations, want)
        return True

    async def _publish_cluster_bundle(self, issuer: ParsedIssuer, anchors: Anchors) -> bool:
        """The issuer's anchors as a ClusterTrustBundle of its signer name, which pods mount with a
        clusterTrustBundle projected volume (by signer name and the label mtls.dev/issuer). False when a
        ClusterTrustBundle of that name is someone else's."""
        signer = bundle_signer(issuer)
        name = cluster_bundle_name(signer)
        current = await read_cluster_trust_bundle(self.api, name)
        pem = anchors.pem.decode()
        if current is not None:
            holds = current.trust_bundle == pem
            if not owns_bundle(
                current.labels, current.annotations, issuer.key, issuer.meta.uid, holds_current_anchors=holds
            ):
                return False
            if holds and current.annotations.get(ANN_BUNDLE_FOR_UID) == issuer.meta.uid:
                return True
        body: dict[str, Any] = {
            "apiVersion": "certificates.k8s.io/v1beta1",
            "kind": "ClusterTrustBundle",
            "metadata": {
                "name": name,
                "labels": {LABEL_MANAGED_BY: MANAGED_BY_VALUE, LABEL_ISSUER: _label_value(issuer.meta.name)},
                "annotations": {ANN_BUNDLE_FOR: f"/{issuer.meta.name}", ANN_BUNDLE_FOR_UID: issuer.meta.uid},
            },
            "spec": {"signerName": signer, "trustBundle": pem},
        }
        try:
            await write_cluster_trust_bundle(
                self.api, body, replace_version=current.resource_version if current else None
            )
        except ApiError as exc:
            if exc.conflict:
                return True  # someone wrote first: the next pass reads and decides again
            raise
        logger.info("Published ClusterTrustBundle %s (%d anchors).", name, len(anchors.fingerprints))
        return True

    def _remember(self, namespace: str, name: str, annotations: Mapping[str, str], want: str) -> None:
        updated = (
            cond.parse_rfc3339(annotations.get(ANN_BUNDLE_UPDATED)) or datetime.fromtimestamp(0).astimezone()
        )
        try:
            revision = int(annotations.get(ANN_BUNDLE_REVISION) or 1)
        except ValueError:
            revision = 1
        version = SecretVersion(CONFIGMAP_PREFIX + name, want, revision, updated)
        if self.bundles.versions.get((namespace, name)) != version:
            self.bundles.versions[(namespace, name)] = version
            self.rollouts.secret_changed(namespace, CONFIGMAP_PREFIX + name)


def _selector_text(selector: LabelSelector) -> str:
    """The selector as a labelSelector query parameter (empty: everything)."""
    return "" if not (selector.match_labels or selector.match_expressions) else str(selector)


def bundle_signer(issuer: ParsedIssuer) -> str:
    """The signer name the issuer's ClusterTrustBundle is published under."""
    return issuer.pod_signer or signer_name(issuer.meta)


def _answer(exc: ApiError) -> str:
    """The API server's answer, short enough for a condition message (its end says why: an admission
    policy's message, say, comes last)."""
    text = str(exc)
    return text if len(text) <= 400 else f"{text[:100]}...{text[-297:]}"


def cluster_bundle_name(signer: str) -> str:
    """A ClusterTrustBundle of a signer must be named <signer, '/' as ':'>:<anything>."""
    return f"{signer.replace('/', ':')}:anchors"


def _label_value(name: str) -> str:
    """An issuer name as a label value (at most 63 characters: longer names keep a digest)."""
    return name if len(name) <= 63 else f"{name[:46]}-{hashlib.sha256(name.encode()).hexdigest()[:16]}"
