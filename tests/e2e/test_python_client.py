"""The official `kubernetes` Python client against a real `podvisor up`."""

from __future__ import annotations

import threading

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from tests.e2e.cluster import Cluster

NS = "py"


@pytest.fixture(scope="module")
def core(cluster: Cluster) -> client.CoreV1Api:
    api = client.ApiClient(config.new_client_from_config(str(cluster.kubeconfig)).configuration)
    v1 = client.CoreV1Api(api)
    v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))
    return v1


def _cm(name: str, labels: dict[str, str] | None = None, data: dict[str, str] | None = None) -> client.V1ConfigMap:
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels=labels), data=data or {"k": "v"})


def test_crud(core: client.CoreV1Api) -> None:
    created = core.create_namespaced_config_map(NS, _cm("crud", {"app": "a"}))
    assert created.metadata.uid and int(created.metadata.resource_version) > 0
    got = core.read_namespaced_config_map("crud", NS)
    assert got.data == {"k": "v"}
    got.data["k"] = "w"
    updated = core.replace_namespaced_config_map("crud", NS, got)
    assert int(updated.metadata.resource_version) > int(created.metadata.resource_version)
    patched = core.patch_namespaced_config_map("crud", NS, {"data": {"p": "1"}})
    assert patched.data == {"k": "w", "p": "1"}
    # a stale update is a 409
    got.data["k"] = "stale"
    with pytest.raises(ApiException) as exc:
        core.replace_namespaced_config_map("crud", NS, got)
    assert exc.value.status == 409
    core.delete_namespaced_config_map("crud", NS)
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_config_map("crud", NS)
    assert exc.value.status == 404


def test_list_with_selectors_and_pages(core: client.CoreV1Api) -> None:
    for i in range(7):
        core.create_namespaced_config_map(NS, _cm(f"sel-{i}", {"app": "sel", "parity": str(i % 2)}))
    odd = core.list_namespaced_config_map(NS, label_selector="app=sel,parity=1")
    assert sorted(c.metadata.name for c in odd.items) == ["sel-1", "sel-3", "sel-5"]
    notin = core.list_namespaced_config_map(NS, label_selector="app=sel,parity notin (1)")
    assert len(notin.items) == 4
    by_name = core.list_namespaced_config_map(NS, field_selector="metadata.name=sel-2")
    assert [c.metadata.name for c in by_name.items] == ["sel-2"]
    names: list[str] = []
    page = core.list_namespaced_config_map(NS, label_selector="app=sel", limit=3)
    names += [c.metadata.name for c in page.items]
    while page.metadata._continue:
        page = core.list_namespaced_config_map(NS, label_selector="app=sel", limit=3, _continue=page.metadata._continue)
        names += [c.metadata.name for c in page.items]
    assert sorted(names) == [f"sel-{i}" for i in range(7)]
    core.delete_collection_namespaced_config_map(NS, label_selector="app=sel")
    assert core.list_namespaced_config_map(NS, label_selector="app=sel").items == []


def test_watch_resumes_from_resource_version(core: client.CoreV1Api) -> None:
    first = core.create_namespaced_config_map(NS, _cm("w-1"))
    rv = first.metadata.resource_version
    core.create_namespaced_config_map(NS, _cm("w-2"))
    core.patch_namespaced_config_map("w-1", NS, {"data": {"k": "changed"}})
    core.delete_namespaced_config_map("w-2", NS)
    seen: list[tuple[str, str]] = []
    w = watch.Watch()
    for ev in w.stream(core.list_namespaced_config_map, NS, resource_version=rv, timeout_seconds=5):
        seen.append((ev["type"], ev["object"].metadata.name))
        if len(seen) == 3:
            w.stop()
    assert seen == [("ADDED", "w-2"), ("MODIFIED", "w-1"), ("DELETED", "w-2")]


def test_watch_without_rv_starts_with_current_objects(core: client.CoreV1Api) -> None:
    core.create_namespaced_config_map(NS, _cm("init-1", {"grp": "init"}))
    events: list[tuple[str, str]] = []
    w = watch.Watch()

    def later() -> None:
        core.create_namespaced_config_map(NS, _cm("init-2", {"grp": "init"}))

    timer = threading.Timer(1.0, later)
    timer.start()
    try:
        for ev in w.stream(core.list_namespaced_config_map, NS, label_selector="grp=init", timeout_seconds=10):
            events.append((ev["type"], ev["object"].metadata.name))
            if len(events) == 2:
                w.stop()
    finally:
        timer.cancel()
    assert events == [("ADDED", "init-1"), ("ADDED", "init-2")]
