"""Per-resource behaviour: defaults, validation messages, subresources, allocation, admission."""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import AsyncIterator
from typing import Any

import pytest

from podvisor.apiserver import errors as api
from podvisor.apiserver.registry import ResourceRegistry, bootstrap, build_registry
from podvisor.apiserver.rest import ListOptions, RequestOptions, UserInfo
from podvisor.apiserver.store import MERGE_PATCH, STRATEGIC_PATCH
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
    reg = await build_registry(storage)
    await bootstrap(reg)
    return reg


def pod(name: str = "p", **spec: Any) -> dict[str, Any]:
    spec.setdefault("containers", [{"name": "c", "image": "busybox"}])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


async def invalid(coro: Any) -> api.InvalidError:
    with pytest.raises(api.InvalidError) as e:
        await coro
    return e.value


# --- pods --------------------------------------------------------------------------------------


async def test_pod_defaults(registry: ResourceRegistry) -> None:
    containers = [
        {"name": "a", "image": "busybox", "ports": [{"containerPort": 80}]},
        {"name": "b", "image": "busybox:latest"},
        {"name": "c", "image": "registry.local:5000/app:1.2"},
        {"name": "d", "image": "app@sha256:" + "0" * 64, "readinessProbe": {"httpGet": {"port": 80}}},
    ]
    p = (await registry.store("", "pods").create("default", pod(containers=containers), opts())).body
    spec = p["spec"]
    assert spec["restartPolicy"] == "Always" and spec["dnsPolicy"] == "ClusterFirst"
    assert spec["terminationGracePeriodSeconds"] == 30 and spec["schedulerName"] == "default-scheduler"
    assert spec["securityContext"] == {} and spec["enableServiceLinks"] is True
    assert spec["serviceAccountName"] == "default" and spec["priority"] == 0
    assert spec["preemptionPolicy"] == "PreemptLowerPriority"
    assert {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
            "tolerationSeconds": 300} in spec["tolerations"]
    assert {t["key"] for t in spec["tolerations"]} == {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}
    assert [c["imagePullPolicy"] for c in spec["containers"]] == ["Always", "Always", "IfNotPresent", "IfNotPresent"]
    a = spec["containers"][0]
    assert a["terminationMessagePath"] == "/dev/termination-log" and a["terminationMessagePolicy"] == "File"
    assert a["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    probe = spec["containers"][3]["readinessProbe"]
    assert probe["periodSeconds"] == 10 and probe["timeoutSeconds"] == 1 and probe["httpGet"]["scheme"] == "HTTP"
    assert p["status"] == {"phase": "Pending", "qosClass": "BestEffort"}


@pytest.mark.parametrize(
    ("resources", "qos"),
    [
        ({"limits": {"cpu": "1", "memory": "1Gi"}}, "Guaranteed"),
        ({"requests": {"cpu": "100m"}}, "Burstable"),
        ({"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "1Gi"}}, "Burstable"),
    ],
)
async def test_pod_qos_class(registry: ResourceRegistry, resources: dict[str, Any], qos: str) -> None:
    p = pod(containers=[{"name": "c", "image": "x", "resources": resources}])
    created = (await registry.store("", "pods").create("default", p, opts())).body
    assert created["status"]["qosClass"] == qos


async def test_pod_validation_messages(registry: ResourceRegistry) -> None:
    containers = [
        {"name": "web", "image": "x", "ports": [{"containerPort": 70000}]},
        {"name": "web"},
        {"name": "Bad", "image": "x", "env": [{"name": "1X", "value": "v"}]},
    ]
    err = await invalid(registry.store("", "pods").create("default", pod(containers=containers), opts()))
    by_field = {c.field: c.message for c in err.causes}
    assert by_field["spec.containers[0].ports[0].containerPort"] == (
        "Invalid value: 70000: must be between 1 and 65535, inclusive"
    )
    assert by_field["spec.containers[1].name"] == 'Duplicate value: "web"'
    assert by_field["spec.containers[1].image"] == "Required value"
    assert by_field["spec.containers[2].name"].startswith('Invalid value: "Bad": a lowercase RFC 1123 label')
    assert "a valid environment variable name" in by_field["spec.containers[2].env[0].name"]
    err = await invalid(registry.store("", "pods").create("default", pod(containers=[]), opts()))
    assert err.message == 'Pod "p" is invalid: spec.containers: Required value'
    err = await invalid(registry.store("", "pods").create("default", pod(restartPolicy="Sometimes"), opts()))
    assert err.causes[0].message == 'Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never"'
    vol = pod(containers=[{"name": "c", "image": "x", "volumeMounts": [{"name": "data", "mountPath": "/d"}]}])
    err = await invalid(registry.store("", "pods").create("default", vol, opts()))
    assert err.causes[0].field == "spec.containers[0].volumeMounts[0].name"
    assert err.causes[0].message == 'Not found: "data"'


async def test_pod_update_rules(registry: ResourceRegistry) -> None:
    pods = registry.store("", "pods")
    await pods.create("default", pod(), opts())
    r = await pods.patch("default", "p", STRATEGIC_PATCH,
                         {"spec": {"containers": [{"name": "c", "image": "busybox:1.37"}]}}, opts())
    assert r.body["spec"]["containers"][0]["image"] == "busybox:1.37"
    err = await invalid(pods.patch("default", "p", MERGE_PATCH, {"spec": {"restartPolicy": "Never"}}, opts()))
    assert err.causes[0].field == "spec"
    assert err.causes[0].message.startswith(
        "Forbidden: pod updates may not change fields other than `spec.containers[*].image`"
    )
    r = await pods.patch("default", "p", MERGE_PATCH, {"metadata": {"labels": {"a": "b"}}}, opts())
    assert r.body["metadata"]["labels"] == {"a": "b"}


async def test_pod_status_update_keeps_spec(registry: ResourceRegistry) -> None:
    pods = registry.store("", "pods")
    created = (await pods.create("default", pod(), opts())).body
    body = dict(created, status={"phase": "Running", "podIP": "10.88.0.5"})
    body["spec"] = dict(created["spec"], nodeName="sneaky")
    r = await pods.update("default", "p", body, opts(), subresource="status")
    assert r.body["status"]["phase"] == "Running" and r.body["status"]["qosClass"] == "BestEffort"
    assert "nodeName" not in r.body["spec"]
    listed = await pods.list("", ListOptions(field_selector="status.podIP=10.88.0.5"))
    assert len(listed["items"]) == 1


async def test_binding(registry: ResourceRegistry) -> None:
    pods = registry.store("", "pods")
    await pods.create("default", pod(), opts())
    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n1"}}
    r = await pods.create("default", binding, opts(), subresource="binding", name="p")
    assert r.code == 201 and r.body["status"] == "Success"
    bound = await pods.get("default", "p")
    assert bound["spec"]["nodeName"] == "n1"
    assert any(c["type"] == "PodScheduled" and c["status"] == "True" for c in bound["status"]["conditions"])
    with pytest.raises(api.ConflictError) as e:
        await pods.create("default", dict(binding, target={"name": "n2"}), opts(), subresource="binding", name="p")
    assert e.value.message == 'Operation cannot be fulfilled on pods/binding "p": pod p is already assigned to node "n1"'
    err = await invalid(pods.create("default", {"metadata": {"name": "p"}, "target": {}}, opts(),
                                    subresource="binding", name="p"))
    assert err.causes[0].field == "target.name"


async def test_eviction_deletes_gracefully(registry: ResourceRegistry) -> None:
    pods = registry.store("", "pods")
    await pods.create("default", pod(nodeName="n1"), opts())
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p"}}
    r = await pods.create("default", eviction, opts(), subresource="eviction", name="p")
    assert r.code == 201
    assert (await pods.get("default", "p"))["metadata"]["deletionTimestamp"]
    forced = dict(eviction, deleteOptions={"gracePeriodSeconds": 0})
    await pods.create("default", forced, opts(), subresource="eviction", name="p")
    with pytest.raises(api.NotFoundError):
        await pods.get("default", "p")
    with pytest.raises(api.NotFoundError):
        await pods.create("default", eviction, opts(), subresource="eviction", name="p")


@pytest.mark.parametrize(
    "spec",
    [
        {"hostNetwork": True},
        {"containers": [{"name": "c", "image": "x", "securityContext": {"privileged": True}}]},
        {"volumes": [{"name": "h", "hostPath": {"path": "/"}}]},
    ],
)
async def test_pods_never_touch_host_hardware(registry: ResourceRegistry, spec: dict[str, Any]) -> None:
    with pytest.raises(api.ForbiddenError) as e:
        await registry.store("", "pods").create("default", pod(**spec), opts())
    assert e.value.message.startswith('pods "p" is forbidden: a pod runs in its own VM')


# --- namespaces, configmaps, secrets -----------------------------------------------------------


async def test_namespace_lifecycle(registry: ResourceRegistry) -> None:
    ns = registry.store("", "namespaces")
    created = (await ns.create("", {"metadata": {"name": "team"}}, opts())).body
    assert created["metadata"]["labels"] == {"kubernetes.io/metadata.name": "team"}
    assert created["spec"] == {"finalizers": ["kubernetes"]} and created["status"] == {"phase": "Active"}
    err = await invalid(ns.create("", {"metadata": {"name": "a.b"}}, opts()))
    assert "a lowercase RFC 1123 label" in err.message
    r = await ns.delete("", "team", {}, opts())
    assert r.body["status"]["phase"] == "Terminating" and r.body["metadata"]["deletionTimestamp"]
    still = await ns.delete("", "team", {}, opts())
    assert still.body["metadata"]["name"] == "team"
    current = await ns.get("", "team")
    current["spec"]["finalizers"] = []
    await ns.update("", "team", current, opts(), subresource="finalize")
    with pytest.raises(api.NotFoundError):
        await ns.get("", "team")
    with pytest.raises(api.ForbiddenError) as e:
        await ns.delete("", "kube-system", {}, opts())
    assert e.value.message == 'namespaces "kube-system" is forbidden: this namespace may not be deleted'


async def test_bootstrap_is_idempotent(registry: ResourceRegistry) -> None:
    await bootstrap(registry)
    names = [n["metadata"]["name"] for n in (await registry.store("", "namespaces").list("", ListOptions()))["items"]]
    assert names == ["default", "kube-node-lease", "kube-public", "kube-system"]
    svc = await registry.store("", "services").get("default", "kubernetes")
    assert svc["spec"]["clusterIP"] == "10.96.0.1" and svc["spec"]["ports"][0]["port"] == 443


async def test_configmap_rules(registry: ResourceRegistry) -> None:
    cms = registry.store("", "configmaps")
    err = await invalid(cms.create("default", {"metadata": {"name": "c"}, "data": {"bad key": "v"}}, opts()))
    assert err.causes[0].field == "data[bad key]"
    assert "a valid config key must consist of alphanumeric characters" in err.causes[0].message
    await cms.create("default", {"metadata": {"name": "frozen"}, "data": {"a": "1"}, "immutable": True}, opts())
    err = await invalid(cms.patch("default", "frozen", MERGE_PATCH, {"data": {"a": "2"}}, opts()))
    assert err.message == 'ConfigMap "frozen" is invalid: data: Forbidden: field is immutable when `immutable` is set'


async def test_secret_rules(registry: ResourceRegistry) -> None:
    secrets = registry.store("", "secrets")
    s = (await secrets.create("default", {"metadata": {"name": "s"}, "stringData": {"user": "admin"},
                                          "data": {"a": base64.b64encode(b"x").decode()}}, opts())).body
    assert s["type"] == "Opaque" and "stringData" not in s
    assert base64.b64decode(s["data"]["user"]) == b"admin"
    with pytest.raises(api.BadRequestError):
        await secrets.create("default", {"metadata": {"name": "b"}, "data": {"a": "%%%"}}, opts())
    err = await invalid(secrets.create("default", {"metadata": {"name": "t"}, "type": "kubernetes.io/tls"}, opts()))
    assert [c.field for c in err.causes] == ["data[tls.crt]", "data[tls.key]"]
    err = await invalid(secrets.patch("default", "s", MERGE_PATCH, {"type": "kubernetes.io/basic-auth"}, opts()))
    assert any(c.field == "type" and "field is immutable" in c.message for c in err.causes)
    listed = await secrets.list("default", ListOptions(field_selector="type=Opaque"))
    assert [i["metadata"]["name"] for i in listed["items"]] == ["s"]


# --- services ----------------------------------------------------------------------------------


def service(name: str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("ports", [{"port": 80}])
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}


async def test_service_defaults_and_allocation(registry: ResourceRegistry) -> None:
    svcs = registry.store("", "services")
    a = (await svcs.create("default", service("a", selector={"app": "a"}), opts())).body["spec"]
    b = (await svcs.create("default", service("b", type="NodePort"), opts())).body["spec"]
    assert a["type"] == "ClusterIP" and a["sessionAffinity"] == "None"
    assert a["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
    assert a["clusterIPs"] == [a["clusterIP"]] and a["ipFamilies"] == ["IPv4"] and a["ipFamilyPolicy"] == "SingleStack"
    net = ipaddress.ip_network("10.96.0.0/12")
    assert ipaddress.ip_address(a["clusterIP"]) in net and a["clusterIP"] != b["clusterIP"]
    assert a["clusterIP"] != "10.96.0.1"
    assert 30000 <= b["ports"][0]["nodePort"] <= 32767 and b["externalTrafficPolicy"] == "Cluster"
    headless = (await svcs.create("default", service("h", clusterIP="None"), opts())).body["spec"]
    assert headless["clusterIPs"] == ["None"]


async def test_service_ip_conflicts_and_release(registry: ResourceRegistry) -> None:
    svcs = registry.store("", "services")
    await svcs.create("default", service("a", clusterIP="10.96.0.10"), opts())
    err = await invalid(svcs.create("default", service("b", clusterIP="10.96.0.10"), opts()))
    assert err.causes[0].field == "spec.clusterIPs"
    assert err.causes[0].message == 'Invalid value: ["10.96.0.10"]: failed to allocate IP 10.96.0.10: provided IP is already allocated'
    err = await invalid(svcs.create("default", service("c", clusterIP="192.168.1.1"), opts()))
    assert "is not in the valid range" in err.causes[0].message
    await svcs.delete("default", "a", {}, opts())
    again = (await svcs.create("default", service("b", clusterIP="10.96.0.10"), opts())).body
    assert again["spec"]["clusterIP"] == "10.96.0.10"


async def test_service_update_keeps_allocations(registry: ResourceRegistry) -> None:
    svcs = registry.store("", "services")
    created = (await svcs.create("default", service("a", type="NodePort"), opts())).body
    replaced = (await svcs.update("default", "a", service("a", type="NodePort", selector={"x": "y"}), opts())).body
    assert replaced["spec"]["clusterIP"] == created["spec"]["clusterIP"]
    assert replaced["spec"]["ports"][0]["nodePort"] == created["spec"]["ports"][0]["nodePort"]
    err = await invalid(svcs.patch("default", "a", MERGE_PATCH, {"spec": {"clusterIP": "10.96.0.77"}}, opts()))
    assert err.causes[0].field == "spec.clusterIPs[0]" and "may not change once set" in err.causes[0].message
    to_cluster_ip = await svcs.patch("default", "a", MERGE_PATCH, {"spec": {"type": "ClusterIP"}}, opts())
    assert "nodePort" not in to_cluster_ip.body["spec"]["ports"][0]


async def test_service_validation(registry: ResourceRegistry) -> None:
    svcs = registry.store("", "services")
    err = await invalid(svcs.create("default", service("1bad"), opts()))
    assert "a DNS-1035 label must consist of lower case alphanumeric characters" in err.message
    err = await invalid(svcs.create("default", service("x", ports=[{"port": 80}, {"port": 81}]), opts()))
    assert [c.field for c in err.causes] == ["spec.ports[0].name", "spec.ports[1].name"]
    err = await invalid(svcs.create("default", service("x", type="Weird"), opts()))
    assert err.causes[0].message == (
        'Unsupported value: "Weird": supported values: "ClusterIP", "ExternalName", "LoadBalancer", "NodePort"'
    )


# --- apps and batch ----------------------------------------------------------------------------


def deployment(name: str = "web", labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": labels or {"app": name}},
                         "spec": {"containers": [{"name": "c", "image": "nginx"}]}},
        },
    }


async def test_deployment_defaults(registry: ResourceRegistry) -> None:
    d = (await registry.store("apps", "deployments").create("default", deployment(), opts())).body
    spec = d["spec"]
    assert spec["replicas"] == 1 and spec["revisionHistoryLimit"] == 10 and spec["progressDeadlineSeconds"] == 600
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
    tspec = spec["template"]["spec"]
    assert tspec["restartPolicy"] == "Always" and tspec["containers"][0]["imagePullPolicy"] == "Always"
    assert "serviceAccountName" not in tspec and "tolerations" not in tspec
    assert d["metadata"]["generation"] == 1


async def test_deployment_validation(registry: ResourceRegistry) -> None:
    deps = registry.store("apps", "deployments")
    err = await invalid(deps.create("default", deployment(labels={"app": "other"}), opts()))
    assert err.causes[0].field == "spec.template.metadata.labels"
    assert err.causes[0].message == 'Invalid value: {"app":"other"}: `selector` does not match template `labels`'
    assert err.message.startswith('Deployment.apps "web" is invalid: ')
    await deps.create("default", deployment(), opts())
    err = await invalid(deps.patch("default", "web", MERGE_PATCH, {"spec": {"selector": {"matchLabels": {"app": "web", "v": "2"}},
                                   "template": {"metadata": {"labels": {"v": "2"}}}}}, opts()))
    assert any(c.field == "spec.selector" and c.message.endswith("field is immutable") for c in err.causes)


async def test_scale_subresource(registry: ResourceRegistry) -> None:
    deps = registry.store("apps", "deployments")
    created = (await deps.create("default", deployment(), opts())).body
    scale = await deps.get("default", "web", subresource="scale")
    assert scale["kind"] == "Scale" and scale["apiVersion"] == "autoscaling/v1"
    assert scale["spec"] == {"replicas": 1} and scale["status"]["selector"] == "app=web"
    r = await deps.patch("default", "web", MERGE_PATCH, {"spec": {"replicas": 3}}, opts(), subresource="scale")
    assert r.body["spec"]["replicas"] == 3
    d = await deps.get("default", "web")
    assert d["spec"]["replicas"] == 3 and d["metadata"]["generation"] == 2
    stale = dict(scale, spec={"replicas": 5})
    with pytest.raises(api.ConflictError) as e:
        await deps.update("default", "web", stale, opts(), subresource="scale")
    assert 'deployments.apps "web"' in e.value.message
    fresh = await deps.get("default", "web", subresource="scale")
    ok = await deps.update("default", "web", dict(fresh, spec={"replicas": 5}), opts(), subresource="scale")
    assert ok.body["spec"]["replicas"] == 5
    err = await invalid(deps.update("default", "web", dict(fresh, spec={"replicas": -1}), opts(), subresource="scale"))
    assert err.message == 'Scale.autoscaling "web" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0'
    assert created["metadata"]["uid"] == scale["metadata"]["uid"]


async def test_job_selector_generation(registry: ResourceRegistry) -> None:
    jobs = registry.store("batch", "jobs")
    job = {"metadata": {"name": "pi"}, "spec": {"template": {"spec": {
        "restartPolicy": "Never", "containers": [{"name": "c", "image": "perl"}]}}}}
    j = (await jobs.create("default", job, opts())).body
    uid = j["metadata"]["uid"]
    assert j["spec"]["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    labels = j["spec"]["template"]["metadata"]["labels"]
    assert labels["batch.kubernetes.io/job-name"] == "pi" and labels["controller-uid"] == uid
    assert j["spec"]["completions"] == 1 and j["spec"]["parallelism"] == 1 and j["spec"]["backoffLimit"] == 6
    bad = {"metadata": {"name": "bad"}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}}}
    err = await invalid(jobs.create("default", bad, opts()))
    assert err.causes[0].field == "spec.template.spec.restartPolicy"
    assert err.causes[0].message == 'Unsupported value: "Always": supported values: "OnFailure", "Never"'


# --- small resources ---------------------------------------------------------------------------


async def test_self_subject_access_review(registry: ResourceRegistry, storage: SQLiteStorage) -> None:
    before = await storage.current_revision()
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
              "spec": {"resourceAttributes": {"verb": "create", "resource": "pods", "namespace": "default"}}}
    r = await registry.store("authorization.k8s.io", "selfsubjectaccessreviews").create("", review, opts())
    assert r.code == 201 and r.body["status"]["allowed"] is True
    assert await storage.current_revision() == before
    err = await invalid(registry.store("authorization.k8s.io", "selfsubjectaccessreviews").create(
        "", {"spec": {}}, opts()))
    assert "exactly one of nonResourceAttributes or resourceAttributes must be specified" in err.message


async def test_runtimeclass_and_lease(registry: ResourceRegistry) -> None:
    rcs = registry.store("node.k8s.io", "runtimeclasses")
    err = await invalid(rcs.create("", {"metadata": {"name": "vm"}}, opts()))
    assert err.message == 'RuntimeClass.node.k8s.io "vm" is invalid: handler: Required value'
    await rcs.create("", {"metadata": {"name": "vm"}, "handler": "crx"}, opts())
    leases = registry.store("coordination.k8s.io", "leases")
    lease = {"metadata": {"name": "n1"}, "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40}}
    r = await leases.update("kube-node-lease", "n1", lease, opts())  # create on update
    assert r.code == 201 and "generation" not in r.body["metadata"]


async def test_node_keeps_status_on_create(registry: ResourceRegistry) -> None:
    nodes = registry.store("", "nodes")
    node = {"metadata": {"name": "pv-host-1"}, "spec": {"unschedulable": True},
            "status": {"capacity": {"cpu": "4"}, "conditions": [{"type": "Ready", "status": "True"}]}}
    n = (await nodes.create("", node, opts())).body
    assert n["status"]["allocatable"] == {"cpu": "4"} and n["status"]["conditions"][0]["type"] == "Ready"
    listed = await nodes.list("", ListOptions(field_selector="spec.unschedulable=true"))
    assert [i["metadata"]["name"] for i in listed["items"]] == ["pv-host-1"]
