"""Reference defaults, mirror configuration, registry challenges and docker configs."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from podvisor.images.auth import Credential, Keychain, keychain_from_secrets, parse_challenges
from podvisor.images.errors import InvalidReferenceError
from podvisor.images.mirrors import Endpoint, MirrorConfig, default_mirrors, parse_mirror_flag
from podvisor.images.reference import parse_reference

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize("text, full", [
    ("busybox", "docker.io/library/busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36"),
    ("team/app", "docker.io/team/app:latest"),
    ("quay.io/org/app:v1", "quay.io/org/app:v1"),
    ("localhost/app", "localhost/app:latest"),
    ("127.0.0.1:5000/default/bbox:1", "127.0.0.1:5000/default/bbox:1"),
    ("index.docker.io/library/nginx", "docker.io/library/nginx:latest"),
    (f"busybox@{DIGEST}", f"docker.io/library/busybox@{DIGEST}"),
    (f"reg:5000/a/b:t@{DIGEST}", f"reg:5000/a/b:t@{DIGEST}"),
])
def test_reference_defaults(text: str, full: str) -> None:
    assert str(parse_reference(text)) == full


@pytest.mark.parametrize("text", ["", "UPPER/case", "a b", "app:", "app@sha256:short", "a//b"])
def test_invalid_references(text: str) -> None:
    with pytest.raises(InvalidReferenceError):
        parse_reference(text)


def test_familiar_names() -> None:
    assert parse_reference("busybox").familiar == "busybox:latest"
    assert parse_reference("127.0.0.1:5000/a/b:1").familiar == "127.0.0.1:5000/a/b:1"


def test_mirror_flags_replace_the_upstream() -> None:
    registry, endpoints = parse_mirror_flag("docker.io=http://127.0.0.1:5000,https://mirror.example/hub")
    assert registry == "docker.io"
    assert [(e.base, e.prefix) for e in endpoints] == [("http://127.0.0.1:5000", ""), ("https://mirror.example", "hub")]
    config = MirrorConfig.from_flags(["docker.io=127.0.0.1:5000"])
    assert [e.base for e in config.endpoints("docker.io")] == ["http://127.0.0.1:5000"]     # loopback: plain HTTP
    assert [e.base for e in config.endpoints("quay.io")] == ["https://quay.io"]
    assert [e.base for e in MirrorConfig().endpoints("docker.io")] == ["https://registry-1.docker.io"]
    with pytest.raises(ValueError):
        parse_mirror_flag("docker.io")


def test_default_mirrors_and_rewrite_prefix() -> None:
    config = default_mirrors("127.0.0.1:5000")
    assert [e.base for e in config.endpoints("docker.io")] == ["http://127.0.0.1:5000"]
    flagged = default_mirrors("127.0.0.1:5000", ["docker.io=http://127.0.0.1:6000/hub"])
    (endpoint,) = flagged.endpoints("docker.io")
    assert endpoint.repository("library/busybox") == "hub/library/busybox"
    assert default_mirrors(None).endpoints("docker.io")[0].host == "registry-1.docker.io"


def test_hosts_toml_directory(tmp_path: Path) -> None:
    d = tmp_path / "certs.d" / "docker.io"
    d.mkdir(parents=True)
    (d / "hosts.toml").write_text('server = "https://registry-1.docker.io"\n\n'
                                  '[host."http://127.0.0.1:5000"]\n  capabilities = ["pull", "resolve"]\n')
    config = MirrorConfig.from_hosts_dir(tmp_path / "certs.d")
    assert [e.base for e in config.endpoints("docker.io")] == ["http://127.0.0.1:5000", "https://registry-1.docker.io"]


def test_challenges() -> None:
    (bearer,) = parse_challenges('Bearer realm="http://127.0.0.1:1/token",service="reg",scope="repository:a/b:pull"')
    assert bearer.scheme == "bearer" and bearer.realm == "http://127.0.0.1:1/token"
    assert bearer.params["scope"] == "repository:a/b:pull"
    both = parse_challenges('Basic realm="x", Bearer realm="y",service=s')
    assert [c.scheme for c in both] == ["basic", "bearer"]


def test_docker_config_and_pull_secrets() -> None:
    auth = base64.b64encode(b"me:pw").decode()
    cfg = {"auths": {"https://index.docker.io/v1/": {"auth": auth},
                     "127.0.0.1:5000": {"username": "u", "password": "p"}}}
    chain = Keychain.from_docker_config(json.dumps(cfg))
    assert chain.get("docker.io") == Credential("me", "pw")
    assert chain.get("registry-1.docker.io") == Credential("me", "pw")
    assert chain.get("127.0.0.1:5000") == Credential("u", "p")
    secret = {"type": "kubernetes.io/dockerconfigjson",
              "data": {".dockerconfigjson": base64.b64encode(json.dumps(cfg).encode()).decode()}}
    legacy = {"type": "kubernetes.io/dockercfg", "stringData": {".dockercfg": json.dumps({"q.io": {"auth": auth}})}}
    merged = keychain_from_secrets([secret, legacy])
    assert merged.hosts() == ["127.0.0.1:5000", "docker.io", "q.io"]


def test_endpoint_urls() -> None:
    assert Endpoint.from_url("registry.example:443").base == "https://registry.example:443"
    assert Endpoint.from_url("http://h:1/v2/").prefix == ""


def test_pull_backoff_doubles_to_five_minutes() -> None:
    from podvisor.images.backoff import PullBackOff

    now = [0.0]
    backoff = PullBackOff(clock=lambda: now[0])
    assert [backoff.failed("pod/busybox") for _ in range(7)] == [10, 20, 40, 80, 160, 300, 300]
    assert backoff.in_backoff("pod/busybox") and backoff.reason("pod/busybox") == "ImagePullBackOff"
    now[0] = 1000.0
    assert backoff.reason("pod/busybox") == "ErrImagePull"
    backoff.succeeded("pod/busybox")
    assert backoff.failed("pod/busybox") == 10
