"""bench/compare.py: the before -> after table from result files (no cluster)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from compare import at, structure_table, table


def write(directory: Path, name: str, figures: dict[str, object], load: list[float]) -> None:
    doc = {"n": 10000, "figures": figures, "loadavg": {"at_start": load, "at_end": load}}
    (directory / name).write_text(json.dumps(doc))


def test_rows_pair_before_and_after_with_ratio_aim_and_load(tmp_path: Path) -> None:
    write(tmp_path, "idle-10k.before.json", {"rss_bytes": 200 * 2**20}, [3.0, 2.0, 1.0])
    write(tmp_path, "idle-10k.json", {"rss_bytes": 100 * 2**20}, [1.5, 1.0, 1.0])
    lines = table(tmp_path)
    row = next(line for line in lines if "RSS idle" in line)
    assert (
        row == "| idle-10k (10,000) | RSS idle (MB) | 200 | 100 | 0.50x | <= 120 | 3.0 -> 3.0; 1.5 -> 1.5 |"
    )
    assert not any("noise" in line for line in lines)  # no result file: no row


def test_a_figure_one_variant_lacks_is_a_dash(tmp_path: Path) -> None:
    write(tmp_path, "restart-10k.before.json", {"seconds_to_steady": 40.0}, [1.0, 1.0, 1.0])
    write(
        tmp_path, "restart-10k.json", {"seconds_to_steady": 20.0, "resync": {"seconds": 1.5}}, [1.0, 1.0, 1.0]
    )
    row = next(line for line in table(tmp_path) if "first resync (s)" in line)
    assert "| - | 1.50 | - |" in row
    assert at("resync", "seconds")({"figures": {"resync": None}}) is None


def test_structures_sorted_by_the_larger_of_both(tmp_path: Path) -> None:
    write(
        tmp_path,
        "idle-10k.before.json",
        {"memory": {"structure_bytes_per_certificate": {"a": 10, "b": 900}}},
        [1, 1, 1],
    )
    write(tmp_path, "idle-10k.json", {"memory": {"structure_bytes_per_certificate": {"a": 5000}}}, [1, 1, 1])
    assert structure_table(tmp_path)[2:] == ["| a | 10 | 5,000 |", "| b | 900 | - |"]
