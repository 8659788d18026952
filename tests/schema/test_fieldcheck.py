"""Request bodies are decoded and checked against the schema the way the API server words it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from podvisor.apiserver.errors import (
    BadRequestError,
    InvalidError,
    RequestEntityTooLargeError,
    UnsupportedMediaTypeError,
)
from podvisor.schema.bodies import (
    MAX_BODY,
    OBJECT_MEDIA_TYPES,
    PATCH_MEDIA_TYPES,
    DuplicateField,
    decode_body,
)
from podvisor.schema.fieldcheck import (
    apply_field_validation,
    check_object,
    prune_unknown,
    strict_warnings,
)

DEPLOYMENT = "io.k8s.api.apps.v1.Deployment"
CONFIGMAP = "io.k8s.api.core.v1.ConfigMap"
FIXTURES = Path(__file__).with_name("fixtures")


def deployment(**spec_extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80}]}]},
            },
            **spec_extra,
        },
    }


# --- decode_body ------------------------------------------------------------------------------------


def test_json_duplicates_are_found_with_their_paths() -> None:
    d = decode_body(b'{"a":1,"a":2,"m":{"x":1,"x":2,"l":[{"k":1,"k":3}]}}', "application/json")
    assert d.obj == {"a": 2, "m": {"x": 2, "l": [{"k": 3}]}}  # the last one wins, as in Go
    assert d.duplicates == [DuplicateField("", "a"), DuplicateField("m", "x"), DuplicateField("m.l[0]", "k")]
    assert [x.path for x in d.duplicates] == ["a", "m.x", "m.l[0].k"]


def test_content_type_parameters_and_empty_content_type() -> None:
    assert decode_body(b'{"a":1}', "application/json; charset=UTF-8").obj == {"a": 1}
    assert decode_body(b'{"a":1}', "", accepted=OBJECT_MEDIA_TYPES).media_type == "application/json"
    patch = decode_body(b'[{"op":"add","path":"/x","value":1}]', "application/json-patch+json")
    assert patch.obj == [{"op": "add", "path": "/x", "value": 1}]


def test_unsupported_media_type_is_415_listing_what_is_accepted() -> None:
    with pytest.raises(UnsupportedMediaTypeError) as info:
        decode_body(b"x", "text/plain", accepted=OBJECT_MEDIA_TYPES)
    assert info.value.code == 415
    assert info.value.message == (
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json, application/yaml, application/vnd.kubernetes.protobuf"
    )
    with pytest.raises(UnsupportedMediaTypeError):
        decode_body(b"{}", "application/json", accepted=PATCH_MEDIA_TYPES)


def test_body_over_the_limit_is_413() -> None:
    with pytest.raises(RequestEntityTooLargeError) as info:
        decode_body(b" " * (MAX_BODY + 1), "application/json")
    assert info.value.code == 413
    assert MAX_BODY == 3 * 1024 * 1024


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b'{"a": 1,\n "b": }', "application/json", "json parse error: Expecting value at line 2, column 7"),
        (b'{"a": NaN}', "application/json", "json parse error: invalid character 'N'"),
        (b"", "application/json", "unexpected end of JSON input"),
        (b"\xff{}", "application/json", "invalid UTF-8 at byte offset 0"),
        (b"[" * 50000, "application/json", "exceeded max depth"),
        (b"a: [1, 2\nb: 3\n", "application/yaml", "error converting YAML to JSON: yaml: line 2, column 2"),
        (b"a: b: c\n", "application/yaml", "line 1, column 5: mapping values are not allowed"),
        (b"a: .nan\n", "application/yaml", "json: unsupported value: NaN"),
        (b"? [1]\n: x\n", "application/yaml", "found unhashable key"),
    ],
)
def test_malformed_bodies_say_what_and_where(body: bytes, content_type: str, message: str) -> None:
    with pytest.raises(BadRequestError, match=message.replace("[", r"\[")) as info:
        decode_body(body, content_type)
    assert info.value.code == 400


def test_yaml_reads_like_the_api_servers_yaml_library() -> None:
    body = b"""
date: 2024-01-02
short: y
word: off
exp: 1e3
octal: 0755
float_int: 3.0
half: 2.5
under: 1_000
nothing: ~
quoted: "y"
1: one
true: yes
y: key
bin: !!binary AAH/
"""
    assert decode_body(body, "application/yaml").obj == {
        "date": "2024-01-02",
        "short": True,
        "word": False,
        "exp": 1000,
        "octal": 493,
        "float_int": 3,
        "half": 2.5,
        "under": 1000,
        "nothing": None,
        "quoted": "y",
        "1": "one",
        "true": "key",  # the key y is the boolean true, then the string "true"
        "bin": "AAH/",
    }


def test_yaml_first_document_merges_and_duplicates() -> None:
    body = (
        b"apiVersion: v1\nkind: Simple\nmetadata: {}\nother: foo\nother: bar\nunknown: baz\n---\nignored: 1\n"
    )
    d = decode_body(body, "application/yaml")
    assert d.obj == {"apiVersion": "v1", "kind": "Simple", "metadata": {}, "other": "bar", "unknown": "baz"}
    assert d.strict_errors == ['yaml: unmarshal errors:\n  line 5: key "other" already set in map']
    merged = decode_body(b"base: &b {x: 1, z: 1}\nd:\n  <<: *b\n  x: 2\n", "application/apply-patch+yaml")
    assert merged.obj["d"] == {"x": 2, "z": 1} and merged.strict_errors == []


def test_yaml_alias_bombs_are_refused() -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    with pytest.raises(BadRequestError, match="excessive aliasing"):
        decode_body("\n".join(lines).encode(), "application/yaml")


def test_protobuf_body_decodes_and_reports_unknown_numbers() -> None:
    d = decode_body((FIXTURES / "configmap.pb").read_bytes(), "application/vnd.kubernetes.protobuf")
    assert d.obj["kind"] == "ConfigMap" and d.obj["data"] == {"a": "b", "empty": ""}
    assert d.strict_errors == []
    # a Namespace whose message also carries field 103 = 1, which our schema does not know
    namespace = b"\x0a\x06\x0a\x04ns-x" + b"\xb8\x06\x01"
    type_meta = b"\x0a\x0f\x0a\x02v1\x12\x09Namespace"
    spoiled = b"k8s\x00" + type_meta + b"\x12" + bytes([len(namespace)]) + namespace
    d = decode_body(spoiled, "application/vnd.kubernetes.protobuf")
    assert d.obj == {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "ns-x"}}
    assert d.strict_errors == ['unknown field "<protobuf field 103>"']


# --- check_object -------------------------------------------------------------------------------------


def test_a_good_object_has_no_findings() -> None:
    report = check_object(deployment(), DEPLOYMENT)
    assert report.unknown == [] and report.type_errors == [] and report.strict_errors == []


def test_unknown_fields_are_named_like_kubernetes_names_them() -> None:
    obj = deployment(bogus=1)
    obj["spec"]["template"]["spec"]["containers"][0]["foo"] = {"bar": 1}
    obj["spec"]["template"]["spec"]["containers"][0]["ports"][0]["hostIPX"] = "x"
    obj["status"] = {"nope": True}
    report = check_object(obj, DEPLOYMENT)
    assert report.unknown == [
        "spec.template.spec.containers[0].ports[0].hostIPX",
        "spec.template.spec.containers[0].foo",
        "spec.bogus",
        "status.nope",
    ]
    assert report.strict_errors[0] == 'unknown field "spec.template.spec.containers[0].ports[0].hostIPX"'


def test_free_form_fields_are_not_looked_into() -> None:
    obj = deployment()
    obj["metadata"]["annotations"] = {"any.thing/x": "y"}
    obj["metadata"]["managedFields"] = [{"manager": "m", "fieldsV1": {"f:spec": {"f:whatever": {}}}}]
    assert check_object(obj, DEPLOYMENT).unknown == []


def test_duplicates_count_only_where_the_schema_looks() -> None:
    body = (
        b'{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"a","name":"b",'
        b'"labels":{"x":"1","x":"2"},"managedFields":[{"fieldsV1":{"f:a":{},"f:a":{}}}]},'
        b'"spec":{"bogus":{"q":1,"q":2}}}'
    )
    d = decode_body(body, "application/json")
    report = check_object(d.obj, DEPLOYMENT, duplicates=d.duplicates)
    assert report.duplicates == ["metadata.name", "metadata.labels.x"]
    assert report.strict_errors == [
        'duplicate field "metadata.name"',
        'duplicate field "metadata.labels.x"',
        'unknown field "spec.bogus"',
    ]


@pytest.mark.parametrize(
    ("patch", "field", "message"),
    [
        (
            {"spec": {"replicas": "3"}},
            "spec.replicas",
            "json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32",
        ),
        (
            {"metadata": {"labels": {"a": 1}}},
            "metadata.labels.a",
            "json: cannot unmarshal number into Go struct field ObjectMeta.metadata.labels of type string",
        ),
        (
            {"spec": {"replicas": 1.5}},
            "spec.replicas",
            "json: cannot unmarshal number 1.5 into Go struct field DeploymentSpec.spec.replicas of type int32",
        ),
        (
            {"spec": {"template": {"spec": {"containers": [{"name": "c", "ports": "80"}]}}}},
            "spec.template.spec.containers[0].ports",
            "json: cannot unmarshal string into Go struct field Container.spec.template.spec.containers.ports"
            " of type []v1.ContainerPort",
        ),
        (
            {"spec": {"template": {"spec": {"containers": ["c"]}}}},
            "spec.template.spec.containers[0]",
            "json: cannot unmarshal string into Go struct field PodSpec.spec.template.spec.containers"
            " of type v1.Container",
        ),
        (
            {"spec": {"paused": "yes"}},
            "spec.paused",
            "json: cannot unmarshal string into Go struct field DeploymentSpec.spec.paused of type bool",
        ),
        (
            {"spec": {"replicas": 2**31}},
            "spec.replicas",
            "json: cannot unmarshal number 2147483648 into Go struct field DeploymentSpec.spec.replicas of type int32",
        ),
        (
            {"metadata": {"creationTimestamp": "yesterday"}},
            "metadata.creationTimestamp",
            'parsing time "yesterday"',
        ),
        (
            {
                "spec": {
                    "template": {
                        "spec": {"containers": [{"name": "c", "resources": {"limits": {"cpu": "1x"}}}]}
                    }
                }
            },
            "spec.template.spec.containers[0].resources.limits.cpu",
            "unable to parse quantity's suffix",
        ),
        (
            {"spec": {"strategy": {"rollingUpdate": {"maxSurge": True}}}},
            "spec.strategy.rollingUpdate.maxSurge",
            "json: cannot unmarshal bool into Go value of type int32",
        ),
    ],
)
def test_wrong_json_types_are_worded_like_go(patch: dict[str, Any], field: str, message: str) -> None:
    obj = {"apiVersion": "apps/v1", "kind": "Deployment", **patch}
    (cause,) = check_object(obj, DEPLOYMENT).type_errors
    assert cause.field == field
    assert cause.message.startswith(message)
    assert cause.reason == "FieldValueTypeInvalid"


def test_null_and_accepted_alternatives_are_fine() -> None:
    obj = deployment(strategy={"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}}, paused=None)
    obj["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"cpu": 1, "memory": "1Gi"}}
    obj["metadata"]["creationTimestamp"] = None
    assert check_object(obj, DEPLOYMENT).type_errors == []


def test_prune_unknown_returns_a_copy_without_unknown_fields() -> None:
    obj = deployment(bogus=1)
    obj["spec"]["template"]["spec"]["containers"][0]["foo"] = 1
    pruned = prune_unknown(obj, DEPLOYMENT)
    assert pruned == deployment()
    assert obj["spec"]["bogus"] == 1  # the input is left alone


# --- apply_field_validation ---------------------------------------------------------------------------


def _decoded(body: bytes, content_type: str = "application/json") -> tuple[Any, Any]:
    d = decode_body(body, content_type)
    return d.obj, d


def test_strict_refuses_with_kubernetes_wording() -> None:
    body = json.dumps(deployment(bogus=1)).replace('"replicas": 2', '"replicas": 2, "replicas": 3')
    obj, d = _decoded(body.encode())
    with pytest.raises(BadRequestError) as info:
        apply_field_validation(obj, DEPLOYMENT, "Strict", d.duplicates, strict_errors=d.strict_errors)
    assert info.value.code == 400
    assert info.value.message == (
        'Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: '
        'duplicate field "spec.replicas", unknown field "spec.bogus"'
    )


def test_warn_drops_unknown_fields_and_returns_warnings() -> None:
    obj, d = _decoded(json.dumps(deployment(bogus=1)).encode())
    kept, warnings = apply_field_validation(obj, DEPLOYMENT, "Warn", d.duplicates)
    assert warnings == ['unknown field "spec.bogus"']
    assert kept == deployment()
    kept, warnings = apply_field_validation(obj, DEPLOYMENT, "", d.duplicates)  # Warn is the default
    assert warnings == ['unknown field "spec.bogus"']


def test_ignore_drops_unknown_fields_silently() -> None:
    obj, d = _decoded(json.dumps(deployment(bogus=1)).encode())
    assert apply_field_validation(obj, DEPLOYMENT, "Ignore", d.duplicates) == (deployment(), [])


def test_yaml_strict_and_warn_wording_match_upstream() -> None:
    body = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  a: x1\n  a: x2\nunknown: baz\n"
    obj, d = _decoded(body, "application/yaml")
    with pytest.raises(BadRequestError) as info:
        apply_field_validation(obj, CONFIGMAP, "Strict", d.duplicates, strict_errors=d.strict_errors)
    assert info.value.message == (
        'ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: '
        'yaml: unmarshal errors:\n  line 7: key "a" already set in map, unknown field "unknown"'
    )
    kept, warnings = apply_field_validation(
        obj, CONFIGMAP, "Warn", d.duplicates, strict_errors=d.strict_errors
    )
    assert warnings == ['line 7: key "a" already set in map', 'unknown field "unknown"']
    assert "unknown" not in kept and kept["data"] == {"a": "x2"}


def test_type_errors_fail_in_every_mode() -> None:
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"n": 1}}
    for mode in ("Strict", "Warn", "Ignore"):
        with pytest.raises(BadRequestError) as info:
            apply_field_validation(obj, CONFIGMAP, mode)
        assert info.value.message == (
            'ConfigMap in version "v1" cannot be handled as a ConfigMap: '
            "json: cannot unmarshal number into Go struct field ConfigMap.data of type string"
        )


def test_patch_findings_are_422_on_the_patch_field() -> None:
    with pytest.raises(InvalidError) as info:
        apply_field_validation({"unknown": "foo"}, CONFIGMAP, "Strict", patch=True)
    assert info.value.code == 422
    assert info.value.message == (
        ' "" is invalid: patch: Invalid value: "{\\"unknown\\":\\"foo\\"}": '
        'strict decoding error: unknown field "unknown"'
    )
    assert [c.field for c in info.value.causes] == ["patch"]


def test_bad_mode_is_refused() -> None:
    with pytest.raises(BadRequestError, match='Unsupported value: "Loud"'):
        apply_field_validation({}, CONFIGMAP, "Loud")


def test_strict_warnings_split_yaml_blocks() -> None:
    block = (
        'yaml: unmarshal errors:\n  line 3: key "a" already set in map\n  line 9: key "b" already set in map'
    )
    assert strict_warnings([block, 'unknown field "x"']) == [
        'line 3: key "a" already set in map',
        'line 9: key "b" already set in map',
        'unknown field "x"',
    ]
