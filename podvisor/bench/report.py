"""How every `podvisor bench X` reports: a readable table, then (with --json) one JSON object as the last line.

The JSON object always carries ``ratio``: the headline figure, ours divided by the limit or peer that
was measured in the same run, so results from different machines compare by ratio, not by seconds.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

__all__ = ["print_table", "emit", "Progress"]


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]], *, out: TextIO = sys.stdout) -> None:
    cells = [[str(h) for h in header]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(title, file=out)
    for i, row in enumerate(cells):
        print("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths, strict=True))), file=out)
        if i == 0:
            print("  ".join("-" * w for w in widths), file=out)
    print(file=out)


def emit(result: dict[str, Any], *, as_json: bool, out: TextIO = sys.stdout) -> None:
    """Print the headline and, with ``as_json``, the whole result as the last line."""
    if "ratio" not in result:
        raise ValueError("a bench result needs a headline 'ratio'")
    print(f"ratio: {result['ratio']:.3f}  ({result.get('ratio_meaning', 'ours / baseline')})", file=out)
    if as_json:
        print(json.dumps(result, sort_keys=True), file=out)
    out.flush()


class Progress:
    """A one-line progress indicator on stderr for long work (bench phases, pulls, builds)."""

    def __init__(self, label: str, total: int, *, out: TextIO = sys.stderr) -> None:
        self.label, self.total, self.done, self.out = label, max(total, 1), 0, out

    def advance(self, n: int = 1) -> None:
        self.done += n
        pct = min(100, self.done * 100 // self.total)
        self.out.write(f"\r{self.label}: {pct:3d}% ({self.done}/{self.total})")
        if self.done >= self.total:
            self.out.write("\n")
        self.out.flush()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.3f}"
    return str(value)
