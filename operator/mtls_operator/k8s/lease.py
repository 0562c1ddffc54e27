"""Leader election with a coordination.k8s.io/v1 Lease, so that of N replicas exactly one writes.

The algorithm is client-go's (``tools/leaderelection``): a candidate takes the Lease when it is free
(no holder) or when the holder has not renewed it for ``lease_duration`` seconds *as observed on the
candidate's own monotonic clock* (so clock skew between nodes does not matter); the leader renews it
every ``retry_period`` seconds and gives up leadership when it could not renew for ``renew_deadline``
seconds, which is shorter than ``lease_duration``: the old leader stops before a standby may start.
Every write carries the resourceVersion it read, so two candidates never both win (409 for the loser).

Correctness of the operator does not rest on this (its Secret writes are guarded by resourceVersion);
the Lease keeps a second replica from doing the same work and fighting over status.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mtls_operator.k8s.api import JSON, ApiClient, ApiError, group_path

logger = logging.getLogger("mtls_operator.lease")

COORDINATION = "coordination.k8s.io"


def default_identity() -> str:
    """The pod name (HOSTNAME in a pod) and the process id: unique even for two processes on one host."""
    host = os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or socket.gethostname()
    return f"{host}_{os.getpid()}"


def _micro_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseConfig:
    namespace: str
    name: str = "mtls-operator"
    identity: str = ""
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("leader election needs retry_period < renew_deadline < lease_duration")


@dataclass(frozen=True)
class _Observed:
    holder: str
    renew_time: str
    duration: float


class LeaderElector:
    """Acquire and hold one Lease. ``await acquire()``, then ``await hold(on_lost)`` in a task."""

    def __init__(
        self,
        api: ApiClient,
        config: LeaseConfig,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.api = api
        self.config = config
        self.identity = config.identity or default_identity()
        self._monotonic = monotonic
        self._wall = wall
        self._observed: _Observed | None = None
        self._observed_at = 0.0
        self.last_renewed = 0.0  # monotonic time of the last successful acquire or renew
        self.is_leader = False

    @property
    def path(self) -> str:
        return group_path(COORDINATION, "v1", self.config.namespace, "leases", self.config.name)

    def _observe(self, spec: dict[str, Any]) -> _Observed:
        seen = _Observed(
            holder=str(spec.get("holderIdentity") or ""),
            renew_time=str(spec.get("renewTime") or ""),
            duration=float(spec.get("leaseDurationSeconds") or self.config.lease_duration),
        )
        if seen != self._observed:
            self._observed = seen
            self._observed_at = self._monotonic()
        return seen

    def _spec(self, previous: dict[str, Any] | None, transitions: int) -> JSON:
        now = _micro_time(self._wall())
        acquired = (previous or {}).get("acquireTime") if self.is_leader_of(previous) else None
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": round(self.config.lease_duration),
            "acquireTime": acquired or now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    def is_leader_of(self, spec: dict[str, Any] | None) -> bool:
        return bool(spec) and (spec or {}).get("holderIdentity") == self.identity

    async def try_acquire_or_renew(self) -> bool:
        """One attempt, bounded in time: True when this candidate holds the Lease afterwards."""
        try:
            return await asyncio.wait_for(self._attempt(), timeout=self.config.renew_deadline / 2)
        except TimeoutError:
            logger.warning("Leader election: the API server did not answer in time.")
            return False

    async def _attempt(self) -> bool:
        try:
            lease = await self.api.get_or_none(self.path)
            if lease is None:
                body = {
                    "apiVersion": f"{COORDINATION}/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.config.name, "namespace": self.config.namespace},
                    "spec": self._spec(None, 0),
                }
                await self.api.request(
                    "POST", group_path(COORDINATION, "v1", self.config.namespace, "leases"), body=body
                )
                return self._won()
            spec = dict(lease.get("spec") or {})
            seen = self._observe(spec)
            mine = seen.holder == self.identity
            valid = self._observed_at + seen.duration > self._monotonic()
            if seen.holder and valid and not mine:
                self.is_leader = False
                return False
            transitions = int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)
            lease["spec"] = self._spec(spec, transitions)
            await self.api.request("PUT", self.path, body=lease)
            return self._won()
        except ApiError as exc:
            if exc.conflict:
                return False  # another candidate wrote first; look again next period
            logger.warning("Leader election: %s", exc)
            return False
        except (OSError, TimeoutError) as exc:
            logger.warning("Leader election: the API server is unreachable: %s", exc)
            return False

    def _won(self) -> bool:
        if not self.is_leader:
            logger.info("Became the leader (lease %s/%s).", self.config.namespace, self.config.name)
        self.is_leader = True
        self.last_renewed = self._monotonic()
        return True

    async def acquire(self) -> None:
        """Wait until this candidate holds the Lease."""
        logged = False
        while not await self.try_acquire_or_renew():
            if not logged and self._observed is not None:
                logger.info(
                    "Standing by: lease %s/%s is held by %s.",
                    self.config.namespace,
                    self.config.name,
                    self._observed.holder,
                )
                logged = True
            await asyncio.sleep(self.config.retry_period)

    async def hold(self, on_lost: Callable[[], None]) -> None:
        """Renew every retry_period; call ``on_lost`` once the Lease could not be renewed in time."""
        while True:
            await asyncio.sleep(self.config.retry_period)
            if await self.try_acquire_or_renew():
                continue
            holder = self._observed.holder if self._observed else ""
            lost_to_other = bool(holder) and holder != self.identity
            if lost_to_other or self._monotonic() - self.last_renewed >= self.config.renew_deadline:
                self.is_leader = False
                logger.error(
                    "Lost leadership of lease %s/%s (%s).",
                    self.config.namespace,
                    self.config.name,
                    f"now held by {holder}" if lost_to_other else "could not renew in time",
                )
                on_lost()
                return

    async def release(self) -> None:
        """Give the Lease up on a clean shutdown, so that a standby takes over at once."""
        if not self.is_leader:
            return
        self.is_leader = False
        try:
            lease = await self.api.get_or_none(self.path)
            if lease is None or not self.is_leader_of(lease.get("spec")):
                return
            spec = dict(lease["spec"])
            spec.update(holderIdentity="", leaseDurationSeconds=1, renewTime=_micro_time(self._wall()))
            spec.pop("acquireTime", None)
            lease["spec"] = spec
            await self.api.request("PUT", self.path, body=lease)
            logger.info("Released lease %s/%s.", self.config.namespace, self.config.name)
        except (ApiError, OSError, TimeoutError) as exc:
            logger.warning("Could not release the lease (a standby takes over when it expires): %s", exc)
