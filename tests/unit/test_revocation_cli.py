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


# ---------------------------------------------------------------------------------------------------------
# revoke --serial: a serial no MTLSCertificate stands for (pod certificates)


def test_revoke_by_serial_is_parsed_and_goes_with_an_issuer_only() -> None:
    args = build_parser().parse_args(
        ["revoke", "--serial", "0A:1B", "--issuer", "mesh", "--cluster-issuer", "--reason", "keyCompromise"]
    )
    assert (args.name, args.serial, args.issuer, args.cluster_issuer) == (None, "0A:1B", "mesh", True)
    assert args.cluster_resource_namespace == "mtls-system"
    for wrong in (["revoke", "web", "--serial", "0a", "--issuer", "mesh"], ["revoke", "--serial", "0a"]):
        with pytest.raises(ClusterError, match="--serial and --issuer go together"):
            revoke.cmd_revoke(build_parser().parse_args(wrong), cast(Any, None))
    with pytest.raises(ClusterError, match="Name the MTLSCertificate"):
        revoke.cmd_revoke(build_parser().parse_args(["revoke"]), cast(Any, None))


class IssuerApi:
    """An issuer that exists or not; the revocation ConfigMap is never reached in these cases."""

    def __init__(self, exists: bool) -> None:
        self.exists = exists
        self.calls: list[tuple[str, str]] = []

    async def get(self, path: str) -> dict[str, Any]:
        self.calls.append(("GET", path))
        if not self.exists:
            raise ApiError(404, "NotFound", "nope")
        return {}


@pytest.mark.parametrize(
    ("serial", "exists", "message"),
    [
        pytest.param(
            "zz", True, "is not a hexadecimal certificate serial", id="refuses a serial that is not hex"
        ),
        pytest.param(
            "0a1b", False, "MTLSClusterIssuer mesh does not exist", id="refuses an issuer that is not there"
        ),
    ],
)
def test_revoke_by_serial_refuses_with_a_sentence(serial: str, exists: bool, message: str) -> None:
    api = IssuerApi(exists)
    with pytest.raises(ClusterError, match=message):
        asyncio.run(
            revoke.revoke_serial(
                cast(ApiClient, api),
                issuer="mesh",
                namespace="demo",
                cluster=True,
                cluster_resources="mtls-system",
                serial=serial,
                reason="keyCompromise",
                not_after=None,
                now=NOW,
            )
        )
    assert all(path == "/apis/mtls.dev/v1alpha1/mtlsclusterissuers/mesh" for _, path in api.calls)
