"""Wiring: the stores, the caches, the work queue and the controllers, built from one configuration and
one clock. Nothing is decided here.

kopf only watches and dispatches (``on.event`` handlers, which write nothing of their own); intake parses
the events into the stores and queues keys; one work queue (coalesced, one worker per key, one timer heap)
runs the issuer and certificate reconciles; the rollout manager restarts workloads; the resync compares the
stores with a fresh list now and then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

from mtls_operator.api.objects import Key
from mtls_operator.controllers.certificates.controller import CertificateController
from mtls_operator.controllers.certificates.gather import Gatherer
from mtls_operator.controllers.certificates.issuing import Issuer
from mtls_operator.controllers.clock import SYSTEM_CLOCK, Clock
from mtls_operator.controllers.config import OperatorConfig
from mtls_operator.controllers.context import Context
from mtls_operator.controllers.intake import Intake
from mtls_operator.controllers.issuers import IssuerController
from mtls_operator.controllers.podcerts import PodCertificateSigner
from mtls_operator.controllers.resync import Resync
from mtls_operator.controllers.revocation import Revocations
from mtls_operator.controllers.rollouts import RolloutManager
from mtls_operator.controllers.secret_cache import SecretCache
from mtls_operator.controllers.stores import CertificateStore, IssuerStore, NamespaceStore
from mtls_operator.controllers.trust import TrustManager
from mtls_operator.controllers.trust_bundles import BundleIndex
from mtls_operator.controllers.versions import ManagedVersions
from mtls_operator.controllers.workqueue import WorkQueue
from mtls_operator.k8s.api import ApiClient
from mtls_operator.observability.heap import HEAP
from mtls_operator.observability.metrics import Metrics
from mtls_operator.policy.budget import BudgetState

logger = logging.getLogger("mtls_operator")
T = TypeVar("T")
ISSUER = "issuer"
# A certificate's work key is its key, the store's own (namespace, name) tuple, so that 10k waiting renewals
# hold no tuple of their own; an issuer's is ("issuer", namespace, name).
WorkKey = Key | tuple[str, str, str]


class Runtime:
    def __init__(
        self,
        api: ApiClient,
        config: OperatorConfig,
        *,
        metrics: Metrics | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.api = api
        self.config = config
        self.clock = clock
        self.metrics = metrics or Metrics()
        api.on_write = lambda verb: self.metrics.api_write(verb=verb)
        self.executor = ThreadPoolExecutor(config.crypto_threads, thread_name_prefix="mtls-crypto")
        self.queue: WorkQueue[WorkKey] = WorkQueue(
            self._process, workers=config.workers, name="mtls", on_idle=self._idle, clock=clock
        )
        self.ctx = ctx = Context(
            api=api,
            config=config,
            clock=clock,
            metrics=self.metrics,
            certificates=CertificateStore(),
            issuers=IssuerStore(config.cluster_namespace),
            namespaces=NamespaceStore(),
            secrets=SecretCache(),
            in_thread=self._in_thread,
            work=self,
        )
        budgets: dict[Key, BudgetState] = {}
        self.revocations = Revocations(api, self.metrics, clock.now)
        bundles = BundleIndex()
        self.rollouts = RolloutManager(
            api,
            ManagedVersions(ctx.certificates, ctx.secrets, bundles),
            pacing=config.pacing,
            metrics=self.metrics,
            notify=self._secrets_need_look,
            clock=clock,
        )
        self.trust = TrustManager(ctx, self.rollouts, bundles)
        self.issuers = IssuerController(ctx, self.trust, self.revocations)
        gatherer = Gatherer(ctx, self.issuers, self.revocations, budgets)
        writer = Issuer(api, self.revocations, ctx.issuers, self._in_thread)
        self.controller = CertificateController(
            ctx, self.issuers, gatherer, writer, self.revocations, self.rollouts, budgets
        )
        self.intake = Intake(ctx, self.rollouts, self._forget_certificate, self._forget_issuer)
        # PodCertificateRequests: their own queue and workers (a flood never delays certificates).
        self.podcerts = PodCertificateSigner(ctx, self.issuers, self.revocations)
        self.resync = Resync(ctx, self.intake)
        self._background: set[asyncio.Task[None]] = set()
        self._idle_logged = (0, 0.0)
        self._idle_pending = False
        self._trimmed_at = 0  # queue.processed at the last heap trim

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.queue.start()
        self.podcerts.start()
        self.rollouts.start()
        self.resync.start()
        served = self.config.revocation
        task = asyncio.create_task(
            self.revocations.start((served.bind, served.port) if served.port else None)
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def stop(self) -> None:
        await self.resync.stop()
        await self.revocations.stop()
        await self.rollouts.stop()
        await self.podcerts.stop()
        await self.queue.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
        await self.api.close()

    # ------------------------------------------------------------------ the queue

    def add_certificate(self, key: Key) -> None:
        self.queue.add(key)

    def add_issuer(self, key: Key) -> None:
        self.queue.add((ISSUER, *key))

    def schedule_certificate(self, key: Key, when: datetime) -> None:
        self.queue.add_at(key, when)

    def schedule_issuer(self, key: Key, when: datetime) -> None:
        self.queue.add_at((ISSUER, *key), when)

    async def _process(self, key: WorkKey) -> None:
        if len(key) == 2:
            await self.controller.reconcile(key)
        else:
            await self.issuers.reconcile(key[1:])

    def _secrets_need_look(self, namespace: str, secrets: Iterable[str]) -> None:
        for secret in secrets:
            for name in self.ctx.certificates.naming_secret(namespace, secret):
                self.add_certificate((namespace, name))

    def _forget_certificate(self, key: Key) -> None:
        self.queue.forget(key)
        self.controller.forget(key)

    def _forget_issuer(self, key: Key) -> None:
        self.queue.forget((ISSUER, *key))
        self.issuers.forget(key)

    async def _in_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: fn(*args, **kwargs))

    # ------------------------------------------------------------------ a quiet operator says so

    def _idle(self) -> None:
        """Log when the queue drains, at most once a second and always after the last drain."""
        self.ctx.secrets.drop_delivered(self.clock.monotonic())  # what no certificate took in time
        if self._idle_pending or self.queue.processed == self._idle_logged[0]:
            return
        delay = max(0.0, 1.0 - (self.clock.monotonic() - self._idle_logged[1]))
        self._idle_pending = True
        asyncio.get_running_loop().call_later(delay, self._log_idle)

    def _log_idle(self) -> None:
        self._idle_pending = False
        self._idle_logged = (self.queue.processed, self.clock.monotonic())
        if self.queue.processed - self._trimmed_at >= 100:  # after real work, not every small drain
            self._trimmed_at = self.queue.processed
            HEAP.now()  # what the work just done freed goes back to the system (observability.heap)
        logger.info(
            "Queue idle: processed=%d writes=%d reads=%d issued=%d waiting=%d",
            self.queue.processed,
            self.api.writes,
            self.api.reads,
            self.controller.issued,
            self.queue.waiting,
        )
