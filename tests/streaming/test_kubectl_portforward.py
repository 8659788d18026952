"""kubectl port-forward: SPDY/3.1 tunnelled in WebSocket (kubectl's default) and the plain SPDY upgrade
(its fallback), with concurrent connections carrying data both ways."""

from __future__ import annotations

import os
import socket
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.streaming.harness import KUBECTL, Backend, Kubectl, start_forward

pytestmark = pytest.mark.skipif(not Path(KUBECTL).exists(), reason="kubectl is not installed")

TRANSPORTS = {"websocket": {}, "spdy": {"KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"}}
SEEN = {"websocket": ("portforward", "websocket", "SPDY/3.1+portforward.k8s.io"),
        "spdy": ("portforward", "spdy/3.1", "portforward.k8s.io")}


def echo_roundtrip(port: int, payload: bytes) -> bytes:
    """Send ``payload`` to the echo server through the forwarded ``port`` while reading the echo."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        def send() -> None:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        got = bytearray()
        while chunk := sock.recv(65536):
            got += chunk
        sender.join()
    return bytes(got)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_concurrent_connections_both_ways(kubectl: Kubectl, backend: Backend, transport: str) -> None:
    proc, (echo_port, http_port) = start_forward(kubectl, ":80", ":8080", env=kubectl.env(**TRANSPORTS[transport]))
    try:
        payloads = [os.urandom(600 * 1024), os.urandom(900 * 1024)]
        with ThreadPoolExecutor(2) as pool:
            echoed = list(pool.map(echo_roundtrip, [echo_port, echo_port], payloads))
        assert echoed == payloads
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/", timeout=30) as resp:
            assert resp.read() == b"hello from the pod\n"
        # the session outlives its connections
        assert echo_roundtrip(echo_port, b"once more") == b"once more"
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert SEEN[transport] in backend.seen


def test_unreachable_port_is_reported(kubectl: Kubectl) -> None:
    proc, (port,) = start_forward(kubectl, ":9999")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            assert sock.recv(100) == b""  # closed: nothing listens on the pod's port
        _, err = proc.communicate(timeout=30)  # kubectl gives up on the pod connection
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert b"error forwarding port 9999 to pod p1" in err
    assert b"connection refused" in err
