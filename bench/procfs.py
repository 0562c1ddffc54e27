"""CPU seconds and memory of processes, read from /proc: once (peak and current RSS, CPU seconds, the
load average) or sampled in a thread (`CpuSampler`) to cut windows afterwards.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from harness import parse_cpu_seconds, parse_vmhwm, parse_vmrss


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
