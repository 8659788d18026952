"""Server-side Tables: the columns and cells kubectl prints."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from podvisor.apiserver.tables import human_duration, pod_status, table_for
from podvisor.schema import resource_for

NOW = datetime(2025, 1, 10, 12, 0, 0, tzinfo=UTC)


def ago(**kw: float) -> str:
    return (NOW - timedelta(**kw)).strftime("%Y-%m-%dT%H:%M:%SZ")


def res(group: str, plural: str) -> Any:
    r = resource_for(group, "v1", plural)
    assert r is not None
    return r


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"), (-1, "0s"), (0, "0s"), (59, "59s"), (119, "119s"), (120, "2m"), (310, "5m10s"),
        (600, "10m"), (179 * 60, "179m"), (3 * 3600, "3h"), (3 * 3600 + 1800, "3h30m"), (8 * 3600, "8h"),
        (47 * 3600, "47h"), (2 * 86400, "2d"), (2 * 86400 + 3 * 3600, "2d3h"), (8 * 86400, "8d"),
        (400 * 86400, "400d"), (2 * 365 * 86400, "2y"), (3 * 365 * 86400 + 5 * 86400, "3y5d"), (9 * 365 * 86400, "9y"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def pod(status: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default", "creationTimestamp": ago(minutes=5), **meta},
        "spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i1"}, {"name": "i2"}],
                 "nodeName": "n1"},
        "status": status,
    }


def running(name: str, ready: bool = True, restarts: int = 0) -> dict[str, Any]:
    return {"name": name, "ready": ready, "restartCount": restarts, "state": {"running": {}}}


def test_pod_columns_and_cells() -> None:
    p = pod({"phase": "Running", "podIP": "10.88.0.5", "initContainerStatuses": [
        {"name": "i1", "state": {"terminated": {"exitCode": 0}}}, {"name": "i2", "state": {"terminated": {"exitCode": 0}}}],
        "containerStatuses": [running("a"), running("b", restarts=2) | {"lastState": {"terminated": {"finishedAt": ago(minutes=3)}}}]})
    t = table_for(res("", "pods"), [p], resource_version="42", now=NOW)
    assert t["kind"] == "Table" and t["apiVersion"] == "meta.k8s.io/v1" and t["metadata"] == {"resourceVersion": "42"}
    cols = [(c["name"], c["priority"]) for c in t["columnDefinitions"]]
    assert cols == [("Name", 0), ("Ready", 0), ("Status", 0), ("Restarts", 0), ("Age", 0), ("IP", 1), ("Node", 1),
                    ("Nominated Node", 1), ("Readiness Gates", 1)]
    assert t["columnDefinitions"][0]["format"] == "name"
    row = t["rows"][0]
    assert row["cells"] == ["p", "2/2", "Running", "2 (3m ago)", "5m", "10.88.0.5", "n1", "<none>", "<none>"]
    assert row["object"] == {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": p["metadata"]}


@pytest.mark.parametrize(
    ("status", "meta", "expected"),
    [
        ({"phase": "Pending"}, {}, "Pending"),
        ({"phase": "Pending", "initContainerStatuses": [
            {"name": "i1", "state": {"terminated": {"exitCode": 0}}}, {"name": "i2", "state": {"running": {}}}]},
         {}, "Init:1/2"),
        ({"phase": "Pending", "initContainerStatuses": [
            {"name": "i1", "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}, {}, "Init:ImagePullBackOff"),
        ({"phase": "Pending", "initContainerStatuses": [
            {"name": "i1", "state": {"terminated": {"exitCode": 3}}}]}, {}, "Init:ExitCode:3"),
        ({"phase": "Running", "containerStatuses": [
            {"name": "a", "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "restartCount": 4}, running("b")]},
         {}, "CrashLoopBackOff"),
        ({"phase": "Succeeded", "containerStatuses": [
            {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            {"name": "b", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}, {}, "Completed"),
        ({"phase": "Running", "containerStatuses": [
            {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}, running("b")],
          "conditions": [{"type": "Ready", "status": "False"}]}, {}, "NotReady"),
        ({"phase": "Failed", "reason": "Evicted"}, {}, "Evicted"),
        ({"phase": "Running", "containerStatuses": [running("a"), running("b")]},
         {"deletionTimestamp": ago(seconds=1)}, "Terminating"),
        ({"phase": "Running", "containerStatuses": [
            {"name": "a", "state": {"terminated": {"exitCode": 137, "signal": 9}}}]}, {}, "Signal:9"),
    ],
)
def test_pod_status_like_kubectl(status: dict[str, Any], meta: dict[str, Any], expected: str) -> None:
    assert pod_status(pod(status, **meta))[0] == expected


def test_include_object_modes() -> None:
    p = pod({"phase": "Succeeded"})
    full = table_for(res("", "pods"), [p], include_object="Object", now=NOW)["rows"][0]
    assert full["object"] is p
    assert full["conditions"][0]["type"] == "Completed"
    bare = table_for(res("", "pods"), [p], include_object="None", now=NOW)["rows"][0]
    assert "object" not in bare


def test_deployment_service_node_namespace_tables() -> None:
    dep = {"metadata": {"name": "web", "creationTimestamp": ago(days=2, hours=3)},
           "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}},
           "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}
    t = table_for(res("apps", "deployments"), [dep], now=NOW)
    assert [c["name"] for c in t["columnDefinitions"]] == [
        "Name", "Ready", "Up-to-date", "Available", "Age", "Containers", "Images", "Selector"]
    assert t["rows"][0]["cells"] == ["web", "2/3", 3, 2, "2d3h", "c", "nginx:1", "app=web"]

    svc: dict[str, Any] = {"metadata": {"name": "web", "creationTimestamp": ago(hours=1)},
           "spec": {"type": "NodePort", "clusterIP": "10.96.0.20",
                    "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}}
    t = table_for(res("", "services"), [svc], now=NOW)
    assert [c["name"] for c in t["columnDefinitions"]][:6] == ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age"]
    assert t["rows"][0]["cells"][:6] == ["web", "NodePort", "10.96.0.20", "<none>", "80:30080/TCP,53/UDP", "60m"]
    lb = dict(svc, spec=dict(svc["spec"], type="LoadBalancer"))
    assert table_for(res("", "services"), [lb], now=NOW)["rows"][0]["cells"][3] == "<pending>"

    node = {"metadata": {"name": "pv-host-1", "creationTimestamp": ago(seconds=12),
                         "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "spec": {"unschedulable": True},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "nodeInfo": {"kubeletVersion": "v1.32.0-podvisor"}}}
    t = table_for(res("", "nodes"), [node], now=NOW)
    assert t["rows"][0]["cells"][:5] == ["pv-host-1", "Ready,SchedulingDisabled", "control-plane", "12s", "v1.32.0-podvisor"]

    ns = {"metadata": {"name": "default", "creationTimestamp": ago(days=1)}, "status": {"phase": "Active"}}
    t = table_for(res("", "namespaces"), [ns], now=NOW)
    assert [c["name"] for c in t["columnDefinitions"]] == ["Name", "Status", "Age"]
    assert t["rows"][0]["cells"] == ["default", "Active", "24h"]


def test_config_tables() -> None:
    cm = {"metadata": {"name": "c", "creationTimestamp": ago(minutes=1)}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": ""}}
    assert table_for(res("", "configmaps"), [cm], now=NOW)["rows"][0]["cells"] == ["c", 3, "60s"]
    secret = {"metadata": {"name": "s", "creationTimestamp": ago(minutes=1)}, "type": "Opaque", "data": {"a": "eA=="}}
    t = table_for(res("", "secrets"), [secret], now=NOW)
    assert [c["name"] for c in t["columnDefinitions"]] == ["Name", "Type", "Data", "Age"]
    assert t["rows"][0]["cells"] == ["s", "Opaque", 1, "60s"]


def test_event_tables_for_both_groups() -> None:
    ev = {"metadata": {"name": "p.1", "namespace": "default"}, "type": "Normal", "reason": "Pulled",
          "involvedObject": {"kind": "Pod", "name": "hello", "fieldPath": "spec.containers{c}"},
          "message": "Pulled image ", "firstTimestamp": ago(minutes=4), "lastTimestamp": ago(minutes=1), "count": 2,
          "source": {"component": "spherelet", "host": "pv-host-1"}}
    t = table_for(res("", "events"), [ev], now=NOW)
    assert [c["name"] for c in t["columnDefinitions"] if c["priority"] == 0] == [
        "Last Seen", "Type", "Reason", "Object", "Message"]
    assert t["rows"][0]["cells"] == ["60s", "Normal", "Pulled", "pod/hello", "spec.containers{c}",
                                     "spherelet, pv-host-1", "Pulled image", "4m", 2, "p.1"]
    v1 = {"metadata": ev["metadata"], "type": "Normal", "reason": "Pulled", "regarding": ev["involvedObject"],
          "note": "Pulled image", "deprecatedFirstTimestamp": ev["firstTimestamp"],
          "deprecatedLastTimestamp": ev["lastTimestamp"], "deprecatedCount": 2, "deprecatedSource": ev["source"]}
    t1 = table_for(res("events.k8s.io", "events"), [v1], now=NOW)
    assert t1["rows"][0]["cells"] == t["rows"][0]["cells"]


def test_job_table_and_default_printer() -> None:
    job = {"metadata": {"name": "pi", "creationTimestamp": ago(minutes=2)},
           "spec": {"completions": 1, "template": {"spec": {"containers": [{"name": "c", "image": "perl"}]}},
                    "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u"}}},
           "status": {"succeeded": 1, "startTime": ago(minutes=2), "completionTime": ago(seconds=70),
                      "conditions": [{"type": "Complete", "status": "True"}]}}
    t = table_for(res("batch", "jobs"), [job], now=NOW)
    assert t["rows"][0]["cells"][:5] == ["pi", "Complete", "1/1", "50s", "2m"]
    sa = {"metadata": {"name": "default", "creationTimestamp": ago(hours=30)}}
    t = table_for(res("", "serviceaccounts"), [sa], now=NOW, continue_token="abc")
    assert t["rows"][0]["cells"] == ["default", 0, "30h"] and t["metadata"] == {"continue": "abc"}
    lease = {"metadata": {"name": "n1"}, "spec": {"holderIdentity": "n1"}}
    assert table_for(res("coordination.k8s.io", "leases"), [lease], now=NOW)["rows"][0]["cells"] == ["n1", "n1", "<unknown>"]
