"""The HTTP layer seen on the wire: authentication, errors with kube's wording, content negotiation,
Table and metadata-only answers, write options, health and version. Raw HTTPS requests, because these
are the cases clients rely on without ever showing them."""

from __future__ import annotations

import json
import ssl
from typing import Any

import pytest
import urllib3

from tests.apiserver._http_harness import LiveServer, live  # noqa: F401

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"


def _ns(live: LiveServer, name: str) -> None:  # noqa: F811
    r = live.request("POST", "/api/v1/namespaces", body={"apiVersion": "v1", "kind": "Namespace",
                                                        "metadata": {"name": name}})
    assert r.status in (201, 409), r.data


def _cm(name: str, ns: str, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}, "data": {"k": "v"},
            **extra}


def _status(r: Any) -> dict[str, Any]:
    body = r.json()
    assert body["kind"] == "Status" and body["apiVersion"] == "v1" and body["status"] == "Failure", body
    assert body["code"] == r.status
    return body  # type: ignore[no-any-return]


# -- authentication ---------------------------------------------------------------------------------


def test_anonymous_gets_401_status(live: LiveServer) -> None:  # noqa: F811
    r = live.request("GET", "/api/v1/namespaces", who="anonymous")
    assert r.status == 401
    assert _status(r)["reason"] == "Unauthorized"


@pytest.mark.parametrize("path", ["/livez", "/readyz", "/healthz", "/version"])
def test_public_paths_need_no_credentials(live: LiveServer, path: str) -> None:  # noqa: F811
    r = live.request("GET", path, who="anonymous")
    assert r.status == 200, r.data


def test_wrong_token_is_401_even_on_public_paths(live: LiveServer) -> None:  # noqa: F811
    r = live.request("GET", "/readyz", who="anonymous", headers={"Authorization": "Bearer nope"})
    assert r.status == 401


def test_token_and_client_certificate_both_authenticate(live: LiveServer) -> None:  # noqa: F811
    assert live.request("GET", "/api/v1/namespaces", who="alice").status == 200
    assert live.request("GET", "/api/v1/namespaces", who="admin").status == 200


def test_certificate_from_another_ca_is_refused_by_tls(live: LiveServer) -> None:  # noqa: F811
    with pytest.raises((urllib3.exceptions.SSLError, urllib3.exceptions.ProtocolError, ssl.SSLError)):
        r = live.request("GET", "/api/v1/namespaces", who="stranger")
        # TLS 1.3 reports the refused certificate on first read
        assert r.status != 200


def test_self_subject_access_review_is_served(live: LiveServer) -> None:  # noqa: F811
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
              "spec": {"resourceAttributes": {"namespace": "x", "verb": "create", "resource": "pods"}}}
    r = live.request("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", body=review, who="alice")
    assert r.status == 201, r.data
    assert r.json()["status"]["allowed"] is True


# -- routing errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/api/v1/foos", "/apis/nope.example.com/v1", "/apis/nope.example.com/v1/things", "/api/v9",
     "/api/v1/namespaces/default/configmaps/c/bogus", "/nothing/here", "/api/v1/configmaps/c1"],
)
def test_unknown_paths_are_404_with_kube_wording(live: LiveServer, path: str) -> None:  # noqa: F811
    r = live.request("GET", path)
    assert r.status == 404
    body = _status(r)
    assert body["message"] == "the server could not find the requested resource"
    assert body["reason"] == "NotFound"


def test_missing_object_is_404_naming_it(live: LiveServer) -> None:  # noqa: F811
    r = live.request("GET", "/apis/apps/v1/namespaces/default/deployments/nope")
    assert r.status == 404
    assert _status(r)["message"] == 'deployments.apps "nope" not found'


def test_method_not_allowed(live: LiveServer) -> None:  # noqa: F811
    _ns(live, "h-405")
    r = live.request("POST", "/api/v1/namespaces/h-405/configmaps/c1", body=_cm("c1", "h-405"))
    assert r.status == 405
    assert _status(r)["reason"] == "MethodNotAllowed"


# -- bodies -----------------------------------------------------------------------------------------


def test_body_over_3mib_is_413(live: LiveServer) -> None:  # noqa: F811
    big = json.dumps(_cm("big", "default", data={"k": "x" * (3 * 1024 * 1024)}))
    r = live.request("POST", "/api/v1/namespaces/default/configmaps", body=big,
                     headers={"Content-Type": "application/json"})
    assert r.status == 413
    assert _status(r)["reason"] == "RequestEntityTooLarge"


def test_unknown_content_type_is_415(live: LiveServer) -> None:  # noqa: F811
    r = live.request("POST", "/api/v1/namespaces/default/configmaps", body=json.dumps(_cm("c", "default")),
                     headers={"Content-Type": "text/plain"})
    assert r.status == 415
    assert "application/json" in _status(r)["message"]
    r = live.request("PATCH", "/api/v1/namespaces/default/configmaps/c", body="{}",
                     headers={"Content-Type": "application/xml"})
    assert r.status == 415
    assert "application/merge-patch+json" in _status(r)["message"]


def test_malformed_json_is_400(live: LiveServer) -> None:  # noqa: F811
    r = live.request("POST", "/api/v1/namespaces/default/configmaps", body='{"kind": "ConfigMap",',
                     headers={"Content-Type": "application/json"})
    assert r.status == 400
    body = _status(r)
    assert body["reason"] == "BadRequest" and body["message"]
    assert "Traceback" not in r.data.decode()


def test_kind_and_version_mismatch_are_400_with_kube_wording(live: LiveServer) -> None:  # noqa: F811
    r = live.request("POST", "/api/v1/namespaces/default/configmaps",
                     body={"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}})
    assert r.status == 400
    assert 'Secret in version "v1" cannot be handled as a ConfigMap' in _status(r)["message"]
    r = live.request("POST", "/api/v1/namespaces/default/configmaps",
                     body={"apiVersion": "apps/v1", "kind": "ConfigMap", "metadata": {"name": "s"}})
    assert r.status == 400
    assert _status(r)["message"] == (
        "the API version in the data (apps/v1) does not match the expected API version (v1)"
    )


def test_namespace_and_name_must_match_the_url(live: LiveServer) -> None:  # noqa: F811
    _ns(live, "h-match")
    r = live.request("POST", "/api/v1/namespaces/h-match/configmaps", body=_cm("c", "elsewhere"))
    assert r.status == 400
    assert "does not match the namespace" in _status(r)["message"]
    assert live.request("POST", "/api/v1/namespaces/h-match/configmaps", body=_cm("c", "h-match")).status == 201
    r = live.request("PUT", "/api/v1/namespaces/h-match/configmaps/c", body=_cm("other", "h-match"))
    assert r.status == 400
    assert _status(r)["message"] == "the name of the object (other) does not match the name on the URL (c)"


def test_missing_kind_and_namespace_are_defaulted_from_the_url(live: LiveServer) -> None:  # noqa: F811
    _ns(live, "h-default")
    r = live.request("POST", "/api/v1/namespaces/h-default/configmaps", body={"metadata": {"name": "d"}})
    assert r.status == 201, r.data
    obj = r.json()
    assert (obj["kind"], obj["apiVersion"], obj["metadata"]["namespace"]) == ("ConfigMap", "v1", "h-default")


# -- write options ----------------------------------------------------------------------------------


def test_invalid_options_are_422_like_kube(live: LiveServer) -> None:  # noqa: F811
    r = live.request("POST", "/api/v1/namespaces/default/configmaps?dryRun=Yes", body=_cm("x", "default"))
    assert r.status == 422
    body = _status(r)
    assert body["message"].startswith('CreateOptions.meta.k8s.io "" is invalid: dryRun: Unsupported value')
    r = live.request("PATCH", "/api/v1/namespaces/default/configmaps/x", body="data: {a: b}",
                     headers={"Content-Type": "application/apply-patch+yaml"})
    assert r.status == 422
    assert "fieldManager: Required value" in _status(r)["message"]
    r = live.request("POST", "/api/v1/namespaces/default/configmaps?fieldValidation=Loose", body=_cm("x", "default"))
    assert r.status == 422
    r = live.request("PATCH", "/api/v1/namespaces/default/configmaps/x?force=true", body="{}",
                     headers={"Content-Type": "application/merge-patch+json"})
    assert r.status == 422
    assert "force: Forbidden" in _status(r)["message"]


def test_dry_run_does_not_persist(live: LiveServer) -> None:  # noqa: F811
    _ns(live, "h-dry")
    r = live.request("POST", "/api/v1/namespaces/h-dry/configmaps?dryRun=All", body=_cm("dry", "h-dry"))
    assert r.status == 201, r.data
    assert live.request("GET", "/api/v1/namespaces/h-dry/configmaps/dry").status == 404


def test_field_validation_strict_warn_ignore(live: LiveServer) -> None:  # noqa: F811
    _ns(live, "h-fv")
    bad = _cm("s", "h-fv", bogus=1)
    r = live.request("POST", "/api/v1/namespaces/h-fv/configmaps?fieldValidation=Strict", body=bad)
    assert r.status == 400
    assert 'unknown field "bogus"' in _status(r)["message"]
    r = live.request("POST", "/api/v1/namespaces/h-fv/configmaps?fieldValidation=Warn", body=bad)
    assert r.status == 201, r.data
    warnings = r.headers.getlist("Warning")
    assert any(w.startswith('299 - "') and "bogus" in w for w in warnings), warnings
    bad["metadata"] = {"name": "i"}
    r = live.request("POST", "/api/v1/namespaces/h-fv/configmaps?fieldValidation=Ignore", body=bad)
    assert r.status == 201 and not r.headers.getlist("Warning")


# -- answers ----------------------------------------------------------------------------------------


def test_table_for_list_and_get(live: LiveServer) -> None:  # noqa: F811
    _ns(live, "h-table")
    for n in ("t1", "t2"):
        assert live.request("POST", "/api/v1/namespaces/h-table/configmaps", body=_cm(n, "h-table")).status == 201
    r = live.request("GET", "/api/v1/namespaces/h-table/configmaps?limit=500", headers={"Accept": TABLE})
    assert r.status == 200
    t = r.json()
    assert (t["kind"], t["apiVersion"]) == ("Table", "meta.k8s.io/v1")
    assert t["metadata"]["resourceVersion"]
    cols = t["columnDefinitions"]
    assert cols[0]["name"] == "Name" and cols[0]["format"] == "name"
    assert {"name", "type", "format", "description", "priority"} <= set(cols[0])
    assert [row["cells"][0] for row in t["rows"]] == ["t1", "t2"]
    assert all(len(row["cells"]) == len(cols) for row in t["rows"])
    obj = t["rows"][0]["object"]
    assert obj["kind"] == "PartialObjectMetadata" and obj["metadata"]["namespace"] == "h-table"

    r = live.request("GET", "/api/v1/namespaces/h-table/configmaps/t1?includeObject=Object", headers={"Accept": TABLE})
    t = r.json()
    assert t["kind"] == "Table" and len(t["rows"]) == 1
    assert t["rows"][0]["object"]["kind"] == "ConfigMap" and t["rows"][0]["object"]["data"] == {"k": "v"}
    r = live.request("GET", "/api/v1/namespaces/h-table/configmaps?includeObject=Everything", headers={"Accept": TABLE})
    assert r.status == 400


def test_plain_json_lists_carry_kind_and_items(live: LiveServer) -> None:  # noqa: F811
    r = live.request("GET", "/api/v1/namespaces/no-such-ns-here/configmaps")
    body = r.json()
    assert (body["kind"], body["apiVersion"], body["items"]) == ("ConfigMapList", "v1", [])
    assert int(body["metadata"]["resourceVersion"]) > 0


def test_partial_object_metadata(live: LiveServer) -> None:  # noqa: F811
    _ns(live, "h-pom")
    live.request("POST", "/api/v1/namespaces/h-pom/configmaps", body=_cm("m", "h-pom"))
    r = live.request("GET", "/api/v1/namespaces/h-pom/configmaps",
                     headers={"Accept": "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"})
    body = r.json()
    assert body["kind"] == "PartialObjectMetadataList"
    assert body["items"][0] == {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                "metadata": body["items"][0]["metadata"]}
    assert "data" not in body["items"][0]
    r = live.request("GET", "/api/v1/namespaces/h-pom/configmaps/m",
                     headers={"Accept": "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"})
    assert r.json()["kind"] == "PartialObjectMetadata"


def test_protobuf_accept(live: LiveServer) -> None:  # noqa: F811
    r = live.request("GET", "/api/v1/namespaces", headers={"Accept": "application/vnd.kubernetes.protobuf"})
    assert r.status == 406
    assert _status(r)["reason"] == "NotAcceptable"
    r = live.request("GET", "/api/v1/namespaces",
                     headers={"Accept": "application/vnd.kubernetes.protobuf, */*"})
    assert r.status == 200 and r.headers["Content-Type"].startswith("application/json")


def test_yaml_and_pretty(live: LiveServer) -> None:  # noqa: F811
    r = live.request("GET", "/api/v1/namespaces/default", headers={"Accept": "application/yaml"})
    assert r.status == 200 and r.headers["Content-Type"] == "application/yaml"
    assert b"kind: Namespace" in r.data
    r = live.request("GET", "/api/v1/namespaces/default?pretty=true")
    assert r.data.startswith(b"{\n  ")


def test_yaml_body_is_accepted(live: LiveServer) -> None:  # noqa: F811
    _ns(live, "h-yaml")
    r = live.request("POST", "/api/v1/namespaces/h-yaml/configmaps",
                     body="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: yml}\ndata: {a: b}\n",
                     headers={"Content-Type": "application/yaml"})
    assert r.status == 201, r.data
    assert r.json()["data"] == {"a": "b"}


def test_delete_collection_and_delete_options(live: LiveServer) -> None:  # noqa: F811
    _ns(live, "h-del")
    for n, app in (("a", "x"), ("b", "x"), ("c", "y")):
        live.request("POST", "/api/v1/namespaces/h-del/configmaps",
                     body={**_cm(n, "h-del"), "metadata": {"name": n, "labels": {"app": app}}})
    r = live.request("DELETE", "/api/v1/namespaces/h-del/configmaps?labelSelector=app%3Dx")
    assert r.status == 200, r.data
    names = [i["metadata"]["name"] for i in live.request("GET", "/api/v1/namespaces/h-del/configmaps").json()["items"]]
    assert names == ["c"]
    r = live.request("DELETE", "/api/v1/namespaces/h-del/configmaps/c",
                     body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Sideways"})
    assert r.status == 422
    r = live.request("DELETE", "/api/v1/namespaces/h-del/configmaps/c?gracePeriodSeconds=0",
                     body={"propagationPolicy": "Background"})
    assert r.status == 200, r.data
    assert live.request("GET", "/api/v1/namespaces/h-del/configmaps/c").status == 404


def test_streaming_subresource_without_node_agent_is_503(live: LiveServer) -> None:  # noqa: F811
    _ns(live, "h-stream")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "a", "image": "busybox"}]}}
    r = live.request("POST", "/api/v1/namespaces/h-stream/pods", body=pod)
    assert r.status == 201, r.data
    r = live.request("GET", "/api/v1/namespaces/h-stream/pods/p/log")
    assert r.status == 503
    assert "no node agent for pod" in _status(r)["message"]
    assert live.request("GET", "/api/v1/namespaces/h-stream/pods/nope/log").status == 404


# -- discovery, OpenAPI, health, version ------------------------------------------------------------


def test_version(live: LiveServer) -> None:  # noqa: F811
    v = live.request("GET", "/version").json()
    assert v["major"] == "1" and v["minor"] == "32" and v["gitVersion"].startswith("v1.32.")
    assert {"gitCommit", "gitTreeState", "buildDate", "goVersion", "compiler", "platform"} <= set(v)


def test_legacy_discovery(live: LiveServer) -> None:  # noqa: F811
    api = live.request("GET", "/api").json()
    assert api["kind"] == "APIVersions" and api["versions"] == ["v1"]
    assert api["serverAddressByClientCIDRs"][0]["clientCIDR"] == "0.0.0.0/0"
    apis = live.request("GET", "/apis").json()
    assert apis["kind"] == "APIGroupList"
    apps = next(g for g in apis["groups"] if g["name"] == "apps")
    assert apps["preferredVersion"] == {"groupVersion": "apps/v1", "version": "v1"}
    core = live.request("GET", "/api/v1").json()
    assert core["kind"] == "APIResourceList" and core["groupVersion"] == "v1"
    by_name = {r["name"]: r for r in core["resources"]}
    pods = by_name["pods"]
    assert pods["singularName"] == "pod" and pods["namespaced"] and pods["kind"] == "Pod"
    assert "po" in pods["shortNames"] and "all" in pods["categories"] and pods["storageVersionHash"]
    assert set(pods["verbs"]) >= {"create", "get", "list", "watch", "patch", "update", "delete"}
    for sub in ("log", "exec", "attach", "portforward", "status", "binding", "eviction"):
        assert f"pods/{sub}" in by_name, sub
    assert by_name["pods/eviction"]["group"] == "policy"
    deploy = {r["name"]: r for r in live.request("GET", "/apis/apps/v1").json()["resources"]}
    scale = deploy["deployments/scale"]
    assert (scale["group"], scale["version"], scale["kind"]) == ("autoscaling", "v1", "Scale")
    group = live.request("GET", "/apis/apps").json()
    assert group["kind"] == "APIGroup" and group["name"] == "apps"


@pytest.mark.parametrize("version", ["v2", "v2beta1"])
def test_aggregated_discovery_negotiation(live: LiveServer, version: str) -> None:  # noqa: F811
    accept = (f"application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList,"
              "application/json")
    for path in ("/api", "/apis"):
        r = live.request("GET", path, headers={"Accept": accept})
        ct = r.headers["Content-Type"]
        assert "g=apidiscovery.k8s.io" in ct and f"v={version}" in ct and "as=APIGroupDiscoveryList" in ct
        body = r.json()
        assert body["kind"] == "APIGroupDiscoveryList" and body["apiVersion"] == f"apidiscovery.k8s.io/{version}"
        # a second ask with the ETag is answered 304
        again = live.request("GET", path, headers={"Accept": accept, "If-None-Match": r.headers["ETag"]})
        assert again.status == 304
    apis = live.request("GET", "/apis", headers={"Accept": accept}).json()
    apps = next(i for i in apis["items"] if i["metadata"]["name"] == "apps")
    deploy = next(r for r in apps["versions"][0]["resources"] if r["resource"] == "deployments")
    assert deploy["scope"] == "Namespaced" and deploy["responseKind"]["kind"] == "Deployment"
    scale = next(s for s in deploy["subresources"] if s["subresource"] == "scale")
    assert scale["responseKind"] == {"group": "autoscaling", "version": "v1", "kind": "Scale"}
    # without the aggregated types the legacy document comes back
    assert live.request("GET", "/apis", headers={"Accept": "application/json"}).json()["kind"] == "APIGroupList"


def test_openapi_v3_and_v2(live: LiveServer) -> None:  # noqa: F811
    index = live.request("GET", "/openapi/v3").json()
    url = index["paths"]["api/v1"]["serverRelativeURL"]
    assert url.startswith("/openapi/v3/api/v1?hash=")
    r = live.request("GET", url)
    assert r.status == 200 and r.json()["openapi"].startswith("3.")
    assert "immutable" in r.headers["Cache-Control"]
    stale = live.request("GET", "/openapi/v3/api/v1?hash=0000", headers={})
    assert stale.status == 301 and stale.headers["Location"] == url
    assert live.request("GET", "/openapi/v3/apis/nope/v1").status == 404
    v2 = live.request("GET", "/openapi/v2", headers={"Accept": "application/json"})
    assert v2.status == 200 and v2.json()["swagger"] == "2.0"
    pb = live.request("GET", "/openapi/v2",
                      headers={"Accept": "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"})
    assert pb.status == 406


def test_health_endpoints(live: LiveServer) -> None:  # noqa: F811
    r = live.request("GET", "/readyz")
    assert r.status == 200 and r.data == b"ok"
    r = live.request("GET", "/readyz?verbose")
    text = r.data.decode()
    assert "[+]ping ok" in text and "[+]etcd ok" in text and text.rstrip().endswith("readyz check passed")
    assert live.request("GET", "/livez/ping").data == b"ok"
    assert live.request("GET", "/healthz/nonexistent").status == 404
    r = live.request("GET", "/livez?verbose&exclude=etcd")
    assert "[+]etcd excluded: ok" in r.data.decode()


def test_namespace_subresources_and_cluster_scope(live: LiveServer) -> None:  # noqa: F811
    r = live.request("GET", "/api/v1/namespaces/default/status")
    assert r.status == 200 and r.json()["kind"] == "Namespace"
    r = live.request("GET", "/api/v1/namespaces/default")
    assert r.status == 200 and r.json()["metadata"]["name"] == "default"
    # a cluster-scoped resource under a namespace does not exist
    assert live.request("GET", "/api/v1/namespaces/default/nodes").status == 404
    # namespaced lists across all namespaces do, creates there do not
    assert live.request("GET", "/api/v1/configmaps").status == 200
    assert live.request("POST", "/api/v1/configmaps", body=_cm("x", "default")).status == 405
