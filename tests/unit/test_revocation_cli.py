"""`mtlsctl revoke` without a cluster: the parser, the annotations it sets, and when it sets them."""

from __future__ import annotations

import asyncio
import re
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


def test_request_revocation_annotates_with_a_token_that_never_collides() -> None:
    api = FakeApi()
    doc = asyncio.run(revoke.request_revocation(cast(ApiClient, api), "demo", "web", "superseded", NOW))
    ((method, path, body, content_type),) = api.calls
    assert (method, content_type) == ("PATCH", "application/merge-patch+json")
    assert path == "/apis/mtls.dev/v1alpha1/namespaces/demo/mtlscertificates/web"
    annotations = body["metadata"]["annotations"]
    assert annotations["mtls.dev/revoke-reason"] == "superseded"
    token = annotations["mtls.dev/revoke-requested-at"]
    assert re.fullmatch(r"2026-03-01T12:00:00Z/[0-9a-f]{8}", token), token
    assert doc["serialNumber"] == "1a2b"
    again = asyncio.run(
        revoke.request_revocation(cast(ApiClient, FakeApi()), "demo", "web", "superseded", NOW)
    )
    assert again["annotations"]["mtls.dev/revoke-requested-at"] != token, "two requests in one second differ"


def test_a_missing_certificate_is_a_sentence() -> None:
    api = FakeApi(ApiError(404, "NotFound", "nope"))
    with pytest.raises(ClusterError, match="MTLSCertificate demo/web does not exist"):
        asyncio.run(revoke.request_revocation(cast(ApiClient, api), "demo", "web", "unspecified", NOW))
