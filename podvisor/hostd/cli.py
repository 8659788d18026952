"""`podvisor hostd serve`: run hostd alone in the foreground (`podvisor up` runs it in-process)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser("hostd", help="the host agent: VMs of this host behind a ticket-authenticated HTTPS API")
    hsub = p.add_subparsers(dest="hostd_command", metavar="ACTION")
    s = hsub.add_parser("serve", help="run hostd in the foreground until interrupted (VMs keep running after)")
    s.add_argument("--data-dir", type=Path, default=None, help="state directory (default: as `podvisor up`)")
    s.add_argument("--host-name", default="pv-host-1")
    s.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: the last one, else any)")
    s.add_argument("-v", "--verbose", action="store_true")
    s.set_defaults(func=_serve)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _serve(args: argparse.Namespace) -> int:
    from podvisor.paths import default_data_dir

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    data_dir = (args.data_dir or default_data_dir()).resolve()
    return asyncio.run(_run(data_dir, args))


async def _run(data_dir: Path, args: argparse.Namespace) -> int:
    from podvisor.hostd.component import HostdComponent

    hostd = HostdComponent(data_dir, host_name=args.host_name, port=args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await hostd.start()
    print(f"hostd {args.host_name}: {hostd.url} (secret {hostd.secret_file}, certificate {hostd.cert_file})", flush=True)
    try:
        await stop.wait()
    finally:
        await asyncio.shield(hostd.stop())
    return 0
