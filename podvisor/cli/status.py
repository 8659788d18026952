"""`podvisor status`: each component's endpoint and health, read from what `podvisor up` published.

Health is probed, not assumed: the API server's ``/readyz`` over TLS verified with the cluster CA,
the registry's ``/v2/`` (401 means it is up and guarding), hostd's TLS port. A stopped cluster
prints its data dir and "down" and exits 1, so scripts can wait on it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from podvisor.paths import default_data_dir, status_file

__all__ = ["register", "collect_status"]


def register(sub: Any) -> None:
    p = sub.add_parser("status", help="show each component's endpoint and health")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_main)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _probe_https(url: str, ca: Path | None, timeout: float = 3.0) -> tuple[bool, str]:
    ctx = ssl.create_default_context(cafile=str(ca)) if ca and ca.exists() else ssl._create_unverified_context()
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=timeout) as resp:
            return resp.status == 200, f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return False, str(getattr(exc, "reason", exc))


def _probe_registry(address: str, timeout: float = 3.0) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(f"http://{address}/v2/", timeout=timeout) as resp:
            return True, f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return exc.code == 401, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return False, str(getattr(exc, "reason", exc))


def _probe_tcp(url: str, timeout: float = 3.0) -> tuple[bool, str]:
    hostport = url.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True, "listening"
    except (OSError, ValueError) as exc:
        return False, str(exc)


def collect_status(data_dir: Path) -> dict[str, Any]:
    path = status_file(data_dir)
    out: dict[str, Any] = {"data_dir": str(data_dir), "up": False, "api": "", "registry": "", "hosts": []}
    if not path.exists():
        return out
    published = json.loads(path.read_text())
    pid = int(published.get("pid", 0))
    out.update({k: published.get(k, out.get(k)) for k in ("api", "registry", "hosts")})
    out["pid"] = pid
    alive = pid > 0 and _pid_alive(pid)
    health: dict[str, Any] = {}
    if alive and out["api"]:
        ok, detail = _probe_https(out["api"].rstrip("/") + "/readyz", data_dir / "pki" / "ca.crt")
        health["api"] = {"healthy": ok, "detail": detail}
    if alive and out["registry"]:
        ok, detail = _probe_registry(out["registry"])
        health["registry"] = {"healthy": ok, "detail": detail}
    for h in out["hosts"]:
        if alive and h.get("hostd"):
            ok, detail = _probe_tcp(h["hostd"])
            h["healthy"], h["detail"] = ok, detail
    out["health"] = health
    out["up"] = alive and bool(health.get("api", {}).get("healthy"))
    out["kubeconfig"] = str(data_dir / "kubeconfig")
    return out


def _main(args: argparse.Namespace) -> int:
    data_dir = (args.data_dir or default_data_dir()).resolve()
    st = collect_status(data_dir)
    if args.json:
        print(json.dumps(st, indent=2))
        return 0 if st["up"] else 1
    if not st["up"]:
        print(f"Podvisor at {data_dir}: down")
        return 1
    rows = [("api", st["api"], st["health"].get("api", {}))]
    if st["registry"]:
        rows.append(("registry", st["registry"], st["health"].get("registry", {})))
    for h in st["hosts"]:
        rows.append((f"host {h['name']} (hostd)", h.get("hostd", ""), {"healthy": h.get("healthy"), "detail": h.get("detail", "")}))
    width = max(len(r[0]) for r in rows)
    print(f"Podvisor at {data_dir} (pid {st['pid']})")
    for name, endpoint, health in rows:
        state = "healthy" if health.get("healthy") else f"unhealthy ({health.get('detail', '')})"
        print(f"  {name.ljust(width)}  {endpoint}  {state}")
    print(f"  kubeconfig: {st['kubeconfig']}")
    sys.stdout.flush()
    return 0
