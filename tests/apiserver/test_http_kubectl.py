"""The real kubectl (v1.32 through /usr/bin/kubectl's version dispatcher) against the server.

kubectl runs with a HOME of the test's own, so its discovery cache never leaks between runs."""

from __future__ import annotations

import json

import pytest

from tests.apiserver._http_harness import KUBECTL, LiveServer, live  # noqa: F401

pytestmark = pytest.mark.skipif(not KUBECTL, reason="kubectl is not installed")

CM = """apiVersion: v1
kind: ConfigMap
metadata: {{name: {name}, namespace: {ns}, labels: {{app: x}}}}
data: {{k: v}}
"""

DEPLOY = """apiVersion: apps/v1
kind: Deployment
metadata: {name: d1, namespace: k-apply}
spec:
  replicas: 0
  selector: {matchLabels: {app: d1}}
  template:
    metadata: {labels: {app: d1}}
    spec: {containers: [{name: a, image: "x/y:1"}, {name: b, image: "x/z:1"}]}
"""


def test_version_and_discovery(live: LiveServer) -> None:  # noqa: F811
    out = live.kubectl("version", "-o", "json").stdout
    assert json.loads(out)["serverVersion"]["minor"] == "32"
    resources = live.kubectl("api-resources").stdout
    for name in ("deployments", "configmaps", "pods", "namespaces"):
        assert name in resources
    assert "apps/v1" in live.kubectl("api-versions").stdout


def test_create_get_label_patch(live: LiveServer) -> None:  # noqa: F811
    live.kubectl("create", "namespace", "k-basic")  # a protobuf body
    live.kubectl("-n", "k-basic", "create", "configmap", "pb1", "--from-literal=a=b")  # protobuf too
    assert live.kubectl("-n", "k-basic", "get", "cm", "pb1", "-o", "jsonpath={.data.a}").stdout == "b"
    live.kubectl("apply", "-f", "-", input=CM.format(name="c1", ns="k-basic"))
    obj = json.loads(live.kubectl("-n", "k-basic", "get", "cm", "c1", "-o", "json").stdout)
    assert obj["data"] == {"k": "v"} and obj["metadata"]["resourceVersion"]
    assert "kubectl.kubernetes.io/last-applied-configuration" in obj["metadata"]["annotations"]
    assert "kind: ConfigMap" in live.kubectl("-n", "k-basic", "get", "cm", "c1", "-o", "yaml").stdout

    live.kubectl("-n", "k-basic", "label", "cm", "c1", "tier=gold")
    assert live.kubectl("-n", "k-basic", "get", "cm", "-l", "tier=gold", "-o", "name").stdout.split() == ["configmap/c1"]
    live.kubectl("-n", "k-basic", "patch", "cm", "c1", "--type", "merge", "-p", '{"data":{"m":"1"}}')
    live.kubectl("-n", "k-basic", "patch", "cm", "c1", "--type", "json", "-p",
                 '[{"op":"add","path":"/data/j","value":"2"}]')
    data = json.loads(live.kubectl("-n", "k-basic", "get", "cm", "c1", "-o", "jsonpath={.data}").stdout)
    assert data == {"k": "v", "m": "1", "j": "2"}

    table = live.kubectl("get", "cm", "-A").stdout.splitlines()
    assert table[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert any(line.split()[:2] == ["k-basic", "c1"] for line in table)
    shown = live.kubectl("-n", "k-basic", "get", "cm", "--show-labels").stdout
    assert "tier=gold" in shown

    r = live.kubectl("-n", "k-basic", "get", "cm", "nope", check=False)
    assert r.returncode != 0 and 'configmaps "nope" not found' in r.stderr


def test_apply_strategic_and_server_side(live: LiveServer) -> None:  # noqa: F811
    live.kubectl("create", "namespace", "k-apply")
    live.kubectl("apply", "-f", "-", input=DEPLOY)
    live.kubectl("-n", "k-apply", "patch", "deploy", "d1", "-p",
                 '{"spec":{"template":{"spec":{"containers":[{"name":"b","image":"x/z:2"}]}}}}')
    images = live.kubectl("-n", "k-apply", "get", "deploy", "d1", "-o",
                          "jsonpath={.spec.template.spec.containers[*].image}").stdout
    assert images == "x/y:1 x/z:2"
    # a second client-side apply computes a strategic merge patch against last-applied
    live.kubectl("apply", "-f", "-", input=DEPLOY.replace('"x/y:1"', '"x/y:3"'))
    images = live.kubectl("-n", "k-apply", "get", "deploy", "d1", "-o",
                          "jsonpath={.spec.template.spec.containers[*].image}").stdout
    assert images.split()[0] == "x/y:3"

    live.kubectl("apply", "--server-side", "-f", "-", input=CM.format(name="ssa", ns="k-apply"))
    manager = live.kubectl("-n", "k-apply", "get", "cm", "ssa", "-o",
                           "jsonpath={.metadata.managedFields[0].manager}").stdout
    assert manager == "kubectl"


def test_replace_with_stale_resource_version_conflicts(live: LiveServer) -> None:  # noqa: F811
    live.kubectl("create", "namespace", "k-replace")
    live.kubectl("apply", "-f", "-", input=CM.format(name="r1", ns="k-replace"))
    stale = live.kubectl("-n", "k-replace", "get", "cm", "r1", "-o", "yaml").stdout
    live.kubectl("-n", "k-replace", "label", "cm", "r1", "bump=1")
    r = live.kubectl("replace", "-f", "-", input=stale, check=False)
    assert r.returncode != 0
    assert "Conflict" in r.stderr and "the object has been modified" in r.stderr


def test_dry_run_invalid_and_strict(live: LiveServer) -> None:  # noqa: F811
    live.kubectl("create", "namespace", "k-dry")
    out = live.kubectl("-n", "k-dry", "create", "configmap", "dry", "--from-literal=a=b", "--dry-run=server").stdout
    assert "server dry run" in out
    assert live.kubectl("-n", "k-dry", "get", "cm", "dry", check=False).returncode != 0

    r = live.kubectl("create", "configmap", "Bad_Name", "-n", "k-dry", check=False)
    assert r.returncode != 0 and "Invalid" in r.stderr

    bogus = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c3, namespace: k-dry}\nbogus: 1\n"
    r = live.kubectl("apply", "--validate=strict", "-f", "-", input=bogus, check=False)
    assert r.returncode != 0 and 'unknown field "bogus"' in r.stderr


def test_auth_can_i_and_explain(live: LiveServer) -> None:  # noqa: F811
    assert live.kubectl("auth", "can-i", "create", "pods", "-n", "x").stdout.strip() == "yes"
    assert live.kubectl("--context", "alice", "auth", "can-i", "list", "configmaps").stdout.strip() == "yes"
    r = live.kubectl("--context", "nobody", "get", "pods", check=False)
    assert r.returncode != 0
    assert "You must be logged in to the server" in r.stderr or "Username" in r.stdout + r.stderr
    explained = live.kubectl("explain", "pod.spec.containers").stdout
    assert "image" in explained


def test_get_watch_and_delete_wait(live: LiveServer) -> None:  # noqa: F811
    live.kubectl("create", "namespace", "k-watch")
    live.kubectl("-n", "k-watch", "create", "configmap", "first")
    watcher = live.kubectl_popen("-n", "k-watch", "get", "cm", "-w")
    try:
        # the watcher lists first (printing headers and "first"), then waits for changes
        header = watcher.stdout.readline()  # type: ignore[union-attr]
        assert header.split()[:2] == ["NAME", "DATA"] or header.split()[0] == "NAME"
        assert watcher.stdout.readline().split()[0] == "first"  # type: ignore[union-attr]
        live.kubectl("-n", "k-watch", "create", "configmap", "watched")
        line = watcher.stdout.readline()  # type: ignore[union-attr]
        assert line.split()[0] == "watched"
    finally:
        watcher.terminate()
        watcher.wait(10)

    out = live.kubectl("-n", "k-watch", "delete", "cm", "watched", "--wait=true").stdout
    assert 'configmap "watched" deleted' in out
    assert live.kubectl("-n", "k-watch", "get", "cm", "watched", check=False).returncode != 0


def test_wait_for_delete_sees_the_deletion(live: LiveServer) -> None:  # noqa: F811
    live.kubectl("create", "namespace", "k-wait")
    live.kubectl("-n", "k-wait", "create", "configmap", "bye")
    waiter = live.kubectl_popen("-n", "k-wait", "wait", "--for=delete", "cm/bye", "--timeout=30s")
    live.kubectl("-n", "k-wait", "delete", "cm", "bye")
    assert waiter.wait(40) == 0, waiter.stderr.read()  # type: ignore[union-attr]
