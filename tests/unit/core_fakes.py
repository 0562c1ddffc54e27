"""Fakes for unit tests of the controller core: no cluster, no sleeping.

* :class:`FakeApi` stands in for :class:`mtls_operator.k8s.api.ApiClient`: every ``request`` is recorded
  and answered by a script (a function of method, path and keyword arguments).
* :class:`RecordingWork` is the :class:`mtls_operator.controllers.context.Work` the controllers ask for
  reconciles through; it records what was asked.
* :func:`settle` lets the event loop run what is ready (``asyncio.sleep(0)``, never a timed sleep) until a
  condition holds, with a bound on the number of turns instead of a deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from mtls_operator.api.models import KeyAlgorithm, Usage
from mtls_operator.api.objects import Key
from mtls_operator.api.tls import CertFacts
from mtls_operator.controllers.clock import FakeClock
from mtls_operator.controllers.config import OperatorConfig
from mtls_operator.controllers.context import Context
from mtls_operator.controllers.secret_cache import SecretCache
from mtls_operator.controllers.stores import CertificateStore, IssuerStore, NamespaceStore
from mtls_operator.k8s.api import ApiClient, ApiError
from mtls_operator.observability.metrics import Metrics

JSON = dict[str, Any]


@dataclass
class Call:
    method: str
    path: str
    kwargs: dict[str, Any]

    @property
    def body(self) -> Any:
        return self.kwargs.get("body")


Answer = Callable[[str, str, dict[str, Any]], JSON | None]


class FakeApi:
    """Answers ``request`` from a script; raises :class:`ApiError` when the script returns an ``ApiError``
    instance through :meth:`fail`, and 404 for anything the script does not answer."""

    def __init__(self, answer: Answer | None = None) -> None:
        self.calls: list[Call] = []
        self.answer = answer
        self.failures: dict[tuple[str, str], ApiError] = {}
        self.reads = 0
        self.writes = 0
        self.on_write: Callable[[str], None] | None = None

    def fail(self, method: str, path: str, status: int, reason: str = "Error", message: str = "") -> None:
        self.failures[(method, path)] = ApiError(status, reason, message or reason)

    async def request(self, method: str, path: str, **kwargs: Any) -> JSON:
        self.calls.append(Call(method, path, dict(kwargs)))
        if method == "GET":
            self.reads += 1
        else:
            self.writes += 1
        failure = self.failures.get((method, path))
        if failure is not None:
            raise failure
        found = self.answer(method, path, kwargs) if self.answer is not None else {}
        if found is None:
            raise ApiError(404, "NotFound", f"{path} not found")
        return found

    async def get(self, path: str) -> JSON:
        return await self.request("GET", path)

    async def get_or_none(self, path: str) -> JSON | None:
        try:
            return await self.get(path)
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    async def close(self) -> None:
        return None

    def as_client(self) -> ApiClient:
        return cast(ApiClient, self)

    def sent(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]


@dataclass
class RecordingWork:
    """What intake and the controllers asked to reconcile."""

    certificates: list[Key] = field(default_factory=list)
    issuers: list[Key] = field(default_factory=list)
    scheduled_certificates: list[tuple[Key, datetime]] = field(default_factory=list)
    scheduled_issuers: list[tuple[Key, datetime]] = field(default_factory=list)

    def add_certificate(self, key: Key) -> None:
        self.certificates.append(key)

    def add_issuer(self, key: Key) -> None:
        self.issuers.append(key)

    def schedule_certificate(self, key: Key, when: datetime) -> None:
        self.scheduled_certificates.append((key, when))

    def schedule_issuer(self, key: Key, when: datetime) -> None:
        self.scheduled_issuers.append((key, when))

    def clear(self) -> None:
        self.certificates.clear()
        self.issuers.clear()
        self.scheduled_certificates.clear()
        self.scheduled_issuers.clear()

    @property
    def nothing(self) -> bool:
        return not (
            self.certificates or self.issuers or self.scheduled_certificates or self.scheduled_issuers
        )


async def _not_in_tests(*_: Any, **__: Any) -> Any:
    raise AssertionError("no crypto in these tests")


def make_context(
    api: FakeApi | None = None,
    *,
    clock: FakeClock | None = None,
    work: RecordingWork | None = None,
    config: OperatorConfig | None = None,
) -> Context:
    return Context(
        api=(api or FakeApi()).as_client(),
        config=config or OperatorConfig(),
        clock=clock or FakeClock(),
        metrics=Metrics(),
        certificates=CertificateStore(),
        issuers=IssuerStore(),
        namespaces=NamespaceStore(),
        secrets=SecretCache(),
        in_thread=_not_in_tests,
        work=work or RecordingWork(),
    )


async def settle(done: Callable[[], bool], turns: int = 200) -> None:
    """Let ready tasks run until ``done()`` holds; fail after ``turns`` turns of the loop."""
    for _ in range(turns):
        if done():
            return
        await asyncio.sleep(0)
    assert done(), f"not settled after {turns} turns of the event loop"


async def turns(count: int = 20) -> None:
    """Let ready tasks run for ``count`` turns of the loop (to show that nothing more happens)."""
    for _ in range(count):
        await asyncio.sleep(0)


def leaf_facts(not_before: datetime, not_after: datetime, **changes: Any) -> CertFacts:
    """The facts of an ECDSA P-256 leaf for "web", signed by CA "cafp"; ``changes`` override fields."""
    fields: dict[str, Any] = {
        "serial_number": "0a",
        "fingerprint": "leaffp",
        "not_before": not_before,
        "not_after": not_after,
        "common_name": "web",
        "dns_names": (),
        "ip_addresses": (),
        "uris": (),
        "email_addresses": (),
        "usages": frozenset({Usage.SERVER_AUTH, Usage.CLIENT_AUTH, Usage.DIGITAL_SIGNATURE}),
        "is_ca": False,
        "key_algorithm": KeyAlgorithm.ECDSA,
        "key_size": 256,
        "issuer_fingerprint": "cafp",
    }
    fields.update(changes)
    return CertFacts(**fields)


def run(coro: Awaitable[Any]) -> Any:
    async def main() -> Any:
        return await coro

    return asyncio.run(main())
