"""What pods refer to in the API, fetched for the node: ConfigMaps, Secrets, pull secrets, service
account tokens and Services (for environment variables).

Kubelet's "cache" strategy: each object is read with a GET and kept for ``ttl`` seconds, so many pods
(and many resyncs) referring to one ConfigMap cost one request per period, and a change reaches the
pods within a period. A 404 is cached too (an optional source that does not exist is asked about once
per period, not per container). Tokens are kept until 80% of their lifetime has passed, as the
kubelet's token manager does; if the API server does not serve ``serviceaccounts/<name>/token`` the
token source answers None and the volume code says so in an event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from podvisor.client import APIClient, APIStatusError, NotFound, Res
from podvisor.images.auth import Keychain, keychain_from_secrets

__all__ = ["APISources", "CONFIGMAPS", "SECRETS", "SERVICEACCOUNTS", "SERVICES"]

log = logging.getLogger("podvisor.spherelet.sources")

CONFIGMAPS = Res("", "v1", "configmaps", kind="ConfigMap")
SECRETS = Res("", "v1", "secrets", kind="Secret")
SERVICEACCOUNTS = Res("", "v1", "serviceaccounts", kind="ServiceAccount")
SERVICES = Res("", "v1", "services", kind="Service")


class APISources:
    def __init__(self, client: APIClient, *, clock: Callable[[], float], ttl: float = 10.0) -> None:
        self.client, self.clock, self.ttl = client, clock, ttl
        self._cache: dict[tuple[str, str, str], tuple[float, dict[str, Any] | None]] = {}
        self._tokens: dict[tuple[str, ...], tuple[float, str]] = {}
        self.tokens_served: bool | None = None      # None: not asked yet

    def invalidate(self) -> None:
        self._cache.clear()

    async def _get(self, res: Res, namespace: str, name: str) -> dict[str, Any] | None:
        key = (res.plural, namespace, name)
        hit = self._cache.get(key)
        now = self.clock()
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        try:
            obj: dict[str, Any] | None = await self.client.get(res, name, namespace)
        except NotFound:
            obj = None
        self._cache[key] = (now, obj)
        return obj

    async def configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(CONFIGMAPS, namespace, name)

    async def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(SECRETS, namespace, name)

    async def pull_keychain(self, pod: Mapping[str, Any]) -> Keychain | None:
        """Credentials from the pod's ``imagePullSecrets`` (missing secrets are skipped, as kube does)."""
        spec = pod.get("spec") or {}
        namespace = str((pod.get("metadata") or {}).get("namespace") or "default")
        found = []
        for ref in spec.get("imagePullSecrets") or []:
            name = str((ref or {}).get("name") or "")
            if name:
                secret = await self.secret(namespace, name)
                if secret is not None:
                    found.append(secret)
        return keychain_from_secrets(found) if found else None

    async def services(self, namespace: str) -> list[dict[str, Any]]:
        """Services whose variables a pod in ``namespace`` gets: its namespace's, and ``kubernetes``."""
        out: list[dict[str, Any]] = []
        key = ("services", namespace, "*")
        hit = self._cache.get(key)
        now = self.clock()
        if hit is not None and now - hit[0] < self.ttl and hit[1] is not None:
            return list(hit[1].get("items") or [])
        try:
            items, _ = await self.client.list_all(SERVICES, namespace)
            out = list(items)
            if namespace != "default":
                k8s = await self._get(SERVICES, "default", "kubernetes")
                if k8s is not None:
                    out.append(k8s)
        except APIStatusError as exc:
            log.debug("services of %s: %s", namespace, exc)
        self._cache[key] = (now, {"items": out})
        return out

    async def token(self, pod: Mapping[str, Any], audience: str, expiration: int) -> str | None:
        md = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        namespace = str(md.get("namespace") or "default")
        sa = str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default")
        key = (namespace, sa, audience, str(md.get("uid", "")), str(expiration))
        now = self.clock()
        hit = self._tokens.get(key)
        if hit is not None and hit[1] and now < hit[0]:
            return hit[1]
        if hit is not None and not hit[1] and now < hit[0] + 60:
            return None
        body: dict[str, Any] = {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"audiences": [audience] if audience else [], "expirationSeconds": max(600, expiration),
                     "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": md.get("name", ""),
                                        "uid": md.get("uid", "")}},
        }
        try:
            answer = await self.client.request("POST", SERVICEACCOUNTS.path(namespace, sa, "token"), body=body)
        except APIStatusError as exc:
            # not served, or no such account: ask again in a minute, not on every resync
            self.tokens_served = False
            self._tokens[key] = (now, "")
            log.info("no token for %s/%s: %s", namespace, sa, exc)
            return None
        token = str((answer.get("status") or {}).get("token") or "")
        if not token:
            return None
        self.tokens_served = True
        self._tokens[key] = (now + 0.8 * max(600, expiration), token)
        return token
