"""The operator measured: a child process running bench/probe.py (`python -m mtls_operator` with a
measuring probe inside) against the bench cluster, its log read incrementally, its probe asked for
reports, its /metrics scraped.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness import QueueIdle, parse_log_time, parse_queue_idle
from reporting import AFTER, Variant

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
