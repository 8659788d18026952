"""The REST operations we describe in OpenAPI: one set of paths per served group-version.

Why separate from the rendering: which operations exist (verbs, subresources, query parameters,
request and response bodies, the group-version-kind each acts on) is one model, rendered twice - as
swagger 2.0 and as OpenAPI 3.0 - by `podvisor.schema.openapi`. The shapes follow kube-apiserver's own
documents, since kubectl reads them: every PATCH operation carries its kind and the fieldValidation
parameter, and its request body lists the four patch content types.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from podvisor.schema.model import Resource, Subresource
from podvisor.schema.openapi_schemas import PATCH_DEFINITION
from podvisor.schema.registry import GroupVersionKind, group_versions, resources, struct_for_kind

__all__ = [
    "Operation",
    "PathItem",
    "QUERY_PARAMS",
    "PATH_PARAMS",
    "api_base",
    "api_tag",
    "paths_by_group_version",
    "served_group_versions",
    "group_version_of_path",
]

_META = "io.k8s.apimachinery.pkg.apis.meta.v1"
_STATUS = f"{_META}.Status"
_DELETE_OPTIONS = f"{_META}.DeleteOptions"
_WATCH_EVENT = f"{_META}.WatchEvent"
_API_RESOURCE_LIST = f"{_META}.APIResourceList"

_OBJECT_TYPES = ("application/json", "application/yaml", "application/vnd.kubernetes.protobuf")
_LIST_TYPES = (
    *_OBJECT_TYPES,
    "application/json;stream=watch",
    "application/vnd.kubernetes.protobuf;stream=watch",
)
_PATCH_TYPES = (
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)


# ------------------------------------------------------------------------------- parameters

# name -> (type, description); all live in the query unless they are path parameters
QUERY_PARAMS: dict[str, tuple[str, str]] = {
    "pretty": ("string", "When 'true', the response JSON is indented for people to read."),
    "dryRun": (
        "string",
        "When 'All', the request is checked and processed in full but nothing is stored. No other "
        "value is accepted.",
    ),
    "fieldManager": (
        "string",
        "Name of the actor making the change, recorded in managedFields. At most 128 printable "
        "characters. Required for apply patches; optional otherwise.",
    ),
    "fieldValidation": (
        "string",
        "What to do with fields the schema does not know or that appear twice: 'Ignore' drops them "
        "silently, 'Warn' drops them and answers a Warning header per field, 'Strict' rejects the "
        "request with 400 Bad Request.",
    ),
    "force": (
        "boolean",
        "Only for apply patches: take ownership of fields other managers own instead of failing "
        "with a conflict.",
    ),
    "gracePeriodSeconds": (
        "integer",
        "Seconds to wait before the object is deleted; 0 deletes at once. Unset uses the kind's default.",
    ),
    "orphanDependents": (
        "boolean",
        "Older form of propagationPolicy: true orphans dependents, false deletes them in the background.",
    ),
    "propagationPolicy": (
        "string",
        "How dependents are handled: 'Orphan' keeps them, 'Background' deletes them after the owner, "
        "'Foreground' deletes them before the owner disappears.",
    ),
    "allowWatchBookmarks": (
        "boolean",
        "Watch only: ask for BOOKMARK events that carry nothing but a newer resourceVersion.",
    ),
    "continue": (
        "string",
        "Opaque token from a previous paged list's metadata.continue, to fetch the next page.",
    ),
    "fieldSelector": (
        "string",
        "Only objects whose fields match, e.g. 'metadata.name=web,status.phase!=Running'.",
    ),
    "labelSelector": ("string", "Only objects whose labels match, e.g. 'app=web,tier in (front,back)'."),
    "limit": ("integer", "Largest number of items to return; more are fetched with the continue token."),
    "resourceVersion": (
        "string",
        "For list: how fresh the answer must be (see resourceVersionMatch). For watch: send changes "
        "after this version; unset or '0' first sends every current object as ADDED.",
    ),
    "resourceVersionMatch": (
        "string",
        "How resourceVersion is applied to a list: 'NotOlderThan' or 'Exact'.",
    ),
    "sendInitialEvents": (
        "boolean",
        "Watch only: first send every current object as ADDED, then a BOOKMARK marking the end of them.",
    ),
    "timeoutSeconds": ("integer", "Close the list or watch after this many seconds."),
    "watch": ("boolean", "Stream add, update and delete events instead of returning a list."),
    "container": ("string", "Container to use; may be left out when the pod has exactly one."),
    "follow": ("boolean", "Keep the response open and stream new log lines as they are written."),
    "insecureSkipTLSVerifyBackend": (
        "boolean",
        "Do not verify the node agent's serving certificate when fetching logs.",
    ),
    "limitBytes": ("integer", "Stop after this many bytes of log."),
    "previous": ("boolean", "Logs of the previous, terminated run of the container."),
    "sinceSeconds": ("integer", "Only log lines newer than this many seconds."),
    "sinceTime": ("string", "Only log lines written at or after this RFC 3339 time."),
    "stream": ("string", "Which stream of the log: 'All', 'Stdout' or 'Stderr'."),
    "tailLines": ("integer", "Only this many lines from the end of the log."),
    "timestamps": ("boolean", "Prefix every log line with the RFC 3339 time it was written."),
    "command": ("string", "The command to run, one query parameter per argument."),
    "stdin": ("boolean", "Attach the caller's standard input."),
    "stdout": ("boolean", "Return the process's standard output."),
    "stderr": ("boolean", "Return the process's standard error."),
    "tty": ("boolean", "Allocate a terminal for the process."),
    "ports": ("integer", "Pod ports to forward, one query parameter per port."),
}
PATH_PARAMS: dict[str, str] = {
    "name": "Name of the {kind}.",
    "namespace": "Namespace the objects live in.",
}

_LIST_PARAMS = (
    "allowWatchBookmarks",
    "continue",
    "fieldSelector",
    "labelSelector",
    "limit",
    "resourceVersion",
    "resourceVersionMatch",
    "sendInitialEvents",
    "timeoutSeconds",
    "watch",
)
_WRITE_PARAMS = ("dryRun", "fieldManager", "fieldValidation")
_DELETE_PARAMS = ("dryRun", "gracePeriodSeconds", "orphanDependents", "propagationPolicy")
_LOG_PARAMS = (
    "container",
    "follow",
    "insecureSkipTLSVerifyBackend",
    "limitBytes",
    "previous",
    "sinceSeconds",
    "sinceTime",
    "stream",
    "tailLines",
    "timestamps",
)
_EXEC_PARAMS = ("command", "container", "stderr", "stdin", "stdout", "tty")
_ATTACH_PARAMS = ("container", "stderr", "stdin", "stdout", "tty")


# ------------------------------------------------------------------------------- operations


@dataclass(frozen=True, slots=True)
class Operation:
    method: str  # get, post, put, patch, delete
    action: str  # x-kubernetes-action
    op_id: str
    description: str
    gvk: GroupVersionKind
    query: tuple[str, ...] = ()
    body: str = ""  # request body definition ("" = none)
    body_types: tuple[str, ...] = ("*/*",)
    body_required: bool = True
    responses: tuple[tuple[str, str, str], ...] = ()  # (code, description, definition or "string")
    produces: tuple[str, ...] = _OBJECT_TYPES


@dataclass(frozen=True, slots=True)
class PathItem:
    path: str
    path_params: tuple[str, ...]
    kind: str  # for the name parameter's description
    ops: tuple[Operation, ...]


def _group_title(group: str) -> str:
    if not group:
        return "Core"
    first = group.split(".")[0]
    return first[:1].upper() + first[1:]


def api_base(group: str, version: str) -> str:
    return f"/apis/{group}/{version}" if group else f"/api/{version}"


def api_tag(group: str, version: str) -> str:
    return f"{(group.split('.')[0] if group else 'core')}_{version}"


def _resource_paths(r: Resource) -> list[PathItem]:
    base = api_base(r.group, r.version)
    gv = _group_title(r.group) + r.version.capitalize()
    ns = "Namespaced" if r.namespaced else ""
    gvk = GroupVersionKind(r.group, r.version, r.kind)
    obj, lst, kind = r.struct, r.list_struct, r.kind
    verbs = set(r.verbs)
    coll = f"{base}/namespaces/{{namespace}}/{r.plural}" if r.namespaced else f"{base}/{r.plural}"
    item = f"{coll}/{{name}}"
    nsp: tuple[str, ...] = ("namespace",) if r.namespaced else ()
    out: list[PathItem] = []

    coll_ops: list[Operation] = []
    if "list" in verbs:
        coll_ops.append(
            Operation(
                "get",
                "list",
                f"list{gv}{ns}{kind}",
                f"List or watch {kind} objects.",
                gvk,
                query=_LIST_PARAMS,
                responses=(("200", "OK", lst),),
                produces=_LIST_TYPES,
            )
        )
    if "create" in verbs:
        coll_ops.append(
            Operation(
                "post",
                "post",
                f"create{gv}{ns}{kind}",
                f"Create a {kind}.",
                gvk,
                query=_WRITE_PARAMS,
                body=obj,
                responses=(("200", "OK", obj), ("201", "Created", obj), ("202", "Accepted", obj)),
            )
        )
    if "deletecollection" in verbs:
        coll_ops.append(
            Operation(
                "delete",
                "deletecollection",
                f"deleteCollection{gv}{ns}{kind}",
                f"Delete every {kind} that matches the selectors.",
                gvk,
                query=_DELETE_PARAMS + _LIST_PARAMS,
                body=_DELETE_OPTIONS,
                body_required=False,
                responses=(("200", "OK", _STATUS),),
            )
        )
    if coll_ops:
        out.append(PathItem(coll, nsp, kind, tuple(coll_ops)))

    item_ops: list[Operation] = []
    if "get" in verbs:
        item_ops.append(
            Operation(
                "get",
                "get",
                f"read{gv}{ns}{kind}",
                f"Read the named {kind}.",
                gvk,
                responses=(("200", "OK", obj),),
            )
        )
    if "update" in verbs:
        item_ops.append(
            Operation(
                "put",
                "put",
                f"replace{gv}{ns}{kind}",
                f"Replace the named {kind}.",
                gvk,
                query=_WRITE_PARAMS,
                body=obj,
                responses=(("200", "OK", obj), ("201", "Created", obj)),
            )
        )
    if "patch" in verbs:
        item_ops.append(_patch_op(f"patch{gv}{ns}{kind}", f"Partially update the named {kind}.", gvk, obj))
    if "delete" in verbs:
        item_ops.append(
            Operation(
                "delete",
                "delete",
                f"delete{gv}{ns}{kind}",
                f"Delete the named {kind}.",
                gvk,
                query=_DELETE_PARAMS,
                body=_DELETE_OPTIONS,
                body_required=False,
                responses=(("200", "OK", _STATUS), ("202", "Accepted", _STATUS)),
            )
        )
    if item_ops:
        out.append(PathItem(item, (*nsp, "name"), kind, tuple(item_ops)))

    if "list" in verbs and r.namespaced:
        out.append(
            PathItem(
                f"{base}/{r.plural}",
                (),
                kind,
                (
                    Operation(
                        "get",
                        "list",
                        f"list{gv}{kind}ForAllNamespaces",
                        f"List or watch {kind} objects of every namespace.",
                        gvk,
                        query=_LIST_PARAMS,
                        responses=(("200", "OK", lst),),
                        produces=_LIST_TYPES,
                    ),
                ),
            )
        )
    if "watch" in verbs:
        wcoll = (
            f"{base}/watch/namespaces/{{namespace}}/{r.plural}"
            if r.namespaced
            else f"{base}/watch/{r.plural}"
        )
        watch_resp = (("200", "OK", _WATCH_EVENT),)
        out.append(
            PathItem(
                wcoll,
                nsp,
                kind,
                (
                    Operation(
                        "get",
                        "watchlist",
                        f"watch{gv}{ns}{kind}List",
                        f"Watch changes to {kind} objects (deprecated "
                        "form: use the list operation with watch=true).",
                        gvk,
                        query=_LIST_PARAMS,
                        responses=watch_resp,
                        produces=_LIST_TYPES,
                    ),
                ),
            )
        )
        out.append(
            PathItem(
                f"{wcoll}/{{name}}",
                (*nsp, "name"),
                kind,
                (
                    Operation(
                        "get",
                        "watch",
                        f"watch{gv}{ns}{kind}",
                        f"Watch changes to the named {kind} (deprecated form).",
                        gvk,
                        query=_LIST_PARAMS,
                        responses=watch_resp,
                        produces=_LIST_TYPES,
                    ),
                ),
            )
        )
        if r.namespaced:
            out.append(
                PathItem(
                    f"{base}/watch/{r.plural}",
                    (),
                    kind,
                    (
                        Operation(
                            "get",
                            "watchlist",
                            f"watch{gv}{kind}ListForAllNamespaces",
                            f"Watch changes to {kind} objects of every namespace (deprecated form).",
                            gvk,
                            query=_LIST_PARAMS,
                            responses=watch_resp,
                            produces=_LIST_TYPES,
                        ),
                    ),
                )
            )
    for sub in r.subresources:
        out.append(_subresource_path(r, sub, item, nsp, gv, ns))
    return out


def _patch_op(op_id: str, description: str, gvk: GroupVersionKind, obj: str) -> Operation:
    return Operation(
        "patch",
        "patch",
        op_id,
        description,
        gvk,
        query=(*_WRITE_PARAMS, "force"),
        body=PATCH_DEFINITION,
        body_types=_PATCH_TYPES,
        responses=(("200", "OK", obj), ("201", "Created", obj)),
    )


def _subresource_path(
    r: Resource, sub: Subresource, item: str, nsp: tuple[str, ...], gv: str, ns: str
) -> PathItem:
    sgvk = GroupVersionKind(sub.group or r.group, sub.version or r.version, sub.kind)
    found = struct_for_kind(sgvk.group, sgvk.version, sgvk.kind)
    sobj = found.name if found else ""
    title = r.kind + sub.name[:1].upper() + sub.name[1:]
    path = f"{item}/{sub.name}"
    params = (*nsp, "name")
    ops: list[Operation] = []
    if sub.name == "log":
        ops.append(
            Operation(
                "get",
                "get",
                f"read{gv}{ns}PodLog",
                "Read the log of a container of the pod.",
                sgvk,
                query=_LOG_PARAMS,
                responses=(("200", "OK", "string"),),
                produces=(
                    "text/plain",
                    "application/json",
                    "application/yaml",
                    "application/vnd.kubernetes.protobuf",
                ),
            )
        )
    elif sub.name in ("exec", "attach", "portforward"):
        query = {"exec": _EXEC_PARAMS, "attach": _ATTACH_PARAMS, "portforward": ("ports",)}[sub.name]
        what = {
            "exec": "run a command in",
            "attach": "attach to the running process of",
            "portforward": "forward ports of",
        }[sub.name]
        for method in ("get", "post"):
            verb = "connect" + method.capitalize()
            ops.append(
                Operation(
                    method,
                    "connect",
                    f"{verb}{gv}{ns}{title}",
                    f"Upgrade the connection (WebSocket or SPDY) to {what} a container of the pod.",
                    sgvk,
                    query=query,
                    responses=(("200", "OK", "string"),),
                    produces=("*/*",),
                )
            )
    else:
        verbs = set(sub.verbs)
        if "get" in verbs:
            ops.append(
                Operation(
                    "get",
                    "get",
                    f"read{gv}{ns}{title}",
                    f"Read the {sub.name} of the named {r.kind}.",
                    sgvk,
                    responses=(("200", "OK", sobj),),
                )
            )
        if "update" in verbs:
            ops.append(
                Operation(
                    "put",
                    "put",
                    f"replace{gv}{ns}{title}",
                    f"Replace the {sub.name} of the named {r.kind}.",
                    sgvk,
                    query=_WRITE_PARAMS,
                    body=sobj,
                    responses=(("200", "OK", sobj), ("201", "Created", sobj)),
                )
            )
        if "patch" in verbs:
            ops.append(
                _patch_op(
                    f"patch{gv}{ns}{title}",
                    f"Partially update the {sub.name} of the named {r.kind}.",
                    sgvk,
                    sobj,
                )
            )
        if "create" in verbs:
            ops.append(
                Operation(
                    "post",
                    "post",
                    f"create{gv}{ns}{title}",
                    f"Create the {sub.name} of the named {r.kind}.",
                    sgvk,
                    query=_WRITE_PARAMS,
                    body=sobj,
                    responses=(("200", "OK", sobj), ("201", "Created", sobj), ("202", "Accepted", sobj)),
                )
            )
    return PathItem(path, params, r.kind, tuple(ops))


@cache
def paths_by_group_version() -> dict[tuple[str, str], list[PathItem]]:
    out: dict[tuple[str, str], list[PathItem]] = {}
    for g, v in served_group_versions():
        gvk = GroupVersionKind(g, v, "APIResourceList")
        root = PathItem(
            f"{api_base(g, v)}/",
            (),
            "",
            (
                Operation(
                    "get",
                    "",
                    f"get{_group_title(g)}{v.capitalize()}APIResources",
                    "The resources this group-version serves.",
                    gvk,
                    responses=(("200", "OK", _API_RESOURCE_LIST),),
                ),
            ),
        )
        out[(g, v)] = [root]
    for r in resources():
        out[(r.group, r.version)].extend(_resource_paths(r))
    return out


def served_group_versions() -> list[tuple[str, str]]:
    """Group-versions with at least one resource (policy/v1 or autoscaling/v1 only lend a kind to a
    subresource, and their kinds are described in the document of the resource's group-version)."""
    have = {(r.group, r.version) for r in resources()}
    return [gv for gv in group_versions() if gv in have]


def group_version_of_path(path: str) -> tuple[str, str]:
    parts = path.strip("/").split("/")
    return ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
