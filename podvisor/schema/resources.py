"""The REST resources Podvisor serves, and the kinds that travel without being resources.

This table is written by hand because it is a decision, not a derivation: which resources exist, their
short names (what ``kubectl get po`` resolves), the ``all`` category (what ``kubectl get all`` lists),
verbs and subresources. Everything else about a resource's objects comes from the generated structs.
"""

from __future__ import annotations

from podvisor.schema.model import Resource, Subresource

__all__ = ["RESOURCES", "EXTRA_KINDS", "META_KINDS", "META_GROUP_VERSION"]

_CORE = "io.k8s.api.core.v1"
_META = "io.k8s.apimachinery.pkg.apis.meta.v1"

_ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
_NO_COLLECTION_DELETE = ("create", "delete", "get", "list", "patch", "update", "watch")
_STATUS = ("get", "patch", "update")


def _res(
    group: str,
    kind: str,
    plural: str,
    *,
    prefix: str,
    namespaced: bool = True,
    verbs: tuple[str, ...] = _ALL_VERBS,
    short_names: tuple[str, ...] = (),
    categories: tuple[str, ...] = (),
    subresources: tuple[Subresource, ...] = (),
) -> Resource:
    return Resource(
        group=group,
        version="v1",
        kind=kind,
        plural=plural,
        singular=kind.lower(),
        namespaced=namespaced,
        struct=f"{prefix}.{kind}",
        list_struct=f"{prefix}.{kind}List" if "list" in verbs else "",
        verbs=verbs,
        short_names=short_names,
        categories=categories,
        subresources=subresources,
    )


_SCALE = Subresource("scale", "Scale", _STATUS, group="autoscaling", version="v1")

RESOURCES: tuple[Resource, ...] = (
    # core/v1
    _res(
        "",
        "Namespace",
        "namespaces",
        prefix=_CORE,
        namespaced=False,
        verbs=_NO_COLLECTION_DELETE,
        short_names=("ns",),
        subresources=(Subresource("status", "Namespace", _STATUS), Subresource("finalize", "Namespace", ("update",))),
    ),
    _res(
        "",
        "Pod",
        "pods",
        prefix=_CORE,
        short_names=("po",),
        categories=("all",),
        subresources=(
            Subresource("status", "Pod", _STATUS),
            Subresource("binding", "Binding", ("create",)),
            Subresource("eviction", "Eviction", ("create",), group="policy", version="v1"),
            Subresource("log", "Pod", ("get",)),
            Subresource("exec", "PodExecOptions", ("create", "get")),
            Subresource("attach", "PodAttachOptions", ("create", "get")),
            Subresource("portforward", "PodPortForwardOptions", ("create", "get")),
        ),
    ),
    _res(
        "",
        "Service",
        "services",
        prefix=_CORE,
        short_names=("svc",),
        categories=("all",),
        subresources=(Subresource("status", "Service", _STATUS),),
    ),
    _res("", "Endpoints", "endpoints", prefix=_CORE, short_names=("ep",)),
    _res("", "ConfigMap", "configmaps", prefix=_CORE, short_names=("cm",)),
    _res("", "Secret", "secrets", prefix=_CORE),
    _res(
        "",
        "ServiceAccount",
        "serviceaccounts",
        prefix=_CORE,
        short_names=("sa",),
        subresources=(
            Subresource("token", "TokenRequest", ("create",), group="authentication.k8s.io", version="v1"),
        ),
    ),
    _res(
        "",
        "Node",
        "nodes",
        prefix=_CORE,
        namespaced=False,
        short_names=("no",),
        subresources=(Subresource("status", "Node", _STATUS),),
    ),
    _res("", "Event", "events", prefix=_CORE, short_names=("ev",)),
    # events.k8s.io/v1
    _res("events.k8s.io", "Event", "events", prefix="io.k8s.api.events.v1", short_names=("ev",)),
    # coordination.k8s.io/v1
    _res("coordination.k8s.io", "Lease", "leases", prefix="io.k8s.api.coordination.v1"),
    # node.k8s.io/v1
    _res("node.k8s.io", "RuntimeClass", "runtimeclasses", prefix="io.k8s.api.node.v1", namespaced=False),
    # apps/v1
    _res(
        "apps",
        "Deployment",
        "deployments",
        prefix="io.k8s.api.apps.v1",
        short_names=("deploy",),
        categories=("all",),
        subresources=(Subresource("status", "Deployment", _STATUS), _SCALE),
    ),
    _res(
        "apps",
        "ReplicaSet",
        "replicasets",
        prefix="io.k8s.api.apps.v1",
        short_names=("rs",),
        categories=("all",),
        subresources=(Subresource("status", "ReplicaSet", _STATUS), _SCALE),
    ),
    # batch/v1
    _res(
        "batch",
        "Job",
        "jobs",
        prefix="io.k8s.api.batch.v1",
        categories=("all",),
        subresources=(Subresource("status", "Job", _STATUS),),
    ),
    # discovery.k8s.io/v1
    _res("discovery.k8s.io", "EndpointSlice", "endpointslices", prefix="io.k8s.api.discovery.v1"),
    # authorization.k8s.io/v1
    _res(
        "authorization.k8s.io",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
        prefix="io.k8s.api.authorization.v1",
        namespaced=False,
        verbs=("create",),
    ),
)

# Kinds that are not served as a resource of their own but travel as request or response bodies in
# one group-version: (group, version, kind) -> struct definition name.
EXTRA_KINDS: dict[tuple[str, str, str], str] = {
    ("", "v1", "Binding"): f"{_CORE}.Binding",
    ("", "v1", "PodExecOptions"): f"{_CORE}.PodExecOptions",
    ("", "v1", "PodAttachOptions"): f"{_CORE}.PodAttachOptions",
    ("", "v1", "PodPortForwardOptions"): f"{_CORE}.PodPortForwardOptions",
    ("", "v1", "PodLogOptions"): f"{_CORE}.PodLogOptions",
    ("policy", "v1", "Eviction"): "io.k8s.api.policy.v1.Eviction",
    ("autoscaling", "v1", "Scale"): "io.k8s.api.autoscaling.v1.Scale",
    ("authentication.k8s.io", "v1", "TokenRequest"): "io.k8s.api.authentication.v1.TokenRequest",
    ("", "v1", "APIVersions"): f"{_META}.APIVersions",
    ("", "v1", "APIGroupList"): f"{_META}.APIGroupList",
    ("", "v1", "APIGroup"): f"{_META}.APIGroup",
    ("", "v1", "APIResourceList"): f"{_META}.APIResourceList",
}

# Meta kinds that are valid in every served group-version (and in meta.k8s.io/v1): options bodies,
# the error/status body and the watch event envelope.
META_KINDS: dict[str, str] = {
    "Status": f"{_META}.Status",
    "DeleteOptions": f"{_META}.DeleteOptions",
    "CreateOptions": f"{_META}.CreateOptions",
    "UpdateOptions": f"{_META}.UpdateOptions",
    "PatchOptions": f"{_META}.PatchOptions",
    "GetOptions": f"{_META}.GetOptions",
    "ListOptions": f"{_META}.ListOptions",
    "WatchEvent": f"{_META}.WatchEvent",
}

# Kinds that live only in meta.k8s.io/v1 (server-side printing and metadata-only lists).
META_GROUP_VERSION = ("meta.k8s.io", "v1")
META_ONLY_KINDS: dict[str, str] = {
    "PartialObjectMetadata": f"{_META}.PartialObjectMetadata",
    "PartialObjectMetadataList": f"{_META}.PartialObjectMetadataList",
}
__all__ += ["META_ONLY_KINDS"]
