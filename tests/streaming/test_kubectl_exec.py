"""kubectl exec, attach, cp and logs against the streaming server, in both of kubectl's transports:
WebSocket (v5 channels, its default) and SPDY/3.1 (its fallback)."""

from __future__ import annotations

import asyncio
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from podvisor.streaming import TerminalSize
from tests.streaming.harness import (
    KUBECTL,
    Backend,
    Kubectl,
    LoopThread,
    read_until,
    set_winsize,
    spawn_in_pty,
)

pytestmark = pytest.mark.skipif(not Path(KUBECTL).exists(), reason="kubectl is not installed")

TRANSPORTS = {"websocket": {}, "spdy": {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}}
UPGRADE = {"websocket": "websocket", "spdy": "spdy/3.1"}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_exit_code_and_output_streams(kubectl: Kubectl, backend: Backend, transport: str) -> None:
    r = kubectl.run("exec", "p1", "--", "sh", "-c", "echo out; echo err >&2; exit 3",
                    env=kubectl.env(**TRANSPORTS[transport]))
    assert r.returncode == 3, r.stderr
    assert r.stdout == b"out\n"
    assert b"err\n" in r.stderr
    assert b"command terminated with exit code 3" in r.stderr
    assert backend.seen[-1][:2] == ("exec", UPGRADE[transport])


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_stdin_is_piped_until_closed(kubectl: Kubectl, transport: str) -> None:
    data = b"".join(b"line %d of the input\n" % i for i in range(20000))  # ~400 KiB, many frames
    r = kubectl.run("exec", "-i", "p1", "--", "sh", "-c", "cat; echo done", input=data,
                    env=kubectl.env(**TRANSPORTS[transport]))
    assert r.returncode == 0, r.stderr
    assert r.stdout == data + b"done\n"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_large_output(kubectl: Kubectl, transport: str) -> None:
    r = kubectl.run("exec", "p1", "--", "head", "-c", "6000000", "/dev/zero",
                    env=kubectl.env(**TRANSPORTS[transport]))
    assert r.returncode == 0, r.stderr
    assert r.stdout == bytes(6000000)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_command_stops_when_the_client_goes_away(kubectl: Kubectl, backend: Backend, transport: str) -> None:
    proc = kubectl.popen("exec", "p1", "--", "sh", "-c", "echo started; exec sleep 600",
                         env=kubectl.env(**TRANSPORTS[transport]))
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"started\n"
    pid = backend.targets[-1].pids[-1]
    proc.kill()  # kubectl vanishes without a goodbye
    proc.communicate()
    wait_for_exit(pid)


def wait_for_exit(pid: int, limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} still runs after its client went away")


def test_success_exits_zero(kubectl: Kubectl) -> None:
    r = kubectl.run("exec", "p1", "-c", "main", "--", "true")
    assert r.returncode == 0 and r.stdout == b"", r.stderr


def test_falls_back_to_spdy_when_websocket_is_refused(kubectl: Kubectl, backend: Backend) -> None:
    backend.refuse_websocket = True
    try:
        r = kubectl.run("exec", "p1", "--", "sh", "-c", "echo via fallback; exit 5")
    finally:
        backend.refuse_websocket = False
    assert r.returncode == 5, r.stderr
    assert r.stdout == b"via fallback\n"
    assert [s[1] for s in backend.seen[-2:]] == ["websocket", "spdy/3.1"]


def test_command_that_cannot_run_is_reported(kubectl: Kubectl) -> None:
    r = kubectl.run("exec", "p1", "--", "/nonexistent/command")
    assert r.returncode == 1
    assert b"error executing command in container" in r.stderr


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_tty_with_resize(kubectl: Kubectl, backend: Backend, loop: LoopThread, transport: str) -> None:
    argv = kubectl.argv("exec", "-it", "p1", "--", "sh", "-c", "stty size; read x; stty size; exit 7")
    proc, master = spawn_in_pty(argv, kubectl.env(**TRANSPORTS[transport]), rows=30, cols=100)
    seen = bytearray()
    try:
        read_until(master, b"30 100", seen)
        set_winsize(master, 40, 120)  # the terminal is resized: kubectl gets SIGWINCH
        loop.run(asyncio.wait_for(backend.wait_resize(TerminalSize(width=120, height=40)), 30))
        os.write(master, b"x\r")
        read_until(master, b"40 120", seen)
        assert proc.wait(30) == 7
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert backend.seen[-1][:2] == ("exec", UPGRADE[transport])


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_attach(kubectl: Kubectl, backend: Backend, transport: str) -> None:
    r = kubectl.run("attach", "-i", "p1", input=b"hello\n", env=kubectl.env(**TRANSPORTS[transport]))
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"attached\ngot hello\n"
    assert b"to-stderr" in r.stderr
    assert backend.seen[-1][:2] == ("attach", UPGRADE[transport])


def test_cp_both_ways(kubectl: Kubectl, backend: Backend, tmp_path: Path) -> None:
    payload = os.urandom(300 * 1024)
    src = tmp_path / "upload.bin"
    src.write_bytes(payload)
    remote_dir = backend.workdir / "cp-target"
    remote_dir.mkdir()
    r = kubectl.run("cp", str(src), f"p1:{remote_dir}/uploaded.bin")
    assert r.returncode == 0, r.stderr
    assert (remote_dir / "uploaded.bin").read_bytes() == payload

    back = tmp_path / "downloaded.bin"
    r = kubectl.run("cp", f"p1:{remote_dir}/uploaded.bin", str(back))
    assert r.returncode == 0, r.stderr
    assert back.read_bytes() == payload


def test_logs(kubectl: Kubectl, backend: Backend) -> None:
    backend.log_lines = [b"first line\n", b"second line\n"]
    r = kubectl.run("logs", "p1")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"first line\nsecond line\n"
    assert backend.seen[-1][0] == "log"


def test_logs_follow_streams_lines_as_they_come(kubectl: Kubectl, backend: Backend, loop: LoopThread) -> None:
    backend.log_lines = [b"before\n"]

    async def fresh_queue() -> None:
        backend.follow_queue = asyncio.Queue()

    loop.run(fresh_queue())
    queue = backend.follow_queue
    assert queue is not None
    proc = kubectl.popen("logs", "-f", "p1")
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline() == b"before\n"
        loop.run(queue.put(b"later\n"))
        assert proc.stdout.readline() == b"later\n"  # arrives while the log is still open
        loop.run(queue.put(None))  # the container's log ends
        assert proc.wait(30) == 0
        assert proc.stdout.read() == b""
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_logs_follow_stops_when_the_client_goes_away(kubectl: Kubectl, backend: Backend,
                                                      loop: LoopThread) -> None:
    backend.log_lines = [b"waiting\n"]

    async def fresh_queue() -> None:
        backend.follow_queue = asyncio.Queue()

    loop.run(fresh_queue())
    closed = backend.logs_closed
    proc = kubectl.popen("logs", "-f", "p1")
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"waiting\n"
    proc.kill()
    proc.communicate()
    deadline = time.monotonic() + 30
    while backend.logs_closed == closed:  # the log source is released although no line comes
        assert time.monotonic() < deadline, "the log stream outlived its client"
        time.sleep(0.05)


def _post(url: str) -> tuple[int, bytes]:
    req = urllib.request.Request(url, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_exec_without_upgrade_is_refused(backend: Backend) -> None:
    status, body = _post(f"{backend.url}/api/v1/namespaces/default/pods/p1/exec?command=true&stdout=true")
    assert (status, body) == (400, b"Upgrade request required")


def test_no_streams_asked_is_refused(backend: Backend) -> None:
    status, body = _post(f"{backend.url}/api/v1/namespaces/default/pods/p1/exec?command=true")
    assert (status, body) == (400, b"you must specify at least 1 of stdin, stdout, stderr")
