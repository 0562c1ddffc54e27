"""The command line around leader election and metrics: defaults and the cluster-scan decision."""

from __future__ import annotations

import pytest

from mtls_operator.main import needs_cluster_scan, parse_args


def test_defaults_metrics_on_9402_and_leader_election_off() -> None:
    args = parse_args([])
    assert args.metrics_port == 9402
    assert args.leader_elect is False
    assert (args.leader_elect_lease_duration, args.leader_elect_renew_deadline) == (15.0, 10.0)
    assert args.leader_elect_retry_period == 2.0


def test_flags() -> None:
    args = parse_args(["--leader-elect", "--metrics-port", "0", "--leader-elect-namespace", "ops"])
    assert args.leader_elect and args.metrics_port == 0 and args.leader_elect_namespace == "ops"
    assert parse_args(["--no-leader-elect"]).leader_elect is False


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
