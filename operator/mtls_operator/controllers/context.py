"""What every controller shares: the API client, the configuration, the clock, the metrics, the stores and
caches, the crypto threads, and the work queue (as the four ways to ask for a reconcile)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from mtls_operator.api.objects import Key
from mtls_operator.controllers.clock import Clock
from mtls_operator.controllers.config import OperatorConfig
from mtls_operator.controllers.secret_cache import SecretCache
from mtls_operator.controllers.stores import CertificateStore, IssuerStore, NamespaceStore
from mtls_operator.k8s.api import ApiClient
from mtls_operator.observability.metrics import Metrics

InThread = Callable[..., Awaitable[Any]]


class Work(Protocol):
    """Reconcile requests: now (coalesced), or at a time (one timer heap)."""

    def add_certificate(self, key: Key) -> None: ...
    def add_issuer(self, key: Key) -> None: ...
    def schedule_certificate(self, key: Key, when: datetime) -> None: ...
    def schedule_issuer(self, key: Key, when: datetime) -> None: ...


@dataclass(frozen=True)
class Context:
    api: ApiClient
    config: OperatorConfig
    clock: Clock
    metrics: Metrics
    certificates: CertificateStore
    issuers: IssuerStore
    namespaces: NamespaceStore
    secrets: SecretCache
    in_thread: InThread
    work: Work
