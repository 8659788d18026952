"""Server-side apply and managedFields: ownership as ``kubectl get --show-managed-fields`` shows it,
conflicts as ``kubectl apply --server-side`` reports them, and fields an applier stops applying."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from podvisor.apiserver.errors import BadRequestError, ConflictError, InvalidError
from podvisor.apiserver.fieldsets import decode_fields_v1, encode_fields_v1, key_pe, value_pe
from podvisor.apiserver.patch import server_side_apply, update_managed_fields
from podvisor.schema.model import Field, ListOf, MapOf, Struct

T0, T1, T2, T3 = (f"2024-05-01T12:00:0{i}Z" for i in range(4))
CM = "io.k8s.api.core.v1.ConfigMap"
DEPLOYMENT = "io.k8s.api.apps.v1.Deployment"


def entries(obj: dict[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = obj["metadata"].get("managedFields", [])
    return result


def entry(obj: dict[str, Any], manager: str, operation: str | None = None) -> dict[str, Any]:
    found = [e for e in entries(obj) if e["manager"] == manager and operation in (None, e["operation"])]
    assert len(found) == 1, entries(obj)
    return found[0]


def created(obj: dict[str, Any], manager: str = "kubectl-create", now: str = T0) -> dict[str, Any]:
    """The object as stored after a create by ``manager``."""
    new = copy.deepcopy(obj)
    new["metadata"]["uid"] = "uid-1"
    update_managed_fields(None, new, manager=manager, api_version=new["apiVersion"], now=now)
    return new


def updated(old: dict[str, Any], new: dict[str, Any], manager: str, now: str, **kw: Any) -> dict[str, Any]:
    new = copy.deepcopy(new)
    update_managed_fields(old, new, manager=manager, api_version=new["apiVersion"], now=now, **kw)
    return new


def apply(
    live: dict[str, Any] | None, applied: dict[str, Any], manager: str = "kubectl", **kw: Any
) -> dict[str, Any]:
    kw.setdefault("force", False)
    kw.setdefault("now", T1)
    kw.setdefault("struct_name", CM if applied.get("kind") == "ConfigMap" else DEPLOYMENT)
    return server_side_apply(live, applied, manager=manager, api_version=applied["apiVersion"], **kw)


def configmap(data: dict[str, str], **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c", "namespace": "default", **meta},
        "data": data,
    }


# -- managedFields for ordinary writes ------------------------------------------------------------------


def test_create_records_the_manager_like_kubectl_create() -> None:
    obj = created(configmap({"k": "v"}, labels={"app": "x"}))
    assert entries(obj) == [
        {
            "manager": "kubectl-create",
            "operation": "Update",
            "apiVersion": "v1",
            "time": T0,
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:data": {".": {}, "f:k": {}},
                "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            },
        }
    ]


def test_create_of_a_deployment_keys_list_items() -> None:
    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "nginx",
                            "image": "nginx",
                            "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        }
                    ],
                    "tolerations": [{"operator": "Exists"}],
                },
            },
        },
    }
    fields = entry(created(dep, "kubectl-create"), "kubectl-create")["fieldsV1"]
    spec = fields["f:spec"]
    assert spec["f:selector"] == {}  # LabelSelector is atomic
    pod = spec["f:template"]["f:spec"]
    nginx = pod["f:containers"]['k:{"name":"nginx"}']
    assert nginx == {
        ".": {},
        "f:image": {},
        "f:name": {},
        "f:ports": {
            ".": {},
            'k:{"containerPort":80,"protocol":"TCP"}': {".": {}, "f:containerPort": {}, "f:protocol": {}},
        },
    }
    assert pod["f:tolerations"] == {}  # atomic list
    assert spec["f:template"]["f:metadata"] == {"f:labels": {".": {}, "f:app": {}}}


def test_update_takes_changed_fields_and_merges_into_its_own_entry() -> None:
    v0 = created(configmap({"a": "1", "b": "2"}))
    v1 = updated(
        v0, configmap({"a": "1", "b": "22", "c": "3"}, uid="uid-1", managedFields=entries(v0)), "editor", T1
    )
    assert entry(v1, "kubectl-create")["fieldsV1"] == {"f:data": {".": {}, "f:a": {}}}
    assert entry(v1, "editor") == {
        "manager": "editor",
        "operation": "Update",
        "apiVersion": "v1",
        "time": T1,
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:data": {"f:b": {}, "f:c": {}}},
    }
    # the same manager again: union with what it had, one entry, newer time
    v2 = updated(v1, {**v1, "data": {**v1["data"], "d": "4"}}, "editor", T2)
    assert entry(v2, "editor")["fieldsV1"] == {"f:data": {"f:b": {}, "f:c": {}, "f:d": {}}}
    assert entry(v2, "editor")["time"] == T2
    assert len(entries(v2)) == 2
    # entries are sorted by operation, then time
    assert [e["manager"] for e in entries(v2)] == ["kubectl-create", "editor"]


def test_update_that_changes_nothing_leaves_entries_alone() -> None:
    v0 = created(configmap({"a": "1"}))
    v1 = updated(v0, copy.deepcopy(v0), "someone", T3)
    assert entries(v1) == entries(v0)


def test_removed_fields_leave_every_entry() -> None:
    v0 = created(configmap({"a": "1", "b": "2"}))
    v1 = updated(v0, configmap({"a": "1"}, uid="uid-1", managedFields=entries(v0)), "editor", T1)
    assert entries(v1) == [{**entries(v0)[0], "fieldsV1": {"f:data": {".": {}, "f:a": {}}}}]


def test_managed_fields_can_be_reset_and_untracked_objects_stay_untracked() -> None:
    v0 = created(configmap({"a": "1"}))
    v1 = updated(v0, {**v0, "metadata": {**v0["metadata"], "managedFields": [{}]}}, "kubectl-patch", T1)
    assert "managedFields" not in v1["metadata"]
    v2 = updated(v1, {**v1, "data": {"a": "2"}}, "kubectl-edit", T2)
    assert "managedFields" not in v2["metadata"]


def test_subresource_updates_are_separate_entries_and_ignore_reset_fields() -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    v0 = created(pod, "kubectl-run")
    status = {
        **v0,
        "status": {"phase": "Running", "podIP": "10.88.0.5"},
        "spec": {**v0["spec"], "nodeName": "sneaky"},
    }
    v1 = updated(v0, status, "spherelet", T1, subresource="status", ignore_fields=("spec", "metadata"))
    e = entry(v1, "spherelet")
    assert e["subresource"] == "status"
    assert e["fieldsV1"] == {"f:status": {"f:phase": {}, "f:podIP": {}}}
    assert list(entry(v1, "kubectl-run")["fieldsV1"]) == ["f:spec"]


def test_at_most_ten_update_managers_are_kept() -> None:
    obj = created(configmap({"k0": "v"}), "m00", "2024-05-01T12:00:00Z")
    for i in range(1, 13):
        new = copy.deepcopy(obj)
        new["data"][f"k{i}"] = "v"
        obj = updated(obj, new, f"m{i:02d}", f"2024-05-01T12:00:{i:02d}Z")
    managers = [e["manager"] for e in entries(obj)]
    assert len(managers) == 10
    assert "ancient-changes" in managers
    ancient = entry(obj, "ancient-changes")["fieldsV1"]["f:data"]
    assert {"f:k0", "f:k1", "f:k2", "f:k3"} <= set(ancient)


# -- server-side apply --------------------------------------------------------------------------------


def test_apply_creates_a_missing_object() -> None:
    out = apply(None, configmap({"k": "v"}, labels={"app": "x"}))
    assert out["data"] == {"k": "v"}
    assert entries(out) == [
        {
            "manager": "kubectl",
            "operation": "Apply",
            "apiVersion": "v1",
            "time": T1,
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:data": {"f:k": {}}, "f:metadata": {"f:labels": {"f:app": {}}}},
        }
    ]


def test_conflict_with_another_manager_is_409_with_a_cause_per_field() -> None:
    live = created(configmap({"k": "v", "j": "w"}), "kubectl-client-side-apply")
    with pytest.raises(ConflictError) as e:
        apply(live, configmap({"k": "other"}))
    status = e.value.status()
    assert status["code"] == 409 and status["reason"] == "Conflict"
    assert (
        status["message"]
        == 'Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using v1: .data.k'
    )
    assert status["details"]["causes"] == [
        {
            "reason": "FieldManagerConflict",
            "message": 'conflict with "kubectl-client-side-apply" using v1',
            "field": ".data.k",
        }
    ]


def test_several_conflicts_are_listed_per_manager() -> None:
    live = created(configmap({"a": "1", "b": "2"}), "creator")
    live = apply(live, configmap({"c": "3"}), manager="other-applier", now=T1)
    with pytest.raises(ConflictError) as e:
        apply(live, configmap({"a": "x", "b": "y", "c": "z"}), now=T2)
    assert e.value.message == (
        "Apply failed with 3 conflicts: "
        'conflicts with "creator" using v1:\n- .data.a\n- .data.b\n'
        'conflicts with "other-applier":\n- .data.c'
    )
    assert [c.field for c in e.value.causes] == [".data.a", ".data.b", ".data.c"]


def test_force_takes_ownership() -> None:
    live = created(configmap({"k": "v", "j": "w"}), "kubectl-client-side-apply")
    out = apply(live, configmap({"k": "other"}), force=True)
    assert out["data"] == {"k": "other", "j": "w"}
    assert entry(out, "kubectl", "Apply")["fieldsV1"] == {"f:data": {"f:k": {}}}
    assert entry(out, "kubectl-client-side-apply")["fieldsV1"] == {"f:data": {".": {}, "f:j": {}}}


def test_applying_the_same_value_shares_ownership_without_conflict() -> None:
    live = created(configmap({"k": "v"}), "creator")
    out = apply(live, configmap({"k": "v"}))
    assert entry(out, "creator")["fieldsV1"] == {"f:data": {".": {}, "f:k": {}}}
    assert entry(out, "kubectl")["fieldsV1"] == {"f:data": {"f:k": {}}}
    # nothing changed, so the applier's entry has no time yet, and the object is the same
    assert "time" not in entry(out, "kubectl")
    assert out["data"] == live["data"]


def test_fields_an_applier_stops_applying_are_removed_unless_someone_else_owns_them() -> None:
    v1 = apply(None, configmap({"a": "1", "b": "2", "shared": "s"}), manager="one", now=T1)
    v2 = apply(v1, configmap({"shared": "s", "theirs": "t"}), manager="two", now=T2)
    v3 = apply(v2, configmap({"a": "1"}), manager="one", now=T3)
    # b was only "one"'s: gone; shared is also "two"'s: kept; theirs untouched
    assert v3["data"] == {"a": "1", "shared": "s", "theirs": "t"}
    assert entry(v3, "one")["fieldsV1"] == {"f:data": {"f:a": {}}}
    assert entry(v3, "one")["time"] == T3


def test_fields_an_updater_changed_are_not_removed_by_the_applier() -> None:
    v1 = apply(None, configmap({"a": "1", "b": "2"}), manager="one", now=T1)
    v2 = updated(v1, {**v1, "data": {"a": "1", "b": "edited"}}, "kubectl-edit", T2)
    v3 = apply(v2, configmap({"a": "1"}), manager="one", now=T3)
    assert v3["data"] == {"a": "1", "b": "edited"}


def test_applying_nothing_new_is_a_no_op_that_keeps_the_time() -> None:
    v1 = apply(None, configmap({"a": "1"}), now=T1)
    v2 = apply(v1, configmap({"a": "1"}), now=T2)
    assert v2 == v1


def base_deployment(*containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": list(containers)}},
            **spec,
        },
    }


def names(obj: dict[str, Any]) -> list[str]:
    return [c["name"] for c in obj["spec"]["template"]["spec"]["containers"]]


def test_apply_merges_keyed_list_items_and_removes_dropped_ones() -> None:
    v1 = apply(
        None, base_deployment({"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}), manager="team1"
    )
    # another applier adds its sidecar; merged in, first applier's items untouched
    v2 = apply(v1, base_deployment({"name": "side", "image": "s:1"}), manager="team2", now=T2)
    assert names(v2) == ["a", "b", "side"]
    containers = entry(v2, "team2")["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert containers == {'k:{"name":"side"}': {".": {}, "f:image": {}, "f:name": {}}}
    # the first applier drops b and changes a: b goes, the sidecar stays
    v3 = apply(v2, base_deployment({"name": "a", "image": "a:2"}), manager="team1", now=T3)
    assert names(v3) == ["a", "side"]
    assert v3["spec"]["template"]["spec"]["containers"][0] == {"name": "a", "image": "a:2"}


def test_apply_conflict_inside_a_keyed_list_names_the_item() -> None:
    v1 = apply(None, base_deployment({"name": "a", "image": "a:1"}), manager="team1")
    with pytest.raises(ConflictError) as e:
        apply(v1, base_deployment({"name": "a", "image": "a:2"}), manager="team2")
    assert e.value.causes[0].field == '.spec.template.spec.containers[name="a"].image'
    assert e.value.causes[0].message == 'conflict with "team1"'


def test_port_keys_use_the_default_protocol() -> None:
    live = created(
        base_deployment({"name": "a", "image": "a:1", "ports": [{"containerPort": 80, "protocol": "TCP"}]}),
        "kubectl-create",
    )
    out = apply(
        live, base_deployment({"name": "a", "image": "a:1", "ports": [{"containerPort": 80, "name": "http"}]})
    )
    assert out["spec"]["template"]["spec"]["containers"][0]["ports"] == [
        {"containerPort": 80, "protocol": "TCP", "name": "http"}
    ]


def test_untracked_objects_get_a_before_first_apply_owner() -> None:
    live = configmap({"a": "1", "b": "2"}, uid="uid-1")
    with pytest.raises(ConflictError, match="before-first-apply"):
        apply(live, configmap({"a": "x"}))
    out = apply(live, configmap({"a": "1"}))
    assert entry(out, "before-first-apply")["fieldsV1"] == {"f:data": {".": {}, "f:a": {}, "f:b": {}}}


def test_kubectl_moving_from_client_side_apply_takes_over_unchanged_fields() -> None:
    last = configmap({"k": "v"})
    last["metadata"] = {"name": "c", "namespace": "default"}
    annotation = json.dumps(last) + "\n"
    live = created(
        configmap({"k": "v"}, annotations={"kubectl.kubernetes.io/last-applied-configuration": annotation}),
        "kubectl-client-side-apply",
    )
    out = apply(live, configmap({"k": "new"}), manager="kubectl")
    assert out["data"] == {"k": "new"}
    recorded = json.loads(out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"])
    assert recorded["data"] == {"k": "new"}
    # another manager gets no such pass
    with pytest.raises(ConflictError):
        apply(live, configmap({"k": "new"}), manager="helm")


def test_finalizers_are_owned_as_set_items() -> None:
    out = apply(None, configmap({}, finalizers=["example.com/a", "example.com/b"]))
    md = entry(out, "kubectl")["fieldsV1"]["f:metadata"]
    assert md == {"f:finalizers": {'v:"example.com/a"': {}, 'v:"example.com/b"': {}}}


def test_ignored_fields_are_not_owned() -> None:
    dep = base_deployment({"name": "a", "image": "a:1"})
    dep["status"] = {"replicas": 3}
    out = apply(None, dep, ignore_fields=("status",))
    assert "f:status" not in entry(out, "kubectl")["fieldsV1"]


@pytest.mark.parametrize(
    ("body", "error", "wording"),
    [
        ({**configmap({}), "spec": {"x": 1}}, BadRequestError, ".spec: field not declared in schema"),
        ({**configmap({}), "data": ["x"]}, BadRequestError, ".data: expected map, got list"),
        ({**configmap({}), "apiVersion": "v2"}, BadRequestError, "invalid object type: /v2, Kind=ConfigMap"),
        ({**configmap({}), "kind": "Secret"}, BadRequestError, "invalid object type"),
        (configmap({}, managedFields=[]), BadRequestError, "metadata.managedFields must be nil"),
        (
            base_deployment({"name": "a", "image": "1"}, {"name": "a", "image": "2"}),
            BadRequestError,
            'duplicate entries for key [name="a"]',
        ),
        (base_deployment({"image": "1"}), BadRequestError, "omits all key fields"),
        (base_deployment(replicas="3"), BadRequestError, ".spec.replicas: expected numeric"),
    ],
)
def test_apply_rejects_configurations_that_do_not_fit(
    body: dict[str, Any], error: type[Exception], wording: str
) -> None:
    live = None if body["kind"] != "Secret" else configmap({})
    with pytest.raises(error) as e:
        server_side_apply(
            live,
            body,
            manager="kubectl",
            force=False,
            struct_name=CM if body["kind"] in ("ConfigMap", "Secret") else DEPLOYMENT,
            api_version="v1" if body["kind"] != "Deployment" else "apps/v1",
            now=T1,
            kind="ConfigMap" if body["kind"] == "Secret" else "",
        )
    assert wording in str(e.value)


def test_apply_needs_a_field_manager() -> None:
    with pytest.raises(InvalidError) as e:
        apply(None, configmap({}), manager="")
    assert e.value.status()["details"]["causes"][0]["field"] == "fieldManager"
    assert "is required for apply patch" in e.value.message


def test_apply_does_not_modify_its_inputs() -> None:
    live = created(configmap({"a": "1"}), "creator")
    body = configmap({"b": "2"})
    before = (copy.deepcopy(live), copy.deepcopy(body))
    apply(live, body)
    assert (live, body) == before


# -- apply on injected structs ---------------------------------------------------------------------------

STRUCTS = {
    "t.Obj": Struct(
        "t.Obj",
        "",
        {
            "apiVersion": Field("apiVersion", "string"),
            "kind": Field("kind", "string"),
            "metadata": Field("metadata", "t.Meta"),
            "items": Field("items", ListOf("t.Item"), list_type="map", list_map_keys=("group", "name")),
            "tags": Field("tags", ListOf("string"), list_type="set"),
            "order": Field("order", ListOf("string")),
            "labels": Field("labels", MapOf("string")),
            "frozen": Field("frozen", MapOf("string"), map_type="atomic"),
            "raw": Field("raw", "raw"),
        },
    ),
    "t.Meta": Struct("t.Meta", "", {"name": Field("name", "string")}),
    "t.Item": Struct(
        "t.Item",
        "",
        {"group": Field("group", "string"), "name": Field("name", "string"), "size": Field("size", "int64")},
    ),
}


def obj(**fields: Any) -> dict[str, Any]:
    return {"apiVersion": "t/v1", "kind": "Obj", "metadata": {"name": "o"}, **fields}


def tapply(live: dict[str, Any] | None, body: dict[str, Any], manager: str, **kw: Any) -> dict[str, Any]:
    kw.setdefault("now", T1)
    return server_side_apply(
        live,
        body,
        manager=manager,
        force=kw.pop("force", False),
        struct_name="t.Obj",
        api_version="t/v1",
        lookup=STRUCTS.__getitem__,
        **kw,
    )


def test_multi_key_lists_sets_atomic_and_deduced_values() -> None:
    out = tapply(
        None,
        obj(
            items=[{"group": "g", "name": "a", "size": 1}, {"name": "b"}],
            tags=["x", "y"],
            order=["1", "2"],
            labels={"l": "v"},
            frozen={"f": "1"},
            raw={"anything": {"nested": [1, 2]}},
        ),
        "m",
    )
    assert entry(out, "m")["fieldsV1"] == {
        "f:frozen": {},
        "f:items": {
            'k:{"group":"g","name":"a"}': {".": {}, "f:group": {}, "f:name": {}, "f:size": {}},
            'k:{"name":"b"}': {".": {}, "f:name": {}},
        },
        "f:labels": {"f:l": {}},
        "f:order": {},
        "f:raw": {"f:anything": {".": {}, "f:nested": {}}},
        "f:tags": {'v:"x"': {}, 'v:"y"': {}},
    }


def test_sets_merge_and_atomic_values_replace() -> None:
    v1 = tapply(None, obj(tags=["x"], order=["1", "2"], frozen={"a": "1", "b": "2"}), "m1")
    v2 = tapply(v1, obj(tags=["y"], order=["3"], frozen={"c": "3"}), "m2", force=True)
    assert v2["tags"] == ["x", "y"]
    assert v2["order"] == ["3"]
    assert v2["frozen"] == {"c": "3"}
    assert "f:order" not in entry(v2, "m1")["fieldsV1"] and "f:frozen" not in entry(v2, "m1")["fieldsV1"]


def test_list_item_order_follows_the_applied_configuration() -> None:
    def item(n: str) -> dict[str, Any]:
        return {"group": "g", "name": n}

    v1 = tapply(None, obj(items=[item("a"), item("b"), item("c")]), "m1")
    v2 = tapply(v1, obj(items=[item("c"), item("a")]), "m2")
    assert [i["name"] for i in v2["items"]] == ["b", "c", "a"]


# -- the fieldsV1 codec ------------------------------------------------------------------------------------


def test_fields_v1_round_trips_in_kubernetes_order() -> None:
    paths = {
        ("f:spec", "f:ports", key_pe([("protocol", "TCP"), ("containerPort", 80)])),
        ("f:spec", "f:ports", key_pe([("protocol", "TCP"), ("containerPort", 80)]), "f:name"),
        ("f:spec", "f:ports", key_pe([("protocol", "TCP"), ("containerPort", 8080)])),
        ("f:metadata", "f:finalizers", value_pe("b")),
        ("f:metadata", "f:finalizers", value_pe("a")),
        ("f:data",),
    }
    encoded = encode_fields_v1(paths)
    assert json.dumps(encoded) == json.dumps(
        {
            "f:data": {},
            "f:metadata": {"f:finalizers": {'v:"a"': {}, 'v:"b"': {}}},
            "f:spec": {
                "f:ports": {
                    'k:{"containerPort":80,"protocol":"TCP"}': {".": {}, "f:name": {}},
                    'k:{"containerPort":8080,"protocol":"TCP"}': {},
                }
            },
        }
    )
    assert decode_fields_v1(encoded) == paths
    with pytest.raises(ValueError):
        decode_fields_v1({"k:not-json": {}})


# -- whole flows ---------------------------------------------------------------------------------------


def test_one_entry_per_manager_even_across_api_versions() -> None:
    v0 = created(configmap({"a": "1"}), "ctl")
    new = copy.deepcopy(v0)
    new["data"]["b"] = "2"
    update_managed_fields(v0, new, manager="ctl", api_version="v1beta9", now=T1)
    (only,) = entries(new)
    assert only["apiVersion"] == "v1beta9"
    assert only["fieldsV1"] == {"f:data": {".": {}, "f:a": {}, "f:b": {}}}


def test_create_then_server_side_apply_then_label_patch() -> None:
    dep = base_deployment({"name": "a", "image": "a:1"}, replicas=1)
    live = created(dep, "kubectl-create")
    # re-applying what is there conflicts with nobody; both own the fields
    v1 = apply(live, dep, now=T1)
    assert v1["spec"] == live["spec"]
    assert (
        'k:{"name":"a"}'
        in entry(v1, "kubectl", "Apply")["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]
    )
    # changing replicas now conflicts with the creator
    with pytest.raises(
        ConflictError, match=r'conflict with "kubectl-create" using apps/v1: \.spec\.replicas'
    ):
        apply(v1, base_deployment({"name": "a", "image": "a:1"}, replicas=3), now=T2)
    v2 = apply(v1, base_deployment({"name": "a", "image": "a:1"}, replicas=3), now=T2, force=True)
    assert v2["spec"]["replicas"] == 3
    assert "f:replicas" not in entry(v2, "kubectl-create")["fieldsV1"]["f:spec"]
    # kubectl label (a merge patch) records its own Update entry
    labelled = copy.deepcopy(v2)
    labelled["metadata"].setdefault("labels", {})["team"] = "x"
    v3 = updated(v2, labelled, "kubectl-label", T3)
    assert entry(v3, "kubectl-label")["fieldsV1"] == {"f:metadata": {"f:labels": {".": {}, "f:team": {}}}}
    assert [e["operation"] for e in entries(v3)] == ["Apply", "Update", "Update"]


def test_an_applier_dropping_a_nested_struct_field_removes_it() -> None:
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 2}}
    v1 = apply(None, base_deployment({"name": "a", "image": "a:1"}, strategy=strategy))
    v2 = apply(v1, base_deployment({"name": "a", "image": "a:1"}, strategy={"type": "RollingUpdate"}), now=T2)
    assert v2["spec"]["strategy"] == {"type": "RollingUpdate"}
    assert entry(v2, "kubectl")["fieldsV1"]["f:spec"]["f:strategy"] == {"f:type": {}}
