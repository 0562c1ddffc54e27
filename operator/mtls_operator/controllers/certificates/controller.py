"""The MTLSCertificate reconcile: gather (reads), plan (pure), act (writes).

Act is the only step with side effects, and running it twice changes nothing the second time: the Secret
write is atomic and guarded, the status is patched only where it differs, events are posted when the
Ready reason changes (events and metrics: reporting.py). A certificate with ``revocationPolicy: Revoke``
carries the finalizer ``mtls.dev/revoke-on-delete``, so a deletion waits until its serial is durably on the
revocation list, however long the operator was down (finalizer.py).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from mtls_operator.api.constants import (
    CERTIFICATE_PLURAL,
    CLUSTER_ISSUER_PLURAL,
    ISSUER_PLURAL,
    LABEL_SECRET_ROLE,
    SECRET_ROLE_CERTIFICATE,
    Reason,
)
from mtls_operator.api.errors import ReasonedError, Violation
from mtls_operator.api.objects import CertificateStatus, Key, ParsedCertificate
from mtls_operator.api.tls import SecretFacts
from mtls_operator.controllers.certificates.finalizer import RevokeOnDelete
from mtls_operator.controllers.certificates.gather import Gathered, Gatherer
from mtls_operator.controllers.certificates.issuing import ConflictError, Issuer, Written
from mtls_operator.controllers.certificates.reporting import CertificateReporter
from mtls_operator.controllers.context import Context
from mtls_operator.controllers.issuers import IssuerController
from mtls_operator.controllers.revocation import Revocations
from mtls_operator.controllers.rollouts import RolloutManager
from mtls_operator.controllers.secret_cache import Verdict
from mtls_operator.k8s.api import ApiError
from mtls_operator.k8s.resources import get_custom, patch_status, relabel_secret
from mtls_operator.policy import backoff
from mtls_operator.policy.budget import BudgetState
from mtls_operator.policy.certificate import Action, Plan, SecretView, plan
from mtls_operator.policy.certificate_checks import renewal_of
from mtls_operator.policy.status import (
    RolloutBlock,
    blocked_status,
    failure_status,
    ready_of,
    ready_status,
    status_patch,
    waiting_status,
)

logger = logging.getLogger("mtls_operator.certificates")


class CertificateController:
    def __init__(
        self,
        ctx: Context,
        issuers: IssuerController,
        gatherer: Gatherer,
        writer: Issuer,
        revocations: Revocations,
        rollouts: RolloutManager,
        budgets: dict[Key, BudgetState],
    ) -> None:
        self.ctx = ctx
        self.api = ctx.api
        self.config = ctx.config
        self.clock = ctx.clock
        self.metrics = ctx.metrics
        self.certificates = ctx.certificates
        self.namespaces = ctx.namespaces
        self.secrets = ctx.secrets
        self.issuers = issuers
        self.gatherer = gatherer
        self.issuer = writer
        self.rollouts = rollouts
        self.budgets = budgets
        self.issued = 0
        self.failed = 0
        self.reporter = CertificateReporter(ctx, rollouts)
        self.finalizer = RevokeOnDelete(ctx, gatherer, revocations)

    def forget(self, key: Key) -> None:
        self.secrets.forget_certificate(key)
        self.budgets.pop(key, None)
        self.reporter.forget(key)

    # ------------------------------------------------------------------ reconcile

    async def reconcile(self, key: Key) -> None:
        cert = self.certificates.get(key)
        if cert is None:
            return
        if cert.meta.deleting:
            await self.finalizer.finalize(cert)
            return
        issuer_key = cert.issuer_key if cert.spec is not None else None
        if (
            issuer_key is not None
            and not self.issuers.judged(issuer_key)
            and await self._issuer_exists(issuer_key)
        ):
            # After a restart the certificate watch may deliver before the issuer watch: deciding now would
            # flap Ready to IssuerNotFound/NotReady and back (needless writes). The issuer's first reconcile
            # queues this certificate again.
            self.ctx.work.add_issuer(issuer_key)
            return
        now = self.clock.now()
        gathered = await self.gatherer.gather(cert, now)
        decision = plan(gathered.input)
        await self._act(cert, gathered, decision, now)
        if decision.action not in (Action.ISSUE, Action.REFRESH_TRUST):
            await self._label_for_watch(gathered)
        await self.finalizer.keep(key)

    async def _label_for_watch(self, g: Gathered) -> None:
        """A Secret of this certificate written before Secrets carried ``mtls.dev/secret-role`` (an upgrade
        from an older operator) is outside the label-selected Secret watch: label it once, keeping its
        data, so a change to it is seen at once instead of at the next resync. Not a re-issue."""
        secret = g.secret
        if secret is None or not g.input.secret.owned or LABEL_SECRET_ROLE in secret.labels:
            return
        try:
            await relabel_secret(self.api, secret, {LABEL_SECRET_ROLE: SECRET_ROLE_CERTIFICATE})
        except ApiError as exc:
            logger.info("Secret %s/%s not labelled for the watch yet: %s", secret.namespace, secret.name, exc)
            return
        logger.info(
            "Labelled Secret %s/%s %s=%s.",
            secret.namespace,
            secret.name,
            LABEL_SECRET_ROLE,
            SECRET_ROLE_CERTIFICATE,
        )

    async def _issuer_exists(self, issuer: Key) -> bool:
        """Whether the issuer is in the store, or (not delivered by its watch yet) in the API server."""
        if self.ctx.issuers.get(issuer) is not None:
            return True
        plural = ISSUER_PLURAL if issuer[0] else CLUSTER_ISSUER_PLURAL
        return await get_custom(self.api, plural, *issuer) is not None

    async def _act(self, cert: ParsedCertificate, g: Gathered, decision: Plan, now: datetime) -> None:
        key = cert.key
        if decision.action in (Action.ISSUE, Action.REFRESH_TRUST):
            await self._write_secret(cert, g, decision, now)
            return
        if decision.action is Action.FAIL:
            assert decision.violation is not None
            await self._failed(cert, g, decision.violation, now)
            return
        violation = decision.violation
        old = cert.status
        generation = cert.meta.generation
        if decision.action is Action.NOTHING:
            assert g.spec is not None and g.input.secret.facts is not None
            new = self._ready(cert, g, g.input.secret.facts, g.input.secret.revision, now)
        elif decision.action is Action.WAIT:
            assert violation is not None
            new = waiting_status(old, violation, decision.next_check, generation, now)
        else:
            assert violation is not None
            new = blocked_status(old, violation, generation, now)
        if await self._patch(cert, old, new):
            await self.reporter.rollout_event(cert, old, new)
            if violation is not None and ready_of(old) != ready_of(new):
                await self.reporter.event(cert, "Warning", violation.reason, violation.message, now)
            if violation is not None and violation.reason is Reason.ISSUANCE_BUDGET_EXCEEDED:
                label = g.spec.private_key.label if g.spec is not None else "unknown"
                self.metrics.issuance(result="throttled", algorithm=label, seconds=0.0)
                await self.reporter.event(cert, "Warning", violation.reason, violation.message, now)
        self.reporter.observe(cert, g, decision)
        if decision.next_check is not None:
            self.ctx.work.schedule_certificate(key, decision.next_check)
        elif (
            violation is not None and violation.reason is Reason.POLICY_DENIED and not self.namespaces.watched
        ):
            self.ctx.work.schedule_certificate(
                key, now + timedelta(seconds=30)
            )  # namespace labels are not watched here

    def _ready(
        self,
        cert: ParsedCertificate,
        g: Gathered,
        facts: SecretFacts,
        revision: int,
        now: datetime,
        trigger: Violation | None = None,
        refreshed: bool = False,
        fulfilled: tuple[str | None, str | None] | None = None,
    ) -> CertificateStatus:
        assert g.spec is not None
        view = g.input.issuer
        return ready_status(
            cert.status,
            spec=g.spec,
            generation=cert.meta.generation,
            facts=facts,
            revision=revision,
            renewal_time=renewal_of(g.spec, facts, cert.meta.uid),
            issuer_fingerprint=view.ca.fingerprint if view.ca else None,
            chain=view.chain_algorithms,
            fulfilled=fulfilled or (g.input.secret.fulfilled_renew, g.input.secret.fulfilled_revoke),
            block=self._block(cert, g),
            now=now,
            trigger=trigger,
            refreshed=refreshed,
        )

    def _block(self, cert: ParsedCertificate, g: Gathered) -> RolloutBlock | None:
        if g.spec is None:
            return None
        found = self.rollouts.blocked(cert.meta.namespace, g.spec.secret_name, cert.meta.name)
        return RolloutBlock(*found) if found is not None else None

    async def _write_secret(
        self, cert: ParsedCertificate, g: Gathered, decision: Plan, now: datetime
    ) -> None:
        key = cert.key
        spec, state = g.spec, g.issuer
        assert spec is not None and decision.violation is not None
        if state is None or state.ca is None or state.anchors is None:
            self.ctx.work.add_certificate(key)  # the issuer changed since this was decided: decide again
            return
        revision = max(g.input.secret.revision, cert.status.revision) + 1
        started = self.clock.monotonic()
        refreshed = decision.action is Action.REFRESH_TRUST
        try:
            if refreshed:
                written = await self.issuer.refresh_trust(
                    cert, spec, state, decision, g.secret, g.judged_version, revision, now
                )
            else:
                written = await self.issuer.issue(
                    cert, spec, state, decision, g.secret, g.judged_version, revision, now
                )
        except ConflictError:
            logger.info("Secret %s/%s changed while issuing; deciding again.", key[0], spec.secret_name)
            self.secrets.invalidate(key, must_read=True)
            self.ctx.work.add_certificate(key)
            return
        except ReasonedError as exc:
            await self._failed(
                cert,
                g,
                Violation(
                    Reason.ISSUANCE_FAILED if exc.reason is not Reason.REVOCATION_PENDING else exc.reason,
                    exc.message,
                ),
                now,
            )
            return
        if g.budget_after is not None:
            self.budgets[key] = g.budget_after  # the one issuance the decision took from the budget
        self._remember(cert, g, decision, written)
        if not refreshed:
            self.issued += 1
            self.metrics.issuance(
                result="success", algorithm=spec.private_key.label, seconds=self.clock.monotonic() - started
            )
        keys = " + ".join(k.label for k in spec.key_specs)
        new = self._ready(
            cert,
            g,
            written.facts,
            written.revision,
            now,
            trigger=decision.violation,
            refreshed=refreshed,
            fulfilled=(
                decision.fulfils_renew or g.input.secret.fulfilled_renew,
                decision.fulfils_revoke or g.input.secret.fulfilled_revoke,
            ),
        )
        await self._patch(cert, cert.status, new)
        leaf = written.facts.leaf
        if refreshed:
            message = (
                f"Updated ca.crt of Secret {spec.secret_name} (revision {written.revision}): "
                f"{decision.violation.message}"
            )
            await self.reporter.event(cert, "Normal", Reason.TRUST_REFRESHED, message, now)
        else:
            message = (
                f"Issued revision {written.revision} ({keys}, serial {leaf.serial_number}) "
                "into "
                f"Secret {spec.secret_name}, valid until {leaf.not_after.strftime('%Y-%m-%dT%H:%M:%SZ')}: "
                f"{decision.violation.message}"
            )
            await self.reporter.event(cert, "Normal", Reason.ISSUED, message, now)
            logger.info(
                "Issued %s/%s revision %d (%s, serial %s): %s",
                *key,
                written.revision,
                keys,
                leaf.serial_number,
                decision.violation.reason,
            )
        self.reporter.observe(cert, g, decision, facts=written.facts.leaf.not_after)
        if new.renewal_time is not None:
            self.ctx.work.schedule_certificate(key, min(new.renewal_time, leaf.not_after))

    def _remember(self, cert: ParsedCertificate, g: Gathered, decision: Plan, written: Written) -> None:
        assert g.spec is not None and g.issuer is not None and g.issuer.ca is not None
        secret = written.secret
        view = SecretView(
            exists=True,
            owner_certificate=cert.meta.name,
            managed=True,
            owned=True,
            facts=written.facts,
            spec_hash=g.spec.identity_hash(),
            revision=written.revision,
            fulfilled_renew=secret.annotations.get("mtls.dev/renew-request-fulfilled"),
            fulfilled_revoke=secret.annotations.get("mtls.dev/revoke-request-fulfilled"),
            content_since=self.clock.now(),
        )
        self.secrets.remember(
            cert.key,
            Verdict(
                g.spec.secret_name,
                secret.resource_version,
                g.issuer.ca.signing_fingerprint,
                g.issuer.view.anchors,
                view,
            ),
        )
        self.reporter.note_content(cert, g.spec.secret_name, view)

    async def _failed(
        self, cert: ParsedCertificate, g: Gathered, violation: Violation, now: datetime
    ) -> None:
        key = cert.key
        failures = cert.status.failed_attempts + 1
        retry_at = backoff.next_attempt(failures, now, self.config.backoff_base, self.config.backoff_cap)
        assert retry_at is not None
        self.failed += 1
        self.metrics.issuance(
            result="failure", algorithm=g.spec.private_key.label if g.spec else "unknown", seconds=0.0
        )
        new = failure_status(cert.status, violation, retry_at, cert.meta.generation, now)
        await self._patch(cert, cert.status, new)
        await self.reporter.event(
            cert,
            "Warning",
            violation.reason,
            f"{violation.message} Attempt {failures}; retrying at {retry_at.strftime('%Y-%m-%dT%H:%M:%SZ')}.",
            now,
        )
        logger.warning("Issuance of %s/%s failed (attempt %d): %s", *key, failures, violation.message)
        self.reporter.observe(cert, g, None)
        self.ctx.work.schedule_certificate(key, retry_at)

    # ------------------------------------------------------------------ status

    async def _patch(self, cert: ParsedCertificate, old: CertificateStatus, new: CertificateStatus) -> bool:
        patch = status_patch(old, new)
        if not patch:
            return False
        try:
            await patch_status(self.api, CERTIFICATE_PLURAL, *cert.key, patch)
        except ApiError as exc:
            if exc.not_found:  # deleted meanwhile: forget it
                self.certificates.remove(cert.key)
                self.forget(cert.key)
                return False
            raise
        self.certificates.update_status(cert.key, new)
        return True
