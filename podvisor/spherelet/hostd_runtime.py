"""`Runtime` over hostd and the guest agent: a sandbox is a hostd VM, containers are the agent's.

Sandbox calls go to hostd's API (``POST /vms`` with ``powerOn``: hostd verifies the CRX bundle, boots
the VM, says Hello and sets up disks, hostname, /etc/hosts and the NIC; ``DELETE /vms/{id}`` removes
it with the ephemeral disk it made). Container calls go to the VM's guest agent through hostd's
relay (``/vms/{id}/agent``): one relay connection per running VM, kept open, whose ContainerExit
broadcasts become `RuntimeEvent`\\ s. When a relay closes, the VM is looked at again: powered off means
``sandbox-gone``; otherwise the next call reconnects.

The pod's identity travels in the VM's labels (``podvisor.io/pod-uid``, ``-namespace``, ``-name``,
``-sandbox-attempt``), which is how `list_sandboxes` maps VMs back to pods after any restart.

Logs of a VM that is off are read from its ephemeral disk on the host (``debugfs``, no mount), so
``kubectl logs`` works for a finished pod whose VM is powered off.

Error mapping: hostd 404 → `SandboxNotFound`; a VM that is off (the relay answers 409) →
`SandboxNotFound`; hostd unreachable or the agent connection lost → `RuntimeUnavailable`; agent
``NotFound`` → `ContainerNotFound`; ``StartError`` → `StartFailure`; anything else → `RuntimeFailure`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from podvisor.crx.client import AgentClient, AgentDisconnected, AgentError, Stream
from podvisor.crx.protocol import ContainerStatus, CreateContainer
from podvisor.disks import DiskError, read_disk_file
from podvisor.hostd.client import HostdAPIError, HostdClient
from podvisor.spherelet.hostfacts import local_host_info
from podvisor.spherelet.runtime import (
    EPHEMERAL_DISK_ID,
    ContainerInfo,
    ContainerNotFound,
    ContainerSpec,
    ExecResult,
    FileOp,
    HostInfo,
    RuntimeEvent,
    RuntimeFailure,
    RuntimeUnavailable,
    Sandbox,
    SandboxNotFound,
    SandboxSpec,
    StartFailure,
)

__all__ = ["HostdRuntime", "LABEL_UID", "LABEL_NAMESPACE", "LABEL_NAME", "LABEL_ATTEMPT"]

log = logging.getLogger("podvisor.spherelet.hostd")

LABEL_UID = "podvisor.io/pod-uid"
LABEL_NAMESPACE = "podvisor.io/pod-namespace"
LABEL_NAME = "podvisor.io/pod-name"
LABEL_ATTEMPT = "podvisor.io/sandbox-attempt"


def _agent_error(exc: AgentError, what: str) -> RuntimeFailure:
    if isinstance(exc, AgentDisconnected):
        return RuntimeUnavailable(f"{what}: {exc.message}")
    if exc.code == "NotFound":
        return ContainerNotFound(f"{what}: {exc.message}")
    if exc.code == "StartError":
        return StartFailure(exc.message)
    return RuntimeFailure(f"{what}: {exc.message}")


def _hostd_error(exc: Exception, what: str) -> RuntimeFailure:
    if isinstance(exc, HostdAPIError):
        if exc.status == 404:
            return SandboxNotFound(f"{what}: {exc.message}")
        if exc.status == 409 and "agent" in exc.message:
            return SandboxNotFound(f"{what}: {exc.message}")
        return RuntimeFailure(f"{what}: {exc.message or exc.code}")
    return RuntimeUnavailable(f"{what}: hostd is not reachable: {exc}")


def _info(st: ContainerStatus) -> ContainerInfo:
    def secs(ns: Any) -> float:
        return int(ns or 0) / 1e9

    return ContainerInfo(id=st["containerId"], name=st.get("name", ""), state=st.get("state", "exited"),
                         exit_code=int(st.get("exitCode", 0)), reason=str(st.get("reason") or ""),
                         message=str(st.get("message") or ""), oom_killed=bool(st.get("oomKilled")),
                         created_at=secs(st.get("createdAt")), started_at=secs(st.get("startedAt")),
                         finished_at=secs(st.get("finishedAt")), log_path=str(st.get("logPath") or ""))


class _Process:
    """An agent stream with the runtime's errors (`ProcessStream`)."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream

    def __aiter__(self) -> AsyncIterator[tuple[int, bytes]]:
        return self.stream.__aiter__()

    async def write(self, data: bytes) -> None:
        try:
            await self.stream.write(data)
        except AgentError as exc:
            raise _agent_error(exc, "write") from exc

    async def close_input(self) -> None:
        with contextlib.suppress(AgentError):
            await self.stream.close_input()

    async def resize(self, rows: int, cols: int) -> None:
        with contextlib.suppress(AgentError):
            await self.stream.resize(rows, cols)

    async def wait(self) -> int | None:
        return await self.stream.wait()

    async def cancel(self) -> None:
        await self.stream.cancel()


class HostdRuntime:
    def __init__(self, hostd: HostdClient, *, data_dir: Path, max_pods: int = 110,
                 host_facts: Callable[[], HostInfo] | None = None) -> None:
        self.hostd = hostd
        self.data_dir = Path(data_dir)
        self.max_pods = max_pods
        self._facts = host_facts or (lambda: local_host_info(self.data_dir, max_pods=max_pods))
        self._agents: dict[str, AgentClient] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._listeners: list[Callable[[RuntimeEvent], None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._ephemeral: dict[str, Path] = {}

    @classmethod
    def from_data_dir(cls, data_dir: Path, *, url: str | None = None, **kw: Any) -> HostdRuntime:
        return cls(HostdClient.from_data_dir(data_dir, url=url), data_dir=data_dir, **kw)

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for a in list(self._agents.values()):
            await a.close()
        self._agents.clear()
        await self.hostd.close()

    # ---- events ------------------------------------------------------------------------------------

    def subscribe(self, listener: Callable[[RuntimeEvent], None]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _emit(self, ev: RuntimeEvent) -> None:
        for cb in list(self._listeners):
            try:
                cb(ev)
            except Exception:
                log.exception("runtime event listener failed")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relay_closed(self, vm_id: str, agent: AgentClient) -> None:
        await agent.closed.wait()
        if self._agents.get(vm_id) is agent:
            del self._agents[vm_id]
        with contextlib.suppress(Exception):
            vm = await self.hostd.get_vm(vm_id)
            if vm.get("power") != "off":
                return
        self._emit(RuntimeEvent(vm_id, "sandbox-gone"))

    async def _agent(self, vm_id: str) -> AgentClient:
        agent = self._agents.get(vm_id)
        if agent is not None and not agent.closed.is_set():
            return agent
        lock = self._locks.setdefault(vm_id, asyncio.Lock())
        async with lock:
            agent = self._agents.get(vm_id)
            if agent is not None and not agent.closed.is_set():
                return agent
            try:
                agent = await self.hostd.agent(vm_id)
            except (HostdAPIError, aiohttp.ClientError, OSError) as exc:
                raise _hostd_error(exc, f"guest agent of {vm_id}") from exc

            def on_exit(st: ContainerStatus, _vm: str = vm_id) -> None:
                self._emit(RuntimeEvent(_vm, "container-exited", str(st.get("containerId", ""))))

            agent.exit_listeners.append(on_exit)
            self._agents[vm_id] = agent
            self._spawn(self._relay_closed(vm_id, agent))
            return agent

    async def _call(self, vm_id: str, what: str, fn: Callable[[AgentClient], Any]) -> Any:
        agent = await self._agent(vm_id)
        try:
            return await fn(agent)
        except AgentError as exc:
            raise _agent_error(exc, what) from exc
        except TimeoutError as exc:
            raise RuntimeUnavailable(f"{what}: the guest agent did not answer in time") from exc

    # ---- host and sandboxes -------------------------------------------------------------------------

    async def host_info(self) -> HostInfo:
        facts = self._facts()
        try:
            host = await self.hostd.host()
        except (HostdAPIError, aiohttp.ClientError, OSError) as exc:
            raise _hostd_error(exc, "host info") from exc
        disk = host.get("disk") or {}
        return HostInfo(
            cpus=int(host.get("cpus") or facts.cpus), memory_bytes=int(host.get("memoryBytes") or facts.memory_bytes),
            ephemeral_bytes=int(disk.get("capacityBytes") or facts.ephemeral_bytes), max_pods=self.max_pods,
            memory_available_bytes=int(host.get("memoryAvailableBytes", facts.memory_available_bytes)),
            ephemeral_available_bytes=int(disk.get("availableBytes", facts.ephemeral_available_bytes)),
            pids_max=facts.pids_max, pids_used=facts.pids_used, kernel_version=facts.kernel_version,
            os_image=facts.os_image, architecture=facts.architecture, machine_id=facts.machine_id,
            system_uuid=facts.system_uuid, boot_id=facts.boot_id, accel=str(host.get("accel") or ""),
            instance_type=f"microvm-{host.get('accel') or 'tcg'}")

    def _sandbox(self, vm: dict[str, Any]) -> Sandbox | None:
        labels = vm.get("labels") or {}
        uid = labels.get(LABEL_UID)
        if not uid:
            return None
        for d in vm.get("disks") or []:
            if d.get("kind") == "ephemeral" and d.get("path"):
                self._ephemeral[str(vm["id"])] = Path(d["path"])
        power = vm.get("power")
        state = "ready" if power == "on" else "stopped" if power == "off" else "unknown"
        ip = ""
        for n in vm.get("nics") or []:
            if n.get("ip"):
                ip = str(n["ip"]).split("/")[0]
                break
        try:
            attempt = int(labels.get(LABEL_ATTEMPT, "0"))
        except ValueError:
            attempt = 0
        return Sandbox(id=str(vm["id"]), pod_uid=uid, pod_namespace=labels.get(LABEL_NAMESPACE, ""),
                       pod_name=labels.get(LABEL_NAME, ""), attempt=attempt, state=state,  # type: ignore[arg-type]
                       created_at=float(vm.get("createdAt") or 0), ip=ip,
                       images=tuple(str(d.get("id")) for d in vm.get("disks") or [] if d.get("kind") == "image"),
                       vcpus=int(vm.get("vcpus") or 0), memory_mib=int(vm.get("memoryMiB") or 0))

    async def list_sandboxes(self) -> list[Sandbox]:
        try:
            vms = await self.hostd.list_vms()
        except (HostdAPIError, aiohttp.ClientError, OSError) as exc:
            raise _hostd_error(exc, "list VMs") from exc
        return [sb for vm in vms if (sb := self._sandbox(vm)) is not None]

    def _vm_spec(self, spec: SandboxSpec) -> dict[str, Any]:
        disks: list[dict[str, Any]] = [{"id": d.id, "kind": "image", "path": str(d.path), "readOnly": True}
                                       for d in spec.images]
        disks.append({"id": EPHEMERAL_DISK_ID, "kind": "ephemeral", "sizeBytes": int(spec.ephemeral_bytes)})
        body: dict[str, Any] = {
            "id": spec.id, "vcpus": spec.vcpus, "memoryMiB": spec.memory_mib, "hostname": spec.hostname,
            "labels": {**dict(spec.labels), LABEL_UID: spec.pod_uid, LABEL_NAMESPACE: spec.pod_namespace,
                       LABEL_NAME: spec.pod_name, LABEL_ATTEMPT: str(spec.attempt)},
            "disks": disks, "nics": [], "guest": {},
        }
        if spec.hosts_file:
            body["guest"]["hosts"] = spec.hosts_file
        if spec.tap is not None:
            nic: dict[str, Any] = {"id": "eth0", "mac": spec.tap.mac, "tap": spec.tap.name, "netns": spec.tap.netns}
            if spec.network is not None:
                nic.update(ip=str(spec.network.address), gateway=str(spec.network.gateway), mtu=spec.network.mtu)
                resolv = spec.network.resolv_conf()
                if resolv:
                    body["guest"]["resolvConf"] = resolv
            body["nics"].append(nic)
        return body

    async def create_sandbox(self, spec: SandboxSpec) -> Sandbox:
        body = self._vm_spec(spec)
        for attempt in (0, 1):
            try:
                vm = await self.hostd.create_vm(body, power_on=True)
                sb = self._sandbox(vm)
                assert sb is not None
                return sb
            except HostdAPIError as exc:
                if exc.status == 409 and attempt == 0 and "already exists" in exc.message:
                    # left over from an interrupted start: start again from nothing
                    await self.destroy_sandbox(spec.id)
                    continue
                with contextlib.suppress(Exception):  # a VM that failed to boot is not kept
                    await self.hostd.destroy_vm(spec.id)
                raise _hostd_error(exc, f"create VM {spec.id}") from exc
            except (aiohttp.ClientError, OSError) as exc:
                raise _hostd_error(exc, f"create VM {spec.id}") from exc
        raise RuntimeFailure(f"create VM {spec.id}: it keeps existing")

    async def stop_sandbox(self, sandbox_id: str, *, timeout_s: float = 10.0) -> None:
        agent = self._agents.pop(sandbox_id, None)
        try:
            vm = await self.hostd.power_off(sandbox_id, timeout_s=timeout_s)
            self._sandbox(vm)
        except (HostdAPIError, aiohttp.ClientError, OSError) as exc:
            raise _hostd_error(exc, f"power off {sandbox_id}") from exc
        finally:
            if agent is not None:
                await agent.close()

    async def destroy_sandbox(self, sandbox_id: str) -> None:
        agent = self._agents.pop(sandbox_id, None)
        if agent is not None:
            await agent.close()
        try:
            await self.hostd.destroy_vm(sandbox_id)
        except HostdAPIError as exc:
            if exc.status != 404:
                raise _hostd_error(exc, f"destroy {sandbox_id}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise _hostd_error(exc, f"destroy {sandbox_id}") from exc
        self._ephemeral.pop(sandbox_id, None)
        self._locks.pop(sandbox_id, None)

    # ---- files and volumes --------------------------------------------------------------------------

    async def prepare_volume(self, sandbox_id: str, name: str, *, medium: str = "", size_limit_bytes: int = 0) -> str:
        resp = await self._call(sandbox_id, f"volume {name}",
                                lambda a: a.create_volume(name, medium=medium, size_limit_bytes=size_limit_bytes))
        return str(resp.get("path") or f"volumes/{name}")

    async def write_files(self, sandbox_id: str, ops: Sequence[FileOp]) -> None:
        agent = await self._agent(sandbox_id)
        for op in ops:
            try:
                if op.kind == "dir":
                    await agent.make_dir(op.path, mode=op.mode)
                elif op.kind == "symlink":
                    await agent.symlink(op.path, op.target)
                elif op.kind == "remove":
                    with contextlib.suppress(AgentError):
                        await agent.remove_path(op.path)
                else:
                    await agent.write_file(op.path, op.data, mode=op.mode)
            except AgentError as exc:
                raise _agent_error(exc, f"write {op.path}") from exc

    # ---- containers ---------------------------------------------------------------------------------

    async def create_container(self, sandbox_id: str, spec: ContainerSpec) -> None:
        body: CreateContainer = {"containerId": spec.id, "name": spec.name, "image": spec.image,
                                 "args": list(spec.args), "env": list(spec.env), "tty": spec.tty, "stdin": spec.stdin}
        if spec.stdin_once:
            body["stdinOnce"] = True
        if spec.working_dir:
            body["workingDir"] = spec.working_dir
        user: dict[str, Any] = {}
        if spec.uid is not None:
            user["uid"] = spec.uid
        if spec.gid is not None:
            user["gid"] = spec.gid
        if spec.user_name:
            user["name"] = spec.user_name
        if spec.supplemental_groups:
            user["additionalGids"] = list(spec.supplemental_groups)
        if user:
            body["user"] = user  # type: ignore[typeddict-item]
        if spec.mounts:
            body["mounts"] = [{"source": m.source, "destination": m.destination, "readOnly": m.read_only}
                              for m in spec.mounts]
        if spec.log_path:
            body["logPath"] = spec.log_path
        resources: dict[str, int] = {}
        if spec.memory_limit_bytes:
            resources["memoryLimitBytes"] = spec.memory_limit_bytes
        if spec.cpu_limit_millis:
            resources["cpuLimitMillis"] = spec.cpu_limit_millis
        if resources:
            body["resources"] = resources  # type: ignore[typeddict-item]
        if spec.capabilities_add or spec.capabilities_drop:
            body["capabilities"] = {"add": list(spec.capabilities_add), "drop": list(spec.capabilities_drop)}
        if spec.no_new_privileges:
            body["noNewPrivileges"] = True
        await self._call(sandbox_id, f"create container {spec.name}", lambda a: a.create_container(body))

    async def start_container(self, sandbox_id: str, container_id: str) -> None:
        await self._call(sandbox_id, f"start container {container_id}", lambda a: a.start_container(container_id))

    async def signal_container(self, sandbox_id: str, container_id: str, signal: int) -> None:
        await self._call(sandbox_id, f"signal {container_id}",
                         lambda a: a.signal_container(container_id, signal, all_processes=signal == 9))

    async def remove_container(self, sandbox_id: str, container_id: str) -> None:
        try:
            await self._call(sandbox_id, f"remove {container_id}", lambda a: a.remove_container(container_id))
        except ContainerNotFound:
            pass

    async def list_containers(self, sandbox_id: str) -> list[ContainerInfo]:
        statuses = await self._call(sandbox_id, "list containers", lambda a: a.list_containers())
        return [_info(st) for st in statuses]

    # ---- exec, probes, streams ----------------------------------------------------------------------

    async def exec_sync(self, sandbox_id: str, container_id: str, args: Sequence[str], *,
                        timeout_s: float) -> ExecResult:
        stream = await self._call(sandbox_id, f"exec in {container_id}", lambda a: a.exec(container_id, list(args)))
        try:
            out, err = await asyncio.wait_for(stream.read_all(), timeout_s)
        except TimeoutError:
            await stream.cancel()
            return ExecResult(exit_code=-1, timed_out=True)
        code = await stream.wait()
        return ExecResult(exit_code=code if code is not None else -1, stdout=out, stderr=err)

    async def _connect(self, sandbox_id: str, port: int) -> Stream:
        agent = await self._agent(sandbox_id)
        try:
            stream: Stream = await agent.port_forward(port)
            return stream
        except AgentDisconnected as exc:
            raise RuntimeUnavailable(str(exc)) from exc
        except AgentError as exc:
            raise ConnectionRefusedError(exc.message) from exc

    async def port_check(self, sandbox_id: str, port: int, *, timeout_s: float) -> None:
        stream = await asyncio.wait_for(self._connect(sandbox_id, port), timeout_s)
        await stream.cancel()

    async def http_get(self, sandbox_id: str, port: int, request: bytes, *, timeout_s: float) -> bytes:
        deadline = time.monotonic() + timeout_s
        stream = await asyncio.wait_for(self._connect(sandbox_id, port), timeout_s)
        answer = bytearray()
        try:
            await stream.write(request)
            it = stream.__aiter__()
            while b"\r\n\r\n" not in answer and len(answer) < 65536:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                try:
                    _, chunk = await asyncio.wait_for(it.__anext__(), left)
                except StopAsyncIteration:
                    break
                answer += chunk
        finally:
            await stream.cancel()
        return bytes(answer)

    async def exec(self, sandbox_id: str, container_id: str, args: Sequence[str], *, tty: bool, stdin: bool,
                   rows: int = 24, cols: int = 80) -> _Process:
        stream = await self._call(sandbox_id, f"exec in {container_id}",
                                  lambda a: a.exec(container_id, list(args), tty=tty, stdin=stdin, rows=rows, cols=cols))
        return _Process(stream)

    async def attach(self, sandbox_id: str, container_id: str, *, stdin: bool, rows: int | None = None,
                     cols: int | None = None) -> _Process:
        stream = await self._call(sandbox_id, f"attach to {container_id}",
                                  lambda a: a.attach(container_id, stdin=stdin, rows=rows, cols=cols))
        return _Process(stream)

    async def port_forward(self, sandbox_id: str, port: int) -> _Process:
        try:
            return _Process(await self._connect(sandbox_id, port))
        except ConnectionRefusedError as exc:
            raise RuntimeFailure(str(exc)) from exc

    async def read_log(self, sandbox_id: str, container_id: str, log_path: str, *, follow: bool,
                       offset: int = 0) -> AsyncIterator[bytes]:
        try:
            agent = await self._agent(sandbox_id)
        except SandboxNotFound:
            agent = None
        if agent is None:
            data = await self._log_from_disk(sandbox_id, log_path)
            if data[offset:]:
                yield data[offset:]
            return
        try:
            if follow:
                stream = await agent.read_log(container_id=container_id, follow=True, offset=offset)
            else:
                stream = await agent.read_log(path=log_path, offset=offset)
        except AgentError as exc:
            if exc.code == "NotFound" and follow:
                stream = await agent.read_log(path=log_path, offset=offset)
            elif exc.code == "NotFound":
                return
            else:
                raise _agent_error(exc, f"log of {container_id}") from exc
        try:
            async for _, chunk in stream:
                yield chunk
        finally:
            await stream.cancel()

    async def _log_from_disk(self, sandbox_id: str, log_path: str) -> bytes:
        disk = self._ephemeral.get(sandbox_id)
        if disk is None:
            try:
                vm = await self.hostd.get_vm(sandbox_id)
            except (HostdAPIError, aiohttp.ClientError, OSError) as exc:
                raise _hostd_error(exc, f"log of {sandbox_id}") from exc
            self._sandbox(vm)
            disk = self._ephemeral.get(sandbox_id)
        if disk is None or not disk.exists():
            raise SandboxNotFound(f"the disk of {sandbox_id} is gone")
        try:
            return await read_disk_file(disk, log_path)
        except DiskError as exc:
            raise RuntimeFailure(f"reading {log_path} from the disk of {sandbox_id}: {exc}") from exc
