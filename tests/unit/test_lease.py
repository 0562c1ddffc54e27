"""Leader election over a Lease, against an in-memory API with resourceVersion semantics and fake clocks."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mtls_operator.k8s.api import ApiError
from mtls_operator.k8s.lease import LeaderElector, LeaseConfig

PATH = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/mtls-operator"


class FakeApi:
    """Just enough of ApiClient for leases: GET, POST (409 if exists), PUT (409 on a stale version)."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.down = False
        self.puts = 0

    async def get_or_none(self, path: str) -> dict[str, Any] | None:
        assert path == PATH
        if self.down:
            raise OSError("connection refused")
        return copy.deepcopy(self.lease)

    async def request(self, method: str, path: str, *, body: Mapping[str, Any], **_: Any) -> dict[str, Any]:
        if self.down:
            raise OSError("connection refused")
        if method == "POST":
            if self.lease is not None:
                raise ApiError(409, "AlreadyExists", "exists")
        else:
            assert method == "PUT" and path == PATH
            assert self.lease is not None
            if body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", "the object has been modified")
            self.puts += 1
        self.version += 1
        self.lease = copy.deepcopy(dict(body))
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(self.lease)

    @property
    def holder(self) -> str:
        return str((self.lease or {}).get("spec", {}).get("holderIdentity", ""))


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def elector(api: FakeApi, identity: str, clock: Clock) -> LeaderElector:
    config = LeaseConfig(
        namespace="ops", identity=identity, lease_duration=15, renew_deadline=10, retry_period=2
    )
    return LeaderElector(
        api,  # type: ignore[arg-type]
        config,
        monotonic=clock,
        wall=lambda: datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=clock.t - 1000.0),
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_the_first_candidate_creates_the_lease_and_leads() -> None:
    api, clock = FakeApi(), Clock()
    a = elector(api, "a", clock)
    assert run(a.try_acquire_or_renew())
    assert api.holder == "a"
    assert api.lease is not None and api.lease["spec"]["leaseDurationSeconds"] == 15
    assert api.lease["spec"]["renewTime"] == "2026-01-01T00:00:00.000000Z"


def test_a_standby_waits_while_the_leader_renews() -> None:
    api, clock = FakeApi(), Clock()
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    assert run(a.try_acquire_or_renew())
    for _ in range(20):
        assert not run(b.try_acquire_or_renew())
        clock.t += 2
        assert run(a.try_acquire_or_renew())
    assert api.holder == "a"


def test_a_standby_takes_over_a_lease_not_renewed_for_its_duration_on_its_own_clock() -> None:
    api, clock = FakeApi(), Clock()
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    assert run(a.try_acquire_or_renew())
    assert not run(b.try_acquire_or_renew())  # b first sees the record now
    clock.t += 14.9
    assert not run(b.try_acquire_or_renew())
    clock.t += 0.2
    assert run(b.try_acquire_or_renew())
    assert api.holder == "b"
    assert api.lease is not None and api.lease["spec"]["leaseTransitions"] == 1


def test_a_new_candidate_never_takes_over_at_once_even_from_a_stale_looking_record() -> None:
    """Clock skew safety: expiry is measured from when *this* candidate saw the record, not renewTime."""
    api, clock = FakeApi(), Clock()
    assert run(elector(api, "a", clock).try_acquire_or_renew())
    api.lease["spec"]["renewTime"] = "2001-01-01T00:00:00.000000Z"  # type: ignore[index]
    assert not run(elector(api, "b", clock).try_acquire_or_renew())


def test_the_old_leader_gives_up_before_a_standby_may_take_over() -> None:
    api, clock = FakeApi(), Clock()
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    assert run(a.try_acquire_or_renew())
    assert not run(b.try_acquire_or_renew())  # b's lease timer starts now, at the last renewal
    renewed = a.last_renewed
    api.down = True  # from now on a cannot renew; every attempt takes one retry period of time
    real_get = api.get_or_none

    async def slow_get(path: str) -> dict[str, Any] | None:
        clock.t += 2
        return await real_get(path)

    api.get_or_none = slow_get  # type: ignore[method-assign]
    lost: list[float] = []
    a.config = LeaseConfig(
        namespace="ops", identity="a", lease_duration=15, renew_deadline=10, retry_period=0.001
    )
    run(asyncio.wait_for(a.hold(lambda: lost.append(clock.t)), timeout=5))
    assert lost, "a never gave up"
    assert 10 <= lost[0] - renewed < 15  # gave up after the renew deadline, before b's lease expiry
    api.down = False
    api.get_or_none = real_get  # type: ignore[method-assign]
    clock.t = renewed + 15.1
    assert run(b.try_acquire_or_renew())


def test_losing_the_lease_to_another_holder_is_noticed_at_the_next_renewal() -> None:
    api, clock = FakeApi(), Clock()
    a = elector(api, "a", clock)
    assert run(a.try_acquire_or_renew())
    api.lease["spec"]["holderIdentity"] = "intruder"  # type: ignore[index]
    api.lease["spec"]["renewTime"] = "x"  # type: ignore[index]
    lost: list[bool] = []
    a.config = LeaseConfig(
        namespace="ops", identity="a", lease_duration=15, renew_deadline=10, retry_period=0.001
    )
    run(asyncio.wait_for(a.hold(lambda: lost.append(True)), timeout=5))
    assert lost == [True]
    assert not a.is_leader


def test_release_lets_a_standby_take_over_at_once() -> None:
    api, clock = FakeApi(), Clock()
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    assert run(a.try_acquire_or_renew())
    assert not run(b.try_acquire_or_renew())
    run(a.release())
    assert api.holder == ""
    assert run(b.try_acquire_or_renew())


def test_two_candidates_racing_on_one_version_elect_exactly_one() -> None:
    api, clock = FakeApi(), Clock()
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    run(a.try_acquire_or_renew())
    run(a.release())

    async def race() -> list[bool]:
        return list(await asyncio.gather(a.try_acquire_or_renew(), b.try_acquire_or_renew()))

    assert sorted(run(race())) == [False, True]


@pytest.mark.parametrize(
    ("duration", "deadline", "retry"),
    [
        pytest.param(10, 10, 2, id="refuses a renew deadline as long as the lease"),
        pytest.param(15, 10, 10, id="refuses a retry period as long as the renew deadline"),
    ],
)
def test_config_keeps_the_old_leader_stopping_first(duration: float, deadline: float, retry: float) -> None:
    with pytest.raises(ValueError, match="retry_period < renew_deadline < lease_duration"):
        LeaseConfig(namespace="ops", lease_duration=duration, renew_deadline=deadline, retry_period=retry)
