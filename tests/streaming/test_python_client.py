"""The official Python client: ``stream()`` exec (v5 channels, stdin close) and ``portforward()`` (its
own WebSocket channels); and the older channel framings (v4 base64) from a raw WebSocket client."""

from __future__ import annotations

import base64
import json

import aiohttp
from kubernetes import client
from kubernetes.stream import portforward, stream

from tests.streaming.harness import Backend, LoopThread


def core_api(url: str) -> client.CoreV1Api:
    cfg = client.Configuration()
    cfg.host = url
    return client.CoreV1Api(client.ApiClient(cfg))


def test_exec_output_and_exit_code(backend: Backend) -> None:
    api = core_api(backend.url)
    resp = stream(api.connect_get_namespaced_pod_exec, "p1", "default",
                  command=["sh", "-c", "echo out; echo err >&2; exit 3"],
                  stdin=False, stdout=True, stderr=True, tty=False, _preload_content=False)
    resp.run_forever(timeout=30)
    assert resp.subprotocol == "v5.channel.k8s.io"
    assert resp.read_stdout() == "out\n"
    assert resp.read_stderr() == "err\n"
    assert resp.returncode == 3


def test_exec_preloaded_output(backend: Backend) -> None:
    api = core_api(backend.url)
    out = stream(api.connect_get_namespaced_pod_exec, "p1", "default", command=["echo", "hello", "world"],
                 stdin=False, stdout=True, stderr=True, tty=False)
    assert out == "hello world\n"


def test_exec_stdin_half_close(backend: Backend) -> None:
    api = core_api(backend.url)
    resp = stream(api.connect_get_namespaced_pod_exec, "p1", "default", command=["sh", "-c", "cat; echo eof"],
                  stdin=True, stdout=True, stderr=True, tty=False, _preload_content=False)
    resp.write_stdin("hello over stdin\n")
    resp.close_channel(0)  # v5: no more stdin, so cat ends
    resp.run_forever(timeout=30)
    assert resp.read_stdout() == "hello over stdin\neof\n"
    assert resp.returncode == 0


def test_exec_v4_protocol(backend: Backend) -> None:
    api = core_api(backend.url)
    resp = stream(api.connect_get_namespaced_pod_exec, "p1", "default", command=["sh", "-c", "echo v4; exit 2"],
                  stdin=False, stdout=True, stderr=True, tty=False, _preload_content=False,
                  _headers={"sec-websocket-protocol": "v4.channel.k8s.io"})
    resp.run_forever(timeout=30)
    assert resp.subprotocol == "v4.channel.k8s.io"
    assert resp.read_stdout() == "v4\n"
    assert resp.returncode == 2


def test_portforward(backend: Backend) -> None:
    api = core_api(backend.url)
    pf = portforward(api.connect_get_namespaced_pod_portforward, "p1", "default", ports="80,8080")
    try:
        echo = pf.socket(80)
        echo.settimeout(30)
        echo.sendall(b"ping through the python client")
        got = b""
        while len(got) < 30:
            got += echo.recv(1024)
        assert got == b"ping through the python client"

        web = pf.socket(8080)
        web.settimeout(30)
        web.sendall(b"GET / HTTP/1.1\r\nHost: pod\r\n\r\n")
        answer = b""
        while not answer.endswith(b"pod\n"):  # one connection per port: the pod's close is not relayed
            answer += web.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200 OK")
        assert answer.endswith(b"hello from the pod\n")
        assert pf.error(8080) is None
    finally:
        pf.close()


def test_portforward_unreachable_port(backend: Backend) -> None:
    api = core_api(backend.url)
    pf = portforward(api.connect_get_namespaced_pod_portforward, "p1", "default", ports="9999")
    try:
        sock = pf.socket(9999)
        sock.settimeout(30)
        assert sock.recv(100) == b""  # the error closes the local socket
        assert "error forwarding port 9999 to pod p1" in (pf.error(9999) or "")
    finally:
        pf.close()


def test_v4_base64_framing(backend: Backend, loop: LoopThread) -> None:
    async def session() -> tuple[dict[int, bytes], str]:
        url = backend.url + "/api/v1/namespaces/default/pods/p1/exec?command=cat&stdin=true&stdout=true&stderr=true"
        got: dict[int, bytes] = {}
        async with aiohttp.ClientSession() as http, http.ws_connect(
                url, protocols=("v4.base64.channel.k8s.io",)) as ws:
            await ws.send_str("0" + base64.b64encode(b"text frames\n").decode())
            async for msg in ws:
                assert msg.type == aiohttp.WSMsgType.TEXT
                channel, data = int(msg.data[0]), base64.b64decode(msg.data[1:])
                got[channel] = got.get(channel, b"") + data
                if got.get(1) == b"text frames\n":
                    await ws.close()  # v4 has no stdin close: hang up, the command is cancelled
            return got, ws.protocol or ""

    got, protocol = loop.run(session())
    assert protocol == "v4.base64.channel.k8s.io"
    assert got[1] == b"text frames\n"


def test_v4_status_on_error_channel(backend: Backend, loop: LoopThread) -> None:
    async def session() -> dict[int, bytes]:
        url = (backend.url + "/api/v1/namespaces/default/pods/p1/exec?command=sh&command=-c&command=exit%204"
               "&stdout=true")
        got: dict[int, bytes] = {}
        async with aiohttp.ClientSession() as http, http.ws_connect(url, protocols=("v4.channel.k8s.io",)) as ws:
            async for msg in ws:
                got[msg.data[0]] = got.get(msg.data[0], b"") + msg.data[1:]
        return got

    got = loop.run(session())
    assert json.loads(got[3]) == {
        "metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
        "message": "command terminated with non-zero exit code: exit code 4",
        "details": {"causes": [{"reason": "ExitCode", "message": "4"}]},
    }




def test_pings_are_answered(backend: Backend, loop: LoopThread) -> None:
    async def session() -> bytes:
        url = backend.url + "/api/v1/namespaces/default/pods/p1/exec?command=sh&command=-c&command=read%20x&stdin=true"
        async with aiohttp.ClientSession() as http, http.ws_connect(
                url, protocols=("v5.channel.k8s.io",), autoping=False) as ws:
            await ws.ping(b"are you there")
            while (msg := await ws.receive()).type != aiohttp.WSMsgType.PONG:
                assert msg.type == aiohttp.WSMsgType.BINARY
            await ws.send_bytes(b"\x00\n")  # let the command end
            return bytes(msg.data)

    assert loop.run(session()) == b"are you there"
