"""`podvisor up`: the whole cluster in one foreground process.

Order matters and is fixed: data dir lock → PKI → storage (SQLite) behind the watch cache → resource
registry and bootstrap objects → API server listening → kubeconfig written and merged → controllers
(through the API, like any client) → scheduler → registry → local host (hostd) → `status.json` published. Stopping runs the same list backwards; each component's
stop is shielded so a second Ctrl-C cannot leave a half-stopped registry or a stale status file.

Later components (scheduler, controllers, spherelet) join through `Component`: anything with
``name``, ``start()``, ``stop()`` and ``describe()`` can be appended to the list.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Protocol

from podvisor.paths import default_data_dir, status_file

__all__ = ["register", "Component", "run_up"]

log = logging.getLogger("podvisor.up")


class Component(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def describe(self) -> dict[str, Any]: ...


def register(sub: Any) -> None:
    p = sub.add_parser("up", help="start Podvisor all-in-one in the foreground")
    p.add_argument("--data-dir", type=Path, default=None, help="state directory (default: /var/lib/podvisor as root)")
    p.add_argument("--port", type=int, default=6443, help="API server port (default 6443)")
    p.add_argument("--listen", default="127.0.0.1", help="API server address (default 127.0.0.1)")
    p.add_argument("--no-kubeconfig-merge", action="store_true", help="do not merge a 'podvisor' context into ~/.kube/config")
    p.add_argument("--registry", default="embedded",
                   help="'embedded' (default), 'none', or the host[:port] of an external registry")
    p.add_argument("--registry-mirror", action="append", default=[], metavar="HOST=MIRROR",
                   help="mirror a registry host, e.g. docker.io=127.0.0.1:5000 (repeatable)")
    p.add_argument("--cluster-cidr", default="10.88.0.0/16", help="pod addresses; each host gets a /24 of it")
    p.add_argument("--no-host", action="store_true", help="start the control plane only, without the local host")
    p.add_argument("--host-name", default="pv-host-1", help="name of the local host (Node name)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    data_dir: Path = (args.data_dir or default_data_dir()).resolve()
    try:
        return asyncio.run(run_up(args, data_dir))
    except UpError as exc:
        print(f"podvisor up: {exc}", file=sys.stderr)
        return 1


class UpError(Exception):
    pass


class _APIComponent:
    """The control plane: storage, registry of resources, the HTTPS API server."""

    name = "api"

    def __init__(self, data_dir: Path, *, host: str, port: int, sans: list[str]) -> None:
        self.data_dir, self.host, self.port, self.sans = data_dir, host, port, sans
        self.server: Any = None
        self.components_started = asyncio.Event()
        self.storage: Any = None
        self.registry: Any = None
        self.authn: Any = None
        self.url = ""

    async def start(self) -> None:
        from podvisor.apiserver.authn import Authenticator
        from podvisor.apiserver.registry import bootstrap, build_registry
        from podvisor.apiserver.server import APIServer, make_server_ssl_context
        from podvisor.apiserver.strategies.sa_tokens import TokenIssuer
        from podvisor.pki import ensure_cluster_pki
        from podvisor.storage.cacher import WatchCache, field_indexer
        from podvisor.storage.sqlite import SQLiteStorage

        pki = ensure_cluster_pki(self.data_dir, sans=self.sans)
        self.pki = pki
        state = self.data_dir / "state"
        state.mkdir(parents=True, exist_ok=True)
        raw = await SQLiteStorage.open(state / "podvisor.db")
        # node agents watch their own pods: index pods by spec.nodeName so each watcher sees only its own
        self.storage = await WatchCache.open(raw, indexer=field_indexer("/registry/core/pods/", "spec.nodeName"))
        self.registry = await build_registry(self.storage, indexed_fields=frozenset({"spec.nodeName"}),
                                             token_issuer=TokenIssuer.from_key_file(pki.service_account_key))
        advertise = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        await bootstrap(self.registry, api_port=self.port, api_address=advertise)
        ssl_ctx = make_server_ssl_context(pki.serving_cert, pki.serving_key, pki.ca_cert)
        authn = Authenticator.from_files(token_file=pki.token_file, client_ca=pki.ca_cert, registry=self.registry,
                                         service_account_key_files=[pki.service_account_pub])
        await authn.start()  # service-account token checks read watched state: synced before serving
        self.authn = authn
        # /readyz stays false until every component of `up` has started and is published in
        # status.json, so "ready" means the whole cluster (registry, host) is there, not just the API
        self.server = APIServer(self.registry, host=self.host, port=self.port, ssl_context=ssl_ctx,
                                authenticator=authn, storage=self.storage,
                                post_start_hooks=[("podvisor-components", self._wait_components)])
        self.server.set_streaming_backend(self._node_proxy(pki))
        try:
            await self.server.start()
        except OSError as exc:
            raise UpError(f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}") from exc
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else ("[::1]" if self.host == "::" else self.host)
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        self.url = f"https://{host}:{self.port}"

    async def _wait_components(self) -> None:
        await self.components_started.wait()

    def _node_proxy(self, pki: Any) -> Any:
        """logs/exec/attach/port-forward go to the pod's node agent over HTTPS, as to a kubelet."""
        import ssl

        from podvisor.apiserver.errors import NotFoundError
        from podvisor.streaming.nodeproxy import NodeProxyBackend

        ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        ctx.load_cert_chain(pki.kubelet_client_cert, pki.kubelet_client_key)
        registry = self.registry

        async def get_node(name: str) -> dict[str, Any] | None:
            try:
                return dict(await registry.lookup("", "v1", "nodes").get("", name))
            except NotFoundError:
                return None

        return NodeProxyBackend(get_node=get_node, ssl_context=ctx)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
        if self.authn is not None:
            await self.authn.stop()
        if self.storage is not None:
            await self.storage.close()

    def describe(self) -> dict[str, Any]:
        return {"api": self.url}


class _SchedulerComponent:
    """The scheduler, connected through the API like any client."""

    name = "scheduler"

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        self.client: Any = None
        self.scheduler: Any = None

    async def start(self) -> None:
        from podvisor.client import APIClient, load_kubeconfig
        from podvisor.scheduler import Scheduler

        self.client = APIClient(load_kubeconfig(self.kubeconfig, user_agent="podvisor-scheduler"))
        self.scheduler = Scheduler(self.client)
        await self.scheduler.start()

    async def stop(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.client is not None:
            await self.client.close()

    def describe(self) -> dict[str, Any]:
        return {"scheduler": "running" if self.scheduler is not None else "stopped"}


def _stable_port(path: Path) -> int:
    """A loopback port remembered across restarts, so the Node's daemon endpoint (where the API server
    sends logs/exec) stays right for clients that arrive before the node agent re-registers."""
    import socket

    def free(port: int) -> bool:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
            return True

    with contextlib.suppress(OSError, ValueError):
        port = int(path.read_text())
        if free(port):
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{port}\n")
    return port


def _lock_data_dir(data_dir: Path) -> int:
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / "up.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UpError(f"another 'podvisor up' is running on {data_dir}") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def _write_status(data_dir: Path, status: dict[str, Any]) -> None:
    path = status_file(data_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(status, indent=2) + "\n")
    os.replace(tmp, path)


async def run_up(args: argparse.Namespace, data_dir: Path) -> int:
    started_at = time.monotonic()
    lock_fd = _lock_data_dir(data_dir)
    stop_event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_event.set)

    api = _APIComponent(data_dir, host=args.listen, port=args.port, sans=[args.listen])
    components: list[Any] = []
    status: dict[str, Any] = {"pid": os.getpid(), "data_dir": str(data_dir), "api": "", "registry": "", "hosts": []}
    try:
        await api.start()
        components.append(api)
        status["api"] = api.url
        _write_kubeconfigs(args, data_dir, api)
        _write_status(data_dir, status)

        from podvisor.controllers.manager import ControllerManager

        controllers = ControllerManager(data_dir / "kubeconfig", cluster_cidr=args.cluster_cidr)
        await controllers.start()
        components.append(controllers)
        scheduler = _SchedulerComponent(data_dir / "kubeconfig")
        await scheduler.start()
        components.append(scheduler)

        registry = await _start_registry(args, data_dir, api)
        if registry is not None:
            components.append(registry)
        status["registry"] = _registry_address(args, registry)
        if status["registry"]:
            await _publish_registry(api.registry, status["registry"], registry)

        if not args.no_host:
            host = await _start_host(args, data_dir, api, status["registry"])
            if host is not None:
                components.append(host)
                status["hosts"].append({"name": args.host_name, "hostd": host.url})
        _write_status(data_dir, status)
        api.components_started.set()

        took = time.monotonic() - started_at
        summary = f"Podvisor is up: API {api.url}"
        if status["registry"]:
            summary += f"  registry {status['registry']}"
        for h in status["hosts"]:
            summary += f"  host {h['name']}"
        print(f"{summary}  ({took:.1f}s)", flush=True)
        print(f"kubeconfig: {data_dir / 'kubeconfig'}" + ("" if args.no_kubeconfig_merge else
              " (context \"podvisor\" merged into ~/.kube/config)"), flush=True)
        await stop_event.wait()
        print("stopping Podvisor ...", file=sys.stderr, flush=True)
    finally:
        for comp in reversed(components):
            with contextlib.suppress(Exception):
                await asyncio.shield(comp.stop())
        with contextlib.suppress(FileNotFoundError):
            status_file(data_dir).unlink()
        os.close(lock_fd)
    return 0


def _write_kubeconfigs(args: argparse.Namespace, data_dir: Path, api: _APIComponent) -> None:
    from podvisor.kubeconfig import build_kubeconfig, merge_into_user_kubeconfig, write_kubeconfig

    config = build_kubeconfig(api.url, api.pki)
    write_kubeconfig(data_dir / "kubeconfig", config)
    if not args.no_kubeconfig_merge:
        try:
            merge_into_user_kubeconfig(config)
        except (OSError, ValueError) as exc:
            log.warning("could not merge into the user kubeconfig: %s", exc)


async def _start_registry(args: argparse.Namespace, data_dir: Path, api: _APIComponent) -> Any:
    if args.registry != "embedded":
        return None
    from podvisor.registry.component import EmbeddedRegistry

    reg = EmbeddedRegistry(data_dir)
    await reg.start()
    return reg


def _registry_address(args: argparse.Namespace, registry: Any) -> str:
    if registry is not None:
        return str(registry.address)
    if args.registry not in ("embedded", "none"):
        return str(args.registry)
    return ""


async def _publish_registry(resources: Any, address: str, registry: Any) -> None:
    """Publish the registry in kube-public/local-registry-hosting as kind and minikube do."""
    from podvisor.apiserver.errors import NotFoundError
    from podvisor.apiserver.rest import RequestOptions, UserInfo

    if registry is not None and hasattr(registry, "config_map"):
        body = registry.config_map()
    else:
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "local-registry-hosting", "namespace": "kube-public"},
            "data": {"localRegistryHosting.v1": f'host: "{address}"\nhelp: "https://github.com/kubernetes/enhancements/tree/master/keps/sig-cluster-lifecycle/generic/1755-communicating-a-local-registry"\n'},
        }
    store = resources.lookup("", "v1", "configmaps")
    opts = RequestOptions(user=UserInfo(name="system:podvisor", groups=("system:masters",)), field_manager="podvisor-up")
    try:
        current = await store.get("kube-public", "local-registry-hosting")
    except NotFoundError:
        await store.create("kube-public", body, opts)
        return
    if current.get("data") != body.get("data"):
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        await store.update("kube-public", "local-registry-hosting", body, opts)


async def _start_host(args: argparse.Namespace, data_dir: Path, api: _APIComponent, registry: str) -> Any:
    host = _HostComponent(data_dir, host_name=args.host_name, pki=api.pki, registry=registry,
                          mirror_flags=list(args.registry_mirror))
    await host.start()
    return host


class _HostComponent:
    """The local host: hostd (the VMs) and the spherelet (the node agent), started and stopped together.

    Stopping leaves the pod VMs running (the kubelet's contract): the next start adopts them."""

    name = "host"

    def __init__(self, data_dir: Path, *, host_name: str, pki: Any, registry: str, mirror_flags: list[str]) -> None:
        self.data_dir, self.host_name, self.pki = data_dir, host_name, pki
        self.registry, self.mirror_flags = registry, mirror_flags
        self.hostd: Any = None
        self.images: Any = None
        self.spherelet: Any = None

    @property
    def url(self) -> str:
        return str(self.hostd.url) if self.hostd is not None else ""

    async def start(self) -> None:
        from podvisor.hostd.component import HostdComponent, hostd_paths
        from podvisor.images.local import local_keychain
        from podvisor.images.mirrors import default_mirrors
        from podvisor.images.service import ImageService
        from podvisor.network.hostnet import HostNetwork
        from podvisor.pki import issue_node_serving_cert
        from podvisor.spherelet import Spherelet

        self.hostd = HostdComponent(self.data_dir, host_name=self.host_name)
        await self.hostd.start()
        try:
            mirrors = default_mirrors(self.registry or None, self.mirror_flags)
        except ValueError as exc:
            raise UpError(f"--registry-mirror: {exc}") from exc
        self.images = ImageService(self.data_dir, mirrors=mirrors, keychain=local_keychain(self.data_dir))
        paths = hostd_paths(self.data_dir)
        cert = issue_node_serving_cert(self.pki, self.host_name, sans=["127.0.0.1"])
        data_dir, node = self.data_dir, self.host_name
        self.spherelet = Spherelet.with_hostd(
            kubeconfig=data_dir / "kubeconfig", node_name=node, data_dir=data_dir / "spherelet",
            hostd_url=self.hostd.url, hostd_secret=paths["secret"].read_text().strip(), hostd_cert=paths["cert"],
            images=self.images,
            network=lambda cidr: HostNetwork(node, pod_cidr=cidr, state_dir=data_dir / "network"),
            serving_cert=cert, client_ca=self.pki.ca_cert, port=_stable_port(data_dir / "spherelet" / "port"),
        )
        await self.spherelet.start()

    async def stop(self) -> None:
        if self.spherelet is not None:
            with contextlib.suppress(Exception):
                await self.spherelet.stop()
        if self.images is not None:
            with contextlib.suppress(Exception):
                await self.images.close()
        if self.hostd is not None:
            await self.hostd.stop()

    def describe(self) -> dict[str, Any]:
        return {"name": self.host_name, "hostd": self.url}
