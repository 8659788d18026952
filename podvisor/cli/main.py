"""The `podvisor` command line.

Each subcommand lives in the module that owns its job and registers itself here through
``register(subparsers)``, which adds an argparse parser whose ``func`` default is
``func(args) -> int``. Modules are imported lazily per command name so `podvisor status` does not pay
for QEMU or registry code. A module missing from an install is simply not offered.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main", "COMMAND_MODULES"]

# command name -> module providing `register(subparsers)`
COMMAND_MODULES: dict[str, str] = {
    "up": "podvisor.cli.up",
    "status": "podvisor.cli.status",
    "image": "podvisor.images.cli",
    "crx": "podvisor.crx.cli",
    "hostd": "podvisor.hostd.cli",
    "bench": "podvisor.bench.cli",
    "admin": "podvisor.admin.cli",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="podvisor", description="Kubernetes pods as lightweight VMs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMAND_MODULES.items():
        if only is not None and name != only:
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in args_list if not a.startswith("-")), None)
    parser = build_parser(first if first in COMMAND_MODULES else None)
    args = parser.parse_args(args_list)
    func = getattr(args, "func", None)
    if func is None:
        build_parser().print_help()
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
