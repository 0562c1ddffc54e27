"""What the operator benchmarks share: a control plane, the operator as a child process, watches, figures.

The pure helpers at the top (`percentile`, `parse_vmhwm`, `parse_cpu_seconds`, `parse_queue_idle`,
`summary_line`) need no cluster and are unit-tested in tests/unit/test_bench_harness.py. Everything that
talks to the API server imports the `kubernetes` client lazily, so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# BENCH_RESULTS puts the JSON elsewhere, e.g. for a side comparison that must not replace a full run.
RESULTS = Path(os.environ.get("BENCH_RESULTS") or REPO / "bench" / "results")
CRD_DIR = REPO / "crds"
GROUP, VERSION = "mtls.dev", "v1alpha1"
CERTS, ISSUERS = "mtlscertificates", "mtlsissuers"
STAMP_ANNOTATION = "mtls.dev/tls-stamp"

# --------------------------------------------------------------------------------------------------
# Pure helpers


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


# --------------------------------------------------------------------------------------------------
# Process figures


def proc_status(pid: int) -> str:
    return Path(f"/proc/{pid}/status").read_text()


def peak_rss(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        return parse_vmhwm(proc_status(pid))
    return None


def current_rss(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        return parse_vmrss(proc_status(pid))
    return None


def cpu_seconds(pid: int) -> float:
    return parse_cpu_seconds(Path(f"/proc/{pid}/stat").read_text(), os.sysconf("SC_CLK_TCK"))


def loadavg() -> list[float]:
    with contextlib.suppress(OSError):
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    return []


def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_write": loadavg(),
    }


def git_commit(repo: Path = REPO) -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, check=False
        ).stdout.strip()

    # Other people's uncommitted changes under operator/ are part of what was measured: name them.
    changed = sorted(
        {
            *git("diff", "--name-only", "HEAD", "--", "operator").splitlines(),
            *git("ls-files", "--others", "--exclude-standard", "--", "operator").splitlines(),
        }
    )
    return {
        "commit": git("rev-parse", "HEAD") or None,
        "dirty": bool(git("status", "--porcelain")),
        "operator_changes_not_committed": changed,
    }


@dataclass(frozen=True)
class Variant:
    """Which operator a run measures: "after" is this working tree; "before" another checkout (its own
    venv and CRDs), so that one sitting gives before -> after ratios."""

    name: str
    repo: Path
    python: str

    @property
    def crd_dir(self) -> Path:
        return self.repo / "crds"

    def result_name(self, scenario: str) -> str:
        return scenario if self.name == "after" else f"{scenario}.{self.name}"


AFTER = Variant("after", REPO, sys.executable)


def variants_from_env() -> list[Variant]:
    """BENCH_BEFORE=<checkout with a .venv> adds the "before" operator, run first in each scenario."""
    before = os.environ.get("BENCH_BEFORE")
    if not before:
        return [AFTER]
    repo = Path(before).resolve()
    python = repo / ".venv" / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"BENCH_BEFORE={before}: no {python} (run `make venv` there)")
    return [Variant("before", repo, str(python)), AFTER]


def write_result(
    name: str,
    n: int,
    figures: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
    variant: Variant = AFTER,
) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {
        "scenario": name,
        "variant": variant.name,
        "n": n,
        "figures": dict(figures),
        **(extra or {}),
        "machine": machine(),
        "git": git_commit(variant.repo),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    path = RESULTS / f"{variant.result_name(name)}.json"
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    return path


def say(message: str) -> None:
    """Progress goes to stderr; stdout carries only the summary lines."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class CpuSampler:
    """CPU seconds of some processes sampled every `interval` s in a thread, to cut windows afterwards."""

    def __init__(self, pids: Mapping[str, int], interval: float = 0.2) -> None:
        self.pids = dict(pids)
        self.interval = interval
        self.samples: list[tuple[float, dict[str, float]]] = []  # (epoch time, cpu seconds by name)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-cpu")

    def start(self) -> CpuSampler:
        self._sample()
        self._thread.start()
        return self

    def _sample(self) -> None:
        now, cpu = time.time(), {}
        for name, pid in self.pids.items():
            with contextlib.suppress(OSError, ValueError):
                cpu[name] = cpu_seconds(pid)
        self.samples.append((now, cpu))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()

    def at(self, t: float, name: str) -> float:
        """CPU seconds of `name` at epoch time t (the last sample at or before t)."""
        value = 0.0
        for when, cpu in self.samples:
            if when > t:
                break
            value = cpu.get(name, value)
        return value

    def between(self, start: float, end: float, name: str) -> float:
        return self.at(end, name) - self.at(start, name)


# --------------------------------------------------------------------------------------------------
# The cluster

# Writes and lists are audited (who made them: the user agent), nothing else; `quiet` namespaces are not
# audited at all (the noise scenario's 25k objects would otherwise cost the API server the audit lines).
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
{quiet}- level: Metadata
  verbs: ["create", "update", "patch", "delete", "deletecollection", "list"]
- level: None
"""


class Cluster:
    """A throwaway control plane with the CRDs applied, admin clients for it, its /metrics and its audit
    log (writes and lists, with the user agent that made them)."""

    def __init__(self, run_dir: Path, quiet_namespaces: Sequence[str] = ()) -> None:
        from kubernetes import client, config

        from mtls_operator.testing.controlplane import ControlPlane

        quiet = (
            f"- level: None\n  namespaces: [{', '.join(json.dumps(n) for n in quiet_namespaces)}]\n"
            if quiet_namespaces
            else ""
        )
        policy = run_dir / "audit-policy.yaml"
        run_dir.mkdir(parents=True, exist_ok=True)
        policy.write_text(AUDIT_POLICY.format(quiet=quiet))
        self.audit_log = run_dir / "audit.log"
        self.plane = ControlPlane.start(
            run_dir,
            die_with_parent=True,
            apiserver_args=[
                f"--audit-policy-file={policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-maxbackup=0",
                "--audit-log-maxsize=0",
            ],
        )
        self.kubeconfig = self.plane.kubeconfig
        cfg = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=cfg)
        cfg.connection_pool_maxsize = 32
        self.api_client = client.ApiClient(cfg)
        self.core = client.CoreV1Api(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.apiext = client.ApiextensionsV1Api(self.api_client)
        self._audit_offset = 0
        self._audit_partial = b""
        self.audit: list[AuditRecord] = []

    def pid(self, component: str) -> int:
        """The pid of "etcd", "kube-apiserver" or "kube-controller-manager"."""
        for c in self.plane.components:
            if c.name == component:
                return c.pid
        raise KeyError(component)

    def metrics_text(self) -> str:
        """The API server's /metrics."""
        request = self.api_client.param_serialize("GET", "/metrics", auth_settings=["BearerToken"])
        resp = self.api_client.call_api(*request)
        resp.read()
        return bytes(resp.data).decode()

    def read_audit(self) -> list[AuditRecord]:
        """Every audit record so far (read incrementally)."""
        with contextlib.suppress(FileNotFoundError), self.audit_log.open("rb") as f:
            f.seek(self._audit_offset)
            data = f.read()
            self._audit_offset += len(data)
            data = self._audit_partial + data
            *complete, self._audit_partial = data.split(b"\n")
            for raw in complete:
                record = parse_audit_line(raw.decode(errors="replace"))
                if record is not None:
                    self.audit.append(record)
        return self.audit

    def apply_crds(self, crd_dir: Path = CRD_DIR) -> None:
        import yaml

        names = []
        for path in sorted(crd_dir.glob("*.yaml")):
            body = yaml.safe_load(path.read_text())
            names.append(body["metadata"]["name"])
            self.apiext.create_custom_resource_definition(body)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            established = 0
            for name in names:
                crd = self.apiext.read_custom_resource_definition(name)
                conds = {c.type: c.status for c in (crd.status.conditions or [])}
                established += conds.get("Established") == "True"
            if established == len(names):
                # Established can run a moment ahead of the resource being served: list once to be sure.
                with contextlib.suppress(Exception):
                    self.custom.list_namespaced_custom_object(GROUP, VERSION, "default", CERTS, limit=1)
                    return
            time.sleep(0.2)
        raise RuntimeError("the CRDs were not established within 60s")

    def namespace(self, name: str) -> str:
        from kubernetes import client

        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        return name

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.api_client.close()
        self.plane.stop()


class ApiServerWindow:
    """What the API server did between `start()` and `stop()`: request and response-size deltas from its
    /metrics, and the CPU seconds of kube-apiserver, etcd and kube-controller-manager."""

    def __init__(self, c: Cluster) -> None:
        self.c = c
        self.pids = {name: c.pid(name) for name in ("kube-apiserver", "etcd", "kube-controller-manager")}

    def start(self) -> ApiServerWindow:
        text = self.c.metrics_text()
        self._requests, self._bytes = request_counts(text), response_bytes(text)
        self._cpu = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.started = time.time()
        return self

    def stop(self) -> dict[str, Any]:
        cpu = {name: cpu_seconds(pid) - self._cpu[name] for name, pid in self.pids.items()}
        text = self.c.metrics_text()
        requests = delta(request_counts(text), self._requests)
        sizes = delta(response_bytes(text), self._bytes)
        return {
            "seconds": time.time() - self.started,
            "apiserver_cpu_seconds": cpu["kube-apiserver"],
            "etcd_cpu_seconds": cpu["etcd"],
            "controller_manager_cpu_seconds": cpu["kube-controller-manager"],
            "apiserver_rss_bytes": current_rss(self.pids["kube-apiserver"]),
            "writes_by_resource": writes_by_resource(requests),
            "requests": {" ".join(k for k in key if k): v for key, v in sorted(requests.items())},
            "response_bytes": {" ".join(k for k in key if k): v for key, v in sorted(sizes.items())},
        }


@contextlib.contextmanager
def cluster(crd_dir: Path = CRD_DIR, quiet_namespaces: Sequence[str] = ()) -> Iterator[Cluster]:
    run_dir = Path(tempfile.mkdtemp(prefix="mtls-bench-"))
    say(f"starting a control plane in {run_dir}")
    c = Cluster(run_dir, quiet_namespaces)
    try:
        c.apply_crds(crd_dir)
        yield c
    finally:
        c.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# The operator


PROBE = Path(__file__).resolve().parent / "probe.py"


class Operator:
    """The operator (bench/probe.py, which runs `python -m mtls_operator` with a probe inside) against the
    bench cluster, scoped to some namespaces (none: every namespace), logging to a file.

    Like tests/operator_process.py, but reads its log incrementally (10k certificates make a long log)
    and keeps every `Queue idle` line it has seen. `variant` picks the interpreter, hence the tree.
    """

    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        namespaces: Sequence[str],
        env: Mapping[str, str] | None = None,
        variant: Variant = AFTER,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.namespaces = list(namespaces)
        self.env = dict(env or {})
        self.variant = variant
        self.proc: subprocess.Popen[bytes] | None = None
        self.idle: list[tuple[float, QueueIdle]] = []  # (monotonic time seen, line)
        self.idle_logged: list[float] = []  # the epoch time each of those lines was logged
        self.started_at = 0.0
        self.started_epoch = 0.0
        self.ready_at = 0.0
        self._offset = 0
        self._partial = b""
        self.probe_out = log_path.with_suffix(".probe.json")
        self.metrics_port = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> Operator:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PYTHONUNBUFFERED": "1",
            # Nothing here asks for CRLs over HTTP; a second operator on this machine may hold 9403.
            "MTLS_REVOCATION_PORT": "0",
            "MTLS_METRICS_BIND_ADDRESS": "127.0.0.1",  # the "before" tree defaulted to 0.0.0.0
            "BENCH_PROBE_OUT": str(self.probe_out),
            **self.env,
        }
        from mtls_operator.testing.controlplane import pick_free_ports

        # /metrics on loopback, as deployed (the chart serves it): a scrape builds what a scrape builds.
        self.metrics_port = pick_free_ports(1)[0]
        args = [self.variant.python, str(PROBE), "--metrics-port", str(self.metrics_port)]
        for ns in self.namespaces:
            args += ["--namespace", ns]
        if not self.namespaces:
            args.append("--all-namespaces")
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        self._offset = self.log_path.stat().st_size
        self.started_at = time.monotonic()
        self.started_epoch = time.time()
        self.proc = subprocess.Popen(
            args, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.profiler: subprocess.Popen[bytes] | None = None
        pyspy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
        if os.environ.get("BENCH_PYSPY") == "1" and pyspy:
            # A sampling profile of the whole run (every thread), folded stacks for flame graphs.
            self.profiler = subprocess.Popen(
                [
                    pyspy,
                    "record",
                    "--pid",
                    str(self.proc.pid),
                    "--rate",
                    "50",
                    "--threads",
                    "--format",
                    "raw",
                    "--output",
                    str(self.log_path.with_suffix(".pyspy.txt")),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        self.wait_for(lambda line: "mtls-operator started" in line, timeout, "mtls-operator started")
        self.ready_at = time.monotonic()
        return self

    def scrape(self) -> int:
        """One GET of the operator's /metrics, as Prometheus makes it; the bytes it returned."""
        import urllib.request

        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as resp:
            return len(resp.read())

    def report(self, *, deep: bool = False, trim: bool = False, timeout: float = 120.0) -> dict[str, Any]:
        """The probe's report (see bench/probe.py): memory by structure with `deep`, loop lag, heap."""
        Path(str(self.probe_out) + ".req").write_text(json.dumps({"deep": deep, "trim": trim}))
        with contextlib.suppress(FileNotFoundError):
            self.probe_out.unlink()
        os.kill(self.pid, signal.SIGUSR2)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError, ValueError):
                doc: dict[str, Any] = json.loads(self.probe_out.read_text())
                return doc
            time.sleep(0.2)
        raise RuntimeError(f"the operator's probe wrote no report within {timeout:g}s")

    def poll_log(self) -> list[str]:
        """New complete log lines since the last call; records `Queue idle` lines."""
        with self.log_path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        self._offset += len(data)
        data = self._partial + data
        *complete, self._partial = data.split(b"\n")
        now = time.monotonic()
        lines = [raw.decode(errors="replace") for raw in complete]
        for line in lines:
            parsed = parse_queue_idle(line)
            if parsed is not None:
                self.idle.append((now, parsed))
                logged = parse_log_time(line)
                self.idle_logged.append(time.time() if logged is None else logged)
        return lines

    def wait_for(self, match: Callable[[str], bool], timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        while True:
            for line in self.poll_log():
                if match(line):
                    return line
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"the operator exited with {self.proc.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the operator did not log {what} within {timeout:g}s:\n{self.tail()}")
            time.sleep(0.1)

    def wait_idle(
        self, issued_at_least: int, timeout: float, quiet: float = 2.5, after: float = 0.0
    ) -> QueueIdle:
        """The last `Queue idle` line once one shows `issued_at_least` and no newer one came for `quiet` s.

        The operator logs the line at most once a second and always after the last drain, so a quiet
        spell after a line with the expected count means the queue has stayed drained.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.poll_log()
            if self.idle:
                seen_at, last = self.idle[-1]
                if (
                    last.issued >= issued_at_least
                    and seen_at >= after
                    and time.monotonic() - seen_at >= quiet
                ):
                    return last
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"the operator exited with {self.proc.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                last_line = self.idle[-1][1] if self.idle else None
                raise RuntimeError(
                    f"the operator's queue did not go idle with issued>={issued_at_least} within "
                    f"{timeout:g}s; last Queue idle: {last_line}"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        if getattr(self, "profiler", None) is not None and self.profiler.poll() is None:
            self.profiler.send_signal(signal.SIGINT)  # py-spy writes its file when interrupted
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.profiler.wait(timeout=30)
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if getattr(self, "_log", None) is not None:
            self._log.close()

    def tail(self, lines: int = 40) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(max(0, self.log_path.stat().st_size - 20000))
                return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no operator log)"


# --------------------------------------------------------------------------------------------------
# Watches


class Watcher:
    """A watch on one namespaced resource in a background thread, calling `on_event(type, obj, t)`.

    `t` is time.monotonic() when the event was read. Starts from the resourceVersion of a list made in
    `start()`, so nothing created after `start()` returns is missed; reconnects from the last version.
    Custom objects arrive as dicts; core and apps objects are asked for as raw JSON and parsed to dicts.
    """

    def __init__(
        self,
        list_fn: Callable[..., Any],
        args: Sequence[Any],
        on_event: Callable[[str, dict[str, Any], float], None],
    ) -> None:
        self.list_fn = list_fn
        self.args = list(args)
        self.on_event = on_event
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-watch")
        self._rv = ""
        self.error: BaseException | None = None
        self.events = 0

    def start(self) -> Watcher:
        listed = self._list(limit=1)
        self._rv = listed["metadata"]["resourceVersion"]
        self._thread.start()
        return self

    def _list(self, **kwargs: Any) -> dict[str, Any]:
        resp = self.list_fn(*self.args, _preload_content=False, **kwargs)
        try:
            result: dict[str, Any] = json.loads(resp.data)
        finally:
            resp.release_conn()
        return result

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                resp = self.list_fn(
                    *self.args,
                    watch=True,
                    resource_version=self._rv,
                    allow_watch_bookmarks=True,
                    timeout_seconds=60,
                    _preload_content=False,
                    _request_timeout=(10, 90),
                )
                try:
                    buf = b""
                    for chunk in resp.stream(65536, decode_content=False):
                        if self._stop.is_set():
                            return
                        buf += chunk
                        *lines, buf = buf.split(b"\n")
                        t = time.monotonic()
                        for raw in lines:
                            if raw.strip():
                                self._handle(json.loads(raw), t)
                finally:
                    # Never hand a half-read connection back to the pool the create calls share.
                    resp.close()
                    resp.release_conn()
            except Exception as exc:  # a broken watch is retried; a repeated failure is reported
                if self._stop.is_set():
                    return
                self.error = exc
                time.sleep(0.5)

    def _handle(self, event: dict[str, Any], t: float) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:  # too old: restart from now (no events expected to be lost here)
                self._rv = self._list(limit=1)["metadata"]["resourceVersion"]
            return
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if rv:
            self._rv = rv
        if kind == "BOOKMARK":
            return
        self.events += 1
        self.on_event(str(kind), obj, t)

    def stop(self) -> None:
        self._stop.set()


def watch_custom(c: Cluster, namespace: str, plural: str, on_event: Callable[..., None]) -> Watcher:
    return Watcher(
        c.custom.list_namespaced_custom_object, [GROUP, VERSION, namespace, plural], on_event
    ).start()


def watch_secrets(c: Cluster, namespace: str, on_event: Callable[..., None]) -> Watcher:
    return Watcher(c.core.list_namespaced_secret, [namespace], on_event).start()


def watch_deployments(c: Cluster, namespace: str, on_event: Callable[..., None]) -> Watcher:
    return Watcher(c.apps.list_namespaced_deployment, [namespace], on_event).start()


# --------------------------------------------------------------------------------------------------
# Objects


def issuer_body(name: str, algorithm: str, size: int | None) -> dict[str, Any]:
    key: dict[str, Any] = {"algorithm": algorithm}
    if size is not None:
        key["size"] = size
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MTLSIssuer",
        "metadata": {"name": name},
        "spec": {"selfSigned": {"secretName": f"{name}-ca", "commonName": f"{name} root", "privateKey": key}},
    }


def certificate_body(
    name: str, issuer: str, algorithm: str, size: int | None, **spec_extra: Any
) -> dict[str, Any]:
    key: dict[str, Any] = {"algorithm": algorithm}
    if size is not None:
        key["size"] = size
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MTLSCertificate",
        "metadata": {"name": name},
        "spec": {
            "secretName": f"{name}-tls",
            "issuerRef": {"name": issuer},
            "commonName": name,
            "dnsNames": [f"{name}.bench.svc"],
            "privateKey": key,
            **spec_extra,
        },
    }


def create_with_retry(create: Callable[..., Any], *args: Any) -> None:
    """Call a `kubernetes` client create method; retried on 429/5xx and connection errors (the server is
    busy, not wrong). The answer is read raw and dropped (no deserialisation in the bench's threads)."""
    from kubernetes.client.rest import ApiException

    for attempt in range(8):
        try:
            resp = create(*args, _preload_content=False)
            resp.data  # noqa: B018 (read the answer so the connection goes back to the pool)
            resp.release_conn()
            return
        except ApiException as exc:
            if exc.status == 409 or (exc.status != 429 and exc.status < 500) or attempt == 7:
                raise
        except OSError:
            if attempt == 7:
                raise
        time.sleep(0.2 * 2**attempt)


def create_custom(c: Cluster, namespace: str, plural: str, body: Mapping[str, Any]) -> None:
    """Create one custom object (retried as `create_with_retry`)."""
    create_with_retry(c.custom.create_namespaced_custom_object, GROUP, VERSION, namespace, plural, body)
