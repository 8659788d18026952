"""The schema registry: complete, consistent, with upstream's wire facts and our own words."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from podvisor.schema import (
    SCALARS,
    GroupVersionKind,
    ListOf,
    MapOf,
    Struct,
    TypeRef,
    gvk_of,
    resource_for,
    resource_for_kind,
    resources,
    struct,
    struct_for_kind,
    struct_refs,
    structs,
)

ROOT = Path(__file__).resolve().parents[2]
CORE = "io.k8s.api.core.v1"
META = "io.k8s.apimachinery.pkg.apis.meta.v1"

# kinds kubectl (or drain, or auth can-i) may send as protobuf bodies
PROTOBUF_KINDS = [
    ("", "v1", "Namespace"),
    ("", "v1", "ConfigMap"),
    ("", "v1", "Secret"),
    ("", "v1", "Service"),
    ("", "v1", "ServiceAccount"),
    ("", "v1", "Pod"),
    ("", "v1", "Binding"),
    ("apps", "v1", "Deployment"),
    ("batch", "v1", "Job"),
    ("authorization.k8s.io", "v1", "SelfSubjectAccessReview"),
    ("authentication.k8s.io", "v1", "TokenRequest"),
    ("policy", "v1", "Eviction"),
    ("policy", "v1", "DeleteOptions"),
    ("", "v1", "DeleteOptions"),
    ("autoscaling", "v1", "Scale"),
]


def _leaf(t: TypeRef) -> str:
    while isinstance(t, ListOf | MapOf):
        t = t.item if isinstance(t, ListOf) else t.value
    return t


def _closure(root: str) -> list[Struct]:
    seen: dict[str, Struct] = {}
    stack = [root]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen[name] = struct(name)
        stack.extend(r for f in seen[name].fields.values() if (r := struct_refs(f.type)))
    return list(seen.values())


def test_every_referenced_struct_exists_and_types_are_known() -> None:
    all_structs = structs()
    assert len(all_structs) > 200
    for name, s in all_structs.items():
        assert s.name == name
        for f in s.fields.values():
            leaf = _leaf(f.type)
            assert leaf in SCALARS or leaf in all_structs, f"{name}.{f.name}: {leaf}"


def test_resources_point_at_known_structs() -> None:
    for r in resources():
        assert struct(r.struct).fields["metadata"].type == f"{META}.ObjectMeta"
        if "list" in r.verbs:
            assert struct(r.list_struct).fields["items"].type == ListOf(r.struct)
        else:
            assert r.list_struct == ""  # SelfSubjectAccessReview: create only, no list kind
        for s in r.subresources:
            assert struct_for_kind(s.group or r.group, s.version or r.version, s.kind) is not None, s


def test_the_full_pod_spec_tree_is_there() -> None:
    names = {s.name for s in _closure(f"{CORE}.Pod")}
    for kind in [
        "PodSpec",
        "Container",
        "EphemeralContainer",
        "Volume",
        "HostPathVolumeSource",
        "ConfigMapVolumeSource",
        "SecretVolumeSource",
        "EmptyDirVolumeSource",
        "ProjectedVolumeSource",
        "PersistentVolumeClaimVolumeSource",
        "CSIVolumeSource",
        "Probe",
        "Lifecycle",
        "SecurityContext",
        "PodSecurityContext",
        "Affinity",
        "Toleration",
        "TopologySpreadConstraint",
        "PodStatus",
        "ContainerStatus",
    ]:
        assert f"{CORE}.{kind}" in names, kind
    volume = struct(f"{CORE}.Volume")
    # VolumeSource is flattened into Volume in JSON and nested under field 2 in proto
    assert volume.fields["emptyDir"].proto_via == (2,)
    assert volume.fields["name"].proto_via == ()


@pytest.mark.parametrize(
    ("owner", "field", "strategy", "key"),
    [
        ("core.v1.PodSpec", "containers", "merge", "name"),
        ("core.v1.PodSpec", "initContainers", "merge", "name"),
        ("core.v1.PodSpec", "ephemeralContainers", "merge", "name"),
        ("core.v1.PodSpec", "volumes", "merge,retainKeys", "name"),
        ("core.v1.PodSpec", "imagePullSecrets", "merge", "name"),
        ("core.v1.Container", "env", "merge", "name"),
        ("core.v1.Container", "volumeMounts", "merge", "mountPath"),
        ("core.v1.Container", "ports", "merge", "containerPort"),
        ("core.v1.PodStatus", "conditions", "merge", "type"),
        ("core.v1.NodeStatus", "conditions", "merge", "type"),
        ("core.v1.NodeStatus", "addresses", "merge", "type"),
        ("core.v1.ServiceSpec", "ports", "merge", "port"),
        ("apps.v1.DeploymentStatus", "conditions", "merge", "type"),
        ("apps.v1.DeploymentSpec", "strategy", "retainKeys", ""),
        ("meta.v1.ObjectMeta", "ownerReferences", "merge", "uid"),
        ("meta.v1.ObjectMeta", "finalizers", "merge", ""),
    ],
)
def test_merge_keys_match_upstream(owner: str, field: str, strategy: str, key: str) -> None:
    name = f"{META}.{owner[8:]}" if owner.startswith("meta.v1.") else f"io.k8s.api.{owner}"
    f = struct(name).fields[field]
    assert (f.patch_strategy, f.patch_merge_key) == (strategy, key)


def test_list_semantics_for_apply() -> None:
    ports = struct(f"{CORE}.Container").fields["ports"]
    assert ports.list_type == "map" and ports.list_map_keys == ("containerPort", "protocol")
    assert struct(f"{CORE}.PodSpec").fields["tolerations"].list_type == "atomic"
    assert struct(f"{CORE}.PodSpec").fields["tolerations"].patch_strategy == ""
    assert struct(f"{META}.ObjectMeta").fields["finalizers"].list_type == "set"
    assert struct(f"{META}.LabelSelector").struct_type == "atomic"


@pytest.mark.parametrize(("group", "version", "kind"), PROTOBUF_KINDS)
def test_protobuf_numbers_cover_what_kubectl_sends(group: str, version: str, kind: str) -> None:
    top = struct_for_kind(group, version, kind)
    assert top is not None
    for s in _closure(top.name):
        seen: set[tuple[tuple[int, ...], int]] = set()
        for f in s.fields.values():
            if f.name in ("apiVersion", "kind") and gvk_of(s.name) is not None:
                assert f.proto == 0  # TypeMeta: carried by the runtime.Unknown envelope, not the message
                continue
            assert f.proto > 0, f"{s.name}.{f.name}"
            slot = (f.proto_via, f.proto)
            assert slot not in seen, f"{s.name}.{f.name} reuses {slot}"
            seen.add(slot)


def test_some_wire_numbers() -> None:
    meta = struct(f"{META}.ObjectMeta").fields
    assert (meta["name"].proto, meta["namespace"].proto, meta["labels"].proto) == (1, 3, 11)
    c = struct(f"{CORE}.Container").fields
    assert (c["name"].proto, c["image"].proto, c["env"].proto) == (1, 2, 7)
    assert struct(f"{CORE}.PodSpec").fields["containers"].proto == 2
    assert struct("io.k8s.api.apps.v1.DeploymentSpec").fields["template"].proto == 3


def test_descriptions_are_present_and_our_own() -> None:
    models = pytest.importorskip("kubernetes.client.models")
    upstream: set[str] = set()
    for cls_name in dir(models):
        cls = getattr(models, cls_name)
        if isinstance(cls, type) and hasattr(cls, "model_fields"):
            upstream.update(" ".join((f.description or "").split()) for f in cls.model_fields.values())
            upstream.add(" ".join((cls.__doc__ or "").split()))
    upstream.discard("")
    for s in structs().values():
        assert s.description.strip(), s.name
        assert s.description not in upstream, s.name
        for f in s.fields.values():
            assert f.description.strip(), f"{s.name}.{f.name}"
            assert f.description not in upstream, f"{s.name}.{f.name}"


def test_every_field_is_described_by_hand() -> None:
    """The generator falls back to "<Field name words> (<type words>)." for a field nobody described;
    none is left (pods, containers, deployments, services and metadata above all)."""
    for s in structs().values():
        for f in s.fields.values():
            words = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", f.name).lower().capitalize()
            fallback = re.fullmatch(re.escape(words) + r" \([a-z0-9 -]*\)\.", f.description)
            assert not fallback, f"{s.name}.{f.name}: {f.description}"


def test_resource_lookups() -> None:
    pods = resource_for("", "v1", "pods")
    assert pods is not None and pods.kind == "Pod" and "po" in pods.short_names and "all" in pods.categories
    assert {s.name for s in pods.subresources} >= {
        "status",
        "binding",
        "eviction",
        "log",
        "exec",
        "attach",
        "portforward",
    }
    dep = resource_for_kind("apps", "v1", "Deployment")
    assert dep is not None and dep.plural == "deployments" and dep.short_names == ("deploy",)
    scale = {s.name: s for s in dep.subresources}["scale"]
    assert (scale.group, scale.version, scale.kind) == ("autoscaling", "v1", "Scale")
    ssar = resource_for("authorization.k8s.io", "v1", "selfsubjectaccessreviews")
    assert ssar is not None and ssar.verbs == ("create",) and not ssar.namespaced
    assert resource_for("", "v1", "nothing") is None
    assert resource_for_kind("apps", "v1", "Scale") is None
    short = {n for r in resources() for n in r.short_names}
    assert {"po", "svc", "cm", "ns", "no", "sa", "ev", "ep", "deploy", "rs"} <= short


def test_kinds_that_are_not_resources() -> None:
    for gvk, name in [
        (("", "v1", "DeleteOptions"), f"{META}.DeleteOptions"),
        (("apps", "v1", "DeleteOptions"), f"{META}.DeleteOptions"),
        (("", "v1", "Status"), f"{META}.Status"),
        (("autoscaling", "v1", "Scale"), "io.k8s.api.autoscaling.v1.Scale"),
        (("", "v1", "Binding"), f"{CORE}.Binding"),
        (("policy", "v1", "Eviction"), "io.k8s.api.policy.v1.Eviction"),
        (
            ("authorization.k8s.io", "v1", "SelfSubjectAccessReview"),
            "io.k8s.api.authorization.v1.SelfSubjectAccessReview",
        ),
        (("", "v1", "PodList"), f"{CORE}.PodList"),
    ]:
        found = struct_for_kind(*gvk)
        assert found is not None and found.name == name, gvk
    assert struct_for_kind("", "v1", "PodSpec") is None
    assert gvk_of(f"{CORE}.Pod") == GroupVersionKind("", "v1", "Pod")
    assert gvk_of("io.k8s.api.autoscaling.v1.Scale") == GroupVersionKind("autoscaling", "v1", "Scale")
    assert gvk_of(f"{META}.DeleteOptions") == GroupVersionKind("", "v1", "DeleteOptions")
    assert gvk_of(f"{CORE}.PodSpec") is None
    with pytest.raises(KeyError):
        struct("io.k8s.api.core.v1.Nope")


def test_loading_does_not_import_the_kubernetes_client() -> None:
    code = (
        "import sys, podvisor.schema as s, podvisor.schema.openapi as o\n"
        "s.structs(); o.openapi_v3_index()\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'kubernetes']\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
