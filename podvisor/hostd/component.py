"""hostd as a component of `podvisor up` (or standalone with `podvisor hostd serve`).

Everything lives under ``DATA/hostd``: ``secret`` (0600, the login credential), ``tls/`` (the
certificate clients pin), ``vms/`` (one directory per VM), ``accel.json``, ``requests.log`` and
``hostd.json`` (url, pid, host name - how local clients find it). The port is remembered so a restarted
hostd keeps its URL; it listens on 127.0.0.1 only.

Stopping hostd closes the API and the sockets to QEMU and the agents; the VMs keep running and the next
start adopts them. ``prewarm`` layouts get their templates built in the background after start (see
`podvisor.hostd.sizing.pod_layout` for the layout of a typical pod).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from podvisor.hostd.api import build_app
from podvisor.hostd.auth import TicketAuthority, ensure_secret
from podvisor.hostd.runtime import QemuRuntime
from podvisor.hostd.templates import Layout
from podvisor.hostd.tls import ensure_certificate, server_context

__all__ = ["HostdComponent", "hostd_paths", "read_hostd_state"]

log = logging.getLogger("podvisor.hostd")


def hostd_paths(data_dir: Path) -> dict[str, Path]:
    root = Path(data_dir) / "hostd"
    return {"root": root, "secret": root / "secret", "cert": root / "tls" / "hostd.crt",
            "state": root / "hostd.json", "port": root / "port"}


def read_hostd_state(data_dir: Path) -> dict[str, Any]:
    """What the running (or last) hostd published: url, pid, hostName; {} if none."""
    try:
        state: dict[str, Any] = json.loads(hostd_paths(data_dir)["state"].read_text())
        return state
    except (FileNotFoundError, ValueError):
        return {}


class HostdComponent:
    name = "hostd"

    def __init__(self, data_dir: Path, *, host_name: str = "pv-host-1", port: int = 0,
                 crx_dir: Path | None = None, templates: bool | None = None,
                 prewarm: Sequence[Layout] = ()) -> None:
        self.data_dir = Path(data_dir)
        self.host_name = host_name
        self.paths = hostd_paths(self.data_dir)
        self.root = self.paths["root"]
        self._requested_port = port
        self.port = 0
        if templates is None:
            templates = os.environ.get("PODVISOR_TEMPLATES", "1") not in ("0", "false", "no")
        self.runtime = QemuRuntime(self.root, crx_dir=crx_dir, templates=templates)
        self._runner: web.AppRunner | None = None
        self._prewarm = list(prewarm)
        self._prewarm_task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def secret_file(self) -> Path:
        return self.paths["secret"]

    @property
    def cert_file(self) -> Path:
        return self.paths["cert"]

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        secret = ensure_secret(self.paths["secret"])
        cert, key = ensure_certificate(self.root / "tls", host_name=self.host_name)
        await self.runtime.start()
        app = build_app(self.runtime, TicketAuthority(secret), host_name=self.host_name,
                        request_log=self.root / "requests.log")
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        ssl_ctx = server_context(cert, key)
        for port in self._port_candidates():
            site = web.TCPSite(self._runner, "127.0.0.1", port, ssl_context=ssl_ctx, reuse_address=True)
            try:
                await site.start()
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE and port != 0:
                    continue
                raise
            server = getattr(site, "_server", None)
            sockets = getattr(server, "sockets", None) or []
            self.port = sockets[0].getsockname()[1] if sockets else port
            break
        self.paths["port"].write_text(f"{self.port}\n")
        self.paths["state"].write_text(json.dumps({"url": self.url, "pid": os.getpid(), "hostName": self.host_name,
                                                   "cert": str(self.cert_file), "secret": str(self.secret_file)}))
        log.info("hostd %s listening on %s", self.host_name, self.url)
        if self._prewarm and self.runtime.templates.enabled:
            self._prewarm_task = asyncio.create_task(self.runtime.prewarm(self._prewarm), name="hostd-prewarm")

    def _port_candidates(self) -> list[int]:
        if self._requested_port:
            return [self._requested_port]
        with contextlib.suppress(FileNotFoundError, ValueError):
            remembered = int(self.paths["port"].read_text().strip())
            if remembered > 0:
                return [remembered, 0]
        return [0]

    async def stop(self) -> None:
        """Stop serving; the VMs keep running."""
        if self._prewarm_task is not None:
            self._prewarm_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._prewarm_task
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.runtime.close()
        with contextlib.suppress(FileNotFoundError):
            state = read_hostd_state(self.data_dir)
            if state.get("pid") == os.getpid():
                self.paths["state"].unlink()

    def describe(self) -> dict[str, Any]:
        return {"name": self.host_name, "hostd": self.url,
                "vms": self.runtime.vm_count()}
