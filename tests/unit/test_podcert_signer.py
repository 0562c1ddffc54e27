"""controllers.podcerts: the signer's intake, its act step and its fairness, with a scripted API and a fake
clock (the decisions themselves are table-tested in test_policy_podcert.py)."""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tests.unit.core_fakes import FakeApi, make_context, run, settle, turns
from tests.unit.pki_factory import NOW, self_signed_ca

from mtls_operator.api.constants import Reason
from mtls_operator.api.object_parsers import parse_issuer
from mtls_operator.controllers.clock import FakeClock
from mtls_operator.controllers.config import SignerSettings
from mtls_operator.controllers.context import Context
from mtls_operator.controllers.issuers import IssuerState
from mtls_operator.controllers.podcerts import PodCertificateSigner
from mtls_operator.controllers.revocation import Revocations
from mtls_operator.policy.certificate import IssuerView
from mtls_operator.policy.podcert_routing import NodeRate

NS = "team-a"
SIGNER = f"mtls.dev/{NS}.mesh"
CA = self_signed_ca()
KEY = ec.generate_private_key(ec.SECP256R1())
CSR = (
    x509.CertificateSigningRequestBuilder()
    .subject_name(x509.Name([]))
    .sign(KEY, hashes.SHA256())
    .public_bytes(serialization.Encoding.DER)
)


class Issuers:
    """The read-only face of the issuer controller the signer uses."""

    def __init__(self, state: IssuerState | None) -> None:
        self.current = state

    def state(self, key: Any) -> IssuerState | None:
        return self.current


READY = IssuerState(view=IssuerView(True, True, Reason.KEY_PAIR_VERIFIED, "", CA.facts), ca=CA)


def pcr(name: str, node: str = "node-1", signer: str = SIGNER, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": NS,
            "name": name,
            "uid": f"uid-{name}",
            "resourceVersion": "1",
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {
            "signerName": signer,
            "podName": f"pod-{name}",
            "podUID": f"uid-pod-{name}",
            "serviceAccountName": "default",
            "serviceAccountUID": "uid-sa",
            "nodeName": node,
            "nodeUID": f"uid-{node}",
            "maxExpirationSeconds": 3600,
            "stubPKCS10Request": base64.b64encode(CSR).decode(),
        },
        "status": status,
    }


def cluster(method: str, path: str, kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """Every pod, the default ServiceAccount and every node exist as the requests name them."""
    parts = path.strip("/").split("/")
    if method == "GET" and "pods" in parts:
        name = parts[-1]
        return {
            "metadata": {"uid": f"uid-{name}"},
            "spec": {"nodeName": _node_of(name), "serviceAccountName": "default"},
        }
    if method == "GET" and "serviceaccounts" in parts:
        return {"metadata": {"uid": "uid-sa"}}
    if method == "GET" and "nodes" in parts:
        return {"metadata": {"uid": f"uid-{parts[-1]}"}}
    return {}


NODES: dict[str, str] = {}


def _node_of(pod: str) -> str:
    return NODES.get(pod, "node-1")


class Wired:
    def __init__(self, state: IssuerState | None = READY, rate: NodeRate | None = None) -> None:
        self.api = FakeApi(cluster)
        self.clock = FakeClock(NOW)
        ctx = make_context(self.api, clock=self.clock)

        async def inline(fn: Any, *args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        self.ctx: Context = replace(ctx, in_thread=inline)
        self.ctx.issuers.put(
            parse_issuer(
                {
                    "metadata": {"namespace": NS, "name": "mesh", "uid": "u"},
                    "spec": {
                        "selfSigned": {"secretName": "mesh-ca", "commonName": "mesh"},
                        "podCertificates": {},
                    },
                }
            )
        )
        self.issuers = Issuers(state)
        self.signer = PodCertificateSigner(
            self.ctx,
            self.issuers,  # type: ignore[arg-type]
            Revocations(self.api.as_client(), events=False),
            SignerSettings(workers=1, node_rate=rate or NodeRate()),
        )

    def answered(self) -> list[str]:
        """The requests whose status was written, in order."""
        return [c.path.split("/")[-2] for c in self.api.sent("PATCH")]

    def status(self, name: str) -> dict[str, Any]:
        for call in self.api.sent("PATCH"):
            if call.path.split("/")[-2] == name:
                return dict(call.body["status"])
        raise AssertionError(f"{name} not answered")


def test_a_pending_request_is_issued_with_an_event_and_a_metric() -> None:
    async def scenario() -> None:
        w = Wired()
        w.signer.start()
        try:
            w.signer.event("ADDED", pcr("a"))
            await settle(lambda: len(w.api.sent("POST")) == 1)
            status = w.status("a")
            (cond,) = status["conditions"]
            assert (cond["type"], cond["reason"]) == ("Issued", "Issued")
            leaf = x509.load_pem_x509_certificate(status["certificateChain"].encode())
            assert leaf.public_key() == KEY.public_key()
            patch = w.api.sent("PATCH")[0]
            assert patch.body["metadata"] == {"resourceVersion": "1"}, "guarded by the version read"
            assert patch.path.endswith(f"/namespaces/{NS}/podcertificaterequests/a/status")
            event = w.api.sent("POST")[0].body
            assert event["involvedObject"]["kind"] == "PodCertificateRequest" and event["type"] == "Normal"
            assert format(leaf.serial_number, "x") in event["message"]
            counted = w.ctx.metrics.pod_certificate_requests_total.labels(
                signer=SIGNER, result="Issued", reason="Issued"
            )
            assert counted._value.get() == 1
            assert len(w.signer) == 0, "forgotten once answered"
        finally:
            await w.signer.stop()

    run(scenario())


def test_answered_requests_and_other_signers_requests_are_never_touched() -> None:
    async def scenario() -> None:
        w = Wired()
        w.signer.start()
        try:
            w.signer.event("ADDED", pcr("theirs", signer="example.com/signer"))
            w.signer.event("MODIFIED", pcr("done", conditions=[{"type": "Issued", "status": "True"}]))
            await turns()
            assert w.api.calls == [] and len(w.signer) == 0
        finally:
            await w.signer.stop()

    run(scenario())


def test_a_request_waits_without_reading_anything_while_no_issuer_is_ready() -> None:
    async def scenario() -> None:
        w = Wired(state=None)
        w.signer.start()
        try:
            w.signer.event("ADDED", pcr("a"))
            await turns()
            assert w.api.calls == [] and w.signer.queue.waiting == 1
            w.issuers.current = READY
            w.clock.advance(5)
            w.signer.queue.release_due()
            await settle(lambda: w.answered() == ["a"])
        finally:
            await w.signer.stop()

    run(scenario())


def test_a_request_answered_by_someone_else_meanwhile_is_left_alone() -> None:
    async def scenario() -> None:
        w = Wired()
        path = f"/apis/certificates.k8s.io/v1beta1/namespaces/{NS}/podcertificaterequests/a"
        w.api.fail("PATCH", f"{path}/status", 409, "Conflict")
        answered = pcr("a", conditions=[{"type": "Denied", "status": "True"}])

        def script(method: str, p: str, kwargs: dict[str, Any]) -> dict[str, Any] | None:
            return answered if (method, p) == ("GET", path) else cluster(method, p, kwargs)

        w.api.answer = script
        w.signer.start()
        try:
            w.signer.event("ADDED", pcr("a"))
            await settle(lambda: any(c.method == "GET" and c.path == path for c in w.api.calls))
            await turns()
            assert len(w.signer) == 0 and w.api.sent("POST") == [], "no event for an answer not written"
        finally:
            await w.signer.stop()

    run(scenario())


def test_a_flooding_node_waits_for_its_slots_while_another_node_passes() -> None:
    async def scenario() -> None:
        w = Wired(rate=NodeRate(burst=2, per_second=1.0))
        for i in range(5):
            NODES[f"pod-f{i}"] = "node-f"
        NODES["pod-q"] = "node-q"
        w.signer.start()
        try:
            for i in range(5):
                w.signer.event("ADDED", pcr(f"f{i}", node="node-f"))
            w.signer.event("ADDED", pcr("q", node="node-q"))
            await settle(lambda: len(w.answered()) == 3)
            await turns()
            assert w.answered() == ["f0", "f1", "q"], "the burst, then the other node; the rest wait"
            for second in (1, 2, 3):
                w.clock.advance(1)
                w.signer.queue.release_due()
                await settle(lambda n=3 + second: len(w.answered()) == n)
            assert w.answered()[3:] == ["f2", "f3", "f4"], "one per second, in order"
        finally:
            await w.signer.stop()

    run(scenario())


def test_the_status_times_are_the_leafs() -> None:
    async def scenario() -> None:
        w = Wired()
        w.signer.start()
        try:
            w.signer.event("ADDED", pcr("a"))
            await settle(lambda: w.answered() == ["a"])
            status = w.status("a")
            leaf = x509.load_pem_x509_certificate(status["certificateChain"].encode())
            stamp = "%Y-%m-%dT%H:%M:%SZ"
            assert status["notBefore"] == leaf.not_valid_before_utc.strftime(stamp)
            assert status["notAfter"] == leaf.not_valid_after_utc.strftime(stamp)
            assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(hours=1)
            assert status["beginRefreshAt"] == (leaf.not_valid_before_utc + timedelta(minutes=40)).strftime(
                stamp
            )
        finally:
            await w.signer.stop()

    run(scenario())
