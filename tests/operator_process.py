"""Run the real operator (`python -m mtls_operator`) as a child process against the test control plane."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


class OperatorProcess:
    """One operator process; logs to a file that failing tests print."""

    def __init__(
        self, kubeconfig: Path, log_path: Path, *args: str, env: dict[str, str] | None = None
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        # Several operators run at once in tests: no fixed metrics port unless a test asks for one.
        self.args = list(args) if "--metrics-port" in args else [*args, "--metrics-port", "0"]
        # Likewise no fixed revocation responder port (9403) unless the test sets one.
        self.env = {"MTLS_REVOCATION_PORT": "0", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1", **self.env}
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mtls_operator", *self.args],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait_for_log("mtls-operator started", timeout=30)
        return self

    def wait_for_log(self, fragment: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if fragment in self.log_path.read_text(errors="replace"):
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"operator exited with {self.proc.returncode}:\n{self.tail()}")
            time.sleep(0.1)
        raise AssertionError(f"operator did not log {fragment!r} within {timeout}s:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL, as a crash would: no cleanup handlers run."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        if getattr(self, "_log", None) is not None:
            self._log.close()

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no operator log)"
