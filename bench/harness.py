"""What the benchmarks read and print, as pure functions: no cluster, no process, no clock reads.

Percentiles, the parsing of /proc/<pid>/status and /proc/<pid>/stat, of the operator's `Queue idle` and
log-time lines, of the API server's /metrics (request counts, response sizes) and audit log, of object
status (Ready, rollout complete), and the formatting of one scenario's summary line. Unit-tested in
tests/unit/test_bench_harness.py. The live pieces are next to it: reporting.py (result files, progress),
procfs.py (CPU and memory of processes), control_plane.py, measured_operator.py, watches.py, objects.py.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) of `values`, linearly interpolated (numpy's default); None if empty."""
    if not values:
        return None
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _status_kib(text: str, field: str) -> int | None:
    for line in text.splitlines():
        if line.startswith(field + ":"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                unit = parts[2].lower() if len(parts) > 2 else "kb"
                if unit != "kb":
                    raise ValueError(f"unexpected unit {parts[2]!r} for {field}")
                return int(parts[1])
    return None


def parse_vmhwm(status_text: str) -> int | None:
    """Peak resident set size in bytes from the text of /proc/<pid>/status (its VmHWM line)."""
    kib = _status_kib(status_text, "VmHWM")
    return None if kib is None else kib * 1024


def parse_vmrss(status_text: str) -> int | None:
    """Current resident set size in bytes from the text of /proc/<pid>/status (its VmRSS line)."""
    kib = _status_kib(status_text, "VmRSS")
    return None if kib is None else kib * 1024


def parse_cpu_seconds(stat_text: str, ticks_per_second: int) -> float:
    """utime + stime of a process, in seconds, from the text of /proc/<pid>/stat.

    The second field (comm) is in parentheses and may itself hold spaces or parentheses, so the fields
    are counted from the last ')'; utime and stime are fields 14 and 15 (1-based).
    """
    rest = stat_text[stat_text.rindex(")") + 1 :].split()
    # rest[0] is field 3 (state): field k is rest[k - 3].
    utime, stime = int(rest[14 - 3]), int(rest[15 - 3])
    return (utime + stime) / ticks_per_second


_QUEUE_IDLE = re.compile(r"Queue idle: processed=(\d+) writes=(\d+) reads=(\d+) issued=(\d+) waiting=(\d+)")


@dataclass(frozen=True)
class QueueIdle:
    """One `Queue idle` line of the operator's log."""

    processed: int
    writes: int
    reads: int
    issued: int
    waiting: int


def parse_queue_idle(line: str) -> QueueIdle | None:
    match = _QUEUE_IDLE.search(line)
    if match is None:
        return None
    return QueueIdle(*(int(g) for g in match.groups()))


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")


def parse_log_time(line: str) -> float | None:
    """The epoch time of an operator log line (logging's default asctime, local time, milliseconds)."""
    match = _LOG_TIME.match(line)
    if match is None:
        return None
    return time.mktime(time.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")) + int(match.group(2)) / 1000


def last_queue_idle(lines: Iterator[str] | Sequence[str]) -> QueueIdle | None:
    last = None
    for line in lines:
        parsed = parse_queue_idle(line)
        if parsed is not None:
            last = parsed
    return last


def ready_status(obj: Mapping[str, Any]) -> bool:
    """Whether a custom object's status has condition Ready=True."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def rollout_complete(body: Mapping[str, Any]) -> bool:
    """A Deployment's rollout is done, as `kubectl rollout status` judges it."""
    meta, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
    if int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 0):
        return False
    want = int(spec["replicas"]) if spec.get("replicas") is not None else 1
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    return updated >= want and total <= updated and available >= updated


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples of metric ``name`` in a Prometheus text exposition: (labels, value) pairs."""
    out = []
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None or match.group(1) != name:
            continue
        found = _LABEL.findall(match.group(2) or "")
        labels = {k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in found}
        out.append((labels, float(match.group(3))))
    return out


RequestKey = tuple[str, str, str, str]  # (verb, group, resource, subresource)
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY"})


def request_counts(text: str) -> dict[RequestKey, float]:
    """apiserver_request_total summed over codes, scopes and components, by verb and resource."""
    counts: dict[RequestKey, float] = {}
    for labels, value in parse_samples(text, "apiserver_request_total"):
        key = (
            labels.get("verb", ""),
            labels.get("group", ""),
            labels.get("resource", ""),
            labels.get("subresource", ""),
        )
        counts[key] = counts.get(key, 0.0) + value
    return counts


def response_bytes(text: str) -> dict[RequestKey, float]:
    """apiserver_response_sizes_sum by verb and resource (bytes the API server sent)."""
    sizes: dict[RequestKey, float] = {}
    for labels, value in parse_samples(text, "apiserver_response_sizes_sum"):
        key = (
            labels.get("verb", ""),
            labels.get("group", ""),
            labels.get("resource", ""),
            labels.get("subresource", ""),
        )
        sizes[key] = sizes.get(key, 0.0) + value
    return sizes


def delta(after: Mapping[Any, float], before: Mapping[Any, float]) -> dict[Any, float]:
    """What grew between two readings of counters (keys that did not grow are left out)."""
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


def writes_by_resource(counts: Mapping[RequestKey, float]) -> dict[str, float]:
    """Write requests by "resource[/subresource]" (verbs POST, PUT, PATCH, DELETE, ...)."""
    out: dict[str, float] = {}
    for (verb, _, resource, sub), value in counts.items():
        if verb in WRITE_VERBS:
            name = f"{resource}/{sub}" if sub else resource
            out[name] = out.get(name, 0.0) + value
    return out


@dataclass(frozen=True)
class AuditRecord:
    """One audit event (stage ResponseComplete) of the API server's audit log."""

    user_agent: str
    verb: str
    resource: str
    subresource: str
    namespace: str
    name: str
    code: int
    received: float  # epoch seconds
    completed: float


def _epoch(text: str | None) -> float:
    if not text:
        return 0.0
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def parse_audit_line(line: str) -> AuditRecord | None:
    """An audit log line (JSON, one event); None for other stages or what is not an event."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("stage") != "ResponseComplete":
        return None
    ref = event.get("objectRef") or {}
    return AuditRecord(
        user_agent=str(event.get("userAgent") or ""),
        verb=str(event.get("verb") or ""),
        resource=str(ref.get("resource") or ""),
        subresource=str(ref.get("subresource") or ""),
        namespace=str(ref.get("namespace") or ""),
        name=str(ref.get("name") or ""),
        code=int((event.get("responseStatus") or {}).get("code") or 0),
        received=_epoch(event.get("requestReceivedTimestamp")),
        completed=_epoch(event.get("stageTimestamp")),
    )


AUDIT_WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


def audit_writes(
    records: Sequence[AuditRecord], user_agent_prefix: str, since: float = 0.0, until: float = math.inf
) -> dict[str, int]:
    """Writes by clients whose user agent starts with the prefix, received in [since, until), by
    "verb resource[/subresource]"; failed requests included (they cost the API server too)."""
    out: dict[str, int] = {}
    for r in records:
        if (
            r.verb in AUDIT_WRITE_VERBS
            and r.user_agent.startswith(user_agent_prefix)
            and since <= r.received < until
        ):
            name = f"{r.verb} {r.resource}/{r.subresource}" if r.subresource else f"{r.verb} {r.resource}"
            out[name] = out.get(name, 0) + 1
    return out


def fmt_ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.0f}ms"


def fmt_mb(num_bytes: int | None) -> str:
    return "n/a" if num_bytes is None else f"{num_bytes / 2**20:.0f}MB"


def fmt_num(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def summary_line(name: str, n: int, figures: Sequence[tuple[str, str]]) -> str:
    """The one human line a scenario prints: ``bench <name> N=<n>: k=v k=v ...``."""
    return f"bench {name} N={n}: " + " ".join(f"{k}={v}" for k, v in figures)
