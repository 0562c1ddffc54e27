"""`mtlsctl revoke` without a cluster: the parser, the annotations it sets, and when it sets them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from mtls_operator.cli import revoke
from mtls_operator.cli.cluster import ClusterError
from mtls_operator.cli.main import COMMANDS, build_parser
from mtls_operator.k8s.api import ApiClient, ApiError

NOW = datetime(2026, 3, 1, 12, 0, 0, 999_000, tzinfo=UTC)


class FakeApi:
    def __init__(self, error: ApiError | None = None) -> None:
        self.calls: list[tuple[str, str, Any, str]] = []
        self.error = error

    async def request(
        self, method: str, path: str, *, body: Any = None, content_type: str = ""
    ) -> dict[str, Any]:
        self.calls.append((method, path, body, content_type))
        if self.error is not None:
            raise self.error
        return {"status": {"serialNumber": "1a2b"}}


def test_revoke_is_registered_with_its_reasons() -> None:
    args = build_parser().parse_args(["revoke", "web", "--reason", "keyCompromise", "-n", "demo"])
    assert (args.command, args.name, args.reason, args.namespace) == (
        "revoke",
        "web",
        "keyCompromise",
        "demo",
    )
    assert COMMANDS["revoke"] is revoke.cmd_revoke
    assert build_parser().parse_args(["revoke", "web"]).reason == "unspecified"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["revoke", "web", "--reason", "removeFromCRL"])


def test_request_revocation_annotates_after_the_stamps_second() -> None:
    api = FakeApi()
    loop_time: list[float] = []

    async def run() -> dict[str, Any]:
        start = asyncio.get_running_loop().time()
        doc = await revoke.request_revocation(cast(ApiClient, api), "demo", "web", "superseded", NOW)
        loop_time.append(asyncio.get_running_loop().time() - start)
        return doc

    doc = asyncio.run(run())
    ((method, path, body, content_type),) = api.calls
    assert (method, content_type) == ("PATCH", "application/merge-patch+json")
    assert path == "/apis/mtls.dev/v1alpha1/namespaces/demo/mtlscertificates/web"
    assert body == {
        "metadata": {
            "annotations": {
                "mtls.dev/revoke-requested-at": "2026-03-01T12:00:00Z",
                "mtls.dev/revoke-reason": "superseded",
            }
        }
    }
    assert doc["serialNumber"] == "1a2b"
    assert loop_time[0] >= 0.0009, "waited for the stamp's second to pass"


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        pytest.param(NOW, 0.001, id="just before the next second"),
        pytest.param(NOW.replace(microsecond=0), 1.0, id="right at a whole second: wait a full second"),
    ],
)
def test_seconds_until_next_second(now: datetime, expected: float) -> None:
    assert revoke.seconds_until_next_second(now) == pytest.approx(expected)


def test_a_missing_certificate_is_a_sentence() -> None:
    api = FakeApi(ApiError(404, "NotFound", "nope"))
    with pytest.raises(ClusterError, match="MTLSCertificate demo/web does not exist"):
        asyncio.run(revoke.request_revocation(cast(ApiClient, api), "demo", "web", "unspecified", NOW))
