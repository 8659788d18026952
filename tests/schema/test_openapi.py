"""The OpenAPI documents, as kubectl reads them.

The last tests serve the documents from a throwaway loopback server (with just enough discovery for
kubectl to map ``pod`` to a resource) and run the real kubectl against it: ``explain`` must print our
descriptions, and ``create --dry-run=server --validate=strict`` must find the fieldValidation parameter
in the v3 document (otherwise kubectl gives up with "failed to download openapi").
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from podvisor.schema import resources, struct
from podvisor.schema.openapi import (
    openapi_v2,
    openapi_v2_document,
    openapi_v3,
    openapi_v3_document,
    openapi_v3_index,
    v3_group_version_paths,
)

KUBECTL = shutil.which("kubectl")
CREATED = web.AppKey("created", list)
PATCHED = web.AppKey("patched", list)
SEEN_PATHS = web.AppKey("seen_paths", list)

_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_WEB_V1 = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "busybox:1"}]},
        },
    },
}


def _gvk(group: str, version: str, kind: str) -> dict[str, str]:
    return {"group": group, "kind": kind, "version": version}


def test_index_links_every_group_version_with_its_hash() -> None:
    index = openapi_v3_index()
    assert set(index["paths"]) == set(v3_group_version_paths())
    assert "api/v1" in index["paths"] and "apis/apps/v1" in index["paths"]
    for gv, entry in index["paths"].items():
        doc = openapi_v3_document(gv)
        assert doc is not None
        assert entry["serverRelativeURL"] == f"/openapi/v3/{gv}?hash={doc.hash}"
        assert json.loads(doc.data) == doc.body
        assert doc.etag == f'"{doc.hash}"'
    assert openapi_v3("apis/nope/v1") is None


def test_every_resource_has_a_patch_operation_kubectl_accepts() -> None:
    for r in resources():
        gv = f"apis/{r.group}/{r.version}" if r.group else f"api/{r.version}"
        doc = openapi_v3(gv)
        assert doc is not None
        patches = [
            op["patch"]
            for op in doc["paths"].values()
            if "patch" in op
            and op["patch"]["x-kubernetes-group-version-kind"] == _gvk(r.group, r.version, r.kind)
        ]
        if "patch" not in r.verbs:
            assert not patches
            continue
        assert patches, r.plural
        for p in patches:  # kubectl looks at whichever it meets first: all must qualify
            names = {(q["name"], q["in"]) for q in p["parameters"]}
            assert ("fieldValidation", "query") in names
            assert set(p["requestBody"]["content"]) == {
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
                "application/apply-patch+yaml",
            }
        # apply's v3 strategic-merge reader finds the object's schema by its GVK list
        schemas = doc["components"]["schemas"]
        matching = [
            n
            for n, s in schemas.items()
            if _gvk(r.group, r.version, r.kind) in s.get("x-kubernetes-group-version-kind", [])
        ]
        assert matching == [r.struct]


def test_scale_subresource_speaks_autoscaling_v1() -> None:
    doc = openapi_v3("apis/apps/v1")
    assert doc is not None
    scale = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]
    assert scale["patch"]["x-kubernetes-group-version-kind"] == _gvk("autoscaling", "v1", "Scale")
    assert "io.k8s.api.autoscaling.v1.Scale" in doc["components"]["schemas"]


def test_patch_extensions_reach_the_documents() -> None:
    doc = openapi_v3("api/v1")
    assert doc is not None
    schemas = doc["components"]["schemas"]
    containers = schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert containers["x-kubernetes-patch-strategy"] == "merge"
    assert containers["x-kubernetes-list-type"] == "map"
    assert containers["items"]["allOf"] == [{"$ref": "#/components/schemas/io.k8s.api.core.v1.Container"}]
    ports = schemas["io.k8s.api.core.v1.Container"]["properties"]["ports"]
    assert ports["x-kubernetes-list-map-keys"] == ["containerPort", "protocol"]
    assert schemas["io.k8s.api.core.v1.Container"]["required"] == ["name"]
    meta = schemas["io.k8s.api.core.v1.Pod"]["properties"]["metadata"]
    assert meta["allOf"] == [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}]
    assert meta["description"]
    # every $ref resolves inside the same document
    text = json.dumps(doc)
    for piece in text.split('"$ref": "#/components/schemas/')[1:]:
        assert piece.split('"', 1)[0] in schemas


def test_v2_is_swagger_with_kinds_and_merge_keys() -> None:
    doc = openapi_v2()
    assert doc["swagger"] == "2.0"
    defs = doc["definitions"]
    dep = defs["io.k8s.api.apps.v1.Deployment"]
    assert dep["x-kubernetes-group-version-kind"] == [_gvk("apps", "v1", "Deployment")]
    strategy = defs["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["strategy"]
    assert strategy["x-kubernetes-patch-strategy"] == "retainKeys"
    assert strategy["$ref"] == "#/definitions/io.k8s.api.apps.v1.DeploymentStrategy"
    patch = doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]
    assert "application/strategic-merge-patch+json" in patch["consumes"]
    assert any(p["name"] == "fieldValidation" for p in patch["parameters"])
    text = openapi_v2_document().data.decode()
    for piece in text.split('"$ref":"#/definitions/')[1:]:
        assert piece.split('"', 1)[0] in defs


# ------------------------------------------------------------------------------- real kubectl


def _discovery_app() -> web.Application:
    """Just enough of an API server for kubectl explain/create: version, legacy discovery, OpenAPI v3,
    and a create handler that echoes the body (so server-side dry-run has an answer)."""
    created: list[dict[str, Any]] = []

    def resource_list(group: str, version: str) -> dict[str, Any]:
        items = []
        for r in resources():
            if (r.group, r.version) != (group, version):
                continue
            items.append(
                {
                    "name": r.plural,
                    "singularName": r.singular,
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": list(r.verbs),
                    "shortNames": list(r.short_names),
                    "categories": list(r.categories),
                }
            )
            for s in r.subresources:
                items.append(
                    {
                        "name": f"{r.plural}/{s.name}",
                        "singularName": "",
                        "namespaced": r.namespaced,
                        "kind": s.kind,
                        "verbs": list(s.verbs),
                        **({"group": s.group, "version": s.version} if s.group else {}),
                    }
                )
        gv = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": items}

    async def version(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "major": "1",
                "minor": "32",
                "gitVersion": "v1.32.0-podvisor",
                "gitCommit": "0",
                "gitTreeState": "clean",
                "buildDate": "2025-01-01T00:00:00Z",
                "goVersion": "python",
                "compiler": "cpython",
                "platform": "linux/amd64",
            }
        )

    async def api(_: web.Request) -> web.Response:
        return web.json_response(
            {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        )

    async def apis(_: web.Request) -> web.Response:
        groups: dict[str, list[str]] = {}
        for r in resources():
            if r.group:
                groups.setdefault(r.group, [])
                if r.version not in groups[r.group]:
                    groups[r.group].append(r.version)
        body = {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {
                    "name": g,
                    "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                    "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]},
                }
                for g, vs in groups.items()
            ],
        }
        return web.json_response(body)

    async def core_v1(_: web.Request) -> web.Response:
        return web.json_response(resource_list("", "v1"))

    async def group_version(req: web.Request) -> web.Response:
        return web.json_response(resource_list(req.match_info["group"], req.match_info["version"]))

    async def v3_index(_: web.Request) -> web.Response:
        return web.json_response(openapi_v3_index())

    async def v3_doc(req: web.Request) -> web.Response:
        doc = openapi_v3_document(req.match_info["gv"])
        if doc is None:
            raise web.HTTPNotFound()
        return web.Response(body=doc.data, content_type="application/json", headers={"ETag": doc.etag})

    async def create(req: web.Request) -> web.Response:
        body = await req.json()
        created.append({"query": dict(req.query), "body": body})
        return web.json_response(body, status=201)

    patched: list[dict[str, Any]] = []
    seen_paths: list[str] = []

    async def get_deployment(_: web.Request) -> web.Response:
        live = json.loads(json.dumps(_WEB_V1))
        live["metadata"].update(
            uid="1",
            resourceVersion="5",
            annotations={_LAST_APPLIED: json.dumps(_WEB_V1)},
        )
        return web.json_response(live)

    async def patch_deployment(req: web.Request) -> web.Response:
        patched.append({"query": dict(req.query), "type": req.content_type, "body": await req.json()})
        return web.json_response(_WEB_V1)

    @web.middleware
    async def log_paths(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        seen_paths.append(request.path)
        return await handler(request)

    app = web.Application(middlewares=[log_paths])
    app[CREATED] = created
    app[PATCHED] = patched
    app[SEEN_PATHS] = seen_paths
    app.router.add_get("/apis/apps/v1/namespaces/{namespace}/deployments/{name}", get_deployment)
    app.router.add_patch("/apis/apps/v1/namespaces/{namespace}/deployments/{name}", patch_deployment)
    app.router.add_get("/version", version)
    app.router.add_get("/api", api)
    app.router.add_get("/apis", apis)
    app.router.add_get("/api/v1", core_v1)
    app.router.add_get("/apis/{group}/{version}", group_version)
    app.router.add_get("/openapi/v3", v3_index)
    app.router.add_get("/openapi/v3/{gv:.+}", v3_doc)
    app.router.add_post("/api/v1/namespaces/{namespace}/configmaps", create)
    return app


@pytest.fixture
async def server(tmp_path: Path) -> Any:
    app = _discovery_app()
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", app
    await runner.cleanup()


async def _kubectl(server_url: str, home: Path, *args: str) -> tuple[int, str, str]:
    assert KUBECTL
    env = {**os.environ, "HOME": str(home), "KUBECONFIG": str(home / "nonexistent-kubeconfig")}
    proc = await asyncio.create_subprocess_exec(
        KUBECTL,
        "--server",
        server_url,
        "--cache-dir",
        str(home / "cache"),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(), err.decode()




async def test_kubectl_explain_pod_containers(server: Any, tmp_path: Path) -> None:
    url, _app = server
    rc, out, err = await _kubectl(url, tmp_path, "explain", "pod.spec.containers")
    assert rc == 0, err
    assert "KIND:       Pod" in out and "VERSION:    v1" in out
    assert "FIELD: containers <[]Container>" in out
    container = struct("io.k8s.api.core.v1.Container")
    assert container.description.split()[0] in out
    assert "image\t<string>" in out
    assert "name\t<string> -required-" in out
    assert " ".join(container.fields["imagePullPolicy"].description.split()[:4]) in " ".join(out.split())


async def test_kubectl_explain_deployment_template_spec(server: Any, tmp_path: Path) -> None:
    url, _app = server
    rc, out, err = await _kubectl(url, tmp_path, "explain", "deployment.spec.template.spec")
    assert rc == 0, err
    assert "GROUP:      apps" in out and "KIND:       Deployment" in out
    assert "FIELD: spec <PodSpec>" in out
    assert "containers\t<[]Container> -required-" in out
    assert "restartPolicy\t<string>" in out
    rc, out, err = await _kubectl(url, tmp_path, "explain", "deploy.spec.strategy.rollingUpdate.maxSurge")
    assert rc == 0, err
    assert "FIELD: maxSurge <IntOrString>" in out


async def test_kubectl_create_finds_field_validation(server: Any, tmp_path: Path) -> None:
    url, app = server
    manifest = tmp_path / "cm.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: demo, namespace: default}\ndata: {a: b}\n"
    )
    rc, out, err = await _kubectl(url, tmp_path, "create", "-f", str(manifest), "--dry-run=server")
    assert rc == 0, err
    [seen] = app[CREATED]
    assert seen["query"]["fieldValidation"] == "Strict"
    assert seen["body"]["data"] == {"a": "b"}


async def test_kubectl_apply_computes_strategic_merge_patch_from_v3(server: Any, tmp_path: Path) -> None:
    """Client-side apply finds strategic merge support and merge keys in our v3 document (it never
    falls back to /openapi/v2) and sends a patch that merges containers by name."""
    url, app = server
    changed = json.loads(json.dumps(_WEB_V1))
    containers = changed["spec"]["template"]["spec"]["containers"]
    containers[0]["image"] = "busybox:2"
    containers.append({"name": "sidecar", "image": "busybox:1"})
    manifest = tmp_path / "web.json"
    manifest.write_text(json.dumps(changed))
    rc, out, err = await _kubectl(url, tmp_path, "apply", "-f", str(manifest))
    assert rc == 0, err
    assert "warning" not in err.lower()
    [seen] = app[PATCHED]
    assert seen["type"] == "application/strategic-merge-patch+json"
    assert seen["query"]["fieldValidation"] == "Strict"
    spec = seen["body"]["spec"]["template"]["spec"]
    assert spec["$setElementOrder/containers"] == [{"name": "app"}, {"name": "sidecar"}]
    assert {"name": "app", "image": "busybox:2"} in spec["containers"]
    assert not [p for p in app[SEEN_PATHS] if p.startswith("/openapi/v2")]
