"""Protobuf bodies as kubectl sends them decode to exactly the JSON kubectl would have sent."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from podvisor.apiserver.errors import BadRequestError
from podvisor.schema import model
from podvisor.schema.model import Field, ListOf, MapOf, Struct
from podvisor.schema.protobuf import (
    MAGIC,
    ProtobufDecodeError,
    ProtobufEncodeError,
    UnknownProtobufFieldsError,
    decode_object,
    decode_unknown,
    encode_object,
    encode_unknown,
)

FIXTURES = Path(__file__).with_name("fixtures")
CAPTURED = sorted(p.stem for p in FIXTURES.glob("*.pb"))
WITH_JSON = [n for n in CAPTURED if (FIXTURES / f"{n}.json").exists()]


# --- hand-written wire bytes (independent of the encoder under test) -------------------------------


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def vf(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def lf(number: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return varint(number << 3 | 2) + varint(len(data)) + data


def envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    return MAGIC + lf(1, lf(1, api_version) + lf(2, kind)) + lf(2, raw) + lf(3, b"") + lf(4, b"")


# --- real captures against the real schema ----------------------------------------------------------


@pytest.mark.parametrize("name", WITH_JSON)
def test_captured_body_decodes_to_kubectls_json(name: str) -> None:
    body = (FIXTURES / f"{name}.pb").read_bytes()
    expected = json.loads((FIXTURES / f"{name}.json").read_text())
    got = decode_unknown(body)
    assert got == expected
    assert list(got)[:2] == ["kind", "apiVersion"]


def test_deployment_keeps_replicas_zero_and_template_containers() -> None:
    got = decode_unknown((FIXTURES / "deployment.pb").read_bytes())
    spec = got["spec"]
    assert spec["replicas"] == 0  # a pointer: zero is meaningful and kept
    assert spec["strategy"] == {} and got["status"] == {}
    assert spec["template"]["metadata"] == {"creationTimestamp": None, "labels": {"app": "d1"}}
    (container,) = spec["template"]["spec"]["containers"]
    assert container == {
        "name": "busybox",
        "image": "busybox",
        "command": ["sh", "-c", "echo hi"],
        "ports": [{"containerPort": 8080}],
        "resources": {},
    }


def test_secret_data_is_base64_and_service_ports_are_int_or_string() -> None:
    secret = decode_unknown((FIXTURES / "secret-binary.pb").read_bytes())
    assert secret["data"] == {"bin": "AAH/"}  # bytes 00 01 ff
    svc = decode_unknown((FIXTURES / "service-clusterip.pb").read_bytes())
    assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(80, 8080), (443, 8443)]
    named = decode_unknown((FIXTURES / "service-nodeport.pb").read_bytes())
    assert named["spec"]["ports"][0]["targetPort"] == "http"


def test_self_subject_access_review() -> None:
    got = decode_unknown((FIXTURES / "ssar-subresource.pb").read_bytes())
    assert got == {
        "kind": "SelfSubjectAccessReview",
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {"creationTimestamp": None},
        "spec": {
            "resourceAttributes": {
                "namespace": "kube-system",
                "verb": "get",
                "group": "apps",
                "resource": "deployments",
                "subresource": "scale",
            }
        },
        "status": {"allowed": False},  # not omitempty upstream
    }


def test_token_request_keeps_non_omitempty_nulls() -> None:
    got = decode_unknown((FIXTURES / "tokenrequest.pb").read_bytes())
    assert got["spec"] == {"audiences": ["a1"], "expirationSeconds": 600, "boundObjectRef": None}
    assert got["status"] == {"token": "", "expirationTimestamp": None}


def test_eviction_with_delete_options_grace_period_zero() -> None:
    meta = lf(1, "p1") + lf(2, "") + lf(3, "default") + lf(8, b"")  # client-go writes empty strings too
    raw = lf(1, meta) + lf(2, vf(1, 0))
    got = decode_unknown(envelope("policy/v1", "Eviction", raw))
    assert got == {
        "kind": "Eviction",
        "apiVersion": "policy/v1",
        "metadata": {"name": "p1", "namespace": "default", "creationTimestamp": None},
        "deleteOptions": {"gracePeriodSeconds": 0},
    }


@pytest.mark.parametrize("name", CAPTURED)
def test_encode_then_decode_round_trips(name: str) -> None:
    decoded = decode_unknown((FIXTURES / f"{name}.pb").read_bytes())
    assert decode_unknown(encode_unknown(decoded)) == decoded


def test_kind_the_server_does_not_know_is_a_clear_400() -> None:
    with pytest.raises(ProtobufDecodeError, match='no kind "Widget" is registered for version "v1"'):
        decode_unknown(envelope("v1", "Widget", b""))


# --- the mapping, on small structs of our own ------------------------------------------------------

ALL = Struct(
    "test.All",
    "",
    {
        "apiVersion": Field("apiVersion", "string"),
        "kind": Field("kind", "string"),
        "s": Field("s", "string", proto=1),
        "b": Field("b", "boolean", proto=2),
        "i32": Field("i32", "int32", proto=3),
        "i64": Field("i64", "int64", proto=4),
        "d": Field("d", "double", proto=5),
        "raw": Field("raw", "bytes", proto=6),
        "t": Field("t", "date-time", proto=7),
        "mt": Field("mt", "micro-time", proto=8),
        "q": Field("q", "quantity", proto=9),
        "ios": Field("ios", "int-or-string", proto=10),
        "ext": Field("ext", "raw", proto=11),
        "labels": Field("labels", MapOf("string"), proto=12),
        "extra": Field("extra", MapOf(ListOf("string")), proto=13),
        "items": Field("items", ListOf("test.Item"), proto=14),
        "nums": Field("nums", ListOf("int32"), proto=15),
        "limits": Field("limits", MapOf("quantity"), proto=16),
        "hostPath": Field("hostPath", "string", proto=1, proto_via=(20,)),
        "emptyDir": Field("emptyDir", "string", proto=2, proto_via=(20,)),
    },
)
ITEM = Struct("test.Item", "", {"name": Field("name", "string", proto=1), "n": Field("n", "int32", proto=2)})
STRUCTS = {s.name: s for s in (ALL, ITEM)}


def lookup(name: str) -> Struct:
    return STRUCTS[name]


def kinds(group: str, version: str, kind: str) -> str | None:
    return "test.All" if (group, version, kind) == ("example.io", "v1", "All") else None


def test_every_scalar_kind() -> None:
    t = vf(1, 1700000000) + vf(2, 123456789)
    data = b"".join(
        [
            lf(1, "héllo"),
            vf(2, 1),
            vf(3, -5),  # negative int32: ten-byte two's complement
            vf(4, -(2**40)),
            varint(5 << 3 | 1) + struct.pack("<d", 2.5),
            lf(6, b"\x00\x01\xff"),
            lf(7, t),
            lf(8, t),
            lf(9, lf(1, "500m")),
            lf(10, vf(1, 1) + vf(2, 0) + lf(3, "http")),
            lf(11, lf(1, b'{"a":[1,2]}')),
        ]
    )
    assert decode_object(data, "test.All", structs=lookup) == {
        "s": "héllo",
        "b": True,
        "i32": -5,
        "i64": -(2**40),
        "d": 2.5,
        "raw": "AAH/",
        "t": "2023-11-14T22:13:20Z",  # Time drops sub-second parts
        "mt": "2023-11-14T22:13:20.123456Z",  # MicroTime keeps microseconds
        "q": "500m",
        "ios": "http",
        "ext": {"a": [1, 2]},
    }


def test_zero_values_on_the_wire_are_omitted_like_omitempty() -> None:
    data = lf(1, "") + vf(2, 0) + vf(3, 0) + lf(6, b"")
    assert decode_object(data, "test.All", structs=lookup) == {}


def test_empty_time_message_is_null_and_int_or_string_int() -> None:
    data = lf(7, b"") + lf(10, vf(1, 0) + vf(2, 8080) + lf(3, ""))
    assert decode_object(data, "test.All", structs=lookup) == {"t": None, "ios": 8080}


def test_maps_lists_and_wrapped_list_values() -> None:
    data = b"".join(
        [
            lf(12, lf(1, "app") + lf(2, "web")),
            lf(12, lf(1, "empty")),  # an entry without a value holds ""
            lf(13, lf(1, "groups") + lf(2, lf(1, "a") + lf(1, "b"))),
            lf(14, lf(1, "x") + vf(2, 1)),
            lf(14, lf(1, "y")),
            vf(15, 1),
            lf(15, varint(2) + varint(3)),  # packed form is read too
            lf(16, lf(1, "cpu") + lf(2, lf(1, "1"))),
        ]
    )
    assert decode_object(data, "test.All", structs=lookup) == {
        "labels": {"app": "web", "empty": ""},
        "extra": {"groups": ["a", "b"]},
        "items": [{"name": "x", "n": 1}, {"name": "y"}],
        "nums": [1, 2, 3],
        "limits": {"cpu": "1"},
    }


def test_embedded_message_fields_are_flattened() -> None:
    data = lf(1, "vol") + lf(20, lf(2, "memory"))
    assert decode_object(data, "test.All", structs=lookup) == {"s": "vol", "emptyDir": "memory"}


def test_presence_rules_follow_go_pointers_and_omitempty() -> None:
    spec = Struct(
        "io.k8s.api.apps.v1.DeploymentSpec",
        "",
        {
            "replicas": Field("replicas", "int32", proto=1),  # *int32: 0 kept
            "selector": Field("selector", "test.Item", proto=2),  # no omitempty pointer: null when absent
            "minReadySeconds": Field("minReadySeconds", "int32", proto=5),  # omitempty: 0 dropped
            "paused": Field("paused", "boolean", proto=7),
        },
    )
    structs = {spec.name: spec, ITEM.name: ITEM}.__getitem__
    got = decode_object(vf(1, 0) + vf(5, 0) + vf(7, 0), spec.name, structs=structs)
    assert got == {"replicas": 0, "selector": None}


def test_unknown_fields_are_reported_unless_zero() -> None:
    data = lf(1, "x") + vf(99, 0) + lf(98, b"") + lf(14, lf(1, "a") + vf(7, 3)) + vf(97, 5)
    with pytest.raises(UnknownProtobufFieldsError) as info:
        decode_object(data, "test.All", structs=lookup)
    assert info.value.fields == ["items[0].<protobuf field 7>", "<protobuf field 97>"]
    assert info.value.obj == {"s": "x", "items": [{"name": "a"}]}
    assert info.value.code == 400
    found: list[str] = []
    assert decode_object(data, "test.All", structs=lookup, unknown=found) == info.value.obj
    assert found == info.value.fields


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x10", "truncated varint"),
        (b"\x0a\x05ab", "runs past the end"),
        (b"\x10" + b"\xff" * 11, "longer than 10 bytes"),
        (b"\x00\x01", "invalid field number"),
        (varint(50 << 3 | 3), "unsupported wire type 3"),
        (lf(14, b"\x10"), "truncated varint"),
        (vf(1, 3), "field s has wire type 0, expected 2"),
        (lf(2, "x"), "field b has wire type 2, expected 0"),
        (lf(11, lf(1, b"{nope")), "ext does not hold JSON"),
        (lf(14, b"\x12\x01"), r"field items\[0\].n has wire type 2, expected 0"),
        (varint(5 << 3 | 1) + b"\x00\x00", "truncated double"),
    ],
)
def test_malformed_input_is_a_clear_400(data: bytes, message: str) -> None:
    with pytest.raises(ProtobufDecodeError, match=message) as info:
        decode_object(data, "test.All", structs=lookup)
    assert isinstance(info.value, BadRequestError)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"kind":"All"}', "does not start with the Kubernetes protobuf prefix"),
        (MAGIC + lf(1, lf(1, "example.io/v1")), "Object 'Kind' is missing"),
        (MAGIC + lf(1, lf(1, "example.io/v1") + lf(2, "All")) + lf(3, "gzip"), 'contentEncoding "gzip"'),
        (MAGIC + lf(1, lf(1, "v9") + lf(2, "All")), 'no kind "All" is registered for version "v9"'),
        (MAGIC + b"\x0a\x7f", "runs past the end"),
    ],
)
def test_malformed_envelope(body: bytes, message: str) -> None:
    with pytest.raises(ProtobufDecodeError, match=message):
        decode_unknown(body, structs=lookup, kinds=kinds)


def test_envelope_sets_kind_and_api_version_first() -> None:
    body = envelope("example.io/v1", "All", lf(1, "x"))
    got = decode_unknown(body, structs=lookup, kinds=kinds)
    assert got == {"kind": "All", "apiVersion": "example.io/v1", "s": "x"}
    assert list(got) == ["kind", "apiVersion", "s"]


def test_encoder_round_trips_every_mapping() -> None:
    obj: dict[str, Any] = {
        "apiVersion": "example.io/v1",
        "kind": "All",
        "s": "x",
        "b": False,
        "i32": -7,
        "i64": 2**50,
        "d": 0.25,
        "raw": "AAH/",
        "t": "2024-02-29T12:00:00Z",
        "mt": "2024-02-29T12:00:00.250000Z",
        "q": "2Gi",
        "ios": 443,
        "ext": {"nested": {"any": ["json", 1, None]}},
        "labels": {"b": "2", "a": "1"},
        "extra": {"g": ["x", "y"]},
        "items": [{"name": "n", "n": 3}],
        "nums": [4, 5],
        "limits": {"memory": "1Gi"},
        "emptyDir": "memory",
    }
    body = encode_unknown(obj, structs=lookup, kinds=kinds)
    assert body.startswith(MAGIC)
    back = decode_unknown(body, structs=lookup, kinds=kinds)
    expected = dict(obj, b=False)
    expected.pop("b")  # an omitempty false is not written back, as in Go's JSON
    assert back == expected


def test_encoder_refuses_values_that_do_not_fit() -> None:
    with pytest.raises(ProtobufEncodeError, match="i32: expected an integer"):
        encode_object({"i32": "seven"}, "test.All", structs=lookup)
    with pytest.raises(ProtobufEncodeError, match="apiVersion and kind"):
        encode_unknown({"s": "x"}, structs=lookup, kinds=kinds)


def test_model_knows_the_scalars_the_codec_maps() -> None:
    assert {"date-time", "micro-time", "quantity", "int-or-string", "raw", "bytes"} <= model.SCALARS


def test_presence_facts_name_fields_the_schema_has() -> None:
    from podvisor.schema import structs
    from podvisor.schema._presence import PRESENCE

    known = structs()
    stale = [
        (s, f) for s, fields in PRESENCE.items() if s in known for f in fields if f not in known[s].fields
    ]
    assert stale == []
    assert PRESENCE["io.k8s.api.apps.v1.DeploymentSpec"]["replicas"] == "p"
