"""A real API server for the HTTP tests: SQLite storage, the real registry, TLS with a CA made here.

The server runs on its own event loop in a background thread so that the tests can drive it with
blocking clients exactly as users do: the real ``kubectl`` in a subprocess, the official ``kubernetes``
Python client, and raw HTTPS requests (urllib3) for the error cases no client would send.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import urllib3
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
ALICE_TOKEN = "alice-token-0123456789"


# ------------------------------------------------------------------------------------------ PKI


@dataclass(frozen=True)
class TestPKI:
    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    admin_cert: Path  # CN=admin, O=system:masters
    admin_key: Path
    stranger_cert: Path  # signed by another CA: the TLS layer must refuse it
    stranger_key: Path
    token_file: Path  # alice (groups dev, ops) by bearer token


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def _ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    now = dt.datetime.now(dt.UTC)
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, cn: str, orgs: list[str], *,
          server: bool) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    now = dt.datetime.now(dt.UTC)
    key = _key()
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if server:
        sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return b.sign(ca_key, hashes.SHA256()), key


def make_pki(d: Path) -> TestPKI:
    d.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    ca, ca_key = _ca("podvisor-test-ca")
    (d / "ca.crt").write_bytes(ca.public_bytes(pem))
    for stem, cn, orgs, server, signer in (
        ("server", "podvisor-apiserver", [], True, (ca, ca_key)),
        ("admin", "admin", ["system:masters"], False, (ca, ca_key)),
        ("stranger", "mallory", ["system:masters"], False, _ca("other-ca")),
    ):
        cert, key = _leaf(signer[0], signer[1], cn, orgs, server=server)
        (d / f"{stem}.crt").write_bytes(cert.public_bytes(pem))
        _write_key(d / f"{stem}.key", key)
    (d / "tokens.csv").write_text(f'{ALICE_TOKEN},alice,1001,"dev,ops"\n')
    return TestPKI(
        dir=d, ca=d / "ca.crt", server_cert=d / "server.crt", server_key=d / "server.key",
        admin_cert=d / "admin.crt", admin_key=d / "admin.key", stranger_cert=d / "stranger.crt",
        stranger_key=d / "stranger.key", token_file=d / "tokens.csv",
    )


# --------------------------------------------------------------------------------------- server


@dataclass
class Response:
    status: int
    headers: Any  # urllib3 HTTPHeaderDict
    data: bytes

    def json(self) -> Any:
        return json.loads(self.data)


class LiveServer:
    """`podvisor.apiserver.server.APIServer` over SQLite, in a thread with its own loop."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.pki = make_pki(workdir / "pki")
        self.home = workdir / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: Any = None
        self.storage: Any = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="apiserver-under-test", daemon=True)
        self._pools: dict[str, urllib3.PoolManager] = {}

    # -- lifecycle

    def start(self) -> LiveServer:
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("API server did not start in 60 s")
        if self._error is not None:
            raise self._error
        self.write_kubeconfig()
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced to the test thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        from podvisor.apiserver.authn import AllowAuthenticated, Authenticator, access_review_authorizer
        from podvisor.apiserver.registry import bootstrap, build_registry
        from podvisor.apiserver.server import APIServer, make_server_ssl_context
        from podvisor.storage.sqlite import SQLiteStorage

        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.storage = await SQLiteStorage.open(self.workdir / "state.db")
        authorizer = AllowAuthenticated()
        registry = await build_registry(self.storage, authorizer=access_review_authorizer(authorizer))
        await bootstrap(registry)
        p = self.pki
        self.server = APIServer(
            registry,
            host="127.0.0.1",
            port=0,
            ssl_context=make_server_ssl_context(p.server_cert, p.server_key, p.ca),
            authenticator=Authenticator.from_files(token_file=p.token_file, client_ca=p.ca),
            authorizer=authorizer,
            storage=self.storage,
            shutdown_timeout=5,
        )
        await self.server.start()
        self._ready.set()
        await self._stop.wait()
        await self.server.stop()
        await self.storage.close()

    def stop(self) -> None:
        for pool in self._pools.values():
            pool.clear()
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def call(self, fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        """Run a coroutine on the server's loop and wait for its result."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(fn(), self.loop).result(30)

    @property
    def url(self) -> str:
        return str(self.server.url)

    # -- clients

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    def write_kubeconfig(self) -> None:
        p = self.pki
        self.kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "t", "cluster": {"server": self.url, "certificate-authority": str(p.ca)}}],
                    "users": [
                        {"name": "admin", "user": {"client-certificate": str(p.admin_cert),
                                                   "client-key": str(p.admin_key)}},
                        {"name": "alice", "user": {"token": ALICE_TOKEN}},
                        {"name": "nobody", "user": {}},
                    ],
                    "contexts": [
                        {"name": "admin", "context": {"cluster": "t", "user": "admin"}},
                        {"name": "alice", "context": {"cluster": "t", "user": "alice"}},
                        {"name": "nobody", "context": {"cluster": "t", "user": "nobody"}},
                    ],
                    "current-context": "admin",
                }
            )
        )

    def kubectl(self, *args: str, input: str | bytes | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, HOME=str(self.home), KUBECONFIG=str(self.kubeconfig))
        env.pop("KUBERNETES_SERVICE_HOST", None)
        data = input.decode() if isinstance(input, bytes) else input
        r = subprocess.run([KUBECTL, *args], input=data, capture_output=True, text=True, env=env,
                           timeout=timeout, stdin=None if data is not None else subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r

    def kubectl_popen(self, *args: str) -> subprocess.Popen[str]:
        env = dict(os.environ, HOME=str(self.home), KUBECONFIG=str(self.kubeconfig))
        return subprocess.Popen([KUBECTL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                stdin=subprocess.DEVNULL)

    def _pool(self, who: str) -> urllib3.PoolManager:
        pool = self._pools.get(who)
        if pool is None:
            ctx = ssl.create_default_context(cafile=str(self.pki.ca))
            if who == "admin":
                ctx.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
            elif who == "stranger":
                ctx.load_cert_chain(str(self.pki.stranger_cert), str(self.pki.stranger_key))
            pool = self._pools[who] = urllib3.PoolManager(ssl_context=ctx, retries=False)
        return pool

    def request(self, method: str, path: str, *, body: bytes | str | dict[str, Any] | list[Any] | None = None,
                headers: dict[str, str] | None = None, who: str = "admin", stream: bool = False,
                timeout: float = 30) -> Response | Any:
        """A raw HTTPS request as ``who`` (admin: client cert; alice: bearer token; anonymous: nothing)."""
        hdrs = dict(headers or {})
        if who == "alice":
            hdrs["Authorization"] = f"Bearer {ALICE_TOKEN}"
        if isinstance(body, dict | list):
            body = json.dumps(body)
            hdrs.setdefault("Content-Type", "application/json")
        pool = self._pool("admin" if who == "admin" else ("stranger" if who == "stranger" else "plain"))
        r = pool.request(method, self.url + path, body=body, headers=hdrs, preload_content=not stream,
                         timeout=urllib3.Timeout(connect=10, read=timeout))
        if stream:
            return r
        return Response(r.status, r.headers, r.data)

    def python_client(self, who: str = "admin") -> Any:
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.url
        cfg.ssl_ca_cert = str(self.pki.ca)
        if who == "admin":
            cfg.cert_file = str(self.pki.admin_cert)
            cfg.key_file = str(self.pki.admin_key)
        else:
            cfg.api_key = {"authorization": ALICE_TOKEN}
            cfg.api_key_prefix = {"authorization": "Bearer"}
        return client.ApiClient(cfg)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server per test module (start-up is the slow part; tests use their own namespaces)."""
    server = LiveServer(tmp_path_factory.mktemp("apiserver")).start()
    try:
        yield server
    finally:
        server.stop()
