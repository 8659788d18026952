"""A simulated `Runtime` for the spherelet's state-machine tests — explicitly not a container runtime.

Nothing runs: a "container" is a record whose behaviour is read from its argv, so a pod spec in a test
says what its containers do:

    ["fake", "exit", "3"]          runs and exits at once with code 3
    ["fake", "run"]                runs until signalled: SIGTERM -> exit 143, SIGKILL -> exit 137
    ["fake", "ignore-term"]        ignores SIGTERM; only SIGKILL ends it
    ["fake", "fail-start"]         cannot start (StartFailure)

A test ends a running container with `finish`, flips exec probes with `healthy`, opens ports with
`listen`, and reads what was written into a sandbox with `read`. Every call is counted in `calls`, and
`fail_next` injects a failure into the next call of a method. Exits are announced to subscribers like
a real runtime announces them.
"""

from __future__ import annotations

import asyncio
import posixpath
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from podvisor.spherelet.runtime import (
    ContainerInfo,
    ContainerNotFound,
    ContainerSpec,
    ExecResult,
    FileOp,
    HostInfo,
    RuntimeEvent,
    RuntimeFailure,
    Sandbox,
    SandboxNotFound,
    SandboxSpec,
    StartFailure,
)

__all__ = ["FakeRuntime", "FakeSandbox"]


@dataclass
class FakeContainer:
    spec: ContainerSpec
    info: ContainerInfo
    signals: list[int] = field(default_factory=list)


@dataclass
class FakeSandbox:
    spec: SandboxSpec
    sandbox: Sandbox
    containers: dict[str, FakeContainer] = field(default_factory=dict)
    files: dict[str, tuple[str, Any, int]] = field(default_factory=dict)    # path -> (kind, data|target, mode)
    volumes: dict[str, str] = field(default_factory=dict)
    open_ports: set[int] = field(default_factory=set)
    http_status: dict[int, int] = field(default_factory=dict)


class FakeRuntime:
    def __init__(self, *, now: Callable[[], float] = time.time, cpus: int = 4, memory: int = 8 << 30) -> None:
        self.now = now
        self.host = HostInfo(cpus=cpus, memory_bytes=memory, ephemeral_bytes=100 << 30, max_pods=110,
                             memory_available_bytes=memory // 2, ephemeral_available_bytes=50 << 30,
                             kernel_version="6.1.0-fake", os_image="Fake OS", machine_id="fake-machine",
                             boot_id="fake-boot", accel="tcg")
        self.sandboxes: dict[str, FakeSandbox] = {}
        self.calls: Counter[str] = Counter()
        self.failures: dict[str, RuntimeFailure] = {}
        self.unhealthy: set[str] = set()            # container names whose exec probes fail
        self.listeners: list[Callable[[RuntimeEvent], None]] = []
        self.started: list[str] = []                # "<pod>/<container id>" in the order they were started
        self.log: list[str] = []                    # "exec <cid> <args>", "signal <cid> <n>" in order

    # ---- test controls ----

    def fail_next(self, method: str, exc: RuntimeFailure) -> None:
        self.failures[method] = exc

    def _count(self, method: str) -> None:
        self.calls[method] += 1
        exc = self.failures.pop(method, None)
        if exc is not None:
            raise exc

    def _emit(self, ev: RuntimeEvent) -> None:
        for cb in list(self.listeners):
            asyncio.get_running_loop().call_soon(cb, ev)

    def by_pod(self, pod_name: str) -> FakeSandbox:
        live = [s for s in self.sandboxes.values() if s.spec.pod_name == pod_name]
        if not live:
            raise KeyError(pod_name)
        return max(live, key=lambda s: s.spec.attempt)

    def container(self, pod_name: str, name: str) -> FakeContainer:
        sb = self.by_pod(pod_name)
        cands = [c for c in sb.containers.values() if c.spec.name == name]
        return max(cands, key=lambda c: int(c.spec.id.rsplit("-", 1)[1]))

    def finish(self, pod_name: str, name: str, code: int = 0) -> None:
        sb = self.by_pod(pod_name)
        c = self.container(pod_name, name)
        self._exit(sb, c, code)

    def healthy(self, name: str, ok: bool) -> None:
        (self.unhealthy.discard if ok else self.unhealthy.add)(name)

    def listen(self, pod_name: str, port: int, *, status: int = 200) -> None:
        sb = self.by_pod(pod_name)
        sb.open_ports.add(port)
        sb.http_status[port] = status

    @staticmethod
    def _resolve(files: dict[str, tuple[str, Any, int]], path: str) -> str:
        """Follow symlinks in every component of ``path``, as open(2) does."""
        for _ in range(20):
            parts = path.split("/")
            for i in range(1, len(parts) + 1):
                prefix = "/".join(parts[:i])
                entry = files.get(prefix)
                if entry is not None and entry[0] == "symlink":
                    target = posixpath.normpath(posixpath.join(posixpath.dirname(prefix), entry[1]))
                    path = "/".join([target, *parts[i:]])
                    break
            else:
                return path
        raise RuntimeError("symlink loop")

    def read(self, pod_name: str, path: str) -> bytes:
        """A file as a container would read it, following the atomic-writer symlinks."""
        files = self.by_pod(pod_name).files
        return bytes(files[self._resolve(files, path)][1])

    def mode(self, pod_name: str, path: str) -> int:
        files = self.by_pod(pod_name).files
        return files[self._resolve(files, path)][2]

    def _exit(self, sb: FakeSandbox, c: FakeContainer, code: int) -> None:
        if c.info.state == "exited":
            return
        c.info = replace(c.info, state="exited", exit_code=code, finished_at=self.now(),
                         reason="Completed" if code == 0 else "Error")
        self._emit(RuntimeEvent(sb.spec.id, "container-exited", c.spec.id))

    # ---- Runtime ----

    async def host_info(self) -> HostInfo:
        self._count("host_info")
        return self.host

    async def list_sandboxes(self) -> list[Sandbox]:
        self._count("list_sandboxes")
        return [s.sandbox for s in self.sandboxes.values()]

    async def create_sandbox(self, spec: SandboxSpec) -> Sandbox:
        self._count("create_sandbox")
        if spec.id in self.sandboxes:
            raise RuntimeFailure(f"sandbox {spec.id} exists")
        ip = str(spec.network.ip) if spec.network is not None else "10.88.0.9"
        sb = Sandbox(id=spec.id, pod_uid=spec.pod_uid, pod_namespace=spec.pod_namespace, pod_name=spec.pod_name,
                     attempt=spec.attempt, state="ready", created_at=self.now(), ip=ip,
                     images=tuple(d.id for d in spec.images), vcpus=spec.vcpus, memory_mib=spec.memory_mib)
        self.sandboxes[spec.id] = FakeSandbox(spec, sb)
        return sb

    def _sb(self, sandbox_id: str, *, running: bool = True) -> FakeSandbox:
        sb = self.sandboxes.get(sandbox_id)
        if sb is None or (running and sb.sandbox.state != "ready"):
            raise SandboxNotFound(f"no sandbox {sandbox_id}")
        return sb

    async def stop_sandbox(self, sandbox_id: str, *, timeout_s: float = 10.0) -> None:
        self._count("stop_sandbox")
        sb = self._sb(sandbox_id, running=False)
        for c in sb.containers.values():
            if c.info.state == "running":
                c.info = replace(c.info, state="exited", exit_code=137, finished_at=self.now(), reason="Error")
        sb.sandbox = replace(sb.sandbox, state="stopped")

    async def destroy_sandbox(self, sandbox_id: str) -> None:
        self._count("destroy_sandbox")
        self.sandboxes.pop(sandbox_id, None)

    def crash_sandbox(self, pod_name: str) -> None:
        """The VM died on its own."""
        sb = self.by_pod(pod_name)
        sb.sandbox = replace(sb.sandbox, state="stopped")
        self._emit(RuntimeEvent(sb.spec.id, "sandbox-gone"))

    async def prepare_volume(self, sandbox_id: str, name: str, *, medium: str = "", size_limit_bytes: int = 0) -> str:
        self._count("prepare_volume")
        sb = self._sb(sandbox_id)
        path = f"/run/volumes/{name}" if medium == "Memory" else f"volumes/{name}"
        sb.volumes[name] = path
        return path

    async def write_files(self, sandbox_id: str, ops: Sequence[FileOp]) -> None:
        self._count("write_files")
        sb = self._sb(sandbox_id)
        for op in ops:
            if op.kind == "remove":
                for p in [p for p in sb.files if p == op.path or p.startswith(op.path + "/")]:
                    del sb.files[p]
            elif op.kind == "symlink":
                sb.files[op.path] = ("symlink", op.target, 0o777)
            elif op.kind == "dir":
                sb.files[op.path] = ("dir", b"", op.mode)
            else:
                sb.files[op.path] = ("file", op.data, op.mode)

    async def create_container(self, sandbox_id: str, spec: ContainerSpec) -> None:
        self._count("create_container")
        sb = self._sb(sandbox_id)
        if spec.id in sb.containers:
            raise RuntimeFailure(f"container {spec.id} exists")
        info = ContainerInfo(id=spec.id, name=spec.name, state="created", created_at=self.now(), log_path=spec.log_path)
        sb.containers[spec.id] = FakeContainer(spec, info)

    async def start_container(self, sandbox_id: str, container_id: str) -> None:
        self._count("start_container")
        sb = self._sb(sandbox_id)
        c = sb.containers.get(container_id)
        if c is None:
            raise ContainerNotFound(container_id)
        args = list(c.spec.args)
        if args[:2] == ["fake", "fail-start"]:
            c.info = replace(c.info, state="exited", exit_code=128, reason="StartError",
                             message="exec: no such file", finished_at=self.now())
            raise StartFailure("exec: no such file")
        c.info = replace(c.info, state="running", started_at=self.now())
        self.started.append(f"{sb.spec.pod_name}/{container_id}")
        if args[:2] == ["fake", "exit"]:
            self._exit(sb, c, int(args[2]) if len(args) > 2 else 0)

    async def signal_container(self, sandbox_id: str, container_id: str, signal: int) -> None:
        self._count("signal_container")
        sb = self._sb(sandbox_id)
        c = sb.containers.get(container_id)
        if c is None:
            raise ContainerNotFound(container_id)
        c.signals.append(signal)
        self.log.append(f"signal {container_id} {signal}")
        if c.info.state != "running":
            return
        if signal == 9:
            self._exit(sb, c, 137)
        elif signal == 15 and list(c.spec.args)[:2] != ["fake", "ignore-term"]:
            self._exit(sb, c, 143)

    async def remove_container(self, sandbox_id: str, container_id: str) -> None:
        self._count("remove_container")
        sb = self._sb(sandbox_id)
        sb.containers.pop(container_id, None)

    async def list_containers(self, sandbox_id: str) -> list[ContainerInfo]:
        self._count("list_containers")
        sb = self._sb(sandbox_id)
        return [c.info for c in sb.containers.values()]

    async def exec_sync(self, sandbox_id: str, container_id: str, args: Sequence[str], *,
                        timeout_s: float) -> ExecResult:
        self._count("exec_sync")
        sb = self._sb(sandbox_id)
        c = sb.containers.get(container_id)
        if c is None or c.info.state != "running":
            raise ContainerNotFound(container_id)
        self.log.append(f"exec {container_id} {' '.join(args)}")
        if list(args) == ["false"] or c.spec.name in self.unhealthy:
            return ExecResult(1, b"", b"unhealthy\n")
        return ExecResult(0, b"ok\n")

    async def port_check(self, sandbox_id: str, port: int, *, timeout_s: float) -> None:
        self._count("port_check")
        if port not in self._sb(sandbox_id).open_ports:
            raise ConnectionRefusedError("connection refused")

    async def http_get(self, sandbox_id: str, port: int, request: bytes, *, timeout_s: float) -> bytes:
        self._count("http_get")
        sb = self._sb(sandbox_id)
        if port not in sb.open_ports:
            raise ConnectionRefusedError("connection refused")
        status = sb.http_status.get(port, 200)
        return f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode()

    def subscribe(self, listener: Callable[[RuntimeEvent], None]) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener) if listener in self.listeners else None
