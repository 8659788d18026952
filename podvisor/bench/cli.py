"""`podvisor bench NAME`: every benchmark is a module `podvisor.bench.<name>` with ``HELP``,
``add_arguments(parser)`` and ``run(args) -> dict`` (the figures, including ``ratio``); this module only
dispatches and prints through `podvisor.bench.report`."""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from podvisor.bench.report import emit

__all__ = ["register", "BENCHES"]

BENCHES = {"api": "podvisor.bench.api", "images": "podvisor.bench.images", "vm": "podvisor.bench.vm",
           "pods": "podvisor.bench.pods"}


def register(sub: Any) -> None:
    p = sub.add_parser("bench", help="measure speed and memory against a baseline run in the same process")
    bsub = p.add_subparsers(dest="bench", metavar="NAME")
    for name, module_name in BENCHES.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue
            raise
        bp = bsub.add_parser(name, help=module.HELP)
        bp.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
        module.add_arguments(bp)
        bp.set_defaults(func=_runner(module))


def _runner(module: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        result = module.run(args)
        emit(result, as_json=args.json)
        return 0

    return run
