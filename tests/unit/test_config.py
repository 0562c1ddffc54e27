"""One configuration tree: flags, their environment defaults, and the values the controllers read."""

from __future__ import annotations

from datetime import timedelta

import pytest

from mtls_operator.controllers.config import OperatorConfig, build_parser, parse_config


def test_defaults_metrics_on_9402_and_leader_election_off() -> None:
    config = parse_config([], {})
    assert config == OperatorConfig()
    assert config.metrics.port == 9402 and config.revocation.port == 9403
    election = config.leader_election
    assert election.enabled is False
    assert (election.lease_duration, election.renew_deadline, election.retry_period) == (15.0, 10.0, 2.0)


def test_flags_override_the_environment() -> None:
    env = {"MTLS_METRICS_PORT": "1234", "MTLS_LEADER_ELECT": "true", "MTLS_ROLLOUT_MAX_IN_FLIGHT": "7"}
    from_env = parse_config([], env)
    assert from_env.metrics.port == 1234 and from_env.leader_election.enabled
    assert from_env.pacing.max_in_flight == 7
    flags = parse_config(["--metrics-port", "0", "--no-leader-elect", "--leader-elect-namespace", "ops"], env)
    assert flags.metrics.port == 0 and not flags.leader_election.enabled
    assert flags.leader_election.namespace == "ops"


@pytest.mark.parametrize(
    ("env", "attribute", "value"),
    [
        pytest.param({"MTLS_BACKOFF_BASE": "2"}, "backoff_base", timedelta(seconds=2), id="backoff base"),
        pytest.param({"MTLS_RESYNC_INTERVAL": "20"}, "resync_interval", timedelta(seconds=20), id="resync"),
        pytest.param({"MTLS_WORKERS": "3"}, "workers", 3, id="workers"),
        pytest.param({"MTLS_NAMESPACES": "a, b"}, "namespaces", ("a", "b"), id="namespaces from a list"),
        pytest.param({"MTLS_LOG_LEVEL": "debug"}, "log_level", "DEBUG", id="log level upper-cased"),
    ],
)
def test_environment_sets_each_knob(env: dict[str, str], attribute: str, value: object) -> None:
    assert getattr(parse_config([], env), attribute) == value


def test_rollout_pacing_and_budget() -> None:
    config = parse_config(
        [
            "--rollout-coalesce",
            "2",
            "--rollout-timeout",
            "3",
            "--issuance-burst",
            "4",
            "--issuance-refill",
            "60",
        ],
        {},
    )
    assert config.pacing.coalesce == timedelta(seconds=2) and config.pacing.timeout == timedelta(seconds=3)
    assert config.budget.burst == 4 and config.budget.max_refill == timedelta(seconds=60)


def test_help_names_every_variable() -> None:
    text = build_parser({}).format_help()
    for variable in (
        "MTLS_WORKERS",
        "MTLS_RESYNC_INTERVAL",
        "MTLS_ISSUANCE_BURST",
        "MTLS_ROLLOUT_MAX_PER_HOUR",
        "MTLS_REVOCATION_PORT",
        "MTLS_LEADER_ELECT_LEASE_DURATION",
        "MTLS_WATCH_SERVER_TIMEOUT",
    ):
        assert variable in text


def test_all_namespaces_wins_over_the_environment_list() -> None:
    assert parse_config(["-A"], {"MTLS_NAMESPACES": "a"}).namespaces == ()


@pytest.mark.parametrize(
    ("env", "server"),
    [
        pytest.param({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"},
                     "https://10.0.0.1:443", id="the kubelet's address for the API server"),
        pytest.param({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"},
                     "https://[fd00::1]:6443", id="an IPv6 address in brackets"),
        pytest.param({}, None, id="outside a pod: none"),
    ],
)  # fmt: skip
def test_in_cluster_login_uses_the_kubelets_environment(env: dict[str, str], server: str | None) -> None:
    from mtls_operator.k8s.login import in_cluster_server

    assert in_cluster_server(env) == server
