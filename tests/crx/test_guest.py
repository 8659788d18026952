"""The guest agent in a real pod VM (QEMU, TCG here): containers, exec, logs, volumes, port-forward.

One VM for the whole module, reached through hostd's agent relay as the node agent reaches it.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from podvisor.crx.client import AgentClient, AgentError
from tests.crx.harness import HostdHarness, vm_spec

pytestmark = [pytest.mark.vm, pytest.mark.asyncio(loop_scope="module")]

CRI_LINE = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (stdout|stderr) [FP] ")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def agent(hostd: HostdHarness, busybox_image: Path) -> AsyncIterator[AgentClient]:
    async with hostd.client() as client:
        await client.create_vm(vm_spec("guest-tests", busybox_image), power_on=True)
        agent = await client.agent("guest-tests")
        await agent.hello()
        try:
            yield agent
        finally:
            await agent.close()


async def run(agent: AgentClient, cid: str, args: list[str], **extra: Any) -> tuple[dict[str, Any], bytes]:
    """Create, start and wait for a container; its status and its log file's bytes."""
    await agent.create_container({"containerId": cid, "image": "img0", "args": args, "logPath": f"logs/{cid}.log",
                                  **extra})  # type: ignore[typeddict-item]
    await agent.start_container(cid)
    status = await agent.wait_container(cid, timeout_s=60)
    log = await agent.read_log(container_id=cid)
    out, _ = await log.read_all()
    return dict(status), out


def lines(log: bytes, stream: str = "stdout") -> list[str]:
    out = []
    for line in log.splitlines():
        assert CRI_LINE.match(line), line
        _ts, s, _tag, text = line.split(b" ", 3)
        if s.decode() == stream:
            out.append(text.decode())
    return out


async def test_runs_a_command_with_its_output_and_exit_code(agent: AgentClient) -> None:
    status, log = await run(agent, "hello", ["sh", "-c", "echo hello from $(hostname); echo oops >&2; exit 3"])
    assert status["state"] == "exited" and status["exitCode"] == 3 and status["reason"] == "Error"
    assert lines(log) == ["hello from guest-tests"]
    assert lines(log, "stderr") == ["oops"]
    assert status["finishedAt"] >= status["startedAt"] > 0


async def test_env_working_dir_user_and_volumes(agent: AgentClient) -> None:
    vol = await agent.create_volume("data")
    await agent.write_file("volumes/config/app.conf", b"setting=1\n")
    status, log = await run(
        agent, "env", ["sh", "-c", "echo $GREETING; pwd; id -u; cat /etc/app/app.conf; echo saved > /data/out"],
        env=["GREETING=hi there"], workingDir="/work", user={"uid": 65534, "gid": 65534},
        mounts=[{"source": "volumes/config", "destination": "/etc/app", "readOnly": True},
                {"source": vol["path"], "destination": "/data"}])
    assert status["exitCode"] == 0, log
    assert lines(log) == ["hi there", "/work", "65534", "setting=1"]
    # the volume outlives the container and is seen by the next one
    _, log2 = await run(agent, "env2", ["cat", "/data/out"], mounts=[{"source": vol["path"], "destination": "/data"}])
    assert lines(log2) == ["saved"]


async def test_exec_streams_and_exit_code(agent: AgentClient) -> None:
    await agent.create_container({"containerId": "sleeper", "image": "img0", "args": ["sleep", "3600"]})
    await agent.start_container("sleeper")
    stream = await agent.exec("sleeper", ["sh", "-c", "echo out; echo err >&2; ps -o pid,args; exit 5"])
    out, err = await stream.read_all()
    assert stream.exit_code == 5
    assert out.startswith(b"out\n") and b"sleep 3600" in out and err == b"err\n"
    # the container's own PID namespace: its process is PID 1
    assert re.search(rb"^\s*1 sleep 3600", out, re.M)

    cat = await agent.exec("sleeper", ["cat"], stdin=True)
    await cat.write(b"echo me\n")
    await cat.close_input()
    assert (await cat.read_all())[0] == b"echo me\n" and cat.exit_code == 0

    tty = await agent.exec("sleeper", ["sh", "-c", "tty; stty size"], tty=True, rows=33, cols=101)
    out, _ = await tty.read_all()
    assert b"/dev/pts/" in out and b"33 101" in out and tty.exit_code == 0

    with pytest.raises(AgentError, match="executable file not found"):
        await agent.exec("sleeper", ["no-such-program"])


async def test_two_containers_share_network_not_files(agent: AgentClient) -> None:
    await agent.create_container({"containerId": "web", "image": "img0",
                                  "args": ["sh", "-c", "mkdir -p /www && echo served > /www/index.html && httpd -f -p 8080 -h /www"]})
    await agent.start_container("web")
    status, log = await run(agent, "client", ["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do "
                                              "wget -q -O - http://127.0.0.1:8080/ && break; sleep 0.3; done; "
                                              "ls /www 2>&1 || true"])
    out = lines(log)
    assert out[0] == "served"
    assert "No such file" in out[-1]  # web's files are not in client's root

    stream = await agent.port_forward(8080)
    await stream.write(b"GET /index.html HTTP/1.0\r\n\r\n")
    response, _ = await stream.read_all()
    assert response.startswith(b"HTTP/1.") and response.endswith(b"served\n")

    with pytest.raises(AgentError, match="failed to connect"):
        await agent.port_forward(9)
    await agent.signal_container("web", signal.SIGKILL)
    assert (await agent.wait_container("web"))["exitCode"] == 137


async def test_follow_logs_and_signal(agent: AgentClient) -> None:
    await agent.create_container({"containerId": "ticker", "image": "img0",
                                  "args": ["sh", "-c", "trap 'echo bye; exit 0' TERM; echo started; "
                                           "while true; do sleep 0.1; done"]})
    stream = await agent.read_log(container_id="ticker", follow=True)
    await agent.start_container("ticker")
    seen = b""
    async for _fd, data in stream:
        seen += data
        if b"started" in seen:
            break
    await agent.signal_container("ticker", signal.SIGTERM)
    rest, _ = await stream.read_all()  # the follow stream ends when the container exits
    assert b"stdout F bye" in rest
    status = await agent.wait_container("ticker")
    assert status["exitCode"] == 0 and status["reason"] == "Completed"
    await agent.remove_container("ticker")
    with pytest.raises(AgentError):
        await agent.start_container("ticker")
    # the log file stays after the container is removed
    log, _ = await (await agent.read_log(path="logs/ticker.log")).read_all()
    assert b"started" in log


async def test_memory_limit_ends_in_oomkilled(agent: AgentClient) -> None:
    status, _ = await run(agent, "hog", ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
                          resources={"memoryLimitBytes": 16 << 20})
    assert status["oomKilled"] is True and status["reason"] == "OOMKilled" and status["exitCode"] == 137


async def test_cpu_limit_is_applied(agent: AgentClient) -> None:
    script = "mkdir -p /cg && mount -t cgroup2 none /cg && p=$(cat /proc/self/cgroup) && cat /cg${p#0::}/cpu.max"
    status, log = await run(agent, "capped", ["sh", "-c", script], resources={"cpuLimitMillis": 250},
                            capabilities={"add": ["SYS_ADMIN"]})
    assert status["exitCode"] == 0, log
    assert lines(log) == ["25000 100000"]


async def test_stats_report_containers(agent: AgentClient) -> None:
    await agent.create_container({"containerId": "busy", "image": "img0", "args": ["sleep", "60"]})
    await agent.start_container("busy")
    stats = await agent.stats()
    assert stats["memory"]["totalBytes"] > 100 << 20
    assert stats["filesystem"]["capacityBytes"] > 0
    busy = next(c for c in stats["containers"] if c["containerId"] == "busy")
    assert busy["memoryBytes"] > 0 and busy["pids"] >= 1
    await agent.signal_container("busy", signal.SIGKILL)
    await agent.wait_container("busy")
    await asyncio.sleep(0)


async def test_attach_to_a_tty_container(agent: AgentClient) -> None:
    await agent.create_container({"containerId": "shell", "image": "img0", "args": ["sh"], "tty": True,
                                  "stdin": True, "logPath": "logs/shell.log"})
    await agent.start_container("shell")
    stream = await agent.attach("shell", stdin=True)
    await agent.resize_container("shell", 40, 120)
    await stream.write(b"tty; stty size; exit 3\n")
    out, _ = await stream.read_all()  # ends when the container exits
    assert b"/dev/pts/0" in out and b"40 120" in out
    status = await agent.wait_container("shell")
    assert status["exitCode"] == 3
    log, _ = await (await agent.read_log(container_id="shell")).read_all()
    assert b"stdout F /dev/pts/0" in log  # a tty's output is logged as stdout lines


async def test_container_stdin_outlives_an_attach_unless_stdin_once(agent: AgentClient) -> None:
    await agent.create_container({"containerId": "reader", "image": "img0", "stdin": True,
                                  "args": ["sh", "-c", "while read l; do echo got:$l; done; echo eof"]})
    await agent.start_container("reader")
    first = await agent.attach("reader", stdin=True)
    await first.write(b"one\n")
    assert (await first.__aiter__().__anext__())[1] == b"got:one\n"
    await first.close_input()   # without stdinOnce this session stops writing; the container's stdin stays open
    await first.cancel()
    second = await agent.attach("reader", stdin=True)
    await second.write(b"two\n")
    assert (await second.__aiter__().__anext__())[1] == b"got:two\n"
    await agent.signal_container("reader", signal.SIGKILL)
    await agent.wait_container("reader", timeout_s=30)
    # stdinOnce: the first session closing its stdin closes the container's
    await agent.create_container({"containerId": "once", "image": "img0", "stdin": True, "stdinOnce": True,
                                  "args": ["sh", "-c", "while read l; do echo got:$l; done; echo eof"]})
    await agent.start_container("once")
    stream = await agent.attach("once", stdin=True)
    await stream.write(b"only\n")
    await stream.close_input()
    out, _ = await stream.read_all()   # ends when the container exits
    assert out == b"got:only\neof\n"
    assert (await agent.wait_container("once", timeout_s=30))["exitCode"] == 0


async def test_attach_stream_resizes_a_tty_container(agent: AgentClient) -> None:
    await agent.create_container({"containerId": "term", "image": "img0", "args": ["sh"], "tty": True,
                                  "stdin": True, "stdinOnce": True})
    await agent.start_container("term")
    stream = await agent.attach("term", stdin=True, rows=20, cols=70)
    await stream.write(b"stty size\n")
    seen = b""
    chunks = stream.__aiter__()
    while b"20 70\r\n" not in seen:   # the size given at attach
        seen += (await asyncio.wait_for(chunks.__anext__(), 30))[1]
    await stream.resize(41, 99)
    await stream.write(b"stty size; exit 0\n")
    out, _ = await stream.read_all()
    assert b"41 99" in out


async def test_volume_size_limit_is_enforced(agent: AgentClient) -> None:
    vol = await agent.create_volume("small", size_limit_bytes=1 << 20)
    mem = await agent.create_volume("ram", medium="Memory", size_limit_bytes=1 << 20)
    assert vol["limitEnforced"] is True and mem["limitEnforced"] is True
    status, log = await run(agent, "filler", ["sh", "-c", "dd if=/dev/zero of=/v/big bs=64k count=64; "
                                              "dd if=/dev/zero of=/m/big bs=64k count=64"],
                            mounts=[{"source": vol["path"], "destination": "/v"},
                                    {"source": mem["path"], "destination": "/m"}])
    errors = " ".join(lines(log, "stderr"))
    assert "Disk quota exceeded" in errors and "No space left on device" in errors
