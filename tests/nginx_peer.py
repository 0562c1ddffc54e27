"""An unprivileged nginx on a free loopback port, as an independent TLS peer for the interop tests."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from helpers import wait_for


@dataclass
class Nginx:
    port: int
    error_log: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def running_nginx(binary: str, prefix: Path, server: str, timeout: float = 30.0) -> Iterator[Nginx]:
    """Run nginx in the foreground under ``prefix`` with one TLS ``server`` block (its directives, without
    ``listen``); stop it afterwards. The error log at info level tells why a client was refused."""
    port = free_port()
    for sub in ("logs", "tmp"):
        (prefix / sub).mkdir(exist_ok=True)
    conf = prefix / "nginx.conf"
    temp = "\n".join(
        f"  {kind}_temp_path {prefix}/tmp/{kind};" for kind in ("proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf.write_text(
        f"""daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log info;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/tmp/body;
{temp}
  server {{
    listen 127.0.0.1:{port} ssl;
{server}
  }}
}}
"""
    )
    proc = subprocess.Popen(
        [binary, "-e", str(prefix / "logs" / "early.log"), "-p", str(prefix), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )

    def listening() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"nginx exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            return False
        return True

    try:
        wait_for(listening, timeout=timeout, message="nginx listening")
        yield Nginx(port, prefix / "logs" / "error.log")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
