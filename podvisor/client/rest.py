"""An async Kubernetes REST client: the one path by which controllers, the scheduler and node agents
reach the API server — the same HTTPS API kubectl uses, so any of them could run on another machine.

Resources are named by `Res` (group, version, plural, namespaced). Objects are plain dicts; a non-2xx
answer raises an `APIStatusError` subclass carrying the server's Status.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from podvisor.client.config import ClientConfig
from podvisor.client.errors import error_for

__all__ = ["Res", "APIClient"]


@dataclass(frozen=True, slots=True)
class Res:
    group: str
    version: str
    plural: str
    namespaced: bool = True
    kind: str = ""
    verbs: tuple[str, ...] = ()

    def path(self, namespace: str = "", name: str = "", subresource: str = "") -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
            if subresource:
                base += f"/{subresource}"
        return base


class APIClient:
    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self.config.ssl_context if self.config.ssl_context else False, limit=0)
            self._session = aiohttp.ClientSession(base_url=self.config.server, headers=self.config.headers,
                                                  connector=connector)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> APIClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def request(self, method: str, path: str, *, params: dict[str, str] | None = None,
                      body: Any = None, content_type: str = "application/json") -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type, "Accept": "application/json"} if data is not None else {"Accept": "application/json"}
        async with self.session.request(method, path, params=params, data=data, headers=headers) as resp:
            raw = await resp.read()
            try:
                out = json.loads(raw) if raw else {}
            except ValueError:
                out = {"message": raw[:500].decode(errors="replace")}
            if resp.status >= 300:
                raise error_for(resp.status, out if isinstance(out, dict) else {"message": str(out)})
            return dict(out) if isinstance(out, dict) else {"items": out}

    async def get(self, res: Res, name: str, namespace: str = "", *, subresource: str = "") -> dict[str, Any]:
        return await self.request("GET", res.path(namespace, name, subresource))

    async def list(self, res: Res, namespace: str = "", *, label_selector: str = "", field_selector: str = "",
                   limit: int = 0, continue_token: str = "", resource_version: str = "") -> dict[str, Any]:
        params = _params(labelSelector=label_selector, fieldSelector=field_selector,
                         limit=str(limit) if limit else "", resourceVersion=resource_version)
        params["continue"] = continue_token
        return await self.request("GET", res.path(namespace), params={k: v for k, v in params.items() if v})

    async def list_all(self, res: Res, namespace: str = "", **kw: Any) -> tuple[builtins.list[dict[str, Any]], str]:
        """Every item across pages, and the resourceVersion to watch from."""
        items: builtins.list[dict[str, Any]] = []
        token = ""
        while True:
            page = await self.list(res, namespace, limit=500, continue_token=token, **kw)
            items += page.get("items") or []
            token = page.get("metadata", {}).get("continue", "")
            if not token:
                return items, str(page.get("metadata", {}).get("resourceVersion", ""))

    async def watch(self, res: Res, namespace: str = "", *, resource_version: str, label_selector: str = "",
                    field_selector: str = "", timeout_seconds: int = 300) -> AsyncIterator[dict[str, Any]]:
        params = _params(watch="true", resourceVersion=resource_version, labelSelector=label_selector,
                         fieldSelector=field_selector, allowWatchBookmarks="true", timeoutSeconds=str(timeout_seconds))
        timeout = aiohttp.ClientTimeout(total=None, sock_read=timeout_seconds + 30)
        async with self.session.get(res.path(namespace), params=params, timeout=timeout) as resp:
            if resp.status >= 300:
                raw = await resp.read()
                raise error_for(resp.status, json.loads(raw) if raw.startswith(b"{") else {"message": raw.decode(errors="replace")})
            async for line in resp.content:
                if line.strip():
                    yield json.loads(line)

    async def create(self, res: Res, obj: dict[str, Any], namespace: str = "", *, field_manager: str = "") -> dict[str, Any]:
        return await self.request("POST", res.path(namespace), body=obj, params=_params(fieldManager=field_manager))

    async def update(self, res: Res, obj: dict[str, Any], namespace: str = "", *, subresource: str = "",
                     field_manager: str = "") -> dict[str, Any]:
        name = obj["metadata"]["name"]
        return await self.request("PUT", res.path(namespace, name, subresource), body=obj,
                                  params=_params(fieldManager=field_manager))

    async def patch(self, res: Res, name: str, patch: Any, namespace: str = "", *,
                    patch_type: str = "application/merge-patch+json", subresource: str = "",
                    field_manager: str = "") -> dict[str, Any]:
        return await self.request("PATCH", res.path(namespace, name, subresource), body=patch,
                                  content_type=patch_type, params=_params(fieldManager=field_manager))

    async def delete(self, res: Res, name: str, namespace: str = "", *, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.request("DELETE", res.path(namespace, name), body=body)

    async def delete_collection(self, res: Res, namespace: str = "", *, label_selector: str = "",
                                body: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.request("DELETE", res.path(namespace), body=body,
                                  params=_params(labelSelector=label_selector))

    async def discover(self) -> builtins.list[Res]:
        """Every served resource (no subresources), from legacy discovery."""
        out: builtins.list[Res] = []
        groups: builtins.list[tuple[str, str]] = [("", "v1")]
        apis = await self.request("GET", "/apis")
        for g in apis.get("groups", []):
            groups.append((g["name"], g["preferredVersion"]["version"]))
        for group, version in groups:
            path = f"/apis/{group}/{version}" if group else f"/api/{version}"
            lst = await self.request("GET", path)
            for r in lst.get("resources", []):
                if "/" not in r["name"]:
                    out.append(Res(group, version, r["name"], bool(r.get("namespaced")), r.get("kind", ""),
                                   tuple(r.get("verbs", ()))))
        return out


def _params(**kw: str) -> dict[str, str]:
    return {k: v for k, v in kw.items() if v}
