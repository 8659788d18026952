"""The guest protocol: the one contract between the host side and the guest agent (guest/*.c).

Wire: every frame is ``b"PVF1" | u32 BE header length | u32 BE payload length | header | payload``.
The header is a JSON object with a ``type``. One request type per call (like Kata's agent.proto):

* a request carries an ``id`` (> 0) and gets exactly one ``Response`` with that id:
  ``{"type": "Response", "id": N, "ok": true, ...result}`` or
  ``{"type": "Response", "id": N, "ok": false, "error": {"code": "...", "message": "..."}}``;
  ``WaitContainer`` answers only when the container has exited;
* a notification has no id and no answer: ``Input`` (payload = bytes), ``CloseInput``, ``CancelStream``;
* events from the agent: ``Output`` {stream, fd} with bytes, ``End`` {stream, exitCode?} once per
  stream, and the broadcast ``ContainerExit`` {status}.

The first frame on a connection must be ``Hello`` (host time in ns, 32 bytes of entropy as payload):
the agent sets its clock, mixes in the entropy (a restored template must not share random state) and
answers with its protocol version, capabilities, boot timings and the containers it already runs (how
a restarted host re-adopts a running pod). The agent writes nothing before a Hello, and drops every
stream and pending wait when the host disconnects; frames start with a magic so either side can
resynchronise after a torn write.

Streams are byte channels named by the host (``stream``): ``Exec``, ``PortForward``, ``ReadLog`` and
``Attach`` open one. fd 1/2 are stdout/stderr (a tty has only 1); ReadLog sends the CRI log file's own bytes.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Literal, NotRequired, TypedDict

__all__ = [
    "PROTOCOL_VERSION", "PORT_NAME", "MAGIC", "MAX_HEADER", "MAX_PAYLOAD",
    "REQUEST_TYPES", "NOTIFICATION_TYPES", "EVENT_TYPES", "ERROR_CODES",
    "encode_frame", "FrameDecoder", "ProtocolError",
    "DiskSpec", "InterfaceSpec", "SetupSandbox", "UserSpec", "MountSpec", "ResourcesSpec",
    "CreateContainer", "ContainerStatus", "ExecRequest",
]

PROTOCOL_VERSION = 1
PORT_NAME = "org.podvisor.agent"
MAGIC = b"PVF1"
MAX_HEADER = 1 << 20
MAX_PAYLOAD = 4 << 20

# request type -> what it does (the result fields are described on the TypedDicts below)
REQUEST_TYPES: dict[str, str] = {
    "Hello": "handshake: hostTime (ns); payload = entropy. -> version, agentVersion, capabilities, boot, containers",
    "Ping": "liveness. -> {}",
    "SetupSandbox": "hostname, hosts, resolvConf, disks[], interfaces[] (see SetupSandbox). -> disks[]",
    "AttachDisk": "id, kind: mount a disk that appeared after setup. -> disk",
    "CreateVolume": "name, medium ('' or 'Memory'), sizeLimitBytes. -> path, limitEnforced",
    "WriteFile": "path (relative to the ephemeral disk, or under /run/), mode, uid, gid, directory, symlink; "
                 "payload = content; atomic (rename). -> {}",
    "RemovePath": "path. -> {}",
    "CreateContainer": "see CreateContainer. -> {}",
    "StartContainer": "containerId. -> pid, startedAt (error StartError with the runtime's message)",
    "SignalContainer": "containerId, signal, all (SIGKILL the whole cgroup). -> delivered",
    "WaitContainer": "containerId; answers when it has exited. -> status",
    "RemoveContainer": "containerId (must not be running); its log stays. -> {}",
    "ListContainers": "-> containers[] (ContainerStatus)",
    "Exec": "see ExecRequest; opens a stream. -> pid",
    "SignalExec": "stream, signal. -> {}",
    "Resize": "stream (exec) or containerId (tty container), rows, cols. -> {}",
    "PortForward": "stream, port: a TCP connection to 127.0.0.1:port in the pod. -> {}",
    "ReadLog": "stream, containerId or path, offset, follow: the CRI log bytes. -> {}",
    "Attach": "stream, containerId, stdin, rows?, cols?: the container's raw output as produced and, with stdin, "
              "Input/CloseInput to its stdin (a pipe, or its pty); Resize by this stream resizes a tty "
              "container. CloseInput or CancelStream ends the container's stdin only with stdinOnce. -> {}",
    "Stats": "-> timestamp, cpu{usageNs,count}, memory{...}, filesystem{...}, containers[]",
    "Shutdown": "stop everything, sync, power the VM off. -> {}",
    "PrepareTemplate": "unbind the placeholder disks before the VM is saved as a template; they are bound "
                       "(and probed afresh) by the first SetupSandbox after a restore. -> unboundDisks",
}
NOTIFICATION_TYPES = ("Input", "CloseInput", "CancelStream")
EVENT_TYPES = ("Response", "Output", "End", "ContainerExit")
ERROR_CODES = ("InvalidArgument", "NotFound", "AlreadyExists", "FailedPrecondition", "StartError",
               "Unavailable", "Unimplemented", "Internal")


class ProtocolError(Exception):
    """A malformed frame."""


class DiskSpec(TypedDict):
    id: str                              # the virtio serial the host gave the disk
    kind: Literal["image", "ephemeral"]


class InterfaceSpec(TypedDict):
    mac: str
    templateMac: NotRequired[str]        # restored from a template: find it by this MAC, then set `mac`
    name: NotRequired[str]               # renamed to this (eth0)
    addresses: NotRequired[list[str]]    # ["10.88.0.5/24"] (first IPv4 is configured)
    gateway: NotRequired[str]
    mtu: NotRequired[int]


class SetupSandbox(TypedDict, total=False):
    hostname: str
    hosts: str                           # /etc/hosts content for every container
    resolvConf: str
    disks: list[DiskSpec]
    interfaces: list[InterfaceSpec]


class UserSpec(TypedDict, total=False):
    uid: int
    gid: int
    additionalGids: list[int]
    name: str                            # looked up in the image's /etc/passwd


class MountSpec(TypedDict):
    source: str                          # relative to the ephemeral disk, or an absolute /run/... path
    destination: str
    readOnly: NotRequired[bool]


class ResourcesSpec(TypedDict, total=False):
    memoryLimitBytes: int                # cgroup memory.max (exceeding it -> OOMKilled)
    cpuLimitMillis: int                  # cgroup cpu.max


class CreateContainer(TypedDict):
    containerId: str
    name: NotRequired[str]
    image: str                           # id of an image disk given to SetupSandbox
    args: list[str]                      # command + args, resolved against PATH in env
    env: NotRequired[list[str]]          # ["K=V"]
    workingDir: NotRequired[str]
    user: NotRequired[UserSpec]
    mounts: NotRequired[list[MountSpec]]
    tty: NotRequired[bool]               # one pty for stdin/stdout/stderr (rows/cols: its first size)
    stdin: NotRequired[bool]             # keep a stdin open (a pipe, or the pty) for Attach
    stdinOnce: NotRequired[bool]         # the first attach session closing its stdin closes the container's
    rows: NotRequired[int]
    cols: NotRequired[int]
    logPath: NotRequired[str]            # relative to the ephemeral disk; default logs/<id>.log
    resources: NotRequired[ResourcesSpec]
    capabilities: NotRequired[dict[str, list[str]]]  # {"add": [...], "drop": [...]}
    noNewPrivileges: NotRequired[bool]


class ContainerStatus(TypedDict):
    containerId: str
    name: str
    state: Literal["created", "running", "exited"]
    pid: int
    exitCode: int
    oomKilled: bool
    reason: str                          # Completed, Error, OOMKilled, StartError
    message: str
    createdAt: int                       # ns since the epoch (guest clock, set from the host)
    startedAt: int
    finishedAt: int
    logPath: str


class ExecRequest(TypedDict):
    stream: str
    containerId: str
    args: list[str]
    env: NotRequired[list[str]]          # default: the container's env
    tty: NotRequired[bool]
    stdin: NotRequired[bool]
    rows: NotRequired[int]
    cols: NotRequired[int]
    workingDir: NotRequired[str]
    user: NotRequired[UserSpec]


def encode_frame(header: dict[str, Any], payload: bytes = b"") -> bytes:
    body = json.dumps(header, separators=(",", ":")).encode()
    if len(body) > MAX_HEADER or len(payload) > MAX_PAYLOAD:
        raise ProtocolError("frame too large")
    return MAGIC + struct.pack(">II", len(body), len(payload)) + body + payload


class FrameDecoder:
    """Feed bytes, get (header, payload) frames; skips garbage up to the next magic."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.skipped = 0

    def feed(self, data: bytes) -> list[tuple[dict[str, Any], bytes]]:
        self._buf += data
        frames: list[tuple[dict[str, Any], bytes]] = []
        while len(self._buf) >= 12:
            if self._buf[:4] != MAGIC:
                at = self._buf.find(MAGIC, 1)
                drop = at if at > 0 else len(self._buf) - 3
                del self._buf[:drop]
                self.skipped += drop
                continue
            hlen, plen = struct.unpack_from(">II", self._buf, 4)
            if hlen > MAX_HEADER or plen > MAX_PAYLOAD:
                del self._buf[:4]
                self.skipped += 4
                continue
            total = 12 + hlen + plen
            if len(self._buf) < total:
                break
            raw = bytes(self._buf[12:12 + hlen])
            payload = bytes(self._buf[12 + hlen:total])
            del self._buf[:total]
            try:
                header = json.loads(raw)
            except ValueError:
                self.skipped += total
                continue
            if isinstance(header, dict):
                frames.append((header, payload))
        return frames
