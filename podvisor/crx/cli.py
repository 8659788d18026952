"""`podvisor crx build|verify`: make the signed CRX bundle (cached; `make setup` runs it) and check it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser("crx", help="the signed CRX bundle every pod VM boots")
    csub = p.add_subparsers(dest="crx_command", metavar="ACTION")
    b = csub.add_parser("build", help="build and sign the bundle (does nothing when it is up to date)")
    b.add_argument("--home", type=Path, default=None,
                   help="bundle and key directory (default $PODVISOR_CRX_DIR or ~/.cache/podvisor/crx)")
    b.add_argument("--force", action="store_true", help="rebuild even when up to date")
    b.add_argument("--refresh-kernel", action="store_true", help="download the newest kernel package again")
    b.set_defaults(func=_build)
    v = csub.add_parser("verify", help="check the bundle's signature and every file's digest")
    v.add_argument("--home", type=Path, default=None, help="bundle and key directory")
    v.add_argument("--json", action="store_true", help="print the verified manifest as JSON")
    v.set_defaults(func=_verify)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _build(args: argparse.Namespace) -> int:
    from podvisor.crx.build import build_bundle
    from podvisor.crx.bundle import BundleError
    from podvisor.crx.kernel import KernelError

    try:
        build_bundle(home=args.home, force=args.force, refresh_kernel=args.refresh_kernel)
    except (BundleError, KernelError) as exc:
        print(f"podvisor crx build: {exc}", file=sys.stderr)
        return 1
    return 0


def _verify(args: argparse.Namespace) -> int:
    from podvisor.crx.bundle import BundleError, crx_home, load_public_key, verify_bundle

    home = args.home or crx_home()
    try:
        bundle = verify_bundle(home / "bundle", public_key=load_public_key(home / "keys"))
    except BundleError as exc:
        print(f"podvisor crx verify: REFUSED: {exc}", file=sys.stderr)
        return 1
    m = bundle.manifest
    if args.json:
        print(json.dumps(m, indent=2, sort_keys=True))
    else:
        files = ", ".join(f"{n} {e['size'] / 2**20:.1f} MiB" for n, e in m["files"].items())
        print(f"CRX bundle OK: {bundle.dir}\n  kernel {m['kernel']['version']}; {files}\n"
              f"  signed by {m['signingKey']}; built {m['builtAt']}")
    return 0
