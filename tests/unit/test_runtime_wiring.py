"""controllers.runtime: the wiring. One queue and one clock; watch events reach the right reconcile through
intake and the queue; the rollout manager's loop guard reaches the certificates through the queue (no
callback into a controller); a deleted object's scheduled look is dropped.

The reconciles themselves are replaced by recorders: what is tested is who gets asked, not what they do."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from tests.unit.core_fakes import FakeApi, run, settle, turns

from mtls_operator.api.objects import Key
from mtls_operator.controllers.clock import FakeClock
from mtls_operator.controllers.config import OperatorConfig
from mtls_operator.controllers.runtime import Runtime

NS = "demo"


class Recorder:
    def __init__(self) -> None:
        self.keys: list[Key] = []

    async def __call__(self, key: Key) -> None:
        self.keys.append(key)


class Wired:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.api = FakeApi()
        self.runtime = Runtime(self.api.as_client(), OperatorConfig(workers=2), clock=self.clock)
        self.certificates = Recorder()
        self.issuers = Recorder()
        self.runtime.controller.reconcile = self.certificates  # type: ignore[method-assign]
        self.runtime.issuers.reconcile = self.issuers  # type: ignore[method-assign]

    def idle(self) -> bool:
        return len(self.runtime.queue) == 0


@asynccontextmanager
async def wired() -> AsyncIterator[Wired]:
    w = Wired()
    w.runtime.queue.start()  # only the queue: no rollout loop, resync or revocation server
    try:
        yield w
    finally:
        await w.runtime.stop()


def cert(name: str, secret: str) -> dict[str, Any]:
    return {
        "metadata": {"namespace": NS, "name": name, "uid": f"uid-{name}"},
        "spec": {"secretName": secret, "issuerRef": {"name": "team"}, "commonName": name},
    }


TEAM = {
    "metadata": {"namespace": NS, "name": "team", "uid": "uid-team"},
    "spec": {"intermediate": {"issuerRef": {"name": "root"}, "secretName": "team-ca", "commonName": "Team"}},
}


def test_certificate_events_reach_one_certificate_reconcile() -> None:
    async def scenario() -> None:
        async with wired() as w:
            for _ in range(3):
                w.runtime.intake.certificate_event("MODIFIED", cert("web", "web-tls"))
            await settle(w.idle)
            await turns()
            assert w.certificates.keys == [(NS, "web")] and w.issuers.keys == []

    run(scenario())


def test_a_tampered_intermediate_ca_secret_reaches_its_issuer_at_once() -> None:
    async def scenario() -> None:
        async with wired() as w:
            w.runtime.intake.issuer_event("ADDED", TEAM)
            await settle(lambda: w.issuers.keys == [(NS, "team")])
            w.runtime.intake.secret_event(
                "MODIFIED", {"metadata": {"namespace": NS, "name": "team-ca", "resourceVersion": "9"}}
            )
            await settle(lambda: w.issuers.keys == [(NS, "team"), (NS, "team")])

    run(scenario())


def test_the_loop_guard_reaches_the_certificates_naming_the_blocked_secrets_through_the_queue() -> None:
    async def scenario() -> None:
        async with wired() as w:
            w.runtime.intake.certificate_event("ADDED", cert("web", "web-tls"))
            w.runtime.intake.certificate_event("ADDED", cert("api", "api-tls"))
            await settle(lambda: len(w.certificates.keys) == 2 and w.idle())
            w.certificates.keys.clear()
            assert w.runtime.rollouts.notify is not None
            w.runtime.rollouts.notify(NS, ["web-tls", "unmanaged"])
            await settle(lambda: w.certificates.keys == [(NS, "web")] and w.idle())

    run(scenario())


def test_a_scheduled_look_runs_when_the_clock_reaches_it() -> None:
    async def scenario() -> None:
        async with wired() as w:
            w.runtime.schedule_certificate((NS, "web"), w.clock.now() + timedelta(minutes=5))
            w.runtime.schedule_issuer((NS, "team"), w.clock.now() + timedelta(minutes=10))
            assert w.runtime.queue.waiting == 2
            w.clock.advance(300)
            w.runtime.queue.release_due()
            await settle(lambda: w.certificates.keys == [(NS, "web")])
            assert w.issuers.keys == []
            w.clock.advance(300)
            w.runtime.queue.release_due()
            await settle(lambda: w.issuers.keys == [(NS, "team")])

    run(scenario())


def test_a_deleted_object_loses_its_scheduled_look() -> None:
    async def scenario() -> None:
        async with wired() as w:
            w.runtime.intake.certificate_event("ADDED", cert("web", "web-tls"))
            w.runtime.intake.issuer_event("ADDED", TEAM)
            await settle(lambda: len(w.certificates.keys) == 1 and len(w.issuers.keys) == 1 and w.idle())
            w.runtime.schedule_certificate((NS, "web"), w.clock.now() + timedelta(minutes=5))
            w.runtime.schedule_issuer((NS, "team"), w.clock.now() + timedelta(minutes=5))
            w.runtime.intake.certificate_event("DELETED", cert("web", "web-tls"))
            w.runtime.intake.issuer_event("DELETED", TEAM)
            assert w.runtime.queue.due_at(("cert", NS, "web")) is None
            assert w.runtime.queue.due_at(("issuer", NS, "team")) is None
            w.clock.advance(600)
            w.runtime.queue.release_due()
            await turns()
            await settle(w.idle)
            assert w.certificates.keys == [(NS, "web")]

    run(scenario())


def test_the_runtime_hands_one_clock_and_one_configuration_to_every_part() -> None:
    w = Wired()
    assert w.runtime.ctx.clock is w.clock and w.runtime.rollouts.clock is w.clock
    assert w.runtime.resync.clock is w.clock and w.runtime.ctx.config is w.runtime.config
    assert w.runtime.rollouts.pacing is w.runtime.config.pacing
    run(w.runtime.stop())
