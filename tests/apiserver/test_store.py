"""The generic store against a real SQLite storage: what a client sees from each verb."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from podvisor.apiserver import errors as api
from podvisor.apiserver.registry import ResourceRegistry, bootstrap, build_registry
from podvisor.apiserver.rest import ListOptions, RequestOptions, UserInfo
from podvisor.apiserver.store import APPLY_PATCH, JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, Store
from podvisor.storage.sqlite import SQLiteStorage

USER = UserInfo(name="alice")


def opts(**kw: Any) -> RequestOptions:
    kw.setdefault("field_manager", "test")
    return RequestOptions(user=USER, **kw)


@pytest.fixture
async def storage(tmp_path: Any) -> AsyncIterator[SQLiteStorage]:
    st = await SQLiteStorage.open(tmp_path / "state.db", keep_revisions=None)
    yield st
    await st.close()


@pytest.fixture
async def registry(storage: SQLiteStorage) -> ResourceRegistry:
    reg = await build_registry(storage, bookmark_interval=0.1)
    await bootstrap(reg)
    return reg


def cm(name: str, data: dict[str, str] | None = None, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, **meta}, "data": {"k": "v"} if data is None else data}


def pod(name: str, *, node: str = "", labels: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "busybox:1.36"}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}}, "spec": spec}


def deployment(name: str, replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "x"}]}},
        },
    }


def configmaps(r: ResourceRegistry) -> Store:
    return r.store("", "configmaps")


# --- create and get ----------------------------------------------------------------------------


async def test_create_stamps_system_metadata_and_revision(registry: ResourceRegistry, storage: SQLiteStorage) -> None:
    res = await configmaps(registry).create("default", cm("c1"), opts())
    assert res.code == 201
    m = res.body["metadata"]
    assert res.body["kind"] == "ConfigMap" and res.body["apiVersion"] == "v1"
    assert m["namespace"] == "default" and len(m["uid"]) == 36
    assert m["creationTimestamp"].endswith("Z") and len(m["creationTimestamp"]) == 20
    assert m["resourceVersion"] == str(await storage.current_revision())
    got = await configmaps(registry).get("default", "c1")
    assert got == res.body


async def test_create_twice_is_already_exists(registry: ResourceRegistry) -> None:
    await configmaps(registry).create("default", cm("c1"), opts())
    with pytest.raises(api.AlreadyExistsError) as e:
        await configmaps(registry).create("default", cm("c1"), opts())
    assert e.value.message == 'configmaps "c1" already exists'
    assert e.value.code == 409


async def test_get_missing_is_not_found_with_group(registry: ResourceRegistry) -> None:
    with pytest.raises(api.NotFoundError) as e:
        await registry.store("apps", "deployments").get("default", "nope")
    assert e.value.message == 'deployments.apps "nope" not found'


async def test_generate_name_adds_a_random_suffix(registry: ResourceRegistry) -> None:
    names = set()
    for _ in range(3):
        body = {"metadata": {"generateName": "web-"}, "data": {}}
        res = await configmaps(registry).create("default", body, opts())
        name = res.body["metadata"]["name"]
        assert name.startswith("web-") and len(name) == 9
        names.add(name)
    assert len(names) == 3


async def test_dry_run_create_stores_nothing(registry: ResourceRegistry, storage: SQLiteStorage) -> None:
    before = await storage.current_revision()
    res = await configmaps(registry).create("default", cm("dry"), opts(dry_run=True))
    assert res.code == 201 and res.body["metadata"]["name"] == "dry"
    assert await storage.current_revision() == before
    with pytest.raises(api.NotFoundError):
        await configmaps(registry).get("default", "dry")


async def test_namespace_in_body_must_match_url(registry: ResourceRegistry) -> None:
    with pytest.raises(api.BadRequestError) as e:
        await configmaps(registry).create("default", cm("c1", namespace="other"), opts())
    assert e.value.message == "the namespace of the provided object does not match the namespace sent on the request"


async def test_create_in_missing_namespace(registry: ResourceRegistry) -> None:
    with pytest.raises(api.NotFoundError) as e:
        await configmaps(registry).create("nope", cm("c1"), opts())
    assert e.value.message == 'namespaces "nope" not found'


async def test_create_in_terminating_namespace_is_forbidden(registry: ResourceRegistry) -> None:
    ns = registry.store("", "namespaces")
    await ns.create("", {"metadata": {"name": "team"}}, opts())
    await ns.delete("", "team", {}, opts())
    with pytest.raises(api.ForbiddenError) as e:
        await configmaps(registry).create("team", cm("c1"), opts())
    assert e.value.message == (
        'configmaps "c1" is forbidden: unable to create new content in namespace team because it is being terminated'
    )
    assert e.value.causes[0].reason == "NamespaceTerminating"


async def test_invalid_name_lists_kubernetes_message(registry: ResourceRegistry) -> None:
    with pytest.raises(api.InvalidError) as e:
        await configmaps(registry).create("default", cm("Bad_Name"), opts())
    err = e.value
    assert err.code == 422
    assert err.message.startswith('ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": '
                                  "a lowercase RFC 1123 subdomain must consist of")
    assert err.causes[0].field == "metadata.name" and err.causes[0].reason == "FieldValueInvalid"
    assert "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*'" in err.message


async def test_name_or_generate_name_required(registry: ResourceRegistry) -> None:
    with pytest.raises(api.InvalidError) as e:
        await configmaps(registry).create("default", {"metadata": {}}, opts())
    assert e.value.message == 'ConfigMap "" is invalid: metadata.name: Required value: name or generateName is required'


# --- update ------------------------------------------------------------------------------------


async def test_put_with_stale_resource_version_conflicts(registry: ResourceRegistry) -> None:
    store = configmaps(registry)
    first = (await store.create("default", cm("c1"), opts())).body
    second = dict(first, data={"k": "v2"})
    await store.update("default", "c1", second, opts())
    stale = dict(first, data={"k": "v3"})
    with pytest.raises(api.ConflictError) as e:
        await store.update("default", "c1", stale, opts())
    assert e.value.message == (
        'Operation cannot be fulfilled on configmaps "c1": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )


async def test_put_without_resource_version_is_unconditional(registry: ResourceRegistry) -> None:
    store = configmaps(registry)
    await store.create("default", cm("c1"), opts())
    res = await store.update("default", "c1", cm("c1", {"k": "new"}), opts())
    assert res.code == 200 and res.body["data"] == {"k": "new"}


async def test_put_name_mismatch_and_missing_object(registry: ResourceRegistry) -> None:
    store = configmaps(registry)
    with pytest.raises(api.BadRequestError) as e:
        await store.update("default", "a", cm("b"), opts())
    assert e.value.message == "the name of the object (b) does not match the name on the URL (a)"
    with pytest.raises(api.NotFoundError):
        await store.update("default", "a", cm("a"), opts())


async def test_noop_update_keeps_resource_version(registry: ResourceRegistry) -> None:
    store = configmaps(registry)
    created = (await store.create("default", cm("c1"), opts())).body
    again = (await store.update("default", "c1", created, opts())).body
    assert again["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


async def test_update_keeps_system_fields(registry: ResourceRegistry) -> None:
    store = configmaps(registry)
    created = (await store.create("default", cm("c1"), opts())).body
    body = cm("c1", {"k": "2"})
    body["metadata"]["creationTimestamp"] = "2000-01-01T00:00:00Z"
    updated = (await store.update("default", "c1", body, opts())).body
    assert updated["metadata"]["uid"] == created["metadata"]["uid"]
    assert updated["metadata"]["creationTimestamp"] == created["metadata"]["creationTimestamp"]
    body["metadata"]["uid"] = "not-the-uid"
    with pytest.raises(api.InvalidError) as e:
        await store.update("default", "c1", body, opts())
    assert 'metadata.uid: Invalid value: "not-the-uid": field is immutable' in e.value.message


async def test_generation_follows_spec_changes(registry: ResourceRegistry) -> None:
    store = registry.store("apps", "replicasets")
    rs = deployment("web")
    rs["kind"] = "ReplicaSet"
    created = (await store.create("default", rs, opts())).body
    assert created["metadata"]["generation"] == 1
    created["metadata"]["labels"] = {"x": "y"}
    relabeled = (await store.update("default", "web", created, opts())).body
    assert relabeled["metadata"]["generation"] == 1
    relabeled["spec"]["replicas"] = 3
    scaled = (await store.update("default", "web", relabeled, opts())).body
    assert scaled["metadata"]["generation"] == 2


async def test_status_is_separate_from_spec(registry: ResourceRegistry) -> None:
    store = registry.store("apps", "deployments")
    d = deployment("web")
    d["status"] = {"replicas": 5}
    created = (await store.create("default", d, opts())).body
    assert "replicas" not in (created.get("status") or {})
    body = dict(created, status={"replicas": 7})
    body["spec"] = dict(created["spec"], replicas=4)
    main = (await store.update("default", "web", body, opts())).body
    assert main["spec"]["replicas"] == 4 and "replicas" not in (main.get("status") or {})
    body = dict(main, status={"replicas": 7, "readyReplicas": 2})
    body["spec"] = dict(main["spec"], replicas=9)
    st = (await store.update("default", "web", body, opts(), subresource="status")).body
    assert st["status"]["replicas"] == 7 and st["spec"]["replicas"] == 4
    assert st["metadata"]["generation"] == main["metadata"]["generation"]


# --- patch -------------------------------------------------------------------------------------


async def test_patch_types(registry: ResourceRegistry) -> None:
    store = configmaps(registry)
    await store.create("default", cm("c1", {"a": "1"}), opts())
    r = await store.patch("default", "c1", MERGE_PATCH, {"data": {"b": "2"}}, opts())
    assert r.body["data"] == {"a": "1", "b": "2"}
    r = await store.patch("default", "c1", JSON_PATCH, [{"op": "remove", "path": "/data/a"}], opts())
    assert r.body["data"] == {"b": "2"}
    r = await store.patch("default", "c1", STRATEGIC_PATCH, {"metadata": {"labels": {"x": "y"}}}, opts())
    assert r.body["metadata"]["labels"] == {"x": "y"}
    with pytest.raises(api.NotFoundError):
        await store.patch("default", "nope", MERGE_PATCH, {"data": {}}, opts())


async def test_patch_with_stale_resource_version_conflicts(registry: ResourceRegistry) -> None:
    store = configmaps(registry)
    created = (await store.create("default", cm("c1"), opts())).body
    await store.patch("default", "c1", MERGE_PATCH, {"data": {"k": "2"}}, opts())
    stale = {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "data": {"k": "3"}}
    with pytest.raises(api.ConflictError):
        await store.patch("default", "c1", MERGE_PATCH, stale, opts())


async def test_concurrent_patches_all_apply(registry: ResourceRegistry) -> None:
    store = configmaps(registry)
    await store.create("default", cm("c1", {}), opts())
    await asyncio.gather(*(
        store.patch("default", "c1", MERGE_PATCH, {"data": {f"k{i}": str(i)}}, opts()) for i in range(8)
    ))
    got = await store.get("default", "c1")
    assert got["data"] == {f"k{i}": str(i) for i in range(8)}


async def test_server_side_apply_creates_then_updates(registry: ResourceRegistry) -> None:
    store = configmaps(registry)
    applied = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "1"}}
    r = await store.patch("default", "ssa", APPLY_PATCH, applied, opts(field_manager="kubectl"))
    assert r.code == 201 and r.body["data"] == {"a": "1"}
    assert r.body["metadata"]["managedFields"][0]["operation"] == "Apply"
    applied["data"] = {"a": "2"}
    r = await store.patch("default", "ssa", APPLY_PATCH, applied, opts(field_manager="kubectl"))
    assert r.code == 200 and r.body["data"] == {"a": "2"}
    with pytest.raises(api.BadRequestError) as e:
        await store.patch("default", "ssa", APPLY_PATCH, applied, opts(field_manager=""))
    assert e.value.message == "fieldManager is required for apply requests"


async def test_managed_fields_record_the_manager(registry: ResourceRegistry) -> None:
    r = await configmaps(registry).create("default", cm("c1"), opts(field_manager="kubectl-create"))
    entry = r.body["metadata"]["managedFields"][0]
    assert entry["manager"] == "kubectl-create" and entry["operation"] == "Update"
    assert "f:data" in entry["fieldsV1"]


# --- delete ------------------------------------------------------------------------------------


async def test_delete_answers_success_status(registry: ResourceRegistry) -> None:
    store = configmaps(registry)
    created = (await store.create("default", cm("c1"), opts())).body
    res = await store.delete("default", "c1", {}, opts())
    assert res.code == 200
    assert res.body == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {"name": "c1", "kind": "configmaps", "uid": created["metadata"]["uid"]},
    }
    with pytest.raises(api.NotFoundError):
        await store.get("default", "c1")
    with pytest.raises(api.NotFoundError):
        await store.delete("default", "c1", {}, opts())


async def test_delete_preconditions(registry: ResourceRegistry) -> None:
    store = configmaps(registry)
    created = (await store.create("default", cm("c1"), opts())).body
    with pytest.raises(api.ConflictError) as e:
        await store.delete("default", "c1", {"preconditions": {"uid": "other"}}, opts())
    assert "the UID in the precondition (other) does not match the UID in record" in e.value.message
    with pytest.raises(api.ConflictError) as e:
        await store.delete("default", "c1", {"preconditions": {"resourceVersion": "1"}}, opts())
    assert "the ResourceVersion in the precondition (1) does not match" in e.value.message
    rv = created["metadata"]["resourceVersion"]
    await store.delete("default", "c1", {"preconditions": {"uid": created["metadata"]["uid"], "resourceVersion": rv}}, opts())


async def test_dry_run_delete_keeps_the_object(registry: ResourceRegistry) -> None:
    store = configmaps(registry)
    await store.create("default", cm("c1"), opts())
    await store.delete("default", "c1", {}, opts(dry_run=True))
    await store.get("default", "c1")


async def test_finalizers_hold_the_object_until_cleared(registry: ResourceRegistry) -> None:
    store = configmaps(registry)
    await store.create("default", cm("c1", finalizers=["example.com/hold"]), opts())
    res = await store.delete("default", "c1", {}, opts())
    assert res.code == 200
    held = res.body
    assert held["metadata"]["deletionTimestamp"] and held["metadata"]["deletionGracePeriodSeconds"] == 0
    got = await store.get("default", "c1")
    assert got["metadata"]["finalizers"] == ["example.com/hold"]
    with pytest.raises(api.InvalidError) as e:
        await store.patch("default", "c1", MERGE_PATCH, {"metadata": {"finalizers": ["example.com/hold", "x.io/more"]}}, opts())
    assert "no new finalizers can be added if the object is being deleted" in e.value.message
    cleared = await store.patch("default", "c1", MERGE_PATCH, {"metadata": {"finalizers": None}}, opts())
    assert cleared.code == 200
    with pytest.raises(api.NotFoundError):
        await store.get("default", "c1")


@pytest.mark.parametrize(
    ("policy", "finalizer"), [("Orphan", "orphan"), ("Foreground", "foregroundDeletion"), ("Background", None)]
)
async def test_propagation_policy(registry: ResourceRegistry, policy: str, finalizer: str | None) -> None:
    store = registry.store("apps", "deployments")
    await store.create("default", deployment("web"), opts())
    res = await store.delete("default", "web", {"propagationPolicy": policy}, opts())
    if finalizer is None:
        assert res.body["kind"] == "Status"
        with pytest.raises(api.NotFoundError):
            await store.get("default", "web")
    else:
        assert res.body["metadata"]["finalizers"] == [finalizer]
        assert (await store.get("default", "web"))["metadata"]["deletionTimestamp"]


async def test_delete_options_are_validated(registry: ResourceRegistry) -> None:
    await configmaps(registry).create("default", cm("c1"), opts())
    with pytest.raises(api.InvalidError) as e:
        await configmaps(registry).delete("default", "c1", {"propagationPolicy": "Sometimes"}, opts())
    assert 'propagationPolicy: Unsupported value: "Sometimes"' in e.value.message


async def test_bound_pod_is_deleted_gracefully(registry: ResourceRegistry) -> None:
    pods = registry.store("", "pods")
    await pods.create("default", pod("p", node="n1"), opts())
    res = await pods.delete("default", "p", {}, opts())
    assert res.code == 200
    m = res.body["metadata"]
    assert m["deletionTimestamp"] and m["deletionGracePeriodSeconds"] == 30
    again = await pods.delete("default", "p", {"gracePeriodSeconds": 60}, opts())
    assert again.body["metadata"]["deletionGracePeriodSeconds"] == 30  # may only be shortened
    shorter = await pods.delete("default", "p", {"gracePeriodSeconds": 5}, opts())
    assert shorter.body["metadata"]["deletionGracePeriodSeconds"] == 5
    done = await pods.delete("default", "p", {"gracePeriodSeconds": 0}, opts())  # the node agent's final delete
    assert done.body["kind"] == "Pod"
    with pytest.raises(api.NotFoundError):
        await pods.get("default", "p")


async def test_unbound_pod_and_forced_delete_are_immediate(registry: ResourceRegistry) -> None:
    pods = registry.store("", "pods")
    await pods.create("default", pod("pending"), opts())
    await pods.delete("default", "pending", {}, opts())
    with pytest.raises(api.NotFoundError):
        await pods.get("default", "pending")
    await pods.create("default", pod("bound", node="n1"), opts())
    await pods.delete("default", "bound", {"gracePeriodSeconds": 0}, opts())
    with pytest.raises(api.NotFoundError):
        await pods.get("default", "bound")


async def test_delete_collection_with_selector(registry: ResourceRegistry) -> None:
    store = configmaps(registry)
    for i in range(4):
        await store.create("default", cm(f"c{i}", labels={"team": "a" if i % 2 else "b"}), opts())
    res = await store.delete_collection("default", {}, ListOptions(label_selector="team=a"), opts())
    assert sorted(i["metadata"]["name"] for i in res.body["items"]) == ["c1", "c3"]
    left = await store.list("default", ListOptions())
    assert sorted(i["metadata"]["name"] for i in left["items"]) == ["c0", "c2"]


# --- list --------------------------------------------------------------------------------------


async def test_list_shape_and_selectors(registry: ResourceRegistry, storage: SQLiteStorage) -> None:
    pods = registry.store("", "pods")
    await pods.create("default", pod("a", node="n1", labels={"app": "web"}), opts())
    await pods.create("default", pod("b", node="n2", labels={"app": "db"}), opts())
    await pods.create("kube-system", pod("c", node="n1", labels={"app": "web"}), opts())
    everything = await pods.list("", ListOptions())
    assert everything["kind"] == "PodList" and everything["apiVersion"] == "v1"
    assert everything["metadata"]["resourceVersion"] == str(await storage.current_revision())
    assert len(everything["items"]) == 3 and all(i["kind"] == "Pod" for i in everything["items"])

    def names(lst: dict[str, Any]) -> list[str]:
        return [i["metadata"]["name"] for i in lst["items"]]

    assert names(await pods.list("default", ListOptions())) == ["a", "b"]
    assert names(await pods.list("", ListOptions(label_selector="app=web"))) == ["a", "c"]
    assert names(await pods.list("", ListOptions(label_selector="app in (db),app!=web"))) == ["b"]
    assert names(await pods.list("", ListOptions(field_selector="spec.nodeName=n1"))) == ["a", "c"]
    assert names(await pods.list("", ListOptions(field_selector="metadata.namespace=kube-system"))) == ["c"]
    assert names(await pods.list("", ListOptions(field_selector="metadata.name!=a,status.phase=Pending"))) == ["b", "c"]


async def test_unsupported_field_selector_messages(registry: ResourceRegistry) -> None:
    with pytest.raises(api.BadRequestError) as e:
        await registry.store("", "pods").list("", ListOptions(field_selector="spec.bogus=x"))
    assert e.value.message == "field label not supported: spec.bogus"
    with pytest.raises(api.BadRequestError) as e:
        await registry.store("apps", "deployments").list("", ListOptions(field_selector="spec.replicas=1"))
    assert e.value.message == '"spec.replicas" is not a known field selector: only "metadata.name", "metadata.namespace"'


async def test_pagination_is_consistent(registry: ResourceRegistry) -> None:
    store = configmaps(registry)
    for i in range(5):
        await store.create("default", cm(f"c{i}", {"v": "0"}), opts())
    page = await store.list("default", ListOptions(limit=2))
    rv = page["metadata"]["resourceVersion"]
    seen = [i["metadata"]["name"] for i in page["items"]]
    await store.patch("default", "c4", MERGE_PATCH, {"data": {"v": "changed"}}, opts())
    await store.create("default", cm("c5"), opts())
    while page["metadata"].get("continue"):
        page = await store.list("default", ListOptions(limit=2, continue_token=page["metadata"]["continue"]))
        assert page["metadata"]["resourceVersion"] == rv
        seen += [i["metadata"]["name"] for i in page["items"]]
        if page["items"] and page["items"][-1]["metadata"]["name"] == "c4":
            assert page["items"][-1]["data"] == {"v": "0"}
    assert seen == ["c0", "c1", "c2", "c3", "c4"]


async def test_pagination_with_selector_fills_pages(registry: ResourceRegistry) -> None:
    store = configmaps(registry)
    for i in range(6):
        await store.create("default", cm(f"c{i}", labels={"odd": str(i % 2)}), opts())
    page = await store.list("default", ListOptions(limit=2, label_selector="odd=1"))
    assert [i["metadata"]["name"] for i in page["items"]] == ["c1", "c3"]
    rest = await store.list("default", ListOptions(limit=2, label_selector="odd=1",
                                                   continue_token=page["metadata"]["continue"]))
    assert [i["metadata"]["name"] for i in rest["items"]] == ["c5"]


async def test_bad_and_expired_continue_tokens(registry: ResourceRegistry, storage: SQLiteStorage) -> None:
    store = configmaps(registry)
    for i in range(3):
        await store.create("default", cm(f"c{i}"), opts())
    with pytest.raises(api.BadRequestError) as e:
        await store.list("default", ListOptions(limit=1, continue_token="not-a-token"))
    assert e.value.message.startswith("invalid continue token: continue key is not valid")
    page = await store.list("default", ListOptions(limit=1))
    for i in range(3):
        await store.patch("default", "c0", MERGE_PATCH, {"data": {"n": str(i)}}, opts())
    await storage.compact(await storage.current_revision())
    with pytest.raises(api.GoneError) as gone:
        await store.list("default", ListOptions(limit=1, continue_token=page["metadata"]["continue"]))
    assert gone.value.code == 410
    assert gone.value.message.startswith("The provided continue parameter is too old to display a consistent list result.")


async def test_list_at_exact_resource_version(registry: ResourceRegistry, storage: SQLiteStorage) -> None:
    store = configmaps(registry)
    old = (await store.create("default", cm("c1", {"v": "old"}), opts())).body
    await store.patch("default", "c1", MERGE_PATCH, {"data": {"v": "new"}}, opts())
    rv = old["metadata"]["resourceVersion"]
    past = await store.list("default", ListOptions(resource_version=rv, resource_version_match="Exact"))
    assert past["items"][0]["data"] == {"v": "old"} and past["metadata"]["resourceVersion"] == rv
    with pytest.raises(api.InvalidError) as e:
        await store.list("default", ListOptions(resource_version_match="Exact"))
    assert "resourceVersionMatch is forbidden unless resourceVersion is provided" in e.value.message
    await storage.compact(await storage.current_revision())
    with pytest.raises(api.GoneError) as gone:
        await store.list("default", ListOptions(resource_version=rv, resource_version_match="Exact"))
    assert gone.value.message.startswith(f"too old resource version: {rv} (")


async def test_list_newer_than_anything_is_too_large(registry: ResourceRegistry) -> None:
    with pytest.raises(api.APIError) as e:
        await configmaps(registry).list("default", ListOptions(resource_version="999999"))
    assert e.value.code == 504 and e.value.reason == "Timeout"
    assert e.value.message.startswith("Too large resource version: 999999, current: ")
    with pytest.raises(api.BadRequestError):
        await configmaps(registry).list("default", ListOptions(resource_version="abc"))


async def test_cluster_scoped_objects_have_no_namespace(registry: ResourceRegistry) -> None:
    body = {"metadata": {"name": "vm", "namespace": "default"}, "handler": "crx"}
    created = (await registry.store("node.k8s.io", "runtimeclasses").create("", body, opts())).body
    assert "namespace" not in created["metadata"]


# --- watch -------------------------------------------------------------------------------------


async def next_events(it: Any, n: int) -> list[dict[str, Any]]:
    out = []
    for _ in range(n):
        out.append(await asyncio.wait_for(it.__anext__(), 5.0))
    return out


async def test_watch_from_zero_sends_current_objects_first(registry: ResourceRegistry) -> None:
    store = configmaps(registry)
    await store.create("default", cm("a"), opts())
    await store.create("default", cm("b"), opts())
    it = store.watch("default", ListOptions(resource_version="0"))
    try:
        first = await next_events(it, 2)
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in first] == [("ADDED", "a"), ("ADDED", "b")]
        await store.patch("default", "a", MERGE_PATCH, {"data": {"k": "2"}}, opts())
        (ev,) = await next_events(it, 1)
        assert ev["type"] == "MODIFIED" and ev["object"]["data"] == {"k": "2"}
        assert ev["object"]["kind"] == "ConfigMap"
    finally:
        await it.aclose()  # type: ignore[attr-defined]


async def test_watch_from_revision_and_deleted_carries_deleting_revision(registry: ResourceRegistry) -> None:
    store = configmaps(registry)
    created = (await store.create("default", cm("a"), opts())).body
    rv = created["metadata"]["resourceVersion"]
    await store.patch("default", "a", MERGE_PATCH, {"data": {"k": "2"}}, opts())
    await store.delete("default", "a", {}, opts())
    it = store.watch("default", ListOptions(resource_version=rv))
    try:
        mod, deleted = await next_events(it, 2)
        assert mod["type"] == "MODIFIED"
        assert deleted["type"] == "DELETED" and deleted["object"]["data"] == {"k": "2"}
        assert int(deleted["object"]["metadata"]["resourceVersion"]) > int(mod["object"]["metadata"]["resourceVersion"])
    finally:
        await it.aclose()  # type: ignore[attr-defined]


async def test_watch_selector_transitions(registry: ResourceRegistry, storage: SQLiteStorage) -> None:
    store = configmaps(registry)
    start = str(await storage.current_revision())
    it = store.watch("default", ListOptions(resource_version=start, label_selector="app=web"))
    try:
        await store.create("default", cm("x", labels={"app": "db"}), opts())
        await store.patch("default", "x", MERGE_PATCH, {"metadata": {"labels": {"app": "web"}}}, opts())
        await store.patch("default", "x", MERGE_PATCH, {"data": {"k": "2"}}, opts())
        await store.patch("default", "x", MERGE_PATCH, {"metadata": {"labels": {"app": "db"}}}, opts())
        events = await next_events(it, 3)
        assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
        assert events[2]["object"]["metadata"]["labels"] == {"app": "web"}  # the last matching state
    finally:
        await it.aclose()  # type: ignore[attr-defined]


async def test_watch_bookmarks(registry: ResourceRegistry) -> None:
    store = configmaps(registry)
    await store.create("default", cm("a"), opts())
    it = store.watch("default", ListOptions(resource_version="0", allow_bookmarks=True, send_initial_events=True))
    try:
        added, end = await next_events(it, 2)
        assert added["type"] == "ADDED"
        assert end["type"] == "BOOKMARK"
        assert end["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
        assert end["object"]["kind"] == "ConfigMap" and end["object"]["apiVersion"] == "v1"
        (tick,) = await next_events(it, 1)
        assert tick["type"] == "BOOKMARK" and int(tick["object"]["metadata"]["resourceVersion"]) >= int(
            added["object"]["metadata"]["resourceVersion"]
        )
    finally:
        await it.aclose()  # type: ignore[attr-defined]


async def test_watch_too_old_is_gone(registry: ResourceRegistry, storage: SQLiteStorage) -> None:
    store = configmaps(registry)
    await store.create("default", cm("a"), opts())
    for i in range(3):
        await store.patch("default", "a", MERGE_PATCH, {"data": {"n": str(i)}}, opts())
    await storage.compact(await storage.current_revision())
    it = store.watch("default", ListOptions(resource_version="2"))
    with pytest.raises(api.GoneError) as e:
        await next_events(it, 1)
    assert e.value.code == 410 and e.value.message.startswith("too old resource version: 2 (")


async def test_watch_timeout_ends_the_stream(registry: ResourceRegistry) -> None:
    it = configmaps(registry).watch("default", ListOptions(resource_version="", timeout_seconds=1))
    events = [e async for e in it]
    assert events == []


async def test_events_are_served_by_both_groups(registry: ResourceRegistry) -> None:
    core = registry.store("", "events")
    v1 = registry.store("events.k8s.io", "events")
    ev = {
        "metadata": {"name": "e1"}, "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
        "reason": "Started", "message": "hello", "type": "Normal",
    }
    await core.create("default", ev, opts())
    got = await v1.get("default", "e1")
    assert got["apiVersion"] == "events.k8s.io/v1" and got["note"] == "hello" and got["regarding"]["name"] == "p"
    listed = await core.list("", ListOptions(field_selector="involvedObject.name=p,reason=Started"))
    assert [i["metadata"]["name"] for i in listed["items"]] == ["e1"]
    listed = await v1.list("", ListOptions(field_selector="regarding.name=p"))
    assert [i["metadata"]["name"] for i in listed["items"]] == ["e1"]


async def test_node_watch_through_the_indexed_watch_cache(storage: SQLiteStorage) -> None:
    from podvisor.storage.cacher import WatchCache, field_indexer

    cache = await WatchCache.open(storage, indexer=field_indexer("/registry/core/pods/", "spec.nodeName"))
    reg = await build_registry(cache, indexed_fields=frozenset({"spec.nodeName"}))
    await bootstrap(reg)
    pods = reg.store("", "pods")
    start = str(await cache.current_revision())
    it = pods.watch("", ListOptions(resource_version=start, field_selector="spec.nodeName=n1"))
    try:
        await pods.create("default", pod("elsewhere", node="n2"), opts())
        await pods.create("default", pod("later"), opts())
        await pods.create("default", pod("mine", node="n1"), opts())
        binding = {"metadata": {"name": "later"}, "target": {"kind": "Node", "name": "n1"}}
        await pods.create("default", binding, opts(), subresource="binding", name="later")
        events = await next_events(it, 2)
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "mine"), ("ADDED", "later")]
    finally:
        await it.aclose()  # type: ignore[attr-defined]
        await cache.close()
