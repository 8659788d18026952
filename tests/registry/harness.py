"""A real embedded registry for tests: Debian's docker-registry behind our token service.

It runs in a thread with its own event loop (so one registry serves a whole test session while each
test keeps its own loop), in a scratch data dir laid out as `podvisor up` lays it out: an admin token
in ``pki/admin-token`` and a few users in ``pki/tokens.csv``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

from podvisor.images.auth import Credential, Keychain
from podvisor.registry.component import EmbeddedRegistry

__all__ = ["RunningRegistry", "start_registry", "free_port", "dockerconfig_secret"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class RunningRegistry:
    data_dir: Path
    address: str
    admin_token: str
    tokens: dict[str, str]                      # user -> token
    component: EmbeddedRegistry
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    stopped: threading.Event = field(default_factory=threading.Event)

    def credential(self, user: str) -> Credential:
        if user == "admin":
            return Credential("admin", self.admin_token)
        return Credential(user, self.tokens[user])

    def keychain(self, user: str = "admin") -> Keychain:
        return Keychain({self.address: self.credential(user)})

    @property
    def storage(self) -> Path:
        return self.data_dir / "registry" / "storage" / "docker" / "registry" / "v2"

    def stop(self) -> None:
        fut = asyncio.run_coroutine_threadsafe(self.component.stop(), self.loop)
        fut.result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


USERS = {
    # user: groups
    "dev": "podvisor:project:team1",
    "other": "podvisor:project:team2",
    "node": "system:nodes",
    "nobody": "",
}


def start_registry(data_dir: Path, *, port: int = 0) -> RunningRegistry:
    pki = data_dir / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    admin = secrets.token_hex(16)
    (pki / "admin-token").write_text(admin + "\n")
    tokens = {user: secrets.token_hex(16) for user in USERS}
    lines = [f'{tok},{user},{1000 + i},"{USERS[user]}"' for i, (user, tok) in enumerate(tokens.items())]
    (pki / "tokens.csv").write_text("\n".join(lines) + "\n")
    component = EmbeddedRegistry(data_dir, port=port or free_port())
    loop = asyncio.new_event_loop()
    started = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(component.start())
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            errors.append(exc)
            started.set()
            return
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="test-registry", daemon=True)
    thread.start()
    started.wait(60)
    if errors:
        raise errors[0]
    return RunningRegistry(data_dir, component.address, admin, tokens, component, loop, thread)


def dockerconfig_secret(registry: str, user: str, password: str) -> dict[str, object]:
    """A Kubernetes Secret of type kubernetes.io/dockerconfigjson, as the API returns it (data base64)."""
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    config = json.dumps({"auths": {registry: {"auth": auth}}}).encode()
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": "pull", "namespace": "team1"},
            "data": {".dockerconfigjson": base64.b64encode(config).decode()}}
