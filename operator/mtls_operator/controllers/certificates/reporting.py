"""What a certificate reconcile tells besides its status: events, metrics, and the rollout manager.

Events are posted where the reconcile decides they are due (a change of Ready reason, a rollout newly
blocked, an issuance); the certificate's metric series are set from its current status and the Secret
verdict; and the rollout manager is told when a certificate's Secret holds something new (or was first
judged after a start), so the workloads using it are looked at. The content last seen per certificate is
kept here, and forgotten with the certificate.
"""

from __future__ import annotations

from datetime import datetime

from mtls_operator.api import conditions as cond
from mtls_operator.api.constants import CERTIFICATE_KIND, ConditionType, Reason
from mtls_operator.api.objects import CertificateStatus, Key, ParsedCertificate
from mtls_operator.controllers.certificates.gather import Gathered
from mtls_operator.controllers.context import Context
from mtls_operator.controllers.rollouts import RolloutManager
from mtls_operator.k8s.resources import post_event
from mtls_operator.policy.certificate import Plan, SecretView
from mtls_operator.policy.status import key_expirations


class CertificateReporter:
    def __init__(self, ctx: Context, rollouts: RolloutManager) -> None:
        self.api = ctx.api
        self.clock = ctx.clock
        self.metrics = ctx.metrics
        self.certificates = ctx.certificates
        self.secrets = ctx.secrets
        self.rollouts = rollouts
        # The content each certificate's Secret was last seen with: its leaf's fingerprint and the
        # fingerprints of its ca.crt (objects the verdict shares, so an entry is one small tuple).
        self._content: dict[Key, tuple[str, frozenset[str]]] = {}

    def forget(self, key: Key) -> None:
        self._content.pop(key, None)
        self.metrics.forget_certificate(*key)

    def note_content(self, cert: ParsedCertificate, secret_name: str, view: SecretView) -> None:
        """Tell the rollout manager when a certificate's Secret holds something new (or was first judged
        after a start), so the workloads using it are looked at."""
        if view.facts is None:
            return
        content = (view.facts.leaf.fingerprint, view.facts.ca_bundle_fingerprints)
        if self._content.get(cert.key) != content:
            self._content[cert.key] = content
            self.rollouts.secret_changed(cert.meta.namespace, secret_name)

    async def event(
        self, cert: ParsedCertificate, kind: str, reason: Reason | str, message: str, now: datetime
    ) -> None:
        await post_event(
            self.api,
            kind=CERTIFICATE_KIND,
            namespace=cert.meta.namespace,
            name=cert.meta.name,
            uid=cert.meta.uid,
            event_type=kind,
            reason=reason,
            message=message,
            now=now,
        )

    async def rollout_event(
        self, cert: ParsedCertificate, old: CertificateStatus, new: CertificateStatus
    ) -> None:
        before = cond.get(old.conditions, ConditionType.ROLLOUT_BLOCKED)
        after = cond.get(new.conditions, ConditionType.ROLLOUT_BLOCKED)
        if after is not None and after.status and not (before is not None and before.status):
            await self.event(cert, "Warning", after.reason, after.message, self.clock.now())

    def observe(
        self, cert: ParsedCertificate, g: Gathered, decision: Plan | None, facts: datetime | None = None
    ) -> None:
        current = self.certificates.get(cert.key) or cert
        verdict = self.secrets.verdict(cert.key)
        leaf = verdict.view.facts.leaf if verdict is not None and verdict.view.facts is not None else None
        if verdict is not None and g.spec is not None:
            self.note_content(cert, g.spec.secret_name, verdict.view)
        ready = next((c for c in current.status.conditions if c.type == ConditionType.READY), None)
        held = verdict.view.facts if verdict is not None and leaf is not None else None
        self.metrics.observe_certificate(
            cert.meta.namespace,
            cert.meta.name,
            cert.issuer_name or "",
            not_after=leaf.not_after if leaf is not None else facts,
            renewal_time=current.status.renewal_time if leaf is not None else None,
            ready=ready is not None and ready.status,
            reason=ready.reason if ready is not None else "",
            keys=key_expirations(held) if held is not None else (),
            key=current.key,
        )
