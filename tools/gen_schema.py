#!/usr/bin/env python3
"""Dev-time generator of Podvisor's schema data file (podvisor/schema/structs.json).

Why a generator: the shape of every struct (field names, types, wire numbers, merge keys, list
semantics) is a fact of the Kubernetes API that kubectl and the Python client depend on bit for bit;
deriving it mechanically is the only way to get thousands of such facts right. What we derive:

- from upstream's ``generated.proto`` files (k8s.io/api, k8s.io/apimachinery; read from local git
  mirrors, never committed): message fields, their wire numbers and types, and the ``+marker`` lines
  (patch strategy/merge key, list type/map keys, map type, struct type);
- from the installed ``kubernetes`` Python client's models: the JSON names (to spot inlined structs such
  as Volume's VolumeSource) and which fields are required, plus enum values;
- descriptions only from our own YAML files under podvisor/schema/descriptions/ (never upstream's
  comments); a field without one gets a sentence derived from its name and type.

The output is a compact JSON file loaded at server start (no kubernetes import at runtime).

Usage: .venv/bin/python tools/gen_schema.py [--api MIRROR] [--apimachinery MIRROR] [--ref REV]
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "podvisor" / "schema" / "structs.json"
DESC_DIR = ROOT / "podvisor" / "schema" / "descriptions"

API_PACKAGES = [
    "core/v1",
    "apps/v1",
    "batch/v1",
    "discovery/v1",
    "events/v1",
    "coordination/v1",
    "node/v1",
    "policy/v1",
    "autoscaling/v1",
    "authorization/v1",
    "authentication/v1",
]
MACHINERY_PACKAGES = [
    "pkg/apis/meta/v1",
    "pkg/runtime",
    "pkg/util/intstr",
    "pkg/api/resource",
]

# proto message -> scalar TypeRef of our model
SPECIAL = {
    "io.k8s.apimachinery.pkg.apis.meta.v1.Time": "date-time",
    "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime": "micro-time",
    "io.k8s.apimachinery.pkg.apis.meta.v1.Duration": "duration",
    "io.k8s.apimachinery.pkg.api.resource.Quantity": "quantity",
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": "int-or-string",
    "io.k8s.apimachinery.pkg.runtime.RawExtension": "raw",
    "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1": "raw",
}
# wrapper messages that are a plain JSON list of strings (proto: one ``repeated string items = 1``)
STRING_LIST_WRAPPERS = {
    "io.k8s.api.authorization.v1.ExtraValue",
    "io.k8s.api.authentication.v1.ExtraValue",
    "io.k8s.apimachinery.pkg.apis.meta.v1.Verbs",
}
PROTO_SCALARS = {
    "string": "string",
    "bool": "boolean",
    "int32": "int32",
    "int64": "int64",
    "double": "double",
    "float": "double",
    "bytes": "bytes",
}

ROOTS = [
    # resources and their lists
    *[
        f"io.k8s.api.{pkg}.{kind}"
        for pkg, kinds in {
            "core.v1": [
                "Namespace",
                "Pod",
                "Service",
                "Endpoints",
                "ConfigMap",
                "Secret",
                "ServiceAccount",
                "Node",
                "Event",
                "Binding",
                "PodExecOptions",
                "PodAttachOptions",
                "PodPortForwardOptions",
                "PodLogOptions",
            ],
            "events.v1": ["Event"],
            "coordination.v1": ["Lease"],
            "node.v1": ["RuntimeClass"],
            "apps.v1": ["Deployment", "ReplicaSet"],
            "batch.v1": ["Job"],
            "discovery.v1": ["EndpointSlice"],
            "authorization.v1": ["SelfSubjectAccessReview"],
            "authentication.v1": ["TokenRequest"],
            "policy.v1": ["Eviction"],
            "autoscaling.v1": ["Scale"],
        }.items()
        for kind in kinds
    ],
    *[
        f"io.k8s.apimachinery.pkg.apis.meta.v1.{k}"
        for k in [
            "Status",
            "DeleteOptions",
            "CreateOptions",
            "UpdateOptions",
            "PatchOptions",
            "GetOptions",
            "ListOptions",
            "WatchEvent",
            "APIResourceList",
            "APIGroupList",
            "APIGroup",
            "APIVersions",
            "PartialObjectMetadata",
            "PartialObjectMetadataList",
        ]
    ],
]
LIST_KINDS = [
    "io.k8s.api.core.v1.NamespaceList",
    "io.k8s.api.core.v1.PodList",
    "io.k8s.api.core.v1.ServiceList",
    "io.k8s.api.core.v1.EndpointsList",
    "io.k8s.api.core.v1.ConfigMapList",
    "io.k8s.api.core.v1.SecretList",
    "io.k8s.api.core.v1.ServiceAccountList",
    "io.k8s.api.core.v1.NodeList",
    "io.k8s.api.core.v1.EventList",
    "io.k8s.api.events.v1.EventList",
    "io.k8s.api.coordination.v1.LeaseList",
    "io.k8s.api.node.v1.RuntimeClassList",
    "io.k8s.api.apps.v1.DeploymentList",
    "io.k8s.api.apps.v1.ReplicaSetList",
    "io.k8s.api.batch.v1.JobList",
    "io.k8s.api.discovery.v1.EndpointSliceList",
]

# structs that carry apiVersion and kind in JSON (TypeMeta; not a proto field: runtime.Unknown has it)
TYPE_META_KINDS = (set(ROOTS) | set(LIST_KINDS)) - {"io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent"}


@dataclass
class ProtoField:
    name: str
    number: int
    label: str  # optional | repeated | map
    type: str  # fully qualified definition name or proto scalar
    markers: dict[str, list[str]]


@dataclass
class ProtoMessage:
    name: str  # definition name
    markers: dict[str, list[str]]
    fields: list[ProtoField] = field(default_factory=list)


_FIELD_RE = re.compile(r"^\s*(optional|repeated)\s+([\w.]+)\s+(\w+)\s*=\s*(\d+)\s*;")
_MAP_RE = re.compile(r"^\s*map<\s*string\s*,\s*([\w.]+)\s*>\s+(\w+)\s*=\s*(\d+)\s*;")
_MARKER_RE = re.compile(r"^\s*//\s*\+([\w.]+)(?:=(.*))?$")


def _defname(proto_pkg: str, name: str) -> str:
    return "io.k8s." + proto_pkg.removeprefix("k8s.io.") + "." + name


def parse_proto(text: str) -> dict[str, ProtoMessage]:
    """The messages of one generated.proto, keyed by definition name; only markers, never prose."""
    pkg = re.search(r"^package\s+([\w.]+);", text, re.M)
    assert pkg
    package = pkg.group(1)
    out: dict[str, ProtoMessage] = {}
    markers: dict[str, list[str]] = {}
    current: ProtoMessage | None = None

    def qualify(t: str) -> str:
        t = t.lstrip(".")
        if t in PROTO_SCALARS:
            return t
        if t.startswith("k8s.io."):
            pkg_, _, name = t.rpartition(".")
            return _defname(pkg_, name)
        return _defname(package, t)

    for line in text.splitlines():
        m = _MARKER_RE.match(line)
        if m:
            markers.setdefault(m.group(1), []).append((m.group(2) or "").strip())
            continue
        if line.strip().startswith("//"):
            continue
        if line.startswith("message "):
            name = line.split()[1]
            current = ProtoMessage(_defname(package, name), markers)
            out[current.name] = current
            markers = {}
            continue
        if line.startswith("}"):
            current = None
            markers = {}
            continue
        if current is not None:
            fm = _FIELD_RE.match(line)
            mm = _MAP_RE.match(line)
            if fm:
                current.fields.append(
                    ProtoField(fm.group(3), int(fm.group(4)), fm.group(1), qualify(fm.group(2)), markers)
                )
            elif mm:
                current.fields.append(
                    ProtoField(mm.group(2), int(mm.group(3)), "map", qualify(mm.group(1)), markers)
                )
            elif line.strip():
                raise SystemExit(f"unparsed proto line in {current.name}: {line!r}")
            markers = {}
        elif line.strip() and not line.startswith(("syntax", "package", "import", "option")):
            markers = {}
    return out


def git_show(repo: Path, ref: str, path: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "show", f"{ref}:{path}"], check=True, capture_output=True, text=True
    ).stdout


# ---------------------------------------------------------------- the Python client's models


_GROUP_PREFIX = {
    "core": "Core",
    "events": "Events",
    "discovery": "Discovery",
    "authentication": "Authentication",
    "authorization": "Authorization",
}


def client_model(defname: str) -> Any | None:
    models = importlib.import_module("kubernetes.client.models")
    parts = defname.split(".")
    kind, version = parts[-1], parts[-2]
    group = parts[-3]
    cands = [f"{_GROUP_PREFIX.get(group, group.title())}{version.title()}{kind}", f"{version.title()}{kind}"]
    if defname.startswith("io.k8s.apimachinery.pkg.apis.meta.v1."):
        cands = [f"V1{kind}"]
    for c in cands:
        cls = getattr(models, c, None)
        if cls is not None:
            return cls
    return None


_ENUM_RE = re.compile(r'^ - `"([^"`]*)"`', re.M)


def client_info(defname: str) -> dict[str, tuple[bool, tuple[str, ...]]] | None:
    """JSON name -> (required, enum values) according to the Python client, or None if it lacks it."""
    cls = client_model(defname)
    if cls is None:
        return None
    out: dict[str, tuple[bool, tuple[str, ...]]] = {}
    for attr, info in cls.model_fields.items():
        json_name = info.serialization_alias or info.alias or cls.attribute_map.get(attr, attr)
        enum: tuple[str, ...] = ()
        desc = info.description or ""
        if "Possible enum values:" in desc:
            enum = tuple(_ENUM_RE.findall(desc.split("Possible enum values:", 1)[1]))
        out[json_name] = (info.is_required(), enum)
    return out


# ---------------------------------------------------------------- building our structs


def words(name: str) -> str:
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", s)
    return s.lower()


def type_words(t: Any) -> str:
    if isinstance(t, str):
        if t.startswith("[]"):
            return "list of " + type_words(t[2:])
        if t.startswith("{}"):
            return "map of string to " + type_words(t[2:])
        if "." in t:
            return words(t.rsplit(".", 1)[1])
        return {
            "string": "string",
            "boolean": "boolean",
            "int32": "32-bit integer",
            "int64": "64-bit integer",
            "double": "number",
            "bytes": "base64 bytes",
            "date-time": "timestamp",
            "micro-time": "timestamp with microseconds",
            "duration": "duration",
            "quantity": "quantity",
            "int-or-string": "number or name",
            "raw": "JSON value",
        }[t]
    raise TypeError(t)


def first(markers: dict[str, list[str]], key: str) -> str:
    vals = markers.get(key)
    return vals[0] if vals else ""


class Builder:
    def __init__(
        self,
        messages: dict[str, ProtoMessage],
        descriptions: dict[str, dict[str, str]],
        enums: dict[str, list[str]],
    ):
        self.messages = messages
        self.desc = descriptions
        self.enums = enums
        self.out: dict[str, dict[str, Any]] = {}
        self.warnings: list[str] = []
        self.used_desc: set[tuple[str, str]] = set()

    def typeref(self, pf: ProtoField) -> tuple[str, list[str]]:
        """Our encoded TypeRef ("[]X", "{}X", scalar or definition) and the structs it references."""
        t = pf.type
        refs: list[str] = []
        if t in PROTO_SCALARS:
            base = PROTO_SCALARS[t]
        elif t in SPECIAL:
            base = SPECIAL[t]
        elif t in STRING_LIST_WRAPPERS:
            base = "[]string"
        else:
            base = t
            refs.append(t)
        if pf.label == "repeated":
            return "[]" + base, refs
        if pf.label == "map":
            return "{}" + base, refs
        return base, refs

    def build(self, name: str) -> None:
        if name in self.out:
            return
        msg = self.messages.get(name)
        if msg is None:
            raise SystemExit(f"no proto message for {name}")
        info = client_info(name)
        short = name.rsplit(".", 1)[1]
        sdesc = self.desc.get(name, {})
        struct: dict[str, Any] = {"d": sdesc.get("_") or f"{words(short).capitalize()}.", "f": []}
        if not sdesc.get("_"):
            self.warnings.append(f"no description: {name}")
        else:
            self.used_desc.add((name, "_"))
        st = first(msg.markers, "structType")
        if st:
            struct["t"] = st
        self.out[name] = struct
        pending: list[str] = []
        if name in TYPE_META_KINDS:
            for tm in ("apiVersion", "kind"):
                struct["f"].append(
                    self.field(
                        name, ProtoField(tm, 0, "optional", "string", {}), None, via=[], pending=pending
                    )
                )
        for pf in msg.fields:
            inline = False
            if info is not None and pf.name not in info:
                same = [n for n in info if n.lower() == pf.name.lower()]
                if same:  # proto spells a few names differently (BoundObjectReference.uID)
                    pf.name = same[0]
            if info is not None and pf.name not in info:
                # an embedded struct whose fields JSON flattens into ours (Volume.volumeSource)
                sub = self.messages.get(pf.type)
                if sub is not None and pf.label == "optional" and all(f.name in info for f in sub.fields):
                    inline = True
                else:
                    self.warnings.append(f"{name}.{pf.name}: not in the Python client")
            if inline:
                sub = self.messages[pf.type]
                for spf in sub.fields:
                    struct["f"].append(self.field(name, spf, info, via=[pf.number], pending=pending))
                continue
            struct["f"].append(self.field(name, pf, info, via=[], pending=pending))
        if info is not None:
            have = {f["n"] for f in struct["f"]}
            for missing in sorted(set(info) - have):
                self.warnings.append(f"{name}.{missing}: in the Python client, not in proto")
        for ref in pending:
            self.build(ref)

    def field(
        self,
        owner: str,
        pf: ProtoField,
        info: dict[str, tuple[bool, tuple[str, ...]]] | None,
        *,
        via: list[int],
        pending: list[str],
    ) -> dict[str, Any]:
        t, refs = self.typeref(pf)
        pending.extend(refs)
        f: dict[str, Any] = {"n": pf.name, "t": t, "p": pf.number}
        if via:
            f["v"] = via
        d = self.desc.get(owner, {}).get(pf.name)
        if d:
            self.used_desc.add((owner, pf.name))
        else:
            common = self.desc.get("_common", {})
            key = f"{pf.name}:{type_words(t)}"
            d = common.get(key) or common.get(pf.name)
            if d:
                self.used_desc.add(("_common", key if key in common else pf.name))
            else:
                d = f"{words(pf.name).capitalize()} ({type_words(t)})."
                self.warnings.append(f"no description: {owner}.{pf.name}")
        f["d"] = d
        if info is not None and pf.name in info:
            req, enum = info[pf.name]
            if req:
                f["r"] = 1
            if enum:
                f["e"] = list(enum)
        enum_list = self.enums.get(f"{owner}.{pf.name}")
        if enum_list is not None:
            self.used_desc.add(("_enums", f"{owner}.{pf.name}"))
            f["e"] = [str(v) for v in enum_list]
        m = pf.markers
        if first(m, "patchStrategy"):
            f["ps"] = first(m, "patchStrategy")
        if first(m, "patchMergeKey"):
            f["pk"] = first(m, "patchMergeKey")
        if first(m, "listType"):
            f["lt"] = first(m, "listType")
        if m.get("listMapKey"):
            f["lk"] = m["listMapKey"]
        if first(m, "mapType"):
            f["mt"] = first(m, "mapType")
        return f


def load_descriptions() -> tuple[dict[str, dict[str, str]], dict[str, list[str]]]:
    """Struct -> field -> our description ("_" is the struct's own); and "owner.field" -> enum values.
    ``_common`` holds descriptions for fields of any struct, by ``name`` or ``name:type words``."""
    out: dict[str, dict[str, str]] = {}
    enums: dict[str, list[str]] = {}
    for path in sorted(DESC_DIR.glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        for key, fields in data.items():
            if key == "_enums":
                for fk, values in fields.items():
                    owner, _, fname = fk.rpartition(".")
                    enums[f"{_short_to_def(owner) if not owner.startswith('io.') else owner}.{fname}"] = (
                        values
                    )
                continue
            name = key if key.startswith(("io.k8s.", "_")) else _short_to_def(key)
            if isinstance(fields, str):
                fields = {"_": fields}
            for k, v in fields.items():
                if k in out.get(name, {}):
                    raise SystemExit(f"{path.name}: {name}.{k} described twice")
                out.setdefault(name, {})[k] = " ".join(str(v).split())
    return out, enums


def _short_to_def(key: str) -> str:
    """``core.v1.Pod`` -> io.k8s.api.core.v1.Pod, ``meta.v1.ObjectMeta`` -> apimachinery's."""
    if key.startswith("meta.v1."):
        return "io.k8s.apimachinery.pkg.apis.meta.v1." + key.removeprefix("meta.v1.")
    return "io.k8s.api." + key


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--api", default="/work/.mirror/kubernetes+api/repo")
    ap.add_argument("--apimachinery", default="/work/.mirror/kubernetes+apimachinery/repo")
    ap.add_argument("--ref", default="v0.36.3")
    ap.add_argument("--check", action="store_true", help="only report, do not write")
    ap.add_argument("--diff", action="store_true", help="exit 1 if the committed file is out of date")
    args = ap.parse_args()

    messages: dict[str, ProtoMessage] = {}
    for p in API_PACKAGES:
        messages.update(parse_proto(git_show(Path(args.api), args.ref, f"{p}/generated.proto")))
    for p in MACHINERY_PACKAGES:
        messages.update(parse_proto(git_show(Path(args.apimachinery), args.ref, f"{p}/generated.proto")))

    descriptions, enums = load_descriptions()
    b = Builder(messages, descriptions, enums)
    for r in ROOTS + LIST_KINDS:
        b.build(r)
    for owner, fs in descriptions.items():
        for fname in fs:
            if (owner, fname) not in b.used_desc:
                b.warnings.append(f"unused description {owner}.{fname}")
    for key in enums:
        if ("_enums", key) not in b.used_desc:
            b.warnings.append(f"unused enum {key}")
    undescribed = [w for w in b.warnings if w.startswith("no description")]
    for w in b.warnings:
        if not w.startswith("no description") or args.check:
            print("warning:", w, file=sys.stderr)
    nfields = sum(len(s["f"]) for s in b.out.values())
    ndesc = sum(1 for o, fs in descriptions.items() for f in fs if f != "_" and (o, f) in b.used_desc)
    print(
        f"{len(b.out)} structs, {nfields} fields; {len(b.out) - len(undescribed)} struct and "
        f"{ndesc} field descriptions of our own",
        file=sys.stderr,
    )
    if args.check:
        return
    data = {"structs": dict(sorted(b.out.items()))}
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False) + "\n"
    if args.diff:
        if not OUT.exists() or OUT.read_text() != text:
            raise SystemExit(f"{OUT.relative_to(ROOT)} is out of date: run tools/gen_schema.py")
        return
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
