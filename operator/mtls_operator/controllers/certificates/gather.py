"""Gather: everything one certificate decision needs, as frozen values. Reads, never writes.

The certificate as parsed at intake, its issuer's published state, the issuance policy's verdict, its
Secret (from the verdict cache while nothing changed, else read and judged in a crypto thread), whether
its serial is revoked, and whether the issuance budget allows an issuance now.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from mtls_operator.api.conditions import parse_rfc3339
from mtls_operator.api.constants import (
    ANN_CERTIFICATE_NAME,
    ANN_CONTENT_SINCE,
    ANN_FULFILLED_RENEW,
    ANN_FULFILLED_REVOKE,
    ANN_REVISION,
    ANN_SPEC_HASH,
    Reason,
)
from mtls_operator.api.errors import ReasonedError, SpecError, Violation
from mtls_operator.api.issuer_policy import with_spiffe_uri
from mtls_operator.api.models import CertificateSpec
from mtls_operator.api.objects import ParsedCertificate
from mtls_operator.controllers.context import Context
from mtls_operator.controllers.issuers import IssuerController, IssuerState
from mtls_operator.controllers.revocation import Revocations
from mtls_operator.controllers.secret_cache import Verdict
from mtls_operator.k8s.api import ApiError
from mtls_operator.k8s.resources import SecretObject, read_namespace, read_secret
from mtls_operator.pki.ca import CAKeyPair
from mtls_operator.pki.material import inspect_tls_secret
from mtls_operator.policy.budget import BudgetState, take
from mtls_operator.policy.certificate import CertificateInput, IssuerView, SecretView
from mtls_operator.policy.issuance_policy import evaluate as evaluate_policy
from mtls_operator.policy.ownership import owns_leaf_secret

NAMESPACE_CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class Gathered:
    input: CertificateInput
    secret: SecretObject | None  # the Secret as read (the write guard); None when judged from the cache
    judged_version: str | None  # the resourceVersion the decision judged (cached or read); the write guard
    issuer: IssuerState | None
    spec: CertificateSpec | None  # the spec with the SPIFFE ID filled in
    budget_after: BudgetState | None = None  # the issuance budget once this decision issues


class Gatherer:
    def __init__(
        self,
        ctx: Context,
        issuers: IssuerController,
        revocations: Revocations,
        budgets: Mapping[tuple[str, str], BudgetState],
    ) -> None:
        self.api = ctx.api
        self.config = ctx.config
        self.clock = ctx.clock
        self.certificates = ctx.certificates
        self.issuer_store = ctx.issuers
        self.namespaces = ctx.namespaces
        self.secrets = ctx.secrets
        self.in_thread = ctx.in_thread
        self.issuers = issuers
        self.revocations = revocations
        self.budgets = budgets
        self._ns_cache: dict[str, tuple[float, Mapping[str, str] | None]] = {}

    async def gather(self, cert: ParsedCertificate, now: datetime) -> Gathered:
        namespace, name = cert.key
        spec, error = cert.spec, cert.error
        state: IssuerState | None = None
        issuer_view = IssuerView()
        policy_violation: Violation | None = None
        if spec is not None:
            issuer_key = cert.issuer_key
            assert issuer_key is not None
            state = self.issuers.state(issuer_key)
            if state is not None:
                issuer_view = state.view
            elif self.issuer_store.get(issuer_key) is not None:
                issuer_view = IssuerView(True, False, Reason.ISSUER_NOT_READY, "it has not been checked yet.")
            policy = state.policy if state is not None else None
            try:
                spec = with_spiffe_uri(spec, cert.spiffe, namespace, policy)
            except SpecError as exc:
                spec, error = None, Violation.of(exc)
            if spec is not None and policy is not None:
                labels = await self._namespace_labels(namespace) if policy.allowed_namespaces else {}
                if labels is None:
                    policy_violation = Violation(
                        Reason.POLICY_DENIED,
                        f"The issuer's policy limits namespaces, but the labels of namespace {namespace} "
                        "cannot be read (the operator lacks get on namespaces); nothing is issued.",
                    )
                else:
                    policy_violation = evaluate_policy(policy, spec, namespace, labels)

        secret_view, secret, judged_version = SecretView(), None, None
        if spec is not None:
            secret_view, secret, judged_version = await self._secret(cert, spec, state)

        duplicates = (
            tuple(sorted(self.certificates.naming_secret(namespace, spec.secret_name) - {name}))
            if spec
            else ()
        )
        revoked = False
        if spec is not None and secret_view.facts is not None:
            where = self.issuer_store.revocation_ref(cert.issuer_key or (namespace, spec.issuer_ref.name))
            revoked = self.revocations.is_revoked(*where, secret_view.facts.leaf.serial_number)
        status = cert.status
        ready = next((c for c in status.conditions if c.type == "Ready"), None)
        last_reason: Reason | None = None
        if status.failed_attempts and ready is not None and not ready.status:
            try:
                last_reason = Reason(ready.reason)
            except ValueError:
                last_reason = None
        budget_after, budget_retry_at = None, None
        if spec is not None:
            budget_after, budget_retry_at = take(
                self.config.budget, self.budgets.get(cert.key), _lifetime(secret_view, spec), now
            )
        inp = CertificateInput(
            namespace=namespace,
            name=name,
            uid=cert.meta.uid,
            generation=cert.meta.generation,
            spec=spec,
            spec_error=error,
            policy_violation=policy_violation,
            revoked=revoked,
            secret=secret_view,
            issuer=issuer_view,
            now=now,
            duplicates=duplicates,
            renew_request=cert.requests.renew,
            revoke_request=cert.requests.revoke,
            failed_attempts=status.failed_attempts,
            last_failure_time=status.last_failure_time,
            last_failure_generation=ready.observed_generation if ready is not None else None,
            last_failure_reason=last_reason,
            backoff_base=self.config.backoff_base,
            backoff_cap=self.config.backoff_cap,
            budget_retry_at=budget_retry_at,
        )
        return Gathered(
            inp, secret, judged_version, state, spec, budget_after if budget_retry_at is None else None
        )

    async def _secret(
        self, cert: ParsedCertificate, spec: CertificateSpec, state: IssuerState | None
    ) -> tuple[SecretView, SecretObject | None, str | None]:
        """The view of ``cert``'s Secret, the Secret when it was read, and the resourceVersion judged."""
        key = cert.key
        ca = state.ca if state is not None else None
        ca_fp = ca.signing_fingerprint if ca is not None else None
        anchors = state.view.anchors if state is not None else frozenset()
        cached = self.secrets.cached_view(key, spec.secret_name, ca_fp, anchors)
        if cached is not None:
            return cached, None, self.secrets.resource_version((key[0], spec.secret_name))
        if not self.secrets.must_read(key):
            delivered = self.secrets.take_delivered((key[0], spec.secret_name))
            if delivered is not None:  # the watch's body is the latest version seen: as good as a read
                return await self._judged(cert, spec, delivered, ca, ca_fp, anchors)
        ever_issued = bool(cert.status.revision or cert.status.failed_attempts)
        if self.secrets.may_assume_missing(key, spec.secret_name, ever_issued):
            # Never issued and no such Secret seen by the watch: take it as missing without a read. The
            # create that follows is atomic: if a Secret exists after all it fails with 409, and the next
            # pass reads it (so nothing is ever overwritten).
            return SecretView(exists=False, revision=0), None, None
        self.secrets.read_done(key)
        secret = await read_secret(self.api, key[0], spec.secret_name)
        return await self._judged(cert, spec, secret, ca, ca_fp, anchors)

    async def _judged(
        self,
        cert: ParsedCertificate,
        spec: CertificateSpec,
        secret: SecretObject | None,
        ca: CAKeyPair | None,
        ca_fp: str | None,
        anchors: frozenset[str],
    ) -> tuple[SecretView, SecretObject | None, str | None]:
        """Judge ``secret`` (as read or delivered) and remember the verdict for its resourceVersion."""
        view = await self.judge(cert, secret, ca)
        version = secret.resource_version if secret is not None else None
        self.secrets.remember(cert.key, Verdict(spec.secret_name, version, ca_fp, anchors, view))
        return view, secret, version

    async def judge(
        self, cert: ParsedCertificate, secret: SecretObject | None, ca: CAKeyPair | None
    ) -> SecretView:
        """The view of a Secret's metadata and, only when it is the certificate's own, its data."""
        if secret is None:
            return SecretView(exists=False, revision=cert.status.revision)
        owned = owns_leaf_secret(secret.labels, secret.annotations, cert.meta.name, cert.meta.uid)
        base = SecretView(
            exists=True,
            owner_certificate=secret.annotations.get(ANN_CERTIFICATE_NAME),
            managed=secret.managed,
            owned=owned,
            spec_hash=secret.annotations.get(ANN_SPEC_HASH),
            revision=_int(secret.annotations.get(ANN_REVISION)),
            fulfilled_renew=secret.annotations.get(ANN_FULFILLED_RENEW),
            fulfilled_revoke=secret.annotations.get(ANN_FULFILLED_REVOKE),
            content_since=parse_rfc3339(secret.annotations.get(ANN_CONTENT_SINCE)),
        )
        if not owned:
            return base  # someone else's Secret: its data is not ours to read
        try:
            facts = await self.in_thread(inspect_tls_secret, secret.data, ca)
        except ReasonedError as exc:
            return replace(base, error=Violation.of(exc))
        return replace(base, facts=facts)

    async def _namespace_labels(self, namespace: str) -> Mapping[str, str] | None:
        """A namespace's labels: from the namespace watch when there is one, else read (cached 5 s).
        None when they cannot be read (no RBAC)."""
        info = self.namespaces.get(namespace)
        if self.namespaces.watched:
            return info.labels if info is not None else {}
        cached = self._ns_cache.get(namespace)
        if cached is not None and self.clock.monotonic() - cached[0] < NAMESPACE_CACHE_SECONDS:
            return cached[1]
        try:
            found = await read_namespace(self.api, namespace)
            labels: Mapping[str, str] | None = found.labels if found is not None else {}
        except ApiError as exc:
            if exc.status != 403:
                raise
            labels = None
        self._ns_cache[namespace] = (self.clock.monotonic(), labels)
        return labels


def _lifetime(view: SecretView, spec: CertificateSpec) -> timedelta:
    if view.facts is not None:
        return view.facts.leaf.not_after - view.facts.leaf.not_before
    return spec.duration


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
