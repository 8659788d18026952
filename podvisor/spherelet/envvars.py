"""A container's environment and command line, resolved as a kubelet resolves them.

Order and precedence follow Kubernetes: Service variables first (when ``enableServiceLinks``), then
``envFrom`` sources in order (optionally prefixed; keys that are not valid variable names are skipped
and reported), then ``env`` entries in order, each able to refer to what is defined before it with
``$(NAME)``. ``valueFrom`` reads a ConfigMap or Secret key, a pod field (the downward API) or a
container resource (limits default to what the node offers). The command is the container's
``command`` (or the image's entrypoint) plus ``args`` (or, with neither, the image's cmd), each
expanded against the final environment.

Expansion, in our words: ``$(NAME)`` is replaced by NAME's value when NAME is defined and left as it
is otherwise; ``$$`` is a literal ``$``, so ``$$(NAME)`` stays ``$(NAME)``; an unclosed ``$(`` and a
lone ``$`` are kept literally.

A missing ConfigMap/Secret or key that is not ``optional`` is a `ConfigError`: the container waits
with reason ``CreateContainerConfigError`` and the error as its message, and is retried.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any, Protocol

from podvisor.scheduler.quantity import parse_quantity

__all__ = [
    "ConfigError", "Sources", "expand", "container_env", "command_line", "field_value", "resource_value",
    "service_env", "is_env_var_name", "secret_bytes",
]

_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class ConfigError(Exception):
    """A reference in the pod spec cannot be resolved (reason CreateContainerConfigError)."""


class Sources(Protocol):
    """Where ConfigMaps and Secrets come from; None when the object does not exist."""

    async def configmap(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...


def is_env_var_name(name: str) -> bool:
    return bool(_ENV_NAME.match(name))


def expand(text: str, lookup: Callable[[str], str | None]) -> str:
    """Kubernetes' ``$(VAR)`` expansion of one string."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch != "$" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            end = text.find(")", i + 2)
            if end < 0:
                out.append(text[i:])
                break
            name = text[i + 2:end]
            value = lookup(name) if name else None
            out.append(value if value is not None else f"$({name})")
            i = end + 1
        else:
            out.append("$" + nxt)
            i += 2
    return "".join(out)


def secret_bytes(secret: Mapping[str, Any], key: str) -> bytes | None:
    """A Secret's value for ``key`` (``data`` is base64 as the API returns it; ``stringData`` wins)."""
    string_data = secret.get("stringData") or {}
    if key in string_data:
        return str(string_data[key]).encode()
    data = secret.get("data") or {}
    if key in data:
        try:
            return base64.b64decode(str(data[key]), validate=False)
        except ValueError:
            return None
    return None


def configmap_bytes(cm: Mapping[str, Any], key: str) -> bytes | None:
    data = cm.get("data") or {}
    if key in data:
        return str(data[key]).encode()
    binary = cm.get("binaryData") or {}
    if key in binary:
        try:
            return base64.b64decode(str(binary[key]))
        except ValueError:
            return None
    return None


def _pod_ref(pod: Mapping[str, Any]) -> tuple[str, str]:
    md = pod.get("metadata") or {}
    return str(md.get("namespace") or "default"), str(md.get("name") or "")


_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\[['\"]?(.+?)['\"]?\]$")


def field_value(pod: Mapping[str, Any], path: str, *, pod_ip: str = "", host_ip: str = "") -> str:
    """The downward API's value of ``path`` for ``pod``; ValueError for an unsupported path."""
    md = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    m = _SUBSCRIPT.match(path)
    if m:
        return str((md.get(m.group(1)) or {}).get(m.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        items = md.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(items.items()))
    simple = {
        "metadata.name": md.get("name"), "metadata.namespace": md.get("namespace"), "metadata.uid": md.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName") or spec.get("serviceAccount"),
        "status.podIP": pod_ip, "status.podIPs": pod_ip, "status.hostIP": host_ip, "status.hostIPs": host_ip,
    }
    if path in simple:
        return str(simple[path] or "")
    raise ValueError(f"unsupported fieldPath: {path}")


def _escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _find_container(pod: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    spec = pod.get("spec") or {}
    for c in list(spec.get("containers") or []) + list(spec.get("initContainers") or []):
        if c.get("name") == name:
            return c  # type: ignore[no-any-return]
    return None


def resource_value(pod: Mapping[str, Any], container_name: str, resource: str, divisor: Any = None, *,
                   allocatable: Mapping[str, Any] | None = None) -> str:
    """``limits.cpu``, ``requests.memory``... of a container, divided by ``divisor`` and rounded up;
    a limit that is not set is the node's allocatable amount, a request that is not set is 0."""
    c = _find_container(pod, container_name)
    if c is None:
        raise ConfigError(f'container "{container_name}" not found in pod for resourceFieldRef {resource}')
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or not name:
        raise ConfigError(f"unsupported container resource: {resource}")
    res = c.get("resources") or {}
    raw = (res.get(kind) or {}).get(name)
    if raw is None and kind == "requests":
        raw = (res.get("limits") or {}).get(name)
    if raw is None and kind == "limits":
        raw = (allocatable or {}).get(name)
    value = parse_quantity(raw) if raw is not None else Fraction(0)
    div = parse_quantity(divisor) if divisor not in (None, "", 0, "0") else Fraction(1)
    if name == "cpu":
        # kube divides milli-values and rounds up: 250m with divisor 1 is "1"
        milli, div_milli = math.ceil(value * 1000), math.ceil(div * 1000) or 1
        return str(math.ceil(Fraction(milli, div_milli)))
    return str(math.ceil(Fraction(math.ceil(value)) / div))


def service_env(services: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """Docker-link-style variables for Services with a cluster IP (``FOO_SERVICE_HOST`` ...)."""
    out: list[tuple[str, str]] = []
    for svc in services:
        spec = svc.get("spec") or {}
        ip = spec.get("clusterIP")
        if not ip or ip == "None":
            continue
        name = str((svc.get("metadata") or {}).get("name", "")).upper().replace("-", "_")
        ports = spec.get("ports") or []
        out.append((f"{name}_SERVICE_HOST", str(ip)))
        if not ports:
            continue
        out.append((f"{name}_SERVICE_PORT", str(ports[0].get("port"))))
        for p in ports:
            if p.get("name"):
                out.append((f"{name}_SERVICE_PORT_{str(p['name']).upper().replace('-', '_')}", str(p.get("port"))))
        first = ports[0]
        proto = str(first.get("protocol") or "TCP")
        out.append((f"{name}_PORT", f"{proto.lower()}://{ip}:{first.get('port')}"))
        for p in ports:
            pr = str(p.get("protocol") or "TCP")
            base = f"{name}_PORT_{p.get('port')}_{pr.upper()}"
            out += [(base, f"{pr.lower()}://{ip}:{p.get('port')}"), (f"{base}_PROTO", pr.lower()),
                    (f"{base}_PORT", str(p.get("port"))), (f"{base}_ADDR", str(ip))]
    return out


async def container_env(pod: Mapping[str, Any], container: Mapping[str, Any], *, sources: Sources,
                        pod_ip: str = "", host_ip: str = "", allocatable: Mapping[str, Any] | None = None,
                        services: Sequence[tuple[str, str]] = ()) -> tuple[list[tuple[str, str]], list[str]]:
    """The container's variables in order, and the envFrom keys skipped as invalid names."""
    namespace, _ = _pod_ref(pod)
    env: dict[str, str] = {}
    for k, v in services:
        env[k] = v
    invalid: list[str] = []
    for source in container.get("envFrom") or []:
        prefix = str(source.get("prefix") or "")
        if source.get("configMapRef"):
            ref = source["configMapRef"]
            cm = await sources.configmap(namespace, str(ref.get("name", "")))
            if cm is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'configmap "{ref.get("name", "")}" not found')
            values = {str(k): str(v) for k, v in (cm.get("data") or {}).items()}
        elif source.get("secretRef"):
            ref = source["secretRef"]
            secret = await sources.secret(namespace, str(ref.get("name", "")))
            if secret is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'secret "{ref.get("name", "")}" not found')
            values = {}
            for k in list(secret.get("data") or {}) + list(secret.get("stringData") or {}):
                raw = secret_bytes(secret, k)
                if raw is not None:
                    values[str(k)] = raw.decode(errors="replace")
        else:
            continue
        for key, value in values.items():
            name = prefix + key
            if not is_env_var_name(name):
                invalid.append(name)
                continue
            env[name] = value
    for var in container.get("env") or []:
        name = str(var.get("name", ""))
        if not name:
            continue
        value_from = var.get("valueFrom")
        if value_from:
            resolved = await _value_from(pod, container, value_from, sources=sources, pod_ip=pod_ip, host_ip=host_ip,
                                         allocatable=allocatable)
            if resolved is None:  # optional and missing: the variable is not set
                continue
            env[name] = resolved
        else:
            env[name] = expand(str(var.get("value") or ""), env.get)
    return list(env.items()), sorted(set(invalid))


async def _value_from(pod: Mapping[str, Any], container: Mapping[str, Any], vf: Mapping[str, Any], *,
                      sources: Sources, pod_ip: str, host_ip: str,
                      allocatable: Mapping[str, Any] | None) -> str | None:
    namespace, _ = _pod_ref(pod)
    if vf.get("fieldRef"):
        try:
            return field_value(pod, str(vf["fieldRef"].get("fieldPath", "")), pod_ip=pod_ip, host_ip=host_ip)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if vf.get("resourceFieldRef"):
        ref = vf["resourceFieldRef"]
        return resource_value(pod, str(ref.get("containerName") or container.get("name", "")),
                              str(ref.get("resource", "")), ref.get("divisor"), allocatable=allocatable)
    if vf.get("configMapKeyRef"):
        ref = vf["configMapKeyRef"]
        name, key = str(ref.get("name", "")), str(ref.get("key", ""))
        cm = await sources.configmap(namespace, name)
        if cm is None:
            if ref.get("optional"):
                return None
            raise ConfigError(f'configmap "{name}" not found')
        raw = configmap_bytes(cm, key)
        if raw is None:
            if ref.get("optional"):
                return None
            raise ConfigError(f"couldn't find key {key} in ConfigMap {namespace}/{name}")
        return raw.decode(errors="replace")
    if vf.get("secretKeyRef"):
        ref = vf["secretKeyRef"]
        name, key = str(ref.get("name", "")), str(ref.get("key", ""))
        secret = await sources.secret(namespace, name)
        if secret is None:
            if ref.get("optional"):
                return None
            raise ConfigError(f'secret "{name}" not found')
        raw = secret_bytes(secret, key)
        if raw is None:
            if ref.get("optional"):
                return None
            raise ConfigError(f"couldn't find key {key} in Secret {namespace}/{name}")
        return raw.decode(errors="replace")
    return ""


def command_line(container: Mapping[str, Any], *, entrypoint: Sequence[str] = (), cmd: Sequence[str] = (),
                 env: Sequence[tuple[str, str]] = ()) -> list[str]:
    """The argv to run: command/args against the image's entrypoint/cmd, ``$(VAR)``-expanded."""
    command = [str(x) for x in container.get("command") or []]
    args = [str(x) for x in container.get("args") or []]
    lookup = dict(env).get
    command = [expand(x, lookup) for x in command]
    args = [expand(x, lookup) for x in args]
    if command:
        return command + args
    if args:
        return list(entrypoint) + args
    return list(entrypoint) + list(cmd)
