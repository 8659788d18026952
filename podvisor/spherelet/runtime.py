"""The node agent's view of the machine below it: a narrow runtime interface, virtual-kubelet style.

Why a seam here: the spherelet's job is Kubernetes semantics (pod workers, restarts, probes, status);
how a sandbox becomes a VM (hostd, QEMU, the guest agent) is another component's job. Everything the
spherelet asks of a host goes through `Runtime` — a handful of calls on plain dataclasses, sandbox
and container ids first — so the state machine can be driven in tests by a simulated runtime with
counters (``tests/spherelet/fakeruntime.py``), and a second backend could be written without touching
the spherelet. Streaming (exec with a terminal, port-forward, log bytes) is a separate optional
Protocol, `StreamingRuntime`, as virtual-kubelet keeps it apart.

A *sandbox* is the pod's VM: its vCPUs and memory, one read-only disk per image, the ephemeral disk
(logs, emptyDir, configmap/secret files, writable layers), one NIC. Containers live inside it and are
named by the spherelet (``<container name>-<attempt>``), so after a restart of the spherelet the
runtime's list *is* the truth about restart counts and last states (kubelet's relist shape).

Errors are a written contract, checked by type::

    RuntimeFailure                the runtime could not do it (message for events and status)
    ├── SandboxNotFound           no such sandbox (gone, destroyed, never made)
    ├── ContainerNotFound         no such container in the sandbox
    ├── StartFailure              the container could not be started (bad executable, mount, user)
    └── RuntimeUnavailable        hostd or the guest agent cannot be reached right now (retry)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from podvisor.network.guest import GuestNetConfig
    from podvisor.network.tap import TapDevice

__all__ = [
    "RuntimeFailure", "SandboxNotFound", "ContainerNotFound", "StartFailure", "RuntimeUnavailable",
    "HostInfo", "ImageDisk", "SandboxSpec", "Sandbox", "Mount", "ContainerSpec", "ContainerInfo",
    "FileOp", "ExecResult", "RuntimeEvent", "ProcessStream", "Runtime", "StreamingRuntime",
    "EPHEMERAL_DISK_ID",
]

EPHEMERAL_DISK_ID = "ephemeral"


class RuntimeFailure(Exception):
    """The runtime could not do what was asked; the message is shown to users."""


class SandboxNotFound(RuntimeFailure):
    pass


class ContainerNotFound(RuntimeFailure):
    pass


class StartFailure(RuntimeFailure):
    pass


class RuntimeUnavailable(RuntimeFailure):
    pass


@dataclass(frozen=True)
class HostInfo:
    """What the host offers (Node capacity) and how it is doing (Node conditions)."""

    cpus: int
    memory_bytes: int
    ephemeral_bytes: int                 # the disk that holds ephemeral disks and images
    max_pods: int = 110
    memory_available_bytes: int = -1     # -1: unknown (no pressure reported)
    ephemeral_available_bytes: int = -1
    pids_max: int = -1
    pids_used: int = -1
    kernel_version: str = ""
    os_image: str = ""
    architecture: str = "amd64"
    operating_system: str = "linux"
    machine_id: str = ""
    system_uuid: str = ""
    boot_id: str = ""
    accel: str = ""                      # "kvm" or "tcg"
    runtime_version: str = "crx://0.1"
    instance_type: str = ""


@dataclass(frozen=True)
class ImageDisk:
    """A staged image as a sandbox disk; ``id`` is what containers name as their image (<= 20 chars)."""

    id: str
    path: Path
    fs_type: str
    digest: str


@dataclass(frozen=True)
class SandboxSpec:
    id: str                              # unique per pod and sandbox attempt; [a-z0-9-], <= 63
    pod_uid: str
    pod_namespace: str
    pod_name: str
    attempt: int
    hostname: str
    vcpus: int
    memory_mib: int
    ephemeral_bytes: int
    images: tuple[ImageDisk, ...] = ()
    tap: TapDevice | None = None
    network: GuestNetConfig | None = None
    hosts_file: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Sandbox:
    id: str
    pod_uid: str
    pod_namespace: str
    pod_name: str
    attempt: int = 0
    state: Literal["ready", "stopped", "unknown"] = "ready"
    created_at: float = 0.0              # seconds since the epoch
    ip: str = ""
    images: tuple[str, ...] = ()         # image disk ids
    vcpus: int = 0
    memory_mib: int = 0


@dataclass(frozen=True)
class Mount:
    source: str                          # relative to the ephemeral disk, or an absolute /run/... path
    destination: str
    read_only: bool = False


@dataclass(frozen=True)
class ContainerSpec:
    id: str                              # "<name>-<attempt>", unique in the sandbox
    name: str
    image: str                           # an ImageDisk.id of the sandbox
    args: tuple[str, ...]
    env: tuple[str, ...] = ()            # "K=V"
    working_dir: str = ""
    uid: int | None = None
    gid: int | None = None
    user_name: str = ""                  # an image user looked up in its /etc/passwd
    supplemental_groups: tuple[int, ...] = ()
    mounts: tuple[Mount, ...] = ()
    tty: bool = False
    stdin: bool = False                  # keep a stdin open for `kubectl attach -i`
    stdin_once: bool = False             # ... until the first attach session with stdin ends
    log_path: str = ""                   # relative to the ephemeral disk
    memory_limit_bytes: int = 0
    cpu_limit_millis: int = 0
    capabilities_add: tuple[str, ...] = ()
    capabilities_drop: tuple[str, ...] = ()
    no_new_privileges: bool = False


@dataclass(frozen=True)
class ContainerInfo:
    """A container as the runtime sees it. Times are seconds since the epoch (0: not yet)."""

    id: str
    name: str
    state: Literal["created", "running", "exited"]
    exit_code: int = 0
    reason: str = ""                     # Completed, Error, OOMKilled, StartError
    message: str = ""
    oom_killed: bool = False
    created_at: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    log_path: str = ""


@dataclass(frozen=True)
class FileOp:
    """One file-system change in a sandbox: a file (``data``), a directory, a symlink, or a removal.

    ``path`` is relative to the ephemeral disk, or an absolute path under /run/ (memory volumes).
    """

    path: str
    data: bytes = b""
    mode: int = 0o644
    kind: Literal["file", "dir", "symlink", "remove"] = "file"
    target: str = ""                     # for symlinks


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""
    timed_out: bool = False


@dataclass(frozen=True)
class RuntimeEvent:
    """Something changed below the spherelet: a container exited, or a sandbox went away."""

    sandbox_id: str
    kind: Literal["container-exited", "sandbox-gone"]
    container_id: str = ""


@runtime_checkable
class ProcessStream(Protocol):
    """An exec'd process or a port-forward connection: iterate ``(fd, bytes)``; fd 1 stdout (or the
    connection's bytes), fd 2 stderr; ``wait`` gives the exit code (None for a connection)."""

    def __aiter__(self) -> AsyncIterator[tuple[int, bytes]]: ...

    async def write(self, data: bytes) -> None: ...

    async def close_input(self) -> None: ...

    async def resize(self, rows: int, cols: int) -> None: ...

    async def wait(self) -> int | None: ...

    async def cancel(self) -> None: ...


class Runtime(Protocol):
    """What the spherelet needs of a host. Every call is idempotent where it can be (destroying a
    destroyed sandbox, removing a removed container succeed)."""

    async def host_info(self) -> HostInfo: ...

    async def list_sandboxes(self) -> list[Sandbox]: ...

    async def create_sandbox(self, spec: SandboxSpec) -> Sandbox: ...

    async def stop_sandbox(self, sandbox_id: str, *, timeout_s: float = 10.0) -> None:
        """Power the VM off and keep its disks (logs stay readable)."""
        ...

    async def destroy_sandbox(self, sandbox_id: str) -> None:
        """Power off (hard) and remove the VM and every disk that is only its own."""
        ...

    async def prepare_volume(self, sandbox_id: str, name: str, *, medium: str = "",
                             size_limit_bytes: int = 0) -> str:
        """An emptyDir-like directory (``medium`` "" or "Memory"); returns the mount source."""
        ...

    async def write_files(self, sandbox_id: str, ops: Sequence[FileOp]) -> None: ...

    async def create_container(self, sandbox_id: str, spec: ContainerSpec) -> None: ...

    async def start_container(self, sandbox_id: str, container_id: str) -> None: ...

    async def signal_container(self, sandbox_id: str, container_id: str, signal: int) -> None: ...

    async def remove_container(self, sandbox_id: str, container_id: str) -> None: ...

    async def list_containers(self, sandbox_id: str) -> list[ContainerInfo]: ...

    async def exec_sync(self, sandbox_id: str, container_id: str, args: Sequence[str], *,
                        timeout_s: float) -> ExecResult: ...

    async def port_check(self, sandbox_id: str, port: int, *, timeout_s: float) -> None:
        """Open and close a TCP connection to the pod's 127.0.0.1:port; raise OSError if refused."""
        ...

    async def http_get(self, sandbox_id: str, port: int, request: bytes, *, timeout_s: float) -> bytes:
        """Send ``request`` (a whole HTTP/1.x request) to the pod's 127.0.0.1:port; return the answer's
        bytes (at least its head). OSError when the port cannot be reached."""
        ...

    def subscribe(self, listener: Callable[[RuntimeEvent], None]) -> Callable[[], None]:
        """Call ``listener`` on container exits and lost sandboxes; returns the unsubscribe function."""
        ...


class StreamingRuntime(Protocol):
    """Optional: what `kubectl exec/attach/port-forward/logs` need beyond `Runtime`."""

    async def exec(self, sandbox_id: str, container_id: str, args: Sequence[str], *, tty: bool, stdin: bool,
                   rows: int = 24, cols: int = 80) -> ProcessStream: ...

    async def port_forward(self, sandbox_id: str, port: int) -> ProcessStream: ...

    async def attach(self, sandbox_id: str, container_id: str, *, stdin: bool, rows: int | None = None,
                     cols: int | None = None) -> ProcessStream:
        """Join a running container: its output from now on until it exits and, with ``stdin``, its
        stdin (``close_input`` ends it only for a ``stdin_once`` container); ``resize`` sizes its tty."""
        ...

    def read_log(self, sandbox_id: str, container_id: str, log_path: str, *, follow: bool,
                 offset: int = 0) -> AsyncIterator[bytes]:
        """The CRI log file's bytes from ``offset``; with ``follow`` until the container exits.
        Works on a stopped sandbox too (from its disk)."""
        ...
