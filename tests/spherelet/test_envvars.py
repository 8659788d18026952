"""A container's environment and argv, resolved as a kubelet resolves them."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from podvisor.images.manifest import ImageConfig
from podvisor.spherelet.containers import build_spec, hosts_file
from podvisor.spherelet.envvars import ConfigError, command_line, container_env, expand, resource_value


class Objects:
    """ConfigMaps and Secrets as the API would answer them."""

    def __init__(self) -> None:
        self.cms: dict[tuple[str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}

    async def configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.cms.get((namespace, name))

    async def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.secrets.get((namespace, name))


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


POD: dict[str, Any] = {
    "metadata": {"name": "web", "namespace": "team", "uid": "u-1", "labels": {"app": "web"},
                 "annotations": {"note": "hi"}},
    "spec": {"nodeName": "h1", "serviceAccountName": "builder",
             "containers": [{"name": "c", "image": "x", "resources": {"limits": {"memory": "64Mi", "cpu": "250m"},
                                                                       "requests": {"cpu": "100m"}}}]},
}


def test_expansion_rules() -> None:
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)", env.get) == "1-two"
    assert expand("$(MISSING)", env.get) == "$(MISSING)"
    assert expand("$$(A)", env.get) == "$(A)"
    assert expand("cost $5 and $", env.get) == "cost $5 and $"
    assert expand("open $(A", env.get) == "open $(A"
    assert expand("$()", env.get) == "$()"


async def test_env_order_sources_and_references() -> None:
    objs = Objects()
    objs.cms[("team", "cfg")] = {"data": {"MODE": "fast", "bad key": "x", "LEVEL": "3"}}
    objs.secrets[("team", "creds")] = {"data": {"TOKEN": b64("s3cret")}}
    container = {
        "name": "c",
        "envFrom": [{"configMapRef": {"name": "cfg"}}, {"secretRef": {"name": "creds"}, "prefix": "S_"},
                    {"configMapRef": {"name": "absent", "optional": True}}],
        "env": [
            {"name": "LEVEL", "value": "override-$(LEVEL)"},
            {"name": "GREETING", "value": "mode=$(MODE) token=$(S_TOKEN) later=$(LATER)"},
            {"name": "LATER", "value": "x"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
            {"name": "KEY", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "MODE"}}},
            {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "NOPE", "optional": True}}},
            {"name": "SEC", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "TOKEN"}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
        ],
    }
    env, invalid = await container_env(POD, container, sources=objs, pod_ip="10.88.0.5", host_ip="127.0.0.1")
    d = dict(env)
    assert invalid == ["bad key"]
    assert d["LEVEL"] == "override-3"
    assert d["GREETING"] == "mode=fast token=s3cret later=$(LATER)"   # only what is defined before
    assert (d["POD"], d["APP"], d["IP"], d["NODE"], d["SA"]) == ("web", "web", "10.88.0.5", "h1", "builder")
    assert d["KEY"] == "fast" and d["SEC"] == "s3cret" and d["MEM"] == "64"
    assert "OPT" not in d
    assert list(d)[:3] == ["MODE", "LEVEL", "S_TOKEN"]


async def test_missing_references_are_config_errors() -> None:
    objs = Objects()
    objs.cms[("team", "cfg")] = {"data": {"A": "1"}}
    cases = [
        ({"configMapKeyRef": {"name": "nope", "key": "A"}}, 'configmap "nope" not found'),
        ({"configMapKeyRef": {"name": "cfg", "key": "B"}}, "couldn't find key B in ConfigMap team/cfg"),
        ({"secretKeyRef": {"name": "s", "key": "A"}}, 'secret "s" not found'),
    ]
    for value_from, message in cases:
        with pytest.raises(ConfigError, match=message):
            await container_env(POD, {"name": "c", "env": [{"name": "X", "valueFrom": value_from}]}, sources=objs)
    with pytest.raises(ConfigError, match='configmap "gone" not found'):
        await container_env(POD, {"name": "c", "envFrom": [{"configMapRef": {"name": "gone"}}]}, sources=objs)


def test_resource_values() -> None:
    assert resource_value(POD, "c", "limits.cpu") == "1"                    # 250m rounds up to 1
    assert resource_value(POD, "c", "limits.cpu", "1m") == "250"
    assert resource_value(POD, "c", "requests.cpu", "1m") == "100"
    assert resource_value(POD, "c", "requests.memory") == str(64 * 2**20)   # no request: the limit
    assert resource_value(POD, "c", "limits.ephemeral-storage", allocatable={"ephemeral-storage": "10Gi"}) \
        == str(10 * 2**30)


def test_command_line_against_image() -> None:
    env = [("NAME", "world")]
    assert command_line({}, entrypoint=["/ep"], cmd=["a", "b"]) == ["/ep", "a", "b"]
    assert command_line({"args": ["x"]}, entrypoint=["/ep"], cmd=["a"]) == ["/ep", "x"]
    assert command_line({"command": ["/bin/echo"]}, entrypoint=["/ep"], cmd=["a"]) == ["/bin/echo"]
    assert command_line({"command": ["echo", "hi $(NAME)"], "args": ["$$(NAME)"]}, env=env) == \
        ["echo", "hi world", "$(NAME)"]


def test_build_spec_user_env_mounts() -> None:
    image = ImageConfig(entrypoint=("/bin/sh",), cmd=("-c", "echo"), env=("PATH=/bin", "FROM_IMAGE=1", "A=image"),
                        workdir="/srv", user="1000:50")
    pod = {"metadata": {"name": "p"}, "spec": {"securityContext": {"runAsGroup": 7, "supplementalGroups": [9],
                                                                    "fsGroup": 11}}}
    c = {"name": "app", "volumeMounts": [{"name": "cfg", "mountPath": "/etc/app", "readOnly": True},
                                        {"name": "data", "mountPath": "/data/one", "subPath": "one"}],
         "securityContext": {"runAsUser": 33}, "resources": {"limits": {"memory": "128Mi", "cpu": "500m"}}}
    spec = build_spec(pod, c, attempt=2, image_id="img-abc", image_config=image, env=[("A", "pod")],
                      volume_sources={"cfg": "volumes/cfg", "data": "/run/volumes/data"}, hostname="p")
    assert spec.id == "app-2" and spec.log_path == "logs/app/2.log" and spec.image == "img-abc"
    assert spec.args == ("/bin/sh", "-c", "echo")
    env = dict(e.split("=", 1) for e in spec.env)
    assert env["PATH"] == "/bin" and env["FROM_IMAGE"] == "1" and env["A"] == "pod" and env["HOSTNAME"] == "p"
    assert (spec.uid, spec.gid, spec.supplemental_groups) == (33, 7, (9, 11))
    assert spec.working_dir == "/srv"
    assert [(m.source, m.destination, m.read_only) for m in spec.mounts] == \
        [("volumes/cfg", "/etc/app", True), ("/run/volumes/data/one", "/data/one", False)]
    assert spec.memory_limit_bytes == 128 * 2**20 and spec.cpu_limit_millis == 500


def test_image_user_and_non_root() -> None:
    image = ImageConfig(user="nobody")
    spec = build_spec({"spec": {}}, {"name": "c", "command": ["x"]}, attempt=0, image_id="i", image_config=image,
                      env=[], volume_sources={}, hostname="h")
    assert spec.uid is None and spec.user_name == "nobody"
    with pytest.raises(ConfigError, match="non-root"):
        build_spec({"spec": {"securityContext": {"runAsNonRoot": True, "runAsUser": 0}}}, {"name": "c", "command": ["x"]},
                   attempt=0, image_id="i", image_config=ImageConfig(), env=[], volume_sources={}, hostname="h")
    with pytest.raises(ConfigError, match="no command"):
        build_spec({"spec": {}}, {"name": "c"}, attempt=0, image_id="i", image_config=ImageConfig(), env=[],
                   volume_sources={}, hostname="h")


def test_hosts_file() -> None:
    pod = {"metadata": {"namespace": "ns"}, "spec": {"subdomain": "sub", "hostAliases": [
        {"ip": "10.1.1.1", "hostnames": ["a", "b"]}]}}
    text = hosts_file(pod, hostname="web-0", pod_ip="10.88.0.7")
    assert "127.0.0.1\tlocalhost" in text
    assert "10.88.0.7\tweb-0.sub.ns.svc.cluster.local\tweb-0" in text
    assert text.rstrip().endswith("10.1.1.1\ta\tb")
