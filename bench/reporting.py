"""Where results go and what each one records: the variant measured (this tree or a "before" checkout),
the machine, the commit, the JSON file per scenario; and the progress lines on stderr.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import summary_line
from procfs import loadavg

REPO = Path(__file__).resolve().parent.parent
# BENCH_RESULTS puts the JSON elsewhere, e.g. for a side comparison that must not replace a full run.
RESULTS = Path(os.environ.get("BENCH_RESULTS") or REPO / "bench" / "results")


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


def print_summary(name: str, n: int, figures: Sequence[tuple[str, str]]) -> None:
    """A scenario's one line on stdout (`harness.summary_line`)."""
    print(summary_line(name, n, figures), flush=True)


def say(message: str) -> None:
    """Progress goes to stderr; stdout carries only the summary lines."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
