"""Run the operator (``python -m mtls_operator``) with a measuring probe inside its process.

    python bench/probe.py [operator arguments ...]

The benchmarks start every operator through this file, with the interpreter of the tree being measured
(it imports nothing from the bench and only ``mtls_operator`` from that tree), so the same probe serves
the "before" and "after" operators. What it adds:

* on SIGUSR2 it writes a JSON report to ``$BENCH_PROBE_OUT``: RSS, the RSS right after the operator's
  modules were imported (the floor no certificate can go below), the Python allocator's and glibc's
  view of the heap, and (``deep`` in the request) the bytes reachable from each of the runtime's
  structures and from kopf's per-object memories, each object counted once, in the first structure that
  reaches it. With ``BENCH_TRACEMALLOC=<frames>`` tracemalloc runs from before the first import and the
  report adds the top allocation sites. Options for one report come from ``$BENCH_PROBE_OUT.req`` (JSON:
  ``{"deep": true, "trim": true}``); ``trim`` calls glibc's ``malloc_trim(0)`` first and reports the RSS
  before and after (memory the heap held but did not use);
* the ``kubernetes`` client is hidden (unless ``BENCH_TEST_DEPS=1``): it is a test dependency, absent from
  the operator's image, but kopf imports it whenever it is installed (~19 MB of RSS here), so without
  this the bench would measure a floor no deployed operator has;
* with ``BENCH_LAG=1``, an event-loop lag monitor: a task that sleeps 20 ms and records how late it woke.
  A late wake-up is a stall of every worker (the loop ran something synchronous for that long). The
  report holds the largest lag and every lag over 10 ms with its wall-clock time.

For digging: ``BENCH_PROBE_EXEC=<file.py>`` runs that file inside the operator at each report (with
``gc`` it can reach every object) and adds its ``RESULT`` to the report.

Nothing here changes what the operator does; without SIGUSR2 and BENCH_LAG the probe only imports.
"""

from __future__ import annotations

import os
import sys

_FRAMES = int(os.environ.get("BENCH_TRACEMALLOC") or 0)
if _FRAMES:
    import tracemalloc

    tracemalloc.start(_FRAMES)

import asyncio  # noqa: E402
import contextlib  # noqa: E402
import ctypes  # noqa: E402
import dataclasses  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
from collections.abc import Coroutine  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

# Kept out of the walk: code and shared machinery, not data a structure holds.
_STOP_TYPES: tuple[type, ...] = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.CodeType,
    types.FrameType,
    types.CoroutineType,
    types.GeneratorType,
    asyncio.AbstractEventLoop,
    threading.Thread,
)


def _rss_kib(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def deep_size(
    root: Any, seen: set[int], stop: set[int], by_type: dict[str, int] | None = None
) -> tuple[int, int]:
    """Bytes (sys.getsizeof) and objects reachable from ``root``, skipping ``seen`` and ``stop`` ids and the
    stop types; adds what it counts to ``seen`` (and to ``by_type``, bytes by type name)."""
    total = count = 0
    stack = [root]
    while stack:
        obj = stack.pop()
        ident = id(obj)
        if ident in seen or ident in stop or isinstance(obj, _STOP_TYPES):
            continue
        seen.add(ident)
        try:
            size = sys.getsizeof(obj)
        except TypeError:
            continue
        total += size
        count += 1
        if by_type is not None:
            name = type(obj).__name__
            by_type[name] = by_type.get(name, 0) + size
        stack.extend(gc.get_referents(obj))
    return total, count


def _fields(obj: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    return dict(vars(obj))


def _instances(qualname: str) -> list[Any]:
    module, _, name = qualname.rpartition(".")
    return [o for o in gc.get_objects() if type(o).__name__ == name and type(o).__module__ == module]


# Walked first: what a certificate costs is theirs (keys and names they share with later structures).
_FIRST = ("ctx.certificates", "ctx.issuers", "ctx.namespaces", "ctx.secrets", "intake", "queue")


def structures() -> dict[str, dict[str, Any]]:
    """Bytes held by each structure of the runtime (its attributes, the context's fields one by one) and
    by kopf's per-object memories; an object reachable from two is counted in the first (``_FIRST``, then
    by name, the API client last)."""
    roots: dict[str, Any] = {}
    boundary: set[int] = set()
    for runtime in _instances("mtls_operator.controllers.runtime.Runtime")[:1]:
        boundary.add(id(runtime))
        for name, value in _fields(runtime).items():
            if name == "ctx":
                boundary.add(id(value))
                roots.update({f"ctx.{field}": inner for field, inner in _fields(value).items()})
            else:
                roots[name] = value
    for memories in _instances("kopf._core.reactor.inventory.ResourceMemories")[:1]:
        roots["kopf.memories"] = memories
    # One name per object (the context and the runtime share their stores), never the runtime itself.
    unique: dict[str, Any] = {}
    for name, value in sorted(roots.items(), key=lambda kv: (kv[0] not in _FIRST, "api" in kv[0], kv[0])):
        if id(value) not in boundary and all(value is not v for v in unique.values()):
            unique[name] = value
    # No structure is counted inside another: each is a boundary while the others are walked.
    boundary |= {id(v) for v in unique.values()}
    seen: set[int] = set()
    out: dict[str, dict[str, Any]] = {}
    for name, value in unique.items():
        boundary.discard(id(value))
        by_type: dict[str, int] = {}
        size, count = deep_size(value, seen, boundary, by_type)
        boundary.add(id(value))
        if count:
            top = sorted(by_type.items(), key=lambda kv: -kv[1])[:12]
            out[name] = {"bytes": size, "objects": count, "by_type": dict(top)}
    return out


def _malloc() -> dict[str, int]:
    class Mallinfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in (
                "arena",
                "ordblks",
                "smblks",
                "hblks",
                "hblkhd",
                "usmblks",
                "fsmblks",
                "uordblks",
                "fordblks",
                "keepcost",
            )
        ]

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = Mallinfo2
        info = libc.mallinfo2()
    except (OSError, AttributeError):
        return {}
    # arena: bytes obtained with brk; hblkhd: in mmap'ed blocks; uordblks: in use; fordblks: free.
    return {"arena": info.arena, "mmap": info.hblkhd, "in_use": info.uordblks, "free": info.fordblks}


def _pymalloc() -> dict[str, int]:
    """The totals sys._debugmallocstats() prints (written to fd 2, so captured through a temp file)."""
    with tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    out: dict[str, int] = {}
    for line in text.splitlines():
        label, _, value = line.rpartition("=")
        label = label.strip().lstrip("#").strip()
        value = value.strip().replace(",", "")
        if value.isdigit() and label.startswith(("bytes in", "arenas allocated current", "Total")):
            out[label] = int(value)
    return out


_LAG: dict[str, Any] = {"max_ms": 0.0, "samples": 0, "stalls": []}


async def _lag_monitor(interval: float = 0.02) -> None:
    while True:
        before = time.monotonic()
        await asyncio.sleep(interval)
        lag = time.monotonic() - before - interval
        _LAG["samples"] += 1
        if lag * 1000 > _LAG["max_ms"]:
            _LAG["max_ms"] = lag * 1000
        if lag > 0.01 and len(_LAG["stalls"]) < 50000:
            _LAG["stalls"].append([time.time() - lag, round(lag * 1000, 1)])


def _with_lag_monitor(run: Any) -> Any:
    def wrapped(main: Coroutine[Any, Any, Any], **kwargs: Any) -> Any:
        async def both() -> Any:
            monitor = asyncio.create_task(_lag_monitor(), name="bench-lag-monitor")
            try:
                return await main
            finally:
                monitor.cancel()

        return run(both(), **kwargs)

    return wrapped


_FLOOR: dict[str, Any] = {}


def report(out: Path, floor_kib: int) -> None:
    request: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        request = json.loads(Path(str(out) + ".req").read_text())
    started = time.monotonic()
    gc.collect()
    doc: dict[str, Any] = {
        "time": time.time(),
        "rss_kib": _rss_kib(),
        "hwm_kib": _rss_kib("VmHWM"),
        "import_floor_rss_kib": floor_kib,
        "import_floor_heap": _FLOOR,
        "gc_objects": len(gc.get_objects()),
        "malloc": _malloc(),
        "pymalloc": _pymalloc(),
        "lag": _LAG,
    }
    if request.get("deep"):
        doc["structures"] = structures()
    if os.environ.get("BENCH_PROBE_EXEC"):
        found: dict[str, Any] = {}
        exec(Path(os.environ["BENCH_PROBE_EXEC"]).read_text(), found)
        doc["exec"] = found.get("RESULT")
    if _FRAMES:
        snapshot = tracemalloc.take_snapshot()
        current, peak = tracemalloc.get_traced_memory()
        doc["tracemalloc"] = {
            "current": current,
            "peak": peak,
            "by_file": [
                {"file": str(s.traceback[0].filename), "bytes": s.size, "count": s.count}
                for s in snapshot.statistics("filename")[:40]
            ],
            "by_line": [
                {"where": str(s.traceback[0]), "bytes": s.size, "count": s.count}
                for s in snapshot.statistics("lineno")[:60]
            ],
        }
    if request.get("trim"):
        before = _rss_kib()
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        doc["trim"] = {"rss_before_kib": before, "rss_after_kib": _rss_kib()}
    doc["report_seconds"] = time.monotonic() - started
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(out)


def main() -> None:
    import runpy

    if os.environ.get("BENCH_TEST_DEPS") != "1":
        sys.modules["kubernetes"] = None  # type: ignore[assignment]  # an import of it raises ImportError
    import mtls_operator.main  # noqa: F401  (the floor: every module the operator runs on)

    floor = _rss_kib()
    _FLOOR.update({"malloc": _malloc(), "pymalloc": _pymalloc(), "gc_objects": len(gc.get_objects())})
    out = os.environ.get("BENCH_PROBE_OUT")
    if out:
        signal.signal(signal.SIGUSR2, lambda *_: report(Path(out), floor))
    if os.environ.get("BENCH_LAG") == "1":
        asyncio.run = _with_lag_monitor(asyncio.run)
    sys.argv = ["mtls-operator", *sys.argv[1:]]
    runpy.run_module("mtls_operator", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
