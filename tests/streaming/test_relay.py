"""kubectl -> API server -> node agent: the API server relays pods/log, exec, attach and portforward to the
node agent over TLS with its own client certificate (`NodeProxyBackend`: `proxy_upgrade`, `proxy_log`),
splicing upgraded connections byte for byte, as kube-apiserver does to the kubelet."""

from __future__ import annotations

import asyncio
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.stream import portforward, stream

from podvisor.streaming import TerminalSize
from tests.streaming.conftest import Relayed
from tests.streaming.harness import KUBECTL, LoopThread, read_until, set_winsize, spawn_in_pty, start_forward
from tests.streaming.test_kubectl_exec import wait_for_exit
from tests.streaming.test_kubectl_portforward import echo_roundtrip

pytestmark = pytest.mark.skipif(not Path(KUBECTL).exists(), reason="kubectl is not installed")

TRANSPORTS = {"websocket": {}, "spdy": {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false",
                                        "KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"}}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_exec_through_the_relay(relayed: Relayed, transport: str) -> None:
    k = relayed.kubectl
    data = os.urandom(100 * 1024).hex().encode()
    r = k.run("exec", "-i", "p1", "--", "sh", "-c", "cat; echo err >&2; exit 4", input=data,
              env=k.env(**TRANSPORTS[transport]))
    assert r.returncode == 4, r.stderr
    assert r.stdout == data
    assert b"err\n" in r.stderr
    assert relayed.backend.seen[-1][:2] == ("exec", "websocket" if transport == "websocket" else "spdy/3.1")


def test_arguments_keep_their_special_characters(relayed: Relayed) -> None:
    tricky = "a&b=c+d%20e#f g;'h'"
    r = relayed.kubectl.run("exec", "p1", "--", "printf", "%s", tricky)
    assert r.returncode == 0, r.stderr
    assert r.stdout == tricky.encode()


def test_tty_through_the_relay(relayed: Relayed, loop: LoopThread) -> None:
    k = relayed.kubectl
    proc, master = spawn_in_pty(k.argv("exec", "-it", "p1", "--", "sh", "-c", "stty size; read x; stty size"),
                                k.env(), rows=24, cols=80)
    seen = bytearray()
    try:
        read_until(master, b"24 80", seen)
        set_winsize(master, 50, 132)
        loop.run(asyncio.wait_for(relayed.backend.wait_resize(TerminalSize(width=132, height=50)), 30))
        os.write(master, b"\r")
        read_until(master, b"50 132", seen)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_portforward_through_the_relay(relayed: Relayed, transport: str) -> None:
    k = relayed.kubectl
    proc, (echo_port, http_port) = start_forward(k, ":80", ":8080", env=k.env(**TRANSPORTS[transport]))
    try:
        payload = os.urandom(512 * 1024)
        assert echo_roundtrip(echo_port, payload) == payload
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/", timeout=30) as resp:
            assert resp.read() == b"hello from the pod\n"
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_logs_follow_through_the_relay(relayed: Relayed, loop: LoopThread) -> None:
    backend = relayed.backend
    backend.log_lines = [b"relayed line\n"]

    async def fresh_queue() -> None:
        backend.follow_queue = asyncio.Queue()

    loop.run(fresh_queue())
    queue = backend.follow_queue
    assert queue is not None
    proc = relayed.kubectl.popen("logs", "-f", "p1")
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline() == b"relayed line\n"
        loop.run(queue.put(b"one more\n"))
        assert proc.stdout.readline() == b"one more\n"
        loop.run(queue.put(None))
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_python_client_through_the_relay(relayed: Relayed) -> None:
    cfg = client.Configuration()
    cfg.host = relayed.api.url
    api = client.CoreV1Api(client.ApiClient(cfg))
    resp = stream(api.connect_get_namespaced_pod_exec, "p1", "default", command=["sh", "-c", "echo py; exit 6"],
                  stdin=False, stdout=True, stderr=True, tty=False, _preload_content=False)
    resp.run_forever(timeout=30)
    assert resp.read_stdout() == "py\n"
    assert resp.returncode == 6

    pf = portforward(api.connect_get_namespaced_pod_portforward, "p1", "default", ports="80")
    try:
        sock = pf.socket(80)
        sock.settimeout(30)
        sock.sendall(b"relayed ping")
        got = b""
        while len(got) < 12:
            got += sock.recv(100)
        assert got == b"relayed ping"
    finally:
        pf.close()


def test_unscheduled_pod_is_refused(relayed: Relayed) -> None:
    r = relayed.kubectl.run("exec", "p-unscheduled", "--", "true")
    assert r.returncode != 0
    assert b"pod p-unscheduled does not have a host assigned" in r.stderr


def test_bad_log_options_are_invalid(relayed: Relayed) -> None:
    url = relayed.api.url + "/api/v1/namespaces/default/pods/p1/log?tailLines=-3"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url, timeout=10)
    assert err.value.code == 422
    assert b"tailLines" in err.value.read()


def test_command_stops_when_the_client_goes_away(relayed: Relayed) -> None:
    k = relayed.kubectl
    proc = k.popen("exec", "p1", "--", "sh", "-c", "echo started; exec sleep 600")
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"started\n"
    pid = relayed.backend.targets[-1].pids[-1]
    proc.kill()
    proc.communicate()
    wait_for_exit(pid)  # the relay closed its connection to the node agent too
