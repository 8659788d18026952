"""A real `podvisor up` in a subprocess on a scratch data dir, as a user starts it, for end-to-end tests.

kubectl runs with its own HOME so its discovery cache and ~/.kube are the test's alone.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Cluster", "free_port"]

ROOT = Path(__file__).resolve().parents[2]
PODVISOR = ROOT / ".venv" / "bin" / "podvisor"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    data_dir: Path
    home: Path
    port: int = field(default_factory=free_port)
    extra_args: tuple[str, ...] = ("--registry", "none", "--no-host")
    proc: subprocess.Popen[bytes] | None = None

    @property
    def kubeconfig(self) -> Path:
        return self.data_dir / "kubeconfig"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        # the CRX bundle `make setup` built lives in the real user's cache, not in the test's HOME
        env.setdefault("PODVISOR_CRX_DIR", str(Path.home() / ".cache" / "podvisor" / "crx"))
        env["HOME"] = str(self.home)
        env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    def start(self, timeout: float = 60) -> None:
        (self.data_dir / "up.log").unlink(missing_ok=True)
        log = open(self.data_dir / "up.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [str(PODVISOR), "up", "--data-dir", str(self.data_dir), "--port", str(self.port),
             "--no-kubeconfig-merge", *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, env=self.env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"podvisor up exited {self.proc.returncode}: {self.log_tail()}")
            # what a user waits for: up prints its summary once every component started
            if self.kubeconfig.exists() and "Podvisor is up" in self.log_tail(200):
                r = self.kubectl("get", "--raw", "/readyz", check=False)
                if r.returncode == 0:
                    return
            time.sleep(0.3)
        raise RuntimeError(f"podvisor up not ready in {timeout}s: {self.log_tail()}")

    def stop(self) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code

    def log_tail(self, n: int = 20) -> str:
        p = self.data_dir / "up.log"
        return "\n".join(p.read_text(errors="replace").splitlines()[-n:]) if p.exists() else ""

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True, env=self.env,
                           timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({r.returncode}): {r.stderr}{r.stdout}")
        return r

    def podvisor(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([str(PODVISOR), *args], capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"podvisor {' '.join(args)} failed ({r.returncode}): {r.stderr}{r.stdout}")
        return r


def python() -> str:
    return sys.executable
