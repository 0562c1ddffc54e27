"""controllers.rollouts.RolloutManager with a fake clock and a fake API: which workloads it indexes, when it
stamps them (coalescing window, rollouts in flight, minimum interval), the loop guard and how certificates
hear of it, explicit targets and their opt-in, and settled() for CA rotations.

The manager's loop sleeps between steps; these tests drive one step at a time (``_step``) instead."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import pytest
from tests.unit.core_fakes import FakeApi, run

from mtls_operator.api.conditions import rfc3339
from mtls_operator.api.constants import ANN_ROLLOUT_TARGET_OF, Reason
from mtls_operator.controllers.clock import FakeClock
from mtls_operator.controllers.rollouts import ANN_STAMPED_FOR, UNKNOWN, RolloutManager, Version
from mtls_operator.k8s.api import MERGE_PATCH
from mtls_operator.policy.rollout import (
    ANN_HISTORY,
    ANN_OPT_OUT,
    ANN_STAMP,
    OPT_OUT_VALUE,
    Pacing,
    SecretVersion,
    stamp_for,
)

NS = "demo"
PACING = Pacing(
    max_in_flight=2,
    min_interval=timedelta(minutes=1),
    coalesce=timedelta(seconds=10),
    max_per_hour=3,
    timeout=timedelta(minutes=10),
)


class Versions:
    """The read-only view of what each managed Secret holds."""

    def __init__(self) -> None:
        self.held: dict[tuple[str, str], Version] = {}

    def version(self, namespace: str, ref: str) -> Version:
        return self.held.get((namespace, ref))


class World:
    def __init__(self, pacing: Pacing = PACING) -> None:
        self.clock = FakeClock()
        self.created = self.clock.now() - timedelta(days=1)
        self.api = FakeApi()
        self.versions = Versions()
        self.notified: list[tuple[str, list[str]]] = []
        self.manager = RolloutManager(
            self.api.as_client(), self.versions, pacing=pacing, notify=self.notify, clock=self.clock
        )

    def notify(self, namespace: str, secrets: Iterable[str]) -> None:
        self.notified.append((namespace, sorted(secrets)))

    def renew(self, secret: str, fingerprint: str, revision: int = 2) -> SecretVersion:
        """The Secret holds a certificate issued now (after every workload was created)."""
        version = SecretVersion(secret, fingerprint, revision, self.clock.now())
        self.versions.held[(NS, secret)] = version
        return version

    def workload(
        self,
        name: str,
        secrets: Iterable[str] = (),
        *,
        kind: str = "Deployment",
        annotations: dict[str, str] | None = None,
        stamp: str | None = None,
        complete: bool = True,
        event: str | None = "ADDED",
    ) -> None:
        body = deployment(
            name, secrets, self.created, annotations=annotations, stamp=stamp, complete=complete
        )
        self.manager.on_workload_event(kind, event, body)

    async def step(self) -> float:
        return await self.manager.step()

    async def after(self, seconds: float) -> None:
        """Let ``seconds`` pass, then take one step."""
        self.clock.advance(seconds)
        await self.step()

    async def changed(self, secret: str = "web-tls") -> None:
        """The certificate controller reports new content; the look comes after the coalescing window."""
        self.manager.secret_changed(NS, secret)
        await self.after(self.manager.pacing.coalesce.total_seconds())

    async def renewed(self, secret: str, fingerprint: str, revision: int = 2) -> SecretVersion:
        version = self.renew(secret, fingerprint, revision)
        await self.changed(secret)
        return version

    def patched(self) -> list[str]:
        return [c.path.rsplit("/", 1)[1] for c in self.api.sent("PATCH")]


def deployment(
    name: str,
    secrets: Iterable[str],
    created: datetime,
    *,
    annotations: dict[str, str] | None = None,
    stamp: str | None = None,
    complete: bool = True,
) -> dict[str, Any]:
    template: dict[str, Any] = {
        "spec": {
            "containers": [{"name": "app"}],
            "volumes": [{"name": s, "secret": {"secretName": s}} for s in secrets],
        }
    }
    if stamp is not None:
        template["metadata"] = {"annotations": {ANN_STAMP: stamp}}
    status = (
        {"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}
        if complete
        else {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 1}
    )
    return {
        "metadata": {
            "namespace": NS,
            "name": name,
            "generation": 2,
            "creationTimestamp": rfc3339(created),
            "annotations": annotations or {},
        },
        "spec": {"replicas": 1, "template": template},
        "status": status,
    }


# ---------------------------------------------------------------------------------------------------------
# The index of workloads


def test_a_workload_is_indexed_by_the_secrets_it_uses_until_it_goes() -> None:
    w = World()
    w.workload("web", ["web-tls", "db-tls"])
    assert w.manager.by_secret[(NS, "web-tls")] == {(NS, "Deployment", "web")}
    w.workload("web", ["db-tls"], event="MODIFIED")
    assert (NS, "web-tls") not in w.manager.by_secret or not w.manager.by_secret[(NS, "web-tls")]
    w.workload("web", ["db-tls"], event="DELETED")
    assert w.manager.workloads == {} and (NS, "db-tls") not in w.manager.by_secret


@pytest.mark.parametrize(
    ("secrets", "annotations", "stored"),
    [
        pytest.param([], None, False, id="a workload that uses no Secret or ConfigMap is not stored"),
        pytest.param(["anything"], None, True, id="a workload that uses a Secret is stored"),
        pytest.param(
            [], {ANN_ROLLOUT_TARGET_OF: "web"}, True, id="a workload that opted in as a target is stored"
        ),
    ],
)
def test_which_workloads_are_stored(
    secrets: list[str], annotations: dict[str, str] | None, stored: bool
) -> None:
    w = World()
    w.workload("app", secrets, annotations=annotations)
    assert ((NS, "Deployment", "app") in w.manager.workloads) is stored


def test_a_workload_that_stops_using_secrets_is_forgotten() -> None:
    w = World()
    w.workload("app", ["web-tls"])
    w.workload("app", [], event="MODIFIED")
    assert w.manager.workloads == {} and w.manager.due == {}


# ---------------------------------------------------------------------------------------------------------
# Restarts


def test_a_renewal_restarts_the_workloads_using_the_secret_once_with_a_content_address() -> None:
    async def scenario() -> None:
        w = World()
        w.workload("web", ["web-tls"])
        w.workload("other", ["other-tls"])
        await w.step()  # first look: nothing renewed since they were created
        assert w.patched() == []
        version = await w.renewed("web-tls", "fp2")
        assert w.patched() == ["web"]
        call = w.api.calls[0]
        assert call.path == f"/apis/apps/v1/namespaces/{NS}/deployments/web"
        assert call.kwargs["content_type"] == MERGE_PATCH
        annotations = call.body["metadata"]["annotations"]
        assert annotations[ANN_STAMPED_FOR] == "web-tls=fp2"
        assert annotations[ANN_HISTORY] == str(int(w.clock.now().timestamp()))
        assert call.body["spec"]["template"]["metadata"]["annotations"][ANN_STAMP] == stamp_for([version])
        w.clock.advance(60)
        await w.changed("web-tls")  # the same content again: the stamp already says so
        assert w.patched() == ["web"] and w.manager.restarts == 1

    run(scenario())


def test_renewals_within_the_coalescing_window_restart_a_workload_once() -> None:
    async def scenario() -> None:
        w = World()
        w.workload("web", ["a-tls", "b-tls"])
        await w.step()
        w.renew("a-tls", "a2")
        w.manager.secret_changed(NS, "a-tls")
        w.clock.advance(6)
        w.renew("b-tls", "b2")
        w.manager.secret_changed(NS, "b-tls")  # pushes the look back to 10 s after this change
        await w.after(5)
        assert w.patched() == []
        await w.after(5)
        assert w.patched() == ["web"]
        assert w.api.calls[0].body["metadata"]["annotations"][ANN_STAMPED_FOR] == "a-tls=a2,b-tls=b2"

    run(scenario())


def test_no_more_than_max_in_flight_rollouts_run_at_once() -> None:
    async def scenario() -> None:
        w = World()
        for name in ("a", "b", "c"):
            w.workload(name, ["web-tls"])
        await w.step()
        await w.renewed("web-tls", "fp2")
        assert w.patched() == ["a", "b"] and set(w.manager.in_flight) == {(NS, "Deployment", n) for n in "ab"}
        await w.step()
        assert w.patched() == ["a", "b"]  # c waits for capacity
        w.workload("a", ["web-tls"], stamp=stamp_for([w.versions.held[(NS, "web-tls")]]), event="MODIFIED")
        assert (NS, "Deployment", "a") not in w.manager.in_flight  # its rollout completed
        await w.step()
        assert w.patched() == ["a", "b", "c"] and w.manager.max_in_flight_seen == 2

    run(scenario())


def test_a_rollout_that_never_completes_stops_counting_after_the_timeout() -> None:
    async def scenario() -> None:
        w = World(Pacing(max_in_flight=1, coalesce=timedelta(seconds=10), timeout=timedelta(minutes=10)))
        for name in ("a", "b"):
            w.workload(name, ["web-tls"])
        await w.step()
        await w.renewed("web-tls", "fp2")
        assert w.patched() == ["a"]
        await w.after(599)
        assert w.patched() == ["a"]
        await w.after(1)
        assert w.patched() == ["a", "b"]

    run(scenario())


def test_a_workload_restarted_recently_waits_for_the_minimum_interval() -> None:
    async def scenario() -> None:
        w = World()
        w.workload("web", ["web-tls"])
        await w.step()
        await w.renewed("web-tls", "fp2")
        assert w.patched() == ["web"]
        # 10 s after the last restart: it waits until a minute has passed
        await w.renewed("web-tls", "fp3", revision=3)
        assert w.patched() == ["web"]
        await w.after(49)
        assert w.patched() == ["web"]
        await w.after(1)
        assert w.patched() == ["web", "web"]

    run(scenario())


def test_opted_out_workloads_and_secrets_not_judged_yet_are_left_alone() -> None:
    async def scenario() -> None:
        w = World()
        w.workload("quiet", ["web-tls"], annotations={ANN_OPT_OUT: OPT_OUT_VALUE})
        w.workload("web", ["judged-later"])
        w.versions.held[(NS, "judged-later")] = UNKNOWN
        w.renew("web-tls", "fp2")
        await w.after(10)
        assert w.patched() == [] and w.manager.due == {}
        w.renew("judged-later", "fp2")
        await w.changed("judged-later")  # judged now: it comes back
        assert w.patched() == ["web"]

    run(scenario())


def test_a_workload_deleted_before_its_patch_is_forgotten() -> None:
    async def scenario() -> None:
        w = World()
        w.workload("web", ["web-tls"])
        w.renew("web-tls", "fp2")
        w.api.fail("PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/web", 404, "NotFound")
        await w.step()
        assert len(w.api.calls) == 1 and w.manager.due == {} and w.manager.restarts == 0

    run(scenario())


# ---------------------------------------------------------------------------------------------------------
# The loop guard


def history(clock: FakeClock, *minutes_ago: int) -> dict[str, str]:
    now = int(clock.now().timestamp())
    return {ANN_HISTORY: ",".join(str(now - 60 * m) for m in minutes_ago)}


def test_the_loop_guard_blocks_and_tells_the_certificates_then_lifts_when_a_restart_is_allowed() -> None:
    async def scenario() -> None:
        w = World()
        w.renew("web-tls", "fp9", revision=9)
        w.workload("web", ["web-tls"], annotations=history(w.clock, 50, 30, 10))
        await w.step()
        assert w.patched() == []
        assert w.notified == [(NS, ["web-tls"])]
        blocked = w.manager.blocked(NS, "web-tls", "web")
        assert blocked is not None and blocked[0] == Reason.ROLLOUT_LOOP_GUARD
        assert "restarted 3 times in the last hour" in blocked[1]
        await w.changed("web-tls")
        assert w.notified == [(NS, ["web-tls"])]  # told once, not at every look
        w.clock.advance(11 * 60)  # the oldest restart leaves the hour
        await w.changed("web-tls")
        assert w.patched() == ["web"]
        assert w.manager.blocked(NS, "web-tls", "web") is None
        assert w.notified == [(NS, ["web-tls"]), (NS, ["web-tls"])]

    run(scenario())


def test_the_loop_guard_lifts_when_the_workload_already_runs_what_the_secret_holds() -> None:
    async def scenario() -> None:
        w = World()
        version = w.renew("web-tls", "fp9", revision=9)
        w.workload("web", ["web-tls"], annotations=history(w.clock, 50, 30, 10))
        await w.step()
        assert w.manager.blocked(NS, "web-tls", "web") is not None
        w.workload("web", ["web-tls"], annotations=history(w.clock, 50, 30, 10), stamp=stamp_for([version]))
        await w.changed("web-tls")
        assert w.manager.blocked(NS, "web-tls", "web") is None and w.patched() == []
        assert w.notified[-1] == (NS, ["web-tls"])

    run(scenario())


# ---------------------------------------------------------------------------------------------------------
# Explicit targets


def test_an_explicit_target_that_opted_in_is_restarted_without_mounting_the_secret() -> None:
    async def scenario() -> None:
        w = World()
        w.manager.set_certificate_targets(NS, "web", "web-tls", "Auto", [("Deployment", "batch")])
        w.workload("batch", ["unrelated"], annotations={ANN_ROLLOUT_TARGET_OF: "web"})
        await w.step()
        assert w.manager.blocked(NS, "web-tls", "web") is None
        await w.renewed("web-tls", "fp2")
        assert w.patched() == ["batch"]

    run(scenario())


def test_an_explicit_target_that_did_not_opt_in_is_reported_and_never_restarted() -> None:
    async def scenario() -> None:
        w = World()
        w.manager.set_certificate_targets(NS, "web", "web-tls", "Auto", [("Deployment", "batch")])
        w.workload("batch", ["unrelated"], annotations={ANN_ROLLOUT_TARGET_OF: "api"})
        blocked = w.manager.blocked(NS, "web-tls", "web")
        assert blocked is not None and blocked[0] == Reason.ROLLOUT_TARGET_NOT_OPTED_IN
        assert "Deployment batch" in blocked[1] and f"{ANN_ROLLOUT_TARGET_OF}=web" in blocked[1]
        await w.renewed("web-tls", "fp2")
        assert w.patched() == []
        w.manager.set_certificate_targets(NS, "web", None, "Auto", [])  # the certificate is gone
        assert w.manager.blocked(NS, "web-tls", "web") is None

    run(scenario())


def test_an_explicit_target_that_mounts_nothing_and_did_not_opt_in_is_reported() -> None:
    w = World()
    w.manager.set_certificate_targets(NS, "web", "web-tls", "Auto", [("Deployment", "batch")])
    w.workload("batch", [])
    blocked = w.manager.blocked(NS, "web-tls", "web")
    assert blocked is not None and blocked[0] == Reason.ROLLOUT_TARGET_NOT_OPTED_IN


def test_a_workload_that_mounts_the_secret_needs_no_opt_in_to_be_an_explicit_target() -> None:
    w = World()
    w.manager.set_certificate_targets(NS, "web", "web-tls", "Explicit", [("Deployment", "web")])
    w.workload("web", ["web-tls"])
    assert w.manager.blocked(NS, "web-tls", "web") is None


def test_rollout_policy_explicit_restarts_only_the_targets() -> None:
    async def scenario() -> None:
        w = World()
        w.manager.set_certificate_targets(NS, "web", "web-tls", "Explicit", [("Deployment", "chosen")])
        w.workload("chosen", ["web-tls"])
        w.workload("mounter", ["web-tls"])
        await w.step()
        await w.renewed("web-tls", "fp2")
        assert w.patched() == ["chosen"]

    run(scenario())


def test_a_certificate_back_to_policy_auto_restarts_every_mounter_again() -> None:
    async def scenario() -> None:
        w = World()
        w.manager.set_certificate_targets(NS, "web", "web-tls", "Explicit", [("Deployment", "chosen")])
        w.manager.set_certificate_targets(NS, "web", "web-tls", "Auto", [])
        w.workload("chosen", ["web-tls"])
        w.workload("mounter", ["web-tls"])
        await w.step()
        await w.renewed("web-tls", "fp2")
        assert sorted(w.patched()) == ["chosen", "mounter"]

    run(scenario())


def test_certificates_with_policy_auto_cost_the_index_nothing() -> None:
    w = World()
    for i in range(100):
        w.manager.set_certificate_targets(NS, f"c{i}", f"c{i}-tls", "Auto", [])
    assert w.manager.excluded == {}


# ---------------------------------------------------------------------------------------------------------
# settled(): the "consumers restarted" observation of a CA rotation


def test_settled_is_true_only_once_every_user_of_a_secret_runs_what_it_holds() -> None:
    async def scenario() -> None:
        w = World()
        w.workload("web", ["web-tls"])
        w.workload("quiet", ["web-tls"], annotations={ANN_OPT_OUT: OPT_OUT_VALUE})
        await w.step()
        assert w.manager.settled(NS, "web-tls")
        version = w.renew("web-tls", "fp2")
        assert not w.manager.settled(NS, "web-tls")  # a restart is needed
        w.manager.secret_changed(NS, "web-tls")
        assert not w.manager.settled(NS, "web-tls")  # and it is due
        await w.after(10)
        assert w.patched() == ["web"]
        assert not w.manager.settled(NS, "web-tls")  # stamped, but the old pods still serve
        w.workload("web", ["web-tls"], stamp=stamp_for([version]), complete=False, event="MODIFIED")
        assert not w.manager.settled(NS, "web-tls")  # rolling
        w.workload("web", ["web-tls"], stamp=stamp_for([version]), event="MODIFIED")
        assert w.manager.settled(NS, "web-tls")  # rolled: the pods run what the Secret holds
        w.versions.held[(NS, "web-tls")] = UNKNOWN
        assert not w.manager.settled(NS, "web-tls")  # not judged: cannot say
        w.versions.held[(NS, "web-tls")] = version
        assert w.manager.settled(NS, "nobody-uses-this")

    run(scenario())


def test_a_rollout_that_never_completes_counts_as_settled_after_the_timeout() -> None:
    """A CA rotation waits for its consumers' rollouts, but not forever for one that never completes."""

    async def scenario() -> None:
        w = World(Pacing(max_in_flight=1, coalesce=timedelta(seconds=10), timeout=timedelta(minutes=10)))
        w.workload("web", ["web-tls"])
        await w.step()
        await w.renewed("web-tls", "fp2")
        assert w.patched() == ["web"]
        assert not w.manager.settled(NS, "web-tls")
        await w.after(600)
        assert w.manager.settled(NS, "web-tls")

    run(scenario())


def test_a_workload_held_by_the_loop_guard_counts_as_settled() -> None:
    async def scenario() -> None:
        w = World()
        w.renew("web-tls", "fp9", revision=9)
        w.workload("web", ["web-tls"], annotations=history(w.clock, 50, 30, 10))
        await w.step()
        assert w.manager.blocked(NS, "web-tls", "web") is not None
        assert w.manager.settled(NS, "web-tls")

    run(scenario())


def test_deleting_the_workload_held_by_the_loop_guard_lifts_the_block() -> None:
    async def scenario() -> None:
        w = World()
        w.renew("web-tls", "fp9", revision=9)
        w.workload("web", ["web-tls"], annotations=history(w.clock, 50, 30, 10))
        await w.step()
        assert w.manager.blocked(NS, "web-tls", "web") is not None
        w.workload("web", ["web-tls"], event="DELETED")
        await w.step()
        assert w.manager.blocked(NS, "web-tls", "web") is None

    run(scenario())


def test_a_block_stays_while_one_of_the_workloads_using_the_secret_is_still_held() -> None:
    async def scenario() -> None:
        w = World()
        w.workload("a", ["web-tls"], annotations=history(w.clock, 50, 30, 10))
        w.workload("b", ["web-tls"])
        await w.step()
        await w.renewed("web-tls", "fp9", revision=9)
        assert w.patched() == ["b"]
        assert w.manager.blocked(NS, "web-tls", "web") is not None

    run(scenario())
