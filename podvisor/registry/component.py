"""The embedded registry: CNCF distribution (Debian's ``docker-registry``) behind our token service.

`podvisor up` owns one `EmbeddedRegistry`. ``start()`` makes (once) the token signing key, picks the
registry port (5000 if free, else any free port; remembered in ``DATA/registry/state.json`` so a restart
keeps the address pods and users already know), starts the token service in-process on loopback, writes
a distribution config whose ``auth: token`` trusts our key, and runs the registry binary, restarting it
if it dies. Storage lives in ``DATA/registry/storage``. The address is published by the caller: the
`config_map()` body for ``kube-public/local-registry-hosting`` and ``address`` for status.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp
import yaml
from aiohttp import web

from podvisor.registry.identity import TokenFileAuthenticator
from podvisor.registry.keys import SigningKey
from podvisor.registry.policy import Authorizer, ProjectPolicy
from podvisor.registry.tokens import ISSUER, SERVICE_NAME, TokenService

__all__ = ["EmbeddedRegistry", "RegistryError", "REGISTRY_BINARY", "read_registry_state"]

REGISTRY_BINARY = "/usr/bin/docker-registry"
DEFAULT_PORT = 5000
log = logging.getLogger(__name__)


class RegistryError(RuntimeError):
    """The registry could not be started."""


def read_registry_state(data_dir: Path) -> dict[str, Any]:
    """What the last start recorded (``address``, ``port``, ``token_realm``); {} if never started."""
    try:
        state: dict[str, Any] = json.loads((data_dir / "registry" / "state.json").read_text())
        return state
    except (FileNotFoundError, ValueError):
        return {}


class EmbeddedRegistry:
    def __init__(self, data_dir: Path, *, host: str = "127.0.0.1", port: int = 0,
                 authorizer: Authorizer | None = None, binary: str = REGISTRY_BINARY) -> None:
        self.name = "registry"            # as `podvisor up` lists its components
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / "registry"
        self.host = host
        self._requested_port = port
        self.port = 0
        self.binary = binary
        self.authorizer: Authorizer = authorizer or ProjectPolicy()
        self._runner: web.AppRunner | None = None
        self._token_port = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False

    # --- public surface -------------------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def token_realm(self) -> str:
        return f"http://127.0.0.1:{self._token_port}/token"

    def config_map(self) -> dict[str, Any]:
        """The ``kube-public/local-registry-hosting`` ConfigMap (KEP-1755, as kind/k3d/minikube)."""
        body = (f'host: "{self.address}"\n'
                'help: "https://github.com/kubernetes/enhancements/tree/master/keps/sig-cluster-lifecycle/'
                'generic/1755-communicating-a-local-registry"\n')
        return {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "local-registry-hosting", "namespace": "kube-public"},
                "data": {"localRegistryHosting.v1": body}}

    def describe(self) -> dict[str, Any]:
        return self.status()

    def status(self) -> dict[str, Any]:
        return {"registry": self.address, "token_realm": self.token_realm,
                "running": self._proc is not None and self._proc.returncode is None}

    async def start(self) -> None:
        key = await asyncio.to_thread(self._prepare)
        self.port = self._choose_port()
        service = TokenService(key=key, authenticator=TokenFileAuthenticator(self.data_dir / "pki"),
                               authorizer=self.authorizer)
        self._runner = web.AppRunner(service.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self._token_port = sockets[0].getsockname()[1]
        config_path = self._write_config(key)
        self._write_state()
        self._stopping = False
        try:
            await self._spawn(config_path)
            await self._wait_ready()
        except BaseException:
            await asyncio.shield(self.stop())
            raise
        self._supervisor = asyncio.create_task(self._supervise(config_path), name="registry-supervisor")

    async def stop(self) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> EmbeddedRegistry:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.shield(self.stop())

    # --- internals ------------------------------------------------------------------------------
    def _prepare(self) -> SigningKey:
        if not Path(self.binary).exists():
            raise RegistryError(f"{self.binary} is missing: install Debian's docker-registry package")
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "storage").mkdir(exist_ok=True)
        return SigningKey.load_or_create(self.root)

    def _choose_port(self) -> int:
        if self._requested_port:
            return self._requested_port
        remembered = int(read_registry_state(self.data_dir).get("port") or 0)
        for candidate in (remembered, DEFAULT_PORT):
            if candidate and _port_free(self.host, candidate):
                return candidate
        return _free_port(self.host)

    def _write_config(self, key: SigningKey) -> Path:
        secret_path = self.root / "http-secret"
        if not secret_path.exists():
            secret_path.write_text(secrets.token_hex(32))
            secret_path.chmod(0o600)
        config = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text", "fields": {"service": "podvisor-registry"}},
            "storage": {"filesystem": {"rootdirectory": str(self.root / "storage")},
                        "delete": {"enabled": True}, "cache": {"blobdescriptor": "inmemory"},
                        "maintenance": {"uploadpurging": {"enabled": True, "age": "24h", "interval": "12h",
                                                          "dryrun": False}}},
            "http": {"addr": self.address, "secret": secret_path.read_text().strip(),
                     "headers": {"X-Content-Type-Options": ["nosniff"]}},
            "auth": {"token": {"realm": self.token_realm, "service": SERVICE_NAME, "issuer": ISSUER,
                               "rootcertbundle": str(key.cert_path)}},
            "health": {"storagedriver": {"enabled": False}},
        }
        path = self.root / "config.yml"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        tmp.chmod(0o600)
        os.replace(tmp, path)
        return path

    def _write_state(self) -> None:
        state = {"address": self.address, "port": self.port, "token_realm": self.token_realm,
                 "service": SERVICE_NAME}
        tmp = self.root / "state.json.tmp"
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, self.root / "state.json")

    async def _spawn(self, config_path: Path) -> None:
        logf = self._open_log()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                self.binary, "serve", str(config_path), stdin=asyncio.subprocess.DEVNULL, stdout=logf,
                stderr=logf, start_new_session=True)
        finally:
            logf.close()

    def _open_log(self) -> BinaryIO:
        return open(self.root / "registry.log", "ab")  # noqa: SIM115 - handed to the child, closed by _spawn

    async def _wait_ready(self, limit: float = 20.0) -> None:
        url = f"http://{self.address}/v2/"
        deadline = asyncio.get_running_loop().time() + limit
        async with aiohttp.ClientSession() as session:
            while True:
                if self._proc is None or self._proc.returncode is not None:
                    raise RegistryError(f"docker-registry exited: {self._log_tail()}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                        if resp.status in (200, 401):
                            return
                if asyncio.get_running_loop().time() > deadline:
                    raise RegistryError(f"docker-registry not ready at {url}: {self._log_tail()}")
                await asyncio.sleep(0.05)

    async def _supervise(self, config_path: Path) -> None:
        delay = 0.5
        while not self._stopping:
            proc = self._proc
            if proc is None:
                return
            code = await proc.wait()
            if self._stopping:
                return
            log.warning("docker-registry exited with %s; restarting in %.1fs", code, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
            await self._spawn(config_path)
            with contextlib.suppress(RegistryError):
                await self._wait_ready()
                delay = 0.5

    def _log_tail(self) -> str:
        try:
            lines = (self.root / "registry.log").read_text(errors="replace").strip().splitlines()
        except FileNotFoundError:
            return "(no log)"
        return " | ".join(lines[-3:])


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port

