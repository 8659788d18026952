"""The real kubectl against a real `podvisor up`: what a user types, what a user reads."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import yaml

from tests.e2e.cluster import Cluster

NS = "e2e"


@pytest.fixture(scope="module", autouse=True)
def namespace(cluster: Cluster) -> None:
    # kubectl create namespace sends a protobuf body
    r = cluster.kubectl("create", "namespace", NS)
    assert f"namespace/{NS} created" in r.stdout


def k(cluster: Cluster, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("-n", NS, *args, **kw)  # type: ignore[arg-type]


def test_version_and_health(cluster: Cluster) -> None:
    v = json.loads(cluster.kubectl("get", "--raw", "/version").stdout)
    assert v["major"] == "1" and v["minor"] == "32"
    assert cluster.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
    assert cluster.kubectl("get", "--raw", "/livez").stdout.strip() == "ok"


def test_default_namespaces_listed_as_table(cluster: Cluster) -> None:
    out = cluster.kubectl("get", "namespaces").stdout
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "AGE"]
    names = {line.split()[0] for line in lines[1:]}
    assert {"default", "kube-system", "kube-public", "kube-node-lease", NS} <= names


def test_api_resources(cluster: Cluster) -> None:
    out = cluster.kubectl("api-resources").stdout
    for name in ("pods", "deployments", "leases", "endpointslices", "runtimeclasses", "jobs", "events"):
        assert any(line.split()[0] == name for line in out.splitlines()[1:]), name
    assert " po " in out and " deploy " in out


def test_protobuf_creates(cluster: Cluster) -> None:
    k(cluster, "create", "configmap", "pb", "--from-literal=a=b")
    k(cluster, "create", "secret", "generic", "sec", "--from-literal=p=q")
    k(cluster, "create", "deployment", "dep", "--image=registry.local/web:1", "--replicas=0")
    k(cluster, "create", "service", "clusterip", "svc", "--tcp=80:8080")
    assert k(cluster, "get", "cm", "pb", "-o", "jsonpath={.data.a}").stdout == "b"
    assert k(cluster, "get", "secret", "sec", "-o", "jsonpath={.data.p}").stdout == "cQ=="
    dep = json.loads(k(cluster, "get", "deploy", "dep", "-o", "json").stdout)
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.local/web:1"
    assert dep["spec"]["replicas"] == 0
    svc = json.loads(k(cluster, "get", "svc", "svc", "-o", "json").stdout)
    assert svc["spec"]["ports"][0]["port"] == 80 and svc["spec"]["ports"][0]["targetPort"] == 8080
    assert svc["spec"]["clusterIP"]


def test_apply_get_yaml_label_annotate(cluster: Cluster) -> None:
    manifest = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "applied", "labels": {"app": "x"}}, "data": {"k": "v"}}
    k(cluster, "apply", "-f", "-", input=yaml.safe_dump(manifest))
    obj = yaml.safe_load(k(cluster, "get", "cm", "applied", "-o", "yaml").stdout)
    assert obj["data"] == {"k": "v"}
    assert "kubectl.kubernetes.io/last-applied-configuration" in obj["metadata"]["annotations"]
    assert int(obj["metadata"]["resourceVersion"]) > 0
    # re-apply with a change: a strategic merge patch
    manifest["data"] = {"k": "v2", "n": "1"}
    assert "configured" in k(cluster, "apply", "-f", "-", input=yaml.safe_dump(manifest)).stdout
    assert k(cluster, "get", "cm", "applied", "-o", "jsonpath={.data.k}").stdout == "v2"
    k(cluster, "label", "cm", "applied", "tier=gold")
    k(cluster, "annotate", "cm", "applied", "note=hello")
    assert "configmap/applied" in k(cluster, "get", "cm", "-l", "tier=gold", "-o", "name").stdout
    assert k(cluster, "get", "cm", "-l", "tier=silver", "-o", "name").stdout == ""
    assert k(cluster, "get", "cm", "applied", "-o", "jsonpath={.metadata.annotations.note}").stdout == "hello"


def test_patch_all_kinds(cluster: Cluster) -> None:
    k(cluster, "create", "configmap", "p1", "--from-literal=a=1")
    k(cluster, "patch", "cm", "p1", "--type", "merge", "-p", '{"data":{"m":"1"}}')
    k(cluster, "patch", "cm", "p1", "--type", "json", "-p", '[{"op":"add","path":"/data/j","value":"2"}]')
    k(cluster, "patch", "cm", "p1", "-p", '{"data":{"s":"3"}}')
    data = json.loads(k(cluster, "get", "cm", "p1", "-o", "json").stdout)["data"]
    assert data == {"a": "1", "m": "1", "j": "2", "s": "3"}
    # strategic merge on a deployment changes one container, keeps the other
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "two"},
           "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "two"}},
                    "template": {"metadata": {"labels": {"app": "two"}},
                                 "spec": {"containers": [{"name": "a", "image": "x/y:1"},
                                                         {"name": "b", "image": "x/z:1"}]}}}}
    k(cluster, "apply", "-f", "-", input=yaml.safe_dump(dep))
    k(cluster, "patch", "deploy", "two", "-p",
      '{"spec":{"template":{"spec":{"containers":[{"name":"b","image":"x/z:2"}]}}}}')
    images = k(cluster, "get", "deploy", "two", "-o", "jsonpath={.spec.template.spec.containers[*].image}").stdout
    assert images == "x/y:1 x/z:2"
    # a failing json-patch test op is refused and changes nothing
    r = k(cluster, "patch", "cm", "p1", "--type", "json", "-p",
          '[{"op":"test","path":"/data/a","value":"nope"},{"op":"remove","path":"/data/a"}]', check=False)
    assert r.returncode != 0
    assert k(cluster, "get", "cm", "p1", "-o", "jsonpath={.data.a}").stdout == "1"


def test_scale_subresource(cluster: Cluster) -> None:
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "sc"},
           "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "sc"}},
                    "template": {"metadata": {"labels": {"app": "sc"}},
                                 "spec": {"containers": [{"name": "a", "image": "x/y:1"}]}}}}
    k(cluster, "apply", "-f", "-", input=yaml.safe_dump(dep))
    k(cluster, "scale", "deploy", "sc", "--replicas=3")
    assert k(cluster, "get", "deploy", "sc", "-o", "jsonpath={.spec.replicas}").stdout == "3"


def test_replace_and_stale_update(cluster: Cluster) -> None:
    k(cluster, "create", "configmap", "r1", "--from-literal=a=1")
    obj = json.loads(k(cluster, "get", "cm", "r1", "-o", "json").stdout)
    stale = json.loads(json.dumps(obj))
    obj["data"]["a"] = "2"
    k(cluster, "replace", "-f", "-", input=json.dumps(obj))
    assert k(cluster, "get", "cm", "r1", "-o", "jsonpath={.data.a}").stdout == "2"
    stale["data"]["a"] = "3"
    r = k(cluster, "replace", "-f", "-", input=json.dumps(stale), check=False)
    assert r.returncode != 0
    assert "the object has been modified" in r.stderr
    assert k(cluster, "get", "cm", "r1", "-o", "jsonpath={.data.a}").stdout == "2"


def test_server_side_apply(cluster: Cluster) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"s": "a"}}
    k(cluster, "apply", "--server-side", "-f", "-", input=yaml.safe_dump(cm))
    obj = json.loads(k(cluster, "get", "cm", "ssa", "-o", "json", "--show-managed-fields").stdout)
    managers = {m["manager"]: m for m in obj["metadata"]["managedFields"]}
    assert managers["kubectl"]["operation"] == "Apply"
    assert "f:s" in json.dumps(managers["kubectl"]["fieldsV1"])
    # another manager changing the field conflicts; --force-conflicts takes it over
    cm["data"]["s"] = "b"
    r = k(cluster, "apply", "--server-side", "--field-manager", "other", "-f", "-",
          input=yaml.safe_dump(cm), check=False)
    assert r.returncode != 0 and "conflict" in r.stderr.lower()
    k(cluster, "apply", "--server-side", "--field-manager", "other", "--force-conflicts", "-f", "-",
      input=yaml.safe_dump(cm))
    assert k(cluster, "get", "cm", "ssa", "-o", "jsonpath={.data.s}").stdout == "b"


def test_dry_run_server_stores_nothing(cluster: Cluster) -> None:
    r = k(cluster, "create", "configmap", "dry", "--from-literal=a=1", "--dry-run=server", "-o", "json")
    assert json.loads(r.stdout)["metadata"]["name"] == "dry"
    assert k(cluster, "get", "cm", "dry", check=False).returncode != 0


def test_errors_are_clear(cluster: Cluster) -> None:
    r = k(cluster, "create", "configmap", "Bad_Name", check=False)
    assert r.returncode != 0 and "Invalid value" in r.stderr and "RFC 1123" in r.stderr
    bad = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "strict"}, "bogus": 1}
    r = k(cluster, "apply", "--validate=strict", "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert r.returncode != 0 and 'unknown field "bogus"' in r.stderr
    r = k(cluster, "get", "cm", "nope", check=False)
    assert r.returncode != 0 and 'configmaps "nope" not found' in r.stderr
    r = k(cluster, "get", "widgets", check=False)
    assert r.returncode != 0 and "doesn't have a resource type" in r.stderr


def test_describe_and_explain(cluster: Cluster) -> None:
    k(cluster, "create", "configmap", "desc", "--from-literal=hello=world")
    out = k(cluster, "describe", "cm", "desc").stdout
    assert "Name:" in out and "desc" in out and "hello" in out and "world" in out
    ex = cluster.kubectl("explain", "pod.spec.containers").stdout
    assert "FIELDS:" in ex and "image" in ex and "<string>" in ex
    ex = cluster.kubectl("explain", "deployment.spec.replicas").stdout
    assert "<integer>" in ex


def test_auth_can_i(cluster: Cluster) -> None:
    assert cluster.kubectl("auth", "can-i", "create", "pods", "-n", NS).stdout.strip() == "yes"


def test_watch_sees_changes(cluster: Cluster) -> None:
    proc = subprocess.Popen(["kubectl", "-n", NS, "get", "cm", "-w", "-o", "name"], env=cluster.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2)
        k(cluster, "create", "configmap", "watched", "--from-literal=a=1")
        deadline = time.monotonic() + 15
        seen = ""
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            seen += line
            if "configmap/watched" in line:
                break
        assert "configmap/watched" in seen
    finally:
        proc.kill()
        proc.wait()


def test_delete_wait(cluster: Cluster) -> None:
    k(cluster, "create", "configmap", "gone", "--from-literal=a=1")
    k(cluster, "delete", "cm", "gone", "--wait=true")
    assert k(cluster, "get", "cm", "gone", check=False).returncode != 0


def test_pods_table_and_wide(cluster: Cluster) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    k(cluster, "apply", "-f", "-", input=yaml.safe_dump(pod))
    header = k(cluster, "get", "pods").stdout.splitlines()[0].split()
    assert header == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    wide = k(cluster, "get", "pods", "-o", "wide").stdout.splitlines()[0]
    assert "IP" in wide and "NODE" in wide
    obj = json.loads(k(cluster, "get", "pod", "p", "-o", "json").stdout)
    spec = obj["spec"]
    assert spec["restartPolicy"] == "Always" and spec["containers"][0]["imagePullPolicy"] == "Always"
    assert obj["status"]["phase"] == "Pending"
    # every pod is a crx VM: the default RuntimeClass and its VM overhead
    assert spec["runtimeClassName"] == "crx" and spec["overhead"] == {"cpu": "50m", "memory": "64Mi"}
    assert "crx" in cluster.kubectl("get", "runtimeclass", "-o", "name").stdout
    k(cluster, "delete", "pod", "p", "--wait=true")
