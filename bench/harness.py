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
    from mtls_operator import __version__

    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "operator_version": __version__,
        "loadavg_at_start": loadavg(),
    }


def git_commit() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=False
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


def write_result(
    name: str, n: int, figures: Mapping[str, Any], extra: Mapping[str, Any] | None = None
) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {
        "scenario": name,
        "n": n,
        "figures": dict(figures),
        **(extra or {}),
        "machine": machine(),
        "git": git_commit(),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    return path


def say(message: str) -> None:
    """Progress goes to stderr; stdout carries only the summary lines."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# The cluster


class Cluster:
    """A throwaway control plane with the CRDs applied, and admin clients for it."""

    def __init__(self, run_dir: Path) -> None:
        from kubernetes import client, config

        from mtls_operator.testing.controlplane import ControlPlane

        self.plane = ControlPlane.start(run_dir, die_with_parent=True)
        self.kubeconfig = self.plane.kubeconfig
        cfg = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=cfg)
        cfg.connection_pool_maxsize = 32
        self.api_client = client.ApiClient(cfg)
        self.core = client.CoreV1Api(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.apiext = client.ApiextensionsV1Api(self.api_client)

    def apply_crds(self) -> None:
        import yaml

        names = []
        for path in sorted(CRD_DIR.glob("*.yaml")):
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


@contextlib.contextmanager
def cluster() -> Iterator[Cluster]:
    run_dir = Path(tempfile.mkdtemp(prefix="mtls-bench-"))
    say(f"starting a control plane in {run_dir}")
    c = Cluster(run_dir)
    try:
        c.apply_crds()
        yield c
    finally:
        c.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# The operator


class Operator:
    """`python -m mtls_operator` against the bench cluster, scoped to some namespaces, logging to a file.

    Like tests/operator_process.py, but reads its log incrementally (10k certificates make a long log)
    and keeps every `Queue idle` line it has seen.
    """

    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        namespaces: Sequence[str],
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.namespaces = list(namespaces)
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.idle: list[tuple[float, QueueIdle]] = []  # (monotonic time seen, line)
        self.started_at = 0.0
        self.ready_at = 0.0
        self._offset = 0
        self._partial = b""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> Operator:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1", **self.env}
        args = [sys.executable, "-m", "mtls_operator", "--metrics-port", "0"]
        for ns in self.namespaces:
            args += ["--namespace", ns]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        self._offset = self.log_path.stat().st_size
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            args, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.wait_for(lambda line: "mtls-operator started" in line, timeout, "mtls-operator started")
        self.ready_at = time.monotonic()
        return self

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


def create_custom(c: Cluster, namespace: str, plural: str, body: Mapping[str, Any]) -> None:
    """Create one custom object; retried on 429/5xx and connection errors (the server is busy, not wrong)."""
    from kubernetes.client.rest import ApiException

    for attempt in range(8):
        try:
            resp = c.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, body, _preload_content=False
            )
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
