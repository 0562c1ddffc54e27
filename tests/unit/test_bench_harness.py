"""The benchmark harness's pure helpers (bench/harness.py): no cluster, no timing."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from harness import (
    QueueIdle,
    audit_writes,
    delta,
    last_queue_idle,
    parse_audit_line,
    parse_cpu_seconds,
    parse_log_time,
    parse_queue_idle,
    parse_samples,
    parse_vmhwm,
    parse_vmrss,
    percentile,
    ready_status,
    request_counts,
    response_bytes,
    rollout_complete,
    summary_line,
    writes_by_resource,
)

STATUS = """Name:\tpython3
State:\tS (sleeping)
VmPeak:\t  412340 kB
VmSize:\t  401232 kB
VmHWM:\t   91236 kB
VmRSS:\t   88012 kB
Threads:\t5
"""


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        pytest.param([3.0], 50, 3.0, id="one value is every percentile"),
        pytest.param([1.0, 2.0, 3.0, 4.0], 50, 2.5, id="the median of an even count interpolates"),
        pytest.param([4.0, 1.0, 3.0, 2.0], 0, 1.0, id="p0 is the minimum, whatever the order"),
        pytest.param([4.0, 1.0, 3.0, 2.0], 100, 4.0, id="p100 is the maximum"),
        pytest.param([float(i) for i in range(1, 101)], 99, 99.01, id="p99 of 1..100 as numpy computes it"),
    ],
)
def test_percentile(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected)


def test_percentile_of_nothing_is_none_and_out_of_range_is_refused() -> None:
    assert percentile([], 50) is None
    with pytest.raises(ValueError, match="outside"):
        percentile([1.0], 101)


def test_vmhwm_and_vmrss_are_read_in_bytes() -> None:
    assert parse_vmhwm(STATUS) == 91236 * 1024
    assert parse_vmrss(STATUS) == 88012 * 1024


def test_a_status_without_vmhwm_gives_none() -> None:
    assert parse_vmhwm("Name:\tkthreadd\nState:\tS (sleeping)\n") is None


def test_cpu_seconds_count_fields_after_the_command_name_even_with_spaces_and_parentheses() -> None:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
    stat = "4242 (python (x) y) S 1 4242 4242 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 5 0 1000 0 0"
    assert parse_cpu_seconds(stat, 100) == pytest.approx(3.0)


def test_queue_idle_lines_are_parsed_and_the_last_one_wins() -> None:
    lines = [
        "2026-01-01 00:00:00,000 INFO mtls_operator: mtls-operator started with 8 workers.",
        "2026-01-01 00:00:01,000 INFO mtls_operator: Queue idle: processed=2 writes=3 reads=1 issued=0 "
        "waiting=0",
        "2026-01-01 00:00:09,000 INFO mtls_operator: Issued ns/c1 revision 1 (ECDSA-P256, serial 1): Missing",
        "2026-01-01 00:00:10,000 INFO mtls_operator: Queue idle: processed=12 writes=33 reads=4 issued=10 "
        "waiting=10",
    ]
    assert parse_queue_idle(lines[2]) is None
    assert last_queue_idle(lines) == QueueIdle(processed=12, writes=33, reads=4, issued=10, waiting=10)
    assert last_queue_idle([]) is None


def test_ready_status_reads_the_ready_condition() -> None:
    ready = {
        "status": {
            "conditions": [{"type": "Issuing", "status": "False"}, {"type": "Ready", "status": "True"}]
        }
    }
    assert ready_status(ready)
    assert not ready_status({"status": {"conditions": [{"type": "Ready", "status": "False"}]}})
    assert not ready_status({})


@pytest.mark.parametrize(
    ("body", "complete"),
    [
        pytest.param(
            {"metadata": {"generation": 2}, "spec": {"replicas": 0}, "status": {"observedGeneration": 1}},
            False,
            id="a new template not yet observed is in flight",
        ),
        pytest.param(
            {"metadata": {"generation": 2}, "spec": {"replicas": 0}, "status": {"observedGeneration": 2}},
            True,
            id="zero replicas complete as soon as observed",
        ),
        pytest.param(
            {
                "metadata": {"generation": 2},
                "spec": {"replicas": 1},
                "status": {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1},
            },
            False,
            id="old pods still running keep it in flight",
        ),
    ],
)
def test_rollout_complete(body: dict[str, object], complete: bool) -> None:
    assert rollout_complete(body) is complete


def test_summary_line_is_one_line_of_key_values() -> None:
    line = summary_line("issuance-ecdsa-p256", 1000, [("rate", "120.0/s"), ("p50", "80ms")])
    assert line == "bench issuance-ecdsa-p256 N=1000: rate=120.0/s p50=80ms"
    assert "\n" not in line


def _request(verb: str, resource: str, code: int, value: int, group: str = "", sub: str = "") -> str:
    labels = (
        f'code="{code}",component="apiserver",dry_run="",group="{group}",resource="{resource}",'
        f'scope="resource",subresource="{sub}",verb="{verb}",version="v1"'
    )
    return f"apiserver_request_total{{{labels}}} {value}\n"


METRICS = (
    "# HELP apiserver_request_total [STABLE] Counter of apiserver requests.\n"
    "# TYPE apiserver_request_total counter\n"
    + _request("POST", "secrets", 201, 10)
    + _request("POST", "secrets", 409, 2)
    + _request("PATCH", "mtlscertificates", 200, 7, group="mtls.dev", sub="status")
    + _request("LIST", "secrets", 200, 3)
    + 'apiserver_request_total_other{verb="POST"} 99\n'
    + 'apiserver_response_sizes_sum{group="",resource="secrets",subresource="",verb="LIST"} 4096\n'
)


def test_request_counts_sum_codes_and_keep_verb_and_resource_apart() -> None:
    counts = request_counts(METRICS)
    assert counts[("POST", "", "secrets", "")] == 12
    assert counts[("PATCH", "mtls.dev", "mtlscertificates", "status")] == 7
    assert counts[("LIST", "", "secrets", "")] == 3
    assert len(counts) == 3  # a metric whose name only starts the same is another metric
    assert response_bytes(METRICS) == {("LIST", "", "secrets", ""): 4096}


def test_writes_by_resource_counts_only_write_verbs_and_names_the_subresource() -> None:
    assert writes_by_resource(request_counts(METRICS)) == {"secrets": 12, "mtlscertificates/status": 7}


def test_delta_keeps_what_grew_and_counts_new_keys_from_zero() -> None:
    assert delta({"a": 5.0, "b": 2.0, "c": 1.0}, {"a": 3.0, "b": 2.0}) == {"a": 2.0, "c": 1.0}


def test_label_values_with_escaped_quotes_are_read_whole() -> None:
    text = 'm{a="x\\"y",b="z"} 1.5\n'
    assert parse_samples(text, "m") == [({"a": 'x"y', "b": "z"}, 1.5)]


def _audit(stage: str, verb: str, agent: str, received: str, **ref: str) -> str:
    return json.dumps(
        {
            "kind": "Event",
            "stage": stage,
            "verb": verb,
            "userAgent": agent,
            "objectRef": {"resource": "secrets", "namespace": "ns", "name": "s", **ref},
            "responseStatus": {"code": 201},
            "requestReceivedTimestamp": received,
            "stageTimestamp": received,
        }
    )


def test_audit_lines_of_the_completed_stage_are_parsed_and_others_skipped() -> None:
    line = _audit("ResponseComplete", "create", "mtls-operator", "2026-01-01T00:00:01.500000Z")
    record = parse_audit_line(line)
    assert record is not None
    assert (record.verb, record.resource, record.code, record.user_agent) == (
        "create",
        "secrets",
        201,
        "mtls-operator",
    )
    assert record.received == pytest.approx(1767225601.5)
    assert parse_audit_line(_audit("ResponseStarted", "watch", "kopf", "2026-01-01T00:00:01Z")) is None
    assert parse_audit_line("not json") is None


def test_audit_writes_count_one_client_in_a_time_window_by_verb_and_resource() -> None:
    records = [
        parse_audit_line(_audit("ResponseComplete", verb, agent, at, **ref))
        for verb, agent, at, ref in [
            ("create", "mtls-operator", "2026-01-01T00:00:01Z", {}),
            (
                "patch",
                "mtls-operator",
                "2026-01-01T00:00:02Z",
                {"resource": "mtlscertificates", "subresource": "status"},
            ),
            ("list", "mtls-operator", "2026-01-01T00:00:02Z", {}),
            ("create", "OpenAPI-Generator/37.0.2/python", "2026-01-01T00:00:02Z", {}),
            ("create", "mtls-operator", "2026-01-01T00:00:09Z", {}),
        ]
    ]
    found = [r for r in records if r is not None]
    start = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    assert audit_writes(found, "mtls-operator", start, start + 5) == {
        "create secrets": 1,
        "patch mtlscertificates/status": 1,
    }


def test_log_time_is_read_from_the_operator_log_line() -> None:
    line = "2026-01-01 00:00:01,250 INFO mtls_operator: Queue idle: processed=1 writes=0 reads=0 issued=0"
    expected = time.mktime(time.strptime("2026-01-01 00:00:01", "%Y-%m-%d %H:%M:%S")) + 0.25
    assert parse_log_time(line) == pytest.approx(expected)
    assert parse_log_time("no time here") is None
