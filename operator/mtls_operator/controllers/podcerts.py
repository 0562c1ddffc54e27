"""The Pod Certificate signer (KEP-4317): answers the PodCertificateRequests of the mtls.dev signer names
that issuers declare in ``spec.podCertificates``.

Intake keeps the pending requests of this project's signer names (parsed once, in
:mod:`mtls_operator.policy.podcert_request`) and queues their keys on the signer's own work queue, with its
own workers, apart from the queue of certificates and issuers: a flood of requests never delays an
MTLSCertificate's renewal behind it. Each node is served through its own token bucket
(:func:`~mtls_operator.policy.podcert_routing.reserve`), so one node's flood waits its turn while other nodes'
requests pass.

One request: choose the issuer (reads nothing), take the node's slot, gather the pod, its ServiceAccount
and its node as the API records them (three reads), decide (pure), then act: sign in a crypto thread
(the kubelet's public key; no private key is ever seen), write the request's status in one merge patch
of ``/status`` guarded by its resourceVersion (kube-apiserver allows it only to a user with ``sign`` on
the signer name), post an Event on the request, count it. A request already answered is never touched
(its status is immutable), and a request of a signer name no issuer declares is left alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from mtls_operator.api.conditions import rfc3339
from mtls_operator.api.constants import Reason
from mtls_operator.api.errors import ReasonedError
from mtls_operator.api.models import KeyAlgorithm
from mtls_operator.api.objects import Key, issuer_key
from mtls_operator.api.tls import CertFacts
from mtls_operator.controllers.config import SignerSettings
from mtls_operator.controllers.context import Context
from mtls_operator.controllers.issuers import IssuerController
from mtls_operator.controllers.revocation import Revocations
from mtls_operator.controllers.workqueue import WorkQueue
from mtls_operator.k8s.api import MERGE_PATCH, ApiError, core_path, group_path
from mtls_operator.k8s.resources import post_event, read_namespace
from mtls_operator.pki.issuance import issue_for_public_key, requested_key_algorithm
from mtls_operator.policy.podcert import PodCertInput, Recorded, decide
from mtls_operator.policy.podcert_request import (
    Decision,
    Outcome,
    PodCertRequest,
    parse_pod_certificate_request,
)
from mtls_operator.policy.podcert_routing import SignerIssuer, choose_signer, in_scope, reserve

logger = logging.getLogger("mtls_operator.podcerts")
GROUP, VERSION, PLURAL = "certificates.k8s.io", "v1beta1", "podcertificaterequests"
KIND = "PodCertificateRequest"
DELETED = "DELETED"
MAX_NODES_REMEMBERED = 1024  # past this, node buckets already full again are dropped


class PodCertificateSigner:
    def __init__(
        self,
        ctx: Context,
        issuers: IssuerController,
        revocations: Revocations,
        settings: SignerSettings | None = None,
    ) -> None:
        self.ctx = ctx
        self.api = ctx.api
        self.clock = ctx.clock
        self.issuers = issuers
        self.revocations = revocations
        self.settings = settings or ctx.config.pod_certificates
        self.queue: WorkQueue[Key] = WorkQueue(
            self._process, workers=self.settings.workers, name="podcerts", clock=ctx.clock
        )
        self._requests: dict[Key, PodCertRequest] = {}  # pending requests of mtls.dev signer names
        self._nodes: dict[str, datetime] = {}  # node -> its bucket's theoretical arrival time
        self._slots: dict[Key, datetime] = {}  # a waiting request's reserved slot
        self.answered: dict[str, int] = {str(o): 0 for o in Outcome}

    def start(self) -> None:
        self.queue.start()

    async def stop(self) -> None:
        await self.queue.stop()

    def __len__(self) -> int:
        """Requests waiting for an answer."""
        return len(self._requests)

    # ------------------------------------------------------------------ intake

    def event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A PodCertificateRequest watch event: keep and queue a pending request of an mtls.dev signer
        name; forget one that is answered or deleted."""
        request = parse_pod_certificate_request(body)
        if not request.ours:
            return
        if event_type == DELETED or request.answered is not None:
            self._forget(request.key)
            return
        self._requests[request.key] = request
        self.queue.add(request.key)

    def _forget(self, key: Key) -> None:
        self._requests.pop(key, None)
        self._slots.pop(key, None)
        self.queue.forget(key)

    # ------------------------------------------------------------------ one request

    async def _process(self, key: Key) -> None:
        request = self._requests.get(key)
        if request is None:
            return
        now = self.clock.now()
        chosen = choose_signer(request, self._claimants(request), now)
        if isinstance(chosen, Decision):
            if chosen.waits:
                assert chosen.retry_at is not None
                self.queue.add_at(key, chosen.retry_at)
            else:
                await self._answer(request, chosen, None, None, now)
            return
        wait_until = self._slot(request, now)
        if wait_until is not None:
            self.queue.add_at(key, wait_until)
            return
        gathered = await self._gather(request, chosen, now)
        # The times are planned from the clock after the reads: notBefore must be within 5 minutes of the
        # API server's clock when the status is written.
        now = self.clock.now()
        decision = decide(replace(gathered, now=now))
        leaf: CertFacts | None = None
        chain: str | None = None
        if decision.issuance is not None:
            try:
                chain, leaf = await self._sign(request, chosen, decision)
            except ReasonedError as exc:
                decision = Decision(Outcome.FAILED, Reason.ISSUANCE_FAILED, exc.message)
        await self._answer(request, decision, chain, leaf, now)

    def _claimants(self, request: PodCertRequest) -> tuple[SignerIssuer, ...]:
        found: list[SignerIssuer] = []
        for key in self.ctx.issuers.signing_for(request.signer_name):
            issuer = self.ctx.issuers.get(key)
            if issuer is None:
                continue
            state = self.issuers.state(key)
            view = state.view if state is not None else None
            found.append(
                SignerIssuer(
                    kind=issuer.kind,
                    namespace=key[0],
                    name=key[1],
                    judged=state is not None,
                    ready=bool(view and view.ready and state is not None and state.ca is not None),
                    message=view.message if view is not None else "",
                    policy=state.policy if state is not None else issuer.policy,
                    ca_not_after=state.ca.facts.not_after if state is not None and state.ca else None,
                )
            )
        return in_scope(request.namespace, found)

    def _slot(self, request: PodCertRequest, now: datetime) -> datetime | None:
        """When the request's node may be served (None: now). A request told to wait keeps its slot."""
        held = self._slots.pop(request.key, None)
        if held is not None:
            if held <= now:
                return None
            self._slots[request.key] = held
            return held
        node = request.node_name
        self._nodes[node], allowed = reserve(self.settings.node_rate, self._nodes.get(node), now)
        if len(self._nodes) > MAX_NODES_REMEMBERED:
            self._nodes = {n: t for n, t in self._nodes.items() if t > now}
        if allowed is not None:
            self._slots[request.key] = allowed
        return allowed

    # ------------------------------------------------------------------ gather (reads only)

    async def _gather(self, request: PodCertRequest, signer: SignerIssuer, now: datetime) -> PodCertInput:
        namespace = request.namespace
        pod, account, node = await asyncio.gather(
            self.api.get_or_none(core_path(namespace, "pods", request.pod_name)),
            self.api.get_or_none(core_path(namespace, "serviceaccounts", request.service_account)),
            self.api.get_or_none(f"/api/v1/nodes/{request.node_name}"),
        )
        pod_spec: Mapping[str, Any] = (pod or {}).get("spec") or {}
        recorded = Recorded(
            pod_uid=_uid(pod),
            pod_node=str(pod_spec.get("nodeName") or "") or None,
            pod_service_account=str(pod_spec.get("serviceAccountName") or "") or None,
            service_account_uid=_uid(account),
            node_uid=_uid(node),
        )
        key: tuple[KeyAlgorithm, int] | None = None
        problem: str | None = None
        try:
            key = requested_key_algorithm(request.stub_pkcs10, request.pkix_public_key)
        except ReasonedError as exc:
            problem = exc.message
        policy = signer.policy
        labels = await self._namespace_labels(namespace) if policy and policy.allowed_namespaces else {}
        return PodCertInput(request, signer, recorded, key, problem, labels, now)

    async def _namespace_labels(self, namespace: str) -> Mapping[str, str] | None:
        """From the namespace watch (the signer runs only when the operator watches Namespaces), else
        read; None when they cannot be read."""
        if self.ctx.namespaces.watched:
            info = self.ctx.namespaces.get(namespace)
            return info.labels if info is not None else {}
        try:
            found = await read_namespace(self.api, namespace)
        except ApiError as exc:
            if exc.status != 403:
                raise
            return None
        return found.labels if found is not None else {}

    # ------------------------------------------------------------------ act

    async def _sign(
        self, request: PodCertRequest, signer: SignerIssuer, decision: Decision
    ) -> tuple[str, CertFacts]:
        issuance = decision.issuance
        assert issuance is not None
        key = issuer_key(signer.namespace, signer.kind, signer.name)
        state = self.issuers.state(key)
        if state is None or state.ca is None:
            raise ReasonedError(f"{signer.label} lost its CA while the request was being judged.")
        crl_url, ocsp_url = self.revocations.leaf_urls(*self.ctx.issuers.revocation_ref(key))
        issued = await self.ctx.in_thread(
            issue_for_public_key,
            issuance.spec,
            request.stub_pkcs10,
            request.pkix_public_key,
            state.ca,
            issuance.not_before,
            crl_url=crl_url,
            ocsp_url=ocsp_url,
        )
        leaf = issued.leaf
        if (leaf.not_before, leaf.not_after) != (issuance.not_before, issuance.not_after):
            raise ReasonedError(
                f"The signed leaf's validity ({rfc3339(leaf.not_before)} to {rfc3339(leaf.not_after)}) is "
                f"not the planned one ({rfc3339(issuance.not_before)} to {rfc3339(issuance.not_after)})."
            )
        return issued.chain_pem.decode(), leaf

    async def _answer(
        self,
        request: PodCertRequest,
        decision: Decision,
        chain: str | None,
        leaf: CertFacts | None,
        now: datetime,
    ) -> None:
        """Write the terminal status, then the Event and the metric. A request someone else answered
        meanwhile (409, or 422 for an immutable status) is read again and left alone if answered."""
        assert decision.outcome is not None
        message = decision.message
        status: dict[str, Any] = {
            "conditions": [
                {
                    "type": str(decision.outcome),
                    "status": "True",
                    "reason": str(decision.reason),
                    "message": message[:4096],
                    "lastTransitionTime": rfc3339(now),
                }
            ]
        }
        issuance = decision.issuance
        if decision.outcome is Outcome.ISSUED:
            assert chain is not None and leaf is not None and issuance is not None
            status.update(
                certificateChain=chain,
                notBefore=rfc3339(leaf.not_before),
                beginRefreshAt=rfc3339(issuance.begin_refresh_at),
                notAfter=rfc3339(leaf.not_after),
            )
            message = (
                f"Issued serial {leaf.serial_number} to Pod {request.namespace}/{request.pod_name} "
                f"(ServiceAccount {request.service_account}, node {request.node_name}) as "
                f"{issuance.spiffe_id}: valid {rfc3339(leaf.not_before)} to {rfc3339(leaf.not_after)}, "
                f"refresh from {rfc3339(issuance.begin_refresh_at)}; {decision.message}"
            )
        patch = {"metadata": {"resourceVersion": request.resource_version}, "status": status}
        path = group_path(GROUP, VERSION, request.namespace, PLURAL, request.name, "status")
        try:
            await self.api.request("PATCH", path, body=patch, content_type=MERGE_PATCH)
        except ApiError as exc:
            if exc.not_found:
                self._forget(request.key)
                return
            if exc.conflict or exc.status == 422:
                await self._reread(request, exc)
                return
            raise
        self._forget(request.key)
        self.answered[str(decision.outcome)] += 1
        self.ctx.metrics.pod_certificate_request(
            signer=request.signer_name, result=str(decision.outcome), reason=str(decision.reason)
        )
        log = logger.info if decision.outcome is Outcome.ISSUED else logger.warning
        log(
            "PodCertificateRequest %s/%s %s (%s): %s",
            *request.key,
            decision.outcome,
            decision.reason,
            message,
        )
        await self._event(request, decision, message, now)

    async def _reread(self, request: PodCertRequest, exc: ApiError) -> None:
        """After a refused status write: keep the request as it is now, look again unless answered."""
        body = await self.api.get_or_none(group_path(GROUP, VERSION, request.namespace, PLURAL, request.name))
        current = parse_pod_certificate_request(body) if body is not None else None
        if current is None or current.answered is not None:
            self._forget(request.key)
            return
        if exc.status == 422 and current.resource_version == request.resource_version:
            # Refused as it stands (not a race): say so once as Failed rather than retry forever.
            logger.error("PodCertificateRequest %s/%s: the status write was refused: %s", *request.key, exc)
            self._requests[request.key] = current
            await self._answer(
                current,
                Decision(
                    Outcome.FAILED,
                    Reason.ISSUANCE_FAILED,
                    f"kube-apiserver refused the signer's answer: {exc.message}",
                ),
                None,
                None,
                self.clock.now(),
            )
            return
        self._requests[request.key] = current
        self.queue.add(request.key)

    async def _event(self, request: PodCertRequest, decision: Decision, message: str, now: datetime) -> None:
        """One Event per decision on the PodCertificateRequest (Normal when issued, else Warning): the
        audit trail of who got which serial; failures to post are logged, not retried."""
        await post_event(
            self.api,
            kind=KIND,
            namespace=request.namespace,
            name=request.name,
            uid=request.uid,
            event_type="Normal" if decision.outcome is Outcome.ISSUED else "Warning",
            reason=decision.reason,
            message=message,
            now=now,
            api_version=f"{GROUP}/{VERSION}",
        )


def _uid(body: Mapping[str, Any] | None) -> str | None:
    if body is None:
        return None
    return str((body.get("metadata") or {}).get("uid") or "") or None
