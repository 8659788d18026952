"""Service accounts as a Kubernetes user meets them on a real `podvisor up`: every namespace has a
``default`` account, ``kubectl create token`` prints a token, and that token logs kubectl in, while
an expired or garbage one gets 401."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from podvisor.apiserver.strategies.sa_tokens import DEFAULT_AUDIENCES, DEFAULT_ISSUER, SigningKey
from tests.e2e.cluster import Cluster

NS = "sa-e2e"


def _wait(cluster: Cluster, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    deadline = time.monotonic() + timeout
    while True:
        r = cluster.kubectl(*args, check=False)
        if r.returncode == 0 or time.monotonic() > deadline:
            return r
        time.sleep(0.3)


def _payload(token: str) -> dict[str, Any]:
    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))  # type: ignore[no-any-return]


class TokenKubectl:
    """kubectl with nothing but the cluster's address, its CA (from the kubeconfig) and ``--token``:
    no client certificate that would authenticate instead of the token."""

    def __init__(self, cluster: Cluster, workdir: Path) -> None:
        config = yaml.safe_load(cluster.kubeconfig.read_text())
        entry = config["clusters"][0]["cluster"]
        self.server = entry["server"]
        self.ca = workdir / "ca.crt"
        self.ca.write_bytes(base64.b64decode(entry["certificate-authority-data"]))
        self.empty = workdir / "empty-kubeconfig"
        self.empty.write_text("")
        self.cluster = cluster

    def run(self, token: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl(f"--kubeconfig={self.empty}", f"--server={self.server}",
                                    f"--certificate-authority={self.ca}", f"--token={token}", *args, check=False)


@pytest.fixture(scope="module")
def namespace(cluster: Cluster) -> Iterator[str]:
    cluster.kubectl("create", "namespace", NS)
    try:
        yield NS
    finally:
        cluster.kubectl("delete", "namespace", NS, "--wait=false", check=False)


@pytest.fixture
def token_kubectl(cluster: Cluster, tmp_path: Path) -> TokenKubectl:
    return TokenKubectl(cluster, tmp_path)


def test_new_namespace_gets_a_default_service_account(cluster: Cluster, namespace: str) -> None:
    r = _wait(cluster, "get", "serviceaccount", "default", "-n", namespace)
    assert r.returncode == 0, r.stderr
    assert "default" in r.stdout
    # deleted, it comes back (a new object)
    uid = cluster.kubectl("get", "sa", "default", "-n", namespace, "-o", "jsonpath={.metadata.uid}").stdout
    cluster.kubectl("delete", "sa", "default", "-n", namespace)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = cluster.kubectl("get", "sa", "default", "-n", namespace, "-o", "jsonpath={.metadata.uid}", check=False)
        if r.returncode == 0 and r.stdout and r.stdout != uid:
            break
        time.sleep(0.3)
    else:
        raise AssertionError("the default service account was not recreated")


def test_create_token_logs_kubectl_in(cluster: Cluster, namespace: str, token_kubectl: TokenKubectl) -> None:
    assert _wait(cluster, "get", "sa", "default", "-n", namespace).returncode == 0
    token = cluster.kubectl("create", "token", "default", "-n", namespace).stdout.strip()
    claims = _payload(token)
    assert claims["sub"] == f"system:serviceaccount:{namespace}:default"
    assert claims["iss"] == DEFAULT_ISSUER
    assert claims["exp"] - claims["iat"] == 3600
    r = token_kubectl.run(token, "get", "--raw", "/api")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["kind"] == "APIVersions"
    # and it works for resource requests too (authorization allows every authenticated user for now)
    r = token_kubectl.run(token, "get", "serviceaccounts", "-n", namespace, "-o", "name")
    assert r.returncode == 0 and "serviceaccount/default" in r.stdout, r.stderr

    r = cluster.kubectl("create", "token", "default", "-n", namespace, "--duration=20m", "--audience=podvisor")
    claims = _payload(r.stdout.strip())
    assert claims["exp"] - claims["iat"] == 1200 and claims["aud"] == ["podvisor"]


def test_expired_garbage_and_stale_tokens_get_401(cluster: Cluster, namespace: str,
                                                   token_kubectl: TokenKubectl) -> None:
    for bad in ("garbage", "a.b.c"):
        r = token_kubectl.run(bad, "get", "--raw", "/api")
        assert r.returncode != 0 and "Unauthorized" in r.stderr, r.stderr
    # an expired token signed with the cluster's own key, for an account that exists
    cluster.kubectl("create", "serviceaccount", "robot", "-n", namespace)
    uid = cluster.kubectl("get", "sa", "robot", "-n", namespace, "-o", "jsonpath={.metadata.uid}").stdout
    key = SigningKey.load(cluster.data_dir / "pki" / "sa.key")
    then = int(time.time()) - 7200
    expired = key.sign({
        "iss": DEFAULT_ISSUER, "sub": f"system:serviceaccount:{namespace}:robot", "aud": list(DEFAULT_AUDIENCES),
        "iat": then, "nbf": then, "exp": then + 3600,
        "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": "robot", "uid": uid}},
    })
    r = token_kubectl.run(expired, "get", "--raw", "/api")
    assert r.returncode != 0 and "Unauthorized" in r.stderr, r.stderr
    # a good token stops working once its account is deleted
    token = cluster.kubectl("create", "token", "robot", "-n", namespace).stdout.strip()
    assert token_kubectl.run(token, "get", "--raw", "/api").returncode == 0
    cluster.kubectl("delete", "serviceaccount", "robot", "-n", namespace)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = token_kubectl.run(token, "get", "--raw", "/api")
        if r.returncode != 0:
            break
        time.sleep(0.3)
    assert r.returncode != 0 and "Unauthorized" in r.stderr, r.stderr


def test_create_token_for_a_missing_account(cluster: Cluster, namespace: str) -> None:
    r = cluster.kubectl("create", "token", "nobody", "-n", namespace, check=False)
    assert r.returncode != 0
    assert 'serviceaccounts "nobody" not found' in r.stderr
