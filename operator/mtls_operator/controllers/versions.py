"""What each managed Secret (and trust bundle) holds, for the rollout manager: a read-only view over the
certificate store, the verdict cache and the published bundles."""

from __future__ import annotations

import hashlib

from mtls_operator.api.models import RolloutPolicy
from mtls_operator.controllers.rollouts import UNKNOWN, Version
from mtls_operator.controllers.secret_cache import SecretCache
from mtls_operator.controllers.stores import CertificateStore
from mtls_operator.controllers.trust_bundles import BundleIndex
from mtls_operator.policy.certificate import SecretView
from mtls_operator.policy.rollout import CONFIGMAP_PREFIX, SecretVersion


def content_fingerprint(view: SecretView) -> str | None:
    """The content address of what a Secret holds: its certificate's fingerprint, plus a digest of the
    trust anchors in ca.crt when it holds more than one (a CA rotation's overlap), so workloads restart
    when their trust changes too. With one anchor it is the certificate's fingerprint alone, as before."""
    facts = view.facts
    if facts is None:
        return None
    if len(facts.ca_bundle_fingerprints) <= 1:
        return facts.leaf.fingerprint
    anchors = hashlib.sha256(",".join(sorted(facts.ca_bundle_fingerprints)).encode()).hexdigest()[:16]
    return f"{facts.leaf.fingerprint}+{anchors}"


class ManagedVersions:
    def __init__(self, certificates: CertificateStore, secrets: SecretCache, bundles: BundleIndex) -> None:
        self.certificates = certificates
        self.secrets = secrets
        self.bundles = bundles

    def version(self, namespace: str, ref: str) -> Version:
        if ref.startswith(CONFIGMAP_PREFIX):
            found = self.bundles.bundle_version(namespace, ref)
            if found is True:
                return UNKNOWN
            return found if isinstance(found, SecretVersion) else None
        names = self.certificates.naming_secret(namespace, ref)
        if not names:
            return None  # not a Secret this operator manages
        cert = self.certificates.get((namespace, sorted(names)[0]))
        if cert is None or cert.spec is None or cert.spec.rollout.policy is RolloutPolicy.NONE:
            return None
        verdict = self.secrets.verdict(cert.key)
        if verdict is None:
            return UNKNOWN
        facts = verdict.view.facts
        fingerprint = content_fingerprint(verdict.view)
        if facts is None or fingerprint is None or not facts.key_matches:
            return None  # nothing valid to roll out (yet)
        since = verdict.view.content_since or facts.leaf.not_before
        return SecretVersion(ref, fingerprint, verdict.view.revision, since)
