"""Run the real operator (`python -m mtls_operator`) as a child process against the test control plane."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from api_audit import AuditLog, Request, audited_identity


class OperatorProcess:
    """One operator process; logs to a file that failing tests print.

    Made with `audited`, it logs in as a user of its own, whose every request the API server's audit log
    records: `writes()` and `denied()` read them back.
    """

    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        *args: str,
        env: dict[str, str] | None = None,
        user: str | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.user = user
        self.audit = audit
        self.born = audit.mark() if audit is not None else 0  # nothing of this user comes before
        # Several operators run at once in tests: no fixed metrics port unless a test asks for one.
        self.args = list(args) if "--metrics-port" in args else [*args, "--metrics-port", "0"]
        # Likewise no fixed revocation responder port (9403) unless the test sets one.
        self.env = {"MTLS_REVOCATION_PORT": "0", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def audited(
        cls, cluster: Any, log_path: Path, *args: str, env: dict[str, str] | None = None
    ) -> OperatorProcess:
        """An operator logged in as a new user of its own (a client certificate in `system:masters`), named
        after its log file, whose requests `writes()` and `denied()` read from the audit log."""
        identity = audited_identity(cluster.control_plane, log_path.stem, log_path.parent)
        audit = AuditLog(cluster.control_plane.audit_log)
        return cls(identity.kubeconfig, log_path, *args, env=env, user=identity.user, audit=audit)

    def _audit(self) -> tuple[AuditLog, str]:
        if self.audit is None or self.user is None:
            raise AssertionError(
                "this operator has no identity of its own: make it with OperatorProcess.audited"
            )
        return self.audit, self.user

    def writes(self, *, since: int | None = None, namespace: str | None = None) -> list[Request]:
        """The writes this operator made (after `since`, an `AuditLog.mark()`), as the API server saw them."""
        audit, user = self._audit()
        return audit.writes(user, since=self.born if since is None else since, namespace=namespace)

    def denied(self, *, since: int | None = None) -> list[Request]:
        """This operator's requests the API server refused (401, 403)."""
        audit, user = self._audit()
        return audit.denied(user, since=self.born if since is None else since)

    def metrics(self) -> str:
        """The operator's /metrics text (it must have been given a `--metrics-port`)."""
        port = int(self.args[self.args.index("--metrics-port") + 1])
        if port == 0:
            raise AssertionError("this operator serves no metrics: give it a --metrics-port")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return str(response.read().decode())

    def ready_certificates(self, namespace: str) -> int:
        """How many certificates of `namespace` this operator has judged Ready (its ready-status series):
        a point from which on it has looked at them, for tests that then watch what it does next."""
        prefix = f'mtls_certificate_ready_status{{namespace="{namespace}",name="'
        ready = re.compile(r'[^"]+",condition="True"\} 1(\.0)?')
        return sum(
            1
            for line in self.metrics().splitlines()
            if line.startswith(prefix) and ready.fullmatch(line[len(prefix) :])
        )

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

    def freeze(self) -> None:
        """SIGSTOP: the process keeps its connections but runs nothing until `thaw`."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGCONT)

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
