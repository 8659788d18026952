"""The official Kubernetes Python client against the server: CRUD, selectors, conflicts, watch resume."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from tests.apiserver._http_harness import LiveServer, live  # noqa: F401


def _core(live: LiveServer, who: str = "admin") -> Any:  # noqa: F811
    return client.CoreV1Api(live.python_client(who))


def _namespace(api: Any, name: str) -> None:
    try:
        api.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    except ApiException as exc:
        if exc.status != 409:
            raise


def _cm(name: str, **labels: str) -> client.V1ConfigMap:
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels=labels or None), data={"k": name})


def test_crud_with_selectors(live: LiveServer) -> None:  # noqa: F811
    api = _core(live)
    _namespace(api, "py-crud")
    created = api.create_namespaced_config_map("py-crud", _cm("a", app="x"))
    assert created.metadata.uid and int(created.metadata.resource_version) > 0
    api.create_namespaced_config_map("py-crud", _cm("b", app="y"))
    api.create_namespaced_config_map("py-crud", _cm("c", app="x", tier="gold"))

    names = [c.metadata.name for c in api.list_namespaced_config_map("py-crud", label_selector="app=x").items]
    assert names == ["a", "c"]
    names = [c.metadata.name for c in api.list_namespaced_config_map("py-crud", label_selector="app!=x").items]
    assert "b" in names and "a" not in names
    names = [c.metadata.name for c in api.list_namespaced_config_map("py-crud", field_selector="metadata.name=b").items]
    assert names == ["b"]
    across = api.list_config_map_for_all_namespaces(label_selector="tier=gold")
    assert [(c.metadata.namespace, c.metadata.name) for c in across.items] == [("py-crud", "c")]

    got = api.read_namespaced_config_map("a", "py-crud")
    got.data["k"] = "changed"
    updated = api.replace_namespaced_config_map("a", "py-crud", got)
    assert updated.data["k"] == "changed"
    assert int(updated.metadata.resource_version) > int(got.metadata.resource_version)

    patched = api.patch_namespaced_config_map("a", "py-crud", {"metadata": {"labels": {"patched": "yes"}}})
    assert patched.metadata.labels["patched"] == "yes"

    api.delete_namespaced_config_map("a", "py-crud")
    with pytest.raises(ApiException) as err:
        api.read_namespaced_config_map("a", "py-crud")
    assert err.value.status == 404


def test_stale_replace_is_a_conflict(live: LiveServer) -> None:  # noqa: F811
    api = _core(live)
    _namespace(api, "py-conflict")
    api.create_namespaced_config_map("py-conflict", _cm("c"))
    old = api.read_namespaced_config_map("c", "py-conflict")
    fresh = api.read_namespaced_config_map("c", "py-conflict")
    fresh.data["k"] = "first"
    api.replace_namespaced_config_map("c", "py-conflict", fresh)
    old.data["k"] = "second"
    with pytest.raises(ApiException) as err:
        api.replace_namespaced_config_map("c", "py-conflict", old)
    assert err.value.status == 409
    assert "the object has been modified" in str(err.value.body)


def test_create_twice_is_already_exists(live: LiveServer) -> None:  # noqa: F811
    api = _core(live, "alice")
    _namespace(api, "py-exists")
    api.create_namespaced_config_map("py-exists", _cm("x"))
    with pytest.raises(ApiException) as err:
        api.create_namespaced_config_map("py-exists", _cm("x"))
    assert err.value.status == 409 and "AlreadyExists" in str(err.value.body)


def test_delete_collection(live: LiveServer) -> None:  # noqa: F811
    api = _core(live)
    _namespace(api, "py-dc")
    for n in ("a", "b"):
        api.create_namespaced_config_map("py-dc", _cm(n, app="z"))
    api.delete_collection_namespaced_config_map("py-dc", label_selector="app=z")
    assert api.list_namespaced_config_map("py-dc").items == []


def test_watch_resumes_from_a_resource_version(live: LiveServer) -> None:  # noqa: F811
    api = _core(live)
    _namespace(api, "py-watch")
    api.create_namespaced_config_map("py-watch", _cm("old"))
    rv = api.list_namespaced_config_map("py-watch").metadata.resource_version
    api.create_namespaced_config_map("py-watch", _cm("new1"))
    api.patch_namespaced_config_map("new1", "py-watch", {"data": {"k": "v2"}})
    api.delete_namespaced_config_map("new1", "py-watch")

    w = watch.Watch()
    seen: list[tuple[str, str]] = []
    for ev in w.stream(api.list_namespaced_config_map, "py-watch", resource_version=rv, timeout_seconds=5):
        seen.append((ev["type"], ev["object"].metadata.name))
        if len(seen) == 3:
            w.stop()
    assert seen == [("ADDED", "new1"), ("MODIFIED", "new1"), ("DELETED", "new1")]

    # from no resourceVersion the client first sees what exists now
    w = watch.Watch()
    for ev in w.stream(api.list_namespaced_config_map, "py-watch", timeout_seconds=5):
        assert (ev["type"], ev["object"].metadata.name) == ("ADDED", "old")
        w.stop()


def test_apps_group_objects(live: LiveServer) -> None:  # noqa: F811
    core = _core(live)
    _namespace(core, "py-apps")
    apps: Any = client.AppsV1Api(live.python_client())
    dep = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="d"),
        spec=client.V1DeploymentSpec(
            replicas=0,
            selector=client.V1LabelSelector(match_labels={"app": "d"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "d"}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="a", image="busybox")]),
            ),
        ),
    )
    created = apps.create_namespaced_deployment("py-apps", dep)
    assert created.spec.template.spec.containers[0].image == "busybox"
    assert [d.metadata.name for d in apps.list_namespaced_deployment("py-apps").items] == ["d"]
