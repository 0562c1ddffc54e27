"""The cluster-scan decision: exact namespaces need no cluster-wide RBAC."""

from __future__ import annotations

import pytest

from mtls_operator.main import needs_cluster_scan


@pytest.mark.parametrize(
    ("namespaces", "scan"),
    [
        pytest.param(None, True, id="all namespaces watch CRDs cluster-wide"),
        pytest.param(["team-a", "team-b"], False, id="exact namespaces need no cluster scanning"),
        pytest.param(["team-*"], True, id="a glob needs namespaces listed"),
        pytest.param(["a", "b?"], True, id="any glob in the list needs namespaces listed"),
    ],
)
def test_cluster_scanning_only_when_needed(namespaces: list[str] | None, scan: bool) -> None:
    assert needs_cluster_scan(namespaces) is scan
