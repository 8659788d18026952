"""The `podvisor` command line: one subcommand module per job."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("podvisor: not yet", file=sys.stderr)
    return 2
