"""JSON patch, JSON merge patch and strategic merge patch, as kubectl and the Python client send them.

The strategic cases on small structs follow the behaviour of apimachinery's strategicpatch package
(item order included); the cases on real kinds use what ``kubectl patch`` and client-side ``kubectl
apply`` put on the wire.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from podvisor.apiserver.errors import BadRequestError, InvalidError, RequestEntityTooLargeError
from podvisor.apiserver.patch import json_patch, merge_patch, strategic_merge_patch
from podvisor.schema.model import Field, ListOf, MapOf, Struct

# -- JSON patch (RFC 6902) ---------------------------------------------------------------------------

CM: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "c", "namespace": "default", "labels": {"a": "1"}},
    "data": {"k": "v", "list": "x"},
}


def test_json_patch_applies_ops_in_order_without_touching_the_input() -> None:
    before = copy.deepcopy(CM)
    out = json_patch(
        CM,
        [
            {"op": "add", "path": "/data/new", "value": "n"},
            {"op": "replace", "path": "/data/k", "value": "v2"},
            {"op": "remove", "path": "/data/list"},
            {"op": "copy", "from": "/data/k", "path": "/data/copy"},
            {"op": "move", "from": "/metadata/labels/a", "path": "/metadata/labels/b"},
            {"op": "test", "path": "/data/new", "value": "n"},
            {"op": "add", "path": "/metadata/finalizers", "value": ["x"]},
            {"op": "add", "path": "/metadata/finalizers/-", "value": "y"},
        ],
    )
    assert out["data"] == {"k": "v2", "new": "n", "copy": "v2"}
    assert out["metadata"]["labels"] == {"b": "1"}
    assert out["metadata"]["finalizers"] == ["x", "y"]
    assert CM == before


def test_json_patch_failed_test_op_is_422_invalid() -> None:
    with pytest.raises(InvalidError) as e:
        json_patch(CM, [{"op": "test", "path": "/data/k", "value": "other"}])
    assert e.value.code == 422
    status = e.value.status()
    assert status["reason"] == "Invalid"
    assert status["message"].startswith("the server rejected our request due to an error in our request")
    assert "testing value /data/k failed" in status["message"]


@pytest.mark.parametrize(
    ("op", "wording"),
    [
        (
            {"op": "remove", "path": "/data/missing"},
            'remove operation does not apply: doc is missing path: "/data/missing"',
        ),
        ({"op": "replace", "path": "/data/missing", "value": 1}, "replace operation does not apply"),
        ({"op": "add", "path": "/spec/missing/x", "value": 1}, 'doc is missing path: "/spec/missing/x"'),
        ({"op": "move", "from": "/data/nope", "path": "/data/z"}, 'doc is missing from path: "/data/nope"'),
        ({"op": "frobnicate", "path": "/data"}, "Unexpected kind: frobnicate"),
        ({"path": "/data"}, "Unexpected kind: unknown"),
        ({"op": "add", "value": 1}, "missing its path"),
    ],
)
def test_json_patch_ops_that_cannot_apply_are_422(op: dict[str, Any], wording: str) -> None:
    with pytest.raises(InvalidError) as e:
        json_patch(CM, [op])
    assert wording in e.value.message


@pytest.mark.parametrize("body", [{"op": "add"}, "text", None, [1, 2]])
def test_json_patch_that_is_not_a_list_of_objects_is_400(body: Any) -> None:
    with pytest.raises(BadRequestError) as e:
        json_patch(CM, body)
    assert e.value.code == 400
    assert "cannot unmarshal" in e.value.message


def test_json_patch_operation_limit_is_413() -> None:
    ops = [{"op": "test", "path": "/kind", "value": "ConfigMap"}] * 10001
    with pytest.raises(RequestEntityTooLargeError):
        json_patch(CM, ops)


def test_json_patch_replacing_the_root_with_a_non_object_is_invalid() -> None:
    with pytest.raises(InvalidError):
        json_patch(CM, [{"op": "replace", "path": "", "value": [1]}])


# -- JSON merge patch (RFC 7386) ---------------------------------------------------------------------


def test_merge_patch_merges_objects_and_null_deletes() -> None:
    out = merge_patch(
        CM, {"metadata": {"labels": {"a": None, "b": "2"}}, "data": {"k": None, "n": {"x": None, "y": 1}}}
    )
    assert out["metadata"] == {"name": "c", "namespace": "default", "labels": {"b": "2"}}
    assert out["data"] == {"list": "x", "n": {"y": 1}}
    assert CM["data"]["k"] == "v"


def test_merge_patch_replaces_lists_whole() -> None:
    obj = {"metadata": {"finalizers": ["a", "b"]}}
    assert merge_patch(obj, {"metadata": {"finalizers": ["c"]}}) == {"metadata": {"finalizers": ["c"]}}


def test_merge_patch_that_is_not_an_object() -> None:
    with pytest.raises(BadRequestError, match="Invalid JSON Patch"):
        merge_patch(CM, None)
    with pytest.raises(BadRequestError):
        merge_patch(CM, 5)
    with pytest.raises(InvalidError):
        merge_patch(CM, [1])


# -- strategic merge patch on small structs -----------------------------------------------------------

STRUCTS = {
    "t.Root": Struct(
        "t.Root",
        "",
        {
            "name": Field("name", "string"),
            "value": Field("value", "string"),
            "mergingList": Field(
                "mergingList", ListOf("t.Item"), patch_strategy="merge", patch_merge_key="name"
            ),
            "nonMergingList": Field("nonMergingList", ListOf("t.Item")),
            "mergingIntList": Field("mergingIntList", ListOf("int64"), patch_strategy="merge"),
            "nonMergingIntList": Field("nonMergingIntList", ListOf("int64")),
            "simpleMap": Field("simpleMap", MapOf("string")),
            "retainKeysMap": Field("retainKeysMap", "t.Item", patch_strategy="retainKeys"),
            "replaceMap": Field("replaceMap", "t.Item", patch_strategy="replace"),
            "item": Field("item", "t.Item"),
        },
    ),
    "t.Item": Struct(
        "t.Item",
        "",
        {
            "name": Field("name", "int64"),
            "value": Field("value", "string"),
            "other": Field("other", "string"),
            "mergingList": Field(
                "mergingList", ListOf("t.Item"), patch_strategy="merge", patch_merge_key="name"
            ),
            "nonMergingList": Field("nonMergingList", ListOf("string")),
            "simpleMap": Field("simpleMap", MapOf("string")),
        },
    ),
}


def smp(obj: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    return strategic_merge_patch(obj, patch, "t.Root", lookup=STRUCTS.__getitem__)


def names(obj: dict[str, Any], field: str = "mergingList") -> list[Any]:
    return [item["name"] for item in obj[field]]


def test_null_deletes_keys_at_any_depth_and_is_dropped_from_added_content() -> None:
    obj = {"name": "n", "value": "v", "simpleMap": {"a": "1", "b": "2"}}
    out = smp(
        obj, {"value": None, "simpleMap": {"a": None}, "item": {"value": "x", "other": None}, "missing": None}
    )
    assert out == {"name": "n", "simpleMap": {"b": "2"}, "item": {"value": "x"}}


def test_merging_list_merges_items_by_key_and_keeps_the_rest() -> None:
    obj = {"mergingList": [{"name": 1, "value": "a", "other": "o"}, {"name": 2, "value": "b"}]}
    out = smp(obj, {"mergingList": [{"name": 1, "value": "A"}]})
    assert out["mergingList"] == [{"name": 1, "value": "A", "other": "o"}, {"name": 2, "value": "b"}]


def test_new_items_without_set_element_order_come_first() -> None:
    # Kubernetes places patch items not yet in the list before the untouched ones
    obj = {"mergingList": [{"name": 1}, {"name": 2}]}
    assert names(smp(obj, {"mergingList": [{"name": 3, "value": "c"}]})) == [3, 1, 2]
    # items in both keep their relative live order around the patch's items
    assert names(smp(obj, {"mergingList": [{"name": 2, "value": "x"}, {"name": 3}]})) == [1, 2, 3]


def test_patch_delete_directive_removes_items_by_merge_key() -> None:
    obj = {"mergingList": [{"name": 1}, {"name": 2, "value": "b"}, {"name": 3}]}
    out = smp(obj, {"mergingList": [{"name": 2, "$patch": "delete"}, {"name": 9, "$patch": "delete"}]})
    assert names(out) == [1, 3]
    with pytest.raises(BadRequestError, match="does not contain declared merge key"):
        smp(obj, {"mergingList": [{"$patch": "delete"}]})


def test_patch_replace_directive_in_a_list_replaces_it() -> None:
    obj = {"mergingList": [{"name": 1, "value": "a"}, {"name": 2}]}
    out = smp(obj, {"mergingList": [{"$patch": "replace"}, {"name": 5, "value": "e"}]})
    assert out["mergingList"] == [{"name": 5, "value": "e"}]


def test_patch_directives_on_maps() -> None:
    obj = {"item": {"name": 1, "value": "a", "simpleMap": {"x": "1"}}, "simpleMap": {"k": "v"}}
    out = smp(obj, {"item": {"$patch": "replace", "value": "only"}, "simpleMap": {"$patch": "delete"}})
    assert out["item"] == {"value": "only"}
    assert out["simpleMap"] == {}
    # merge is the default and may be spelled out
    assert smp(obj, {"simpleMap": {"$patch": "merge", "n": "1"}})["simpleMap"] == {"k": "v", "n": "1"}
    # a directive on a key the object lacks adds nothing
    assert "replaceMap" not in smp(obj, {"replaceMap": {"$patch": "delete"}})
    with pytest.raises(BadRequestError, match="unknown patch type"):
        smp(obj, {"item": {"$patch": "explode"}})


def test_replace_strategy_replaces_a_struct_whole() -> None:
    obj = {"replaceMap": {"name": 1, "value": "a"}}
    assert smp(obj, {"replaceMap": {"other": "b"}})["replaceMap"] == {"other": "b"}


def test_lists_without_merge_strategy_are_replaced() -> None:
    obj = {"nonMergingList": [{"name": 1}, {"name": 2}], "nonMergingIntList": [1, 2]}
    out = smp(obj, {"nonMergingList": [{"name": 3}], "nonMergingIntList": [3]})
    assert out == {"nonMergingList": [{"name": 3}], "nonMergingIntList": [3]}


def test_primitive_merge_list_is_a_union_and_delete_list_removes() -> None:
    obj = {"mergingIntList": [1, 2]}
    assert smp(obj, {"mergingIntList": [2, 3]})["mergingIntList"] == [1, 2, 3]
    assert smp(obj, {"mergingIntList": [3]})["mergingIntList"] == [3, 1, 2]
    assert smp({"mergingIntList": [1, 2, 3]}, {"$deleteFromPrimitiveList/mergingIntList": [2]}) == {
        "mergingIntList": [1, 3]
    }
    # also on a list without merge strategy
    assert smp({"nonMergingIntList": [1, 2, 3]}, {"$deleteFromPrimitiveList/nonMergingIntList": [2]}) == {
        "nonMergingIntList": [1, 3]
    }
    # deleting what is not there adds nothing
    assert smp({"mergingIntList": [1, 2]}, {"$deleteFromPrimitiveList/mergingIntList": [3]}) == {
        "mergingIntList": [1, 2]
    }
    assert smp({"other": ["bar"]}, {"$deleteFromPrimitiveList/mergingIntList": [3]}) == {"other": ["bar"]}
    with pytest.raises(BadRequestError, match="primitive list"):
        smp(obj, {"$deleteFromPrimitiveListmergingIntList": [1]})


def test_add_and_delete_in_a_primitive_list_with_set_element_order() -> None:
    patch = {
        "$setElementOrder/mergingIntList": [4, 2, 1],
        "mergingIntList": [4],
        "$deleteFromPrimitiveList/mergingIntList": [3],
    }
    assert smp({"mergingIntList": [1, 2, 3]}, patch) == {"mergingIntList": [4, 2, 1]}


@pytest.mark.parametrize(
    ("live", "order", "want"),
    [
        # the order list decides; items only on the server keep their place relative to the others
        ([1, 3, 4, 2], [4, 2, 3, 1], [4, 2, 3, 1]),
        ([1, 3, 4, 2, 9], [4, 2, 3, 1], [4, 2, 3, 1, 9]),
        ([1, 2, 9, 3, 4], [2, 1, 4, 3], [2, 1, 9, 4, 3]),
        ([1, 2, 7, 9, 8, 3, 4], [2, 1, 4, 3], [2, 1, 7, 9, 8, 4, 3]),
    ],
)
def test_set_element_order_reorders_with_server_only_items(
    live: list[int], order: list[int], want: list[int]
) -> None:
    obj = {"mergingList": [{"name": n, "other": "o"} for n in live]}
    out = smp(obj, {"$setElementOrder/mergingList": [{"name": n} for n in order]})
    assert names(out) == want
    assert all(item["other"] == "o" for item in out["mergingList"])


def test_set_element_order_with_changes_additions_and_deletions() -> None:
    live = {"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "value": "2", "other": "b"}, {"name": 3}]}
    out = smp(
        live,
        {
            "$setElementOrder/mergingList": [{"name": 4}, {"name": 2}, {"name": 1}],
            "mergingList": [{"name": 4, "value": "4"}, {"name": 3, "$patch": "delete"}],
        },
    )
    assert out["mergingList"] == [
        {"name": 4, "value": "4"},
        {"name": 2, "value": "2", "other": "b"},
        {"name": 1, "other": "a"},
    ]


def test_server_only_items_after_a_delete_and_an_add_sit_where_kubernetes_puts_them() -> None:
    # Kubernetes sorts by the live list as its in-place merge left it (the deleted slot refilled by
    # the new item), so the server-only item lands between or before the patch's items
    live = {"mergingList": [{"name": 1}, {"name": 2, "other": "b"}, {"name": 4, "other": "c"}]}
    patch = {
        "$setElementOrder/mergingList": [{"name": 2}, {"name": 3}],
        "mergingList": [{"name": 3}, {"name": 1, "$patch": "delete"}],
    }
    assert names(smp(live, patch)) == [2, 4, 3]
    live = {"mergingList": [{"name": 1, "other": "a"}, {"name": 4, "other": "c"}]}
    patch = {
        "$setElementOrder/mergingList": [{"name": 2}, {"name": 3}],
        "mergingList": [{"name": 2}, {"name": 3}, {"name": 1, "$patch": "delete"}],
    }
    assert names(smp(live, patch)) == [4, 2, 3]


def test_set_element_order_that_contradicts_the_patch_is_400() -> None:
    obj = {"mergingList": [{"name": 1}, {"name": 2}]}
    with pytest.raises(BadRequestError, match="doesn't match"):
        smp(obj, {"$setElementOrder/mergingList": [{"name": 1}, {"name": 2}], "mergingList": [{"name": 3}]})
    with pytest.raises(BadRequestError, match="setElementOrder"):
        smp(obj, {"$setElementOrder/mergingList": "nope"})


def test_retain_keys_clears_fields_not_listed() -> None:
    obj = {"retainKeysMap": {"name": 1, "value": "foo", "other": "o"}}
    out = smp(obj, {"retainKeysMap": {"$retainKeys": ["name", "other"], "other": "bar"}})
    assert out["retainKeysMap"] == {"name": 1, "other": "bar"}
    with pytest.raises(BadRequestError, match="retainKeys"):
        smp(obj, {"retainKeysMap": {"$retainKeys": ["name"], "other": "bar"}})


def test_nested_merging_lists_merge_recursively() -> None:
    obj = {"mergingList": [{"name": 1, "mergingList": [{"name": 10, "value": "a"}, {"name": 11}]}]}
    out = smp(obj, {"mergingList": [{"name": 1, "mergingList": [{"name": 10, "other": "x"}]}]})
    assert out["mergingList"][0]["mergingList"] == [{"name": 10, "value": "a", "other": "x"}, {"name": 11}]


def test_values_of_another_type_replace() -> None:
    assert smp({"value": {"a": 1}}, {"value": "s"}) == {"value": "s"}
    assert smp({"simpleMap": ["x"]}, {"simpleMap": {"a": "1", "b": None}}) == {"simpleMap": {"a": "1"}}


def test_bad_patches_are_400() -> None:
    with pytest.raises(BadRequestError):
        smp({}, [])  # type: ignore[arg-type]
    with pytest.raises(BadRequestError, match="not supported"):
        strategic_merge_patch({}, {}, "t.Nope", lookup=STRUCTS.__getitem__)
    with pytest.raises(BadRequestError, match="not identical"):
        smp({"mergingIntList": [1]}, {"mergingIntList": ["a"]})


def test_inputs_are_not_modified() -> None:
    obj = {"mergingList": [{"name": 1, "value": "a"}], "simpleMap": {"a": "1"}}
    patch = {
        "mergingList": [{"name": 1, "value": "b"}, {"name": 2, "$patch": "delete"}],
        "simpleMap": {"a": None},
    }
    obj_copy, patch_copy = copy.deepcopy(obj), copy.deepcopy(patch)
    smp(obj, patch)
    assert obj == obj_copy and patch == patch_copy


# -- strategic merge patch on real kinds (the schema registry) ----------------------------------------

DEPLOYMENT = "io.k8s.api.apps.v1.Deployment"


def deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web", "tier": "fe"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "a",
                            "image": "x/y:1",
                            "ports": [
                                {"containerPort": 80, "protocol": "TCP"},
                                {"containerPort": 81, "protocol": "TCP"},
                            ],
                            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                            "volumeMounts": [{"name": "v", "mountPath": "/data"}],
                        },
                        {"name": "b", "image": "x/z:1", "args": ["--one", "--two"]},
                    ],
                    "volumes": [{"name": "v", "emptyDir": {}}],
                    "tolerations": [{"key": "k", "operator": "Exists"}],
                },
            },
        },
    }


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = obj["spec"]["template"]["spec"]["containers"]
    return result


def test_kubectl_patch_changes_only_the_named_container() -> None:
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "x/z:2"}]}}}}
    out = strategic_merge_patch(deployment(), patch, DEPLOYMENT)
    assert [c["name"] for c in containers(out)] == ["a", "b"]
    assert containers(out)[0] == containers(deployment())[0]
    assert containers(out)[1] == {"name": "b", "image": "x/z:2", "args": ["--one", "--two"]}


def test_env_ports_and_volume_mounts_merge_by_their_keys() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "a",
                            "env": [{"name": "B", "value": "22"}, {"name": "C", "value": "3"}],
                            "ports": [{"containerPort": 81, "name": "metrics"}],
                            "volumeMounts": [{"mountPath": "/data", "readOnly": True}],
                        }
                    ]
                }
            }
        }
    }
    a = containers(strategic_merge_patch(deployment(), patch, DEPLOYMENT))[0]
    assert a["env"] == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "22"},
        {"name": "C", "value": "3"},
    ]
    assert a["ports"] == [
        {"containerPort": 80, "protocol": "TCP"},
        {"containerPort": 81, "protocol": "TCP", "name": "metrics"},
    ]
    assert a["volumeMounts"] == [{"name": "v", "mountPath": "/data", "readOnly": True}]


def test_atomic_lists_and_args_are_replaced() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [{"name": "b", "args": ["--three"]}],
                    "tolerations": [{"key": "other", "operator": "Exists"}],
                }
            }
        }
    }
    out = strategic_merge_patch(deployment(), patch, DEPLOYMENT)
    assert containers(out)[1]["args"] == ["--three"]
    assert out["spec"]["template"]["spec"]["tolerations"] == [{"key": "other", "operator": "Exists"}]


def test_client_side_apply_three_way_patch() -> None:
    """What ``kubectl apply`` sends after a container was removed from the file, another changed,
    an env var dropped, a label dropped and the strategy switched to Recreate."""
    last_applied = json.dumps({"apiVersion": "apps/v1", "kind": "Deployment"}) + "\n"
    patch = {
        "metadata": {
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": last_applied},
            "labels": {"tier": None},
        },
        "spec": {
            "strategy": {"$retainKeys": ["type"], "rollingUpdate": None, "type": "Recreate"},
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "a"}],
                    "containers": [
                        {
                            "$setElementOrder/env": [{"name": "A"}],
                            "env": [{"$patch": "delete", "name": "B"}],
                            "image": "x/y:2",
                            "name": "a",
                        },
                        {"$patch": "delete", "name": "b"},
                    ],
                }
            },
        },
    }
    out = strategic_merge_patch(deployment(), patch, DEPLOYMENT)
    assert out["metadata"]["labels"] == {"app": "web"}
    assert out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] == last_applied
    assert out["spec"]["strategy"] == {"type": "Recreate"}
    (a,) = containers(out)
    assert a["image"] == "x/y:2"
    assert a["env"] == [{"name": "A", "value": "1"}]
    assert a["ports"] == containers(deployment())[0]["ports"]


def test_volume_source_switch_with_retain_keys() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "volumes": [
                        {"$retainKeys": ["configMap", "name"], "configMap": {"name": "cm"}, "name": "v"}
                    ]
                }
            }
        }
    }
    out = strategic_merge_patch(deployment(), patch, DEPLOYMENT)
    assert out["spec"]["template"]["spec"]["volumes"] == [{"name": "v", "configMap": {"name": "cm"}}]


def test_finalizers_union_and_delete_from_primitive_list() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "finalizers": ["a", "b"]}}
    out = strategic_merge_patch(pod, {"metadata": {"finalizers": ["c"]}}, "io.k8s.api.core.v1.Pod")
    assert out["metadata"]["finalizers"] == ["c", "a", "b"]
    out = strategic_merge_patch(
        pod, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}, "io.k8s.api.core.v1.Pod"
    )
    assert out["metadata"]["finalizers"] == ["b"]


def test_labels_and_annotations_patch_like_kubectl_label() -> None:
    out = strategic_merge_patch(
        deployment(), {"metadata": {"labels": {"tier": None, "new": "x"}}}, DEPLOYMENT
    )
    assert out["metadata"]["labels"] == {"app": "web", "new": "x"}


def test_node_selector_map_merges_key_by_key() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"nodeSelector": {"a": "1"}}}
    out = strategic_merge_patch(pod, {"spec": {"nodeSelector": {"b": "2"}}}, "io.k8s.api.core.v1.Pod")
    assert out["spec"]["nodeSelector"] == {"a": "1", "b": "2"}


def test_service_ports_merge_by_port() -> None:
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s"},
        "spec": {
            "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}, {"port": 443, "protocol": "TCP"}]
        },
    }
    out = strategic_merge_patch(
        svc, {"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}, "io.k8s.api.core.v1.Service"
    )
    assert out["spec"]["ports"] == [
        {"port": 80, "targetPort": 9090, "protocol": "TCP"},
        {"port": 443, "protocol": "TCP"},
    ]
