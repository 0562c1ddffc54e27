"""The before -> after table of one sitting: bench/results/<scenario>.before.json next to <scenario>.json.

    python bench/compare.py [results directory]      # default: $BENCH_RESULTS or bench/results

One Markdown row per figure: before, after, after/before, the aim, and the load averages (at the start and
at the end of each variant's run) the figures were taken under. A figure a variant does not have is "-".
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reporting import RESULTS

MB = 2**20
Getter = Callable[[Mapping[str, Any]], float | None]


def at(*path: str, scale: float = 1.0) -> Getter:
    """A figure by its path under "figures" (None when absent), times `scale`."""

    def get(doc: Mapping[str, Any]) -> float | None:
        value: Any = doc.get("figures") or {}
        for key in path:
            if not isinstance(value, Mapping) or key not in value or value[key] is None:
                return None
            value = value[key]
        return float(value) * scale if isinstance(value, int | float) else None

    return get


def structures(doc: Mapping[str, Any]) -> Mapping[str, float]:
    memory = (doc.get("figures") or {}).get("memory") or {}
    return memory.get("structure_bytes_per_certificate") or {}


# (scenario, label, getter, digits, aim)
ROWS: list[tuple[str, str, Getter, int, str]] = [
    ("idle-10k", "RSS idle (MB)", at("rss_bytes", scale=1 / MB), 0, "<= 120"),
    ("idle-10k", "import floor RSS (MB)", at("memory", "import_floor_rss_bytes", scale=1 / MB), 0, ""),
    (
        "idle-10k",
        "bytes per certificate over the floor",
        at("memory", "bytes_per_certificate_over_floor"),
        0,
        "",
    ),
    ("idle-10k", "peak RSS while issuing (MB)", at("peak_rss_bytes", scale=1 / MB), 0, ""),
    ("idle-10k", "issuance rate at N (/s)", at("issuance", "certificates_per_second"), 1, ""),
    ("idle-10k", "idle CPU (s per window)", at("idle_cpu_seconds"), 2, ""),
    ("restart-10k", "seconds to steady", at("seconds_to_steady"), 1, "<= 30"),
    ("restart-10k", "writes", at("writes"), 0, "0"),
    ("restart-10k", "operator CPU to steady (s)", at("operator_cpu_seconds_to_steady"), 1, ""),
    ("restart-10k", "peak RSS (MB)", at("peak_rss_bytes", scale=1 / MB), 0, ""),
    ("restart-10k", "first resync (s)", at("resync", "seconds"), 2, ""),
    ("restart-10k", "first resync operator CPU (s)", at("resync", "operator_cpu_seconds"), 2, ""),
    ("noise", "RSS growth (MB)", at("rss_growth_bytes", scale=1 / MB), 1, "<= 10"),
    ("noise", "peak RSS growth (MB)", at("peak_rss_growth_bytes", scale=1 / MB), 1, ""),
    ("noise", "operator CPU (s)", at("operator_cpu_seconds"), 1, ""),
    ("noise", "kube-apiserver CPU (s)", at("apiserver_cpu_seconds"), 1, ""),
    ("noise", "operator CPU % of kube-apiserver's", at("operator_cpu_percent_of_apiserver"), 1, "<= 10"),
    ("issuance-ecdsa-p256", "certificates per second", at("certificates_per_second"), 1, ">= 200"),
    (
        "issuance-ecdsa-p256",
        "time to Ready p50 in the burst (ms)",
        at("time_to_ready_p50_s", scale=1000),
        0,
        "",
    ),
    ("issuance-ecdsa-p256", "single -> Secret p50 (ms)", at("single_secret_p50_s", scale=1000), 0, "<= 50"),
    (
        "issuance-ecdsa-p256",
        "writes per certificate (audit)",
        at("audited_operator_writes_per_certificate"),
        2,
        "",
    ),
    ("issuance-ecdsa-p256", "operator CPU (s)", at("operator_cpu_seconds"), 1, ""),
    ("issuance-ecdsa-p256", "kube-apiserver CPU (s)", at("apiserver_cpu_seconds"), 1, ""),
    ("issuance-ecdsa-p256", "peak RSS (MB)", at("peak_rss_bytes", scale=1 / MB), 0, ""),
    ("issuance-mldsa65", "certificates per second", at("certificates_per_second"), 1, ">= 150"),
    ("issuance-mldsa65", "time to Ready p50 in the burst (ms)", at("time_to_ready_p50_s", scale=1000), 0, ""),
    ("issuance-mldsa65", "single -> Secret p50 (ms)", at("single_secret_p50_s", scale=1000), 0, "<= 50"),
    (
        "issuance-mldsa65",
        "writes per certificate (audit)",
        at("audited_operator_writes_per_certificate"),
        2,
        "",
    ),
    ("issuance-mldsa65", "operator CPU (s)", at("operator_cpu_seconds"), 1, ""),
    ("issuance-mldsa65", "kube-apiserver CPU (s)", at("apiserver_cpu_seconds"), 1, ""),
    ("renewal-storm", "writes per renewal (audit)", at("audited_writes_per_renewal"), 2, "<= 3"),
    (
        "renewal-storm",
        "... without Deployment patches",
        at("audited_writes_per_renewal_without_restarts"),
        2,
        "",
    ),
    ("renewal-storm", "drain (s)", at("drain_seconds"), 1, "<= 120"),
    ("renewal-storm", "peak RSS (MB)", at("peak_rss_bytes", scale=1 / MB), 0, "<= 200"),
    ("renewal-storm", "Deployment restarts", at("rollout_restarts"), 0, ""),
    ("renewal-storm", "most rollouts in flight", at("max_rollouts_in_flight"), 0, ""),
    ("bad-input", "worst stall (ms)", at("max_stall_seconds", scale=1000), 0, "<= 1000"),
]


def fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def ratio(before: float | None, after: float | None) -> str:
    if before is None or after is None or before == 0:
        return "-"
    return f"{after / before:.2f}x"


def load(doc: Mapping[str, Any] | None) -> str:
    if not doc:
        return "-"
    la = doc.get("loadavg") or {}
    start, end = la.get("at_start"), la.get("at_end")
    if not start or not end:
        return "-"
    return f"{start[0]:.1f} -> {end[0]:.1f}"


def read(directory: Path, scenario: str, variant: str) -> dict[str, Any] | None:
    path = directory / (f"{scenario}.json" if variant == "after" else f"{scenario}.{variant}.json")
    return json.loads(path.read_text()) if path.exists() else None


def table(directory: Path, rows: Sequence[tuple[str, str, Getter, int, str]] = ROWS) -> list[str]:
    lines = [
        "| Scenario (N) | Figure | Before | After | After/before | Aim | Load 1-min before; after |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for scenario, label, get, digits, aim in rows:
        before, after = read(directory, scenario, "before"), read(directory, scenario, "after")
        if before is None and after is None:
            continue
        b = get(before) if before else None
        a = get(after) if after else None
        n = (after or before or {}).get("n")
        lines.append(
            f"| {scenario} ({n:,}) | {label} | {fmt(b, digits)} | {fmt(a, digits)} | {ratio(b, a)} | {aim} "
            f"| {load(before)}; {load(after)} |"
        )
    return lines


def structure_table(directory: Path, scenario: str = "idle-10k") -> list[str]:
    """Bytes per certificate by structure (the probe's deep walk), before and after."""
    before, after = read(directory, scenario, "before"), read(directory, scenario, "after")
    b = structures(before) if before else {}
    a = structures(after) if after else {}
    names = sorted(set(b) | set(a), key=lambda k: -max(b.get(k, 0.0), a.get(k, 0.0)))
    lines = ["| Structure | Before (B/cert) | After (B/cert) |", "|---|---:|---:|"]
    for name in names:
        lines.append(f"| {name} | {fmt(b.get(name), 0)} | {fmt(a.get(name), 0)} |")
    return lines


def main(argv: list[str]) -> int:
    directory = Path(argv[0]) if argv else RESULTS
    print("\n".join(table(directory)))
    print()
    print("\n".join(structure_table(directory)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
