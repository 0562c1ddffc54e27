"""Pure rollout decisions: what a pod template uses, when a workload restarts, pacing and the loop guard."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mtls_operator.policy.rollout import (
    Pacing,
    RestartAction,
    SecretVersion,
    decide_restart,
    format_history,
    parse_history,
    rollout_complete,
    secret_refs,
    stamp_for,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
CREATED = NOW - timedelta(days=1)
V1 = SecretVersion("web-tls", "aa", 1, NOW - timedelta(days=2))
V2 = SecretVersion("web-tls", "bb", 2, NOW - timedelta(minutes=5))
DB2 = SecretVersion("db-tls", "cc", 2, NOW - timedelta(minutes=4))
PACING = Pacing(max_in_flight=2, min_interval=timedelta(minutes=1), max_per_hour=3)


def test_secret_refs_cover_every_way_a_pod_uses_a_secret() -> None:
    spec = {
        "volumes": [
            {"name": "a", "secret": {"secretName": "vol"}},
            {
                "name": "b",
                "projected": {"sources": [{"secret": {"name": "proj"}}, {"configMap": {"name": "bundle"}}]},
            },
            {"name": "c", "configMap": {"name": "cm"}},
        ],
        "containers": [
            {
                "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "env", "key": "k"}}}],
                "envFrom": [{"secretRef": {"name": "envfrom"}}, {"configMapRef": {"name": "cmfrom"}}],
            },
        ],
        "initContainers": [
            {"env": [{"name": "Y", "valueFrom": {"secretKeyRef": {"name": "init", "key": "k"}}}]}
        ],
    }
    assert secret_refs(spec) == {
        "vol",
        "proj",
        "env",
        "envfrom",
        "init",
        "configmap:bundle",
        "configmap:cm",
        "configmap:cmfrom",
    }
    assert secret_refs(None) == frozenset()


def test_stamps_are_content_addressed_and_order_independent() -> None:
    assert stamp_for([V2, DB2]) == stamp_for([DB2, V2])
    assert stamp_for([V1]) != stamp_for([V2])


def decide(**kw: object) -> RestartAction:
    args: dict[str, object] = {
        "kind": "Deployment",
        "name": "web",
        "current_stamp": stamp_for([V1]),
        "created": CREATED,
        "versions": [V2],
        "history": (),
        "in_flight": 0,
        "pacing": PACING,
        "now": NOW,
    }
    args.update(kw)
    return decide_restart(**args).action  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "action"),
    [
        pytest.param({}, RestartAction.RESTART, id="restarts when a used Secret holds a new certificate"),
        pytest.param({"current_stamp": stamp_for([V2])}, RestartAction.NONE, id="stamping twice is a no-op"),
        pytest.param({"versions": []}, RestartAction.NONE, id="ignores workloads that use no managed Secret"),
        pytest.param(
            {"current_stamp": None, "versions": [V1]},
            RestartAction.NONE,
            id="does not restart for a first issuance",
        ),
        pytest.param(
            {"current_stamp": None, "created": NOW},
            RestartAction.NONE,
            id="does not restart a workload created after the renewal",
        ),
        pytest.param(
            {"current_stamp": None},
            RestartAction.RESTART,
            id="restarts an unstamped workload older than a renewal",
        ),
        pytest.param({"in_flight": 2}, RestartAction.WAIT, id="waits while the in-flight limit is reached"),
        pytest.param(
            {"history": (int((NOW - timedelta(seconds=10)).timestamp()),)},
            RestartAction.WAIT,
            id="waits for the minimum interval since the last restart",
        ),
        pytest.param(
            {"history": tuple(int((NOW - timedelta(minutes=m)).timestamp()) for m in (5, 10, 20))},
            RestartAction.BLOCKED,
            id="the loop guard stops a fourth restart within an hour",
        ),
        pytest.param(
            {"history": tuple(int((NOW - timedelta(minutes=m)).timestamp()) for m in (61, 70, 80))},
            RestartAction.RESTART,
            id="restarts older than an hour do not count",
        ),
    ],
)
def test_decide_restart(changes: dict[str, object], action: RestartAction) -> None:
    assert decide(**changes) is action


def test_history_round_trips_and_forgets_after_an_hour() -> None:
    history = [int((NOW - timedelta(minutes=90)).timestamp()), int((NOW - timedelta(minutes=5)).timestamp())]
    assert parse_history(format_history(history, NOW)) == (history[1],)
    assert parse_history("garbage,12,") == (12,)


@pytest.mark.parametrize(
    ("kind", "body", "complete"),
    [
        pytest.param(
            "Deployment",
            {
                "metadata": {"generation": 2},
                "spec": {"replicas": 2},
                "status": {
                    "observedGeneration": 2,
                    "updatedReplicas": 2,
                    "replicas": 2,
                    "availableReplicas": 2,
                },
            },
            True,
            id="a finished Deployment",
        ),
        pytest.param(
            "Deployment",
            {"metadata": {"generation": 3}, "spec": {"replicas": 2}, "status": {"observedGeneration": 2}},
            False,
            id="a Deployment not yet observed",
        ),
        pytest.param(
            "Deployment",
            {
                "metadata": {"generation": 2},
                "spec": {"replicas": 2},
                "status": {
                    "observedGeneration": 2,
                    "updatedReplicas": 2,
                    "replicas": 3,
                    "availableReplicas": 2,
                },
            },
            False,
            id="old pods still running",
        ),
        pytest.param(
            "Deployment",
            {"metadata": {"generation": 2}, "spec": {"paused": True}, "status": {"observedGeneration": 2}},
            True,
            id="a paused Deployment",
        ),
        pytest.param(
            "DaemonSet",
            {
                "metadata": {"generation": 1},
                "spec": {"updateStrategy": {"type": "OnDelete"}},
                "status": {"observedGeneration": 1},
            },
            True,
            id="an OnDelete DaemonSet",
        ),
        pytest.param(
            "StatefulSet",
            {
                "metadata": {"generation": 1},
                "spec": {"replicas": 1},
                "status": {"observedGeneration": 1, "updateRevision": "b", "currentRevision": "a"},
            },
            False,
            id="a StatefulSet mid-update",
        ),
    ],
)
def test_rollout_complete(kind: str, body: dict[str, object], complete: bool) -> None:
    assert rollout_complete(kind, body) is complete
