"""How mtlsctl shows results: aligned tables and key/value blocks for people (coloured when stdout is a
terminal), JSON or YAML for machines (``-o json`` / ``-o yaml``).

Every command builds one plain document (dicts, lists, strings, numbers) and hands it to :class:`Printer`
together with a function that renders it for people, so the machine formats always carry everything the
human one shows.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TextIO

import yaml


class Format(StrEnum):
    TEXT = "text"
    JSON = "json"
    YAML = "yaml"


_CODES = {"green": "32", "red": "31", "yellow": "33", "bold": "1", "dim": "2", "cyan": "36"}


@dataclass
class Printer:
    """Writes documents in one format to one stream; ``color`` is decided once, from the stream."""

    format: Format = Format.TEXT
    stream: TextIO = field(default_factory=lambda: sys.stdout)
    color: bool | None = None

    def __post_init__(self) -> None:
        if self.color is None:
            self.color = (
                self.format is Format.TEXT
                and "NO_COLOR" not in os.environ
                and hasattr(self.stream, "isatty")
                and self.stream.isatty()
            )

    def paint(self, text: str, *styles: str) -> str:
        if not self.color or not styles:
            return text
        codes = ";".join(_CODES[s] for s in styles)
        return f"\033[{codes}m{text}\033[0m"

    def ok(self, good: bool, yes: str = "OK", no: str = "FAILED") -> str:
        return self.paint(yes, "green", "bold") if good else self.paint(no, "red", "bold")

    def emit(self, doc: Any, human: Callable[[Printer, Any], None], *, compact: bool = False) -> None:
        """Write ``doc``; ``compact`` is for streams of events: one JSON object per line, YAML documents
        separated by ``---``."""
        if self.format is Format.JSON:
            self.stream.write(json.dumps(doc, indent=None if compact else 2, default=str) + "\n")
        elif self.format is Format.YAML:
            if compact:
                self.stream.write("---\n")
            self.stream.write(yaml.safe_dump(_plain(doc), sort_keys=False, default_flow_style=False))
        else:
            human(self, doc)
        self.stream.flush()

    def line(self, text: str = "") -> None:
        self.stream.write(text + "\n")

    def heading(self, text: str) -> None:
        self.line(self.paint(text, "bold"))

    def fields(self, rows: Sequence[tuple[str, Any]], indent: int = 2) -> None:
        """A key/value block; list values are written one per line under their key."""
        width = max((len(k) for k, _ in rows), default=0)
        pad = " " * indent
        for key, value in rows:
            values = value if isinstance(value, list | tuple) else [value]
            if not values:
                values = ["-"]
            for i, item in enumerate(values):
                label = key if i == 0 else ""
                text = "-" if item is None or item == "" else str(item)
                self.line(f"{pad}{self.paint(label.ljust(width), 'dim')}  {text}")

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]], indent: int = 0) -> None:
        """kubectl-style columns: upper-case headers, two spaces between columns."""
        cells = [[str(h).upper() for h in headers]] + [
            ["-" if c is None or c == "" else str(c) for c in row] for row in rows
        ]
        widths = [max(_visible_len(r[i]) for r in cells) for i in range(len(headers))]
        pad = " " * indent
        for n, row in enumerate(cells):
            parts = [
                c + " " * (w - _visible_len(c)) if i < len(row) - 1 else c
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ]
            text = pad + "   ".join(parts)
            self.line(self.paint(text, "bold") if n == 0 else text)


def _visible_len(text: str) -> int:
    """Length without ANSI colour codes."""
    out, skip = 0, False
    for ch in text:
        if ch == "\033":
            skip = True
        elif skip and ch == "m":
            skip = False
        elif not skip:
            out += 1
    return out


def _plain(doc: Any) -> Any:
    """Only types yaml.safe_dump writes (tuples become lists, other objects strings)."""
    if isinstance(doc, dict):
        return {str(k): _plain(v) for k, v in doc.items()}
    if isinstance(doc, list | tuple):
        return [_plain(v) for v in doc]
    if doc is None or isinstance(doc, str | int | float | bool):
        return doc
    return str(doc)
