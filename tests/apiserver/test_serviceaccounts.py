"""Service account tokens on a real API server (SQLite, plain HTTP on the test's loop): TokenRequest
issuing, the authenticator accepting what it issued and refusing what it must, and the ServiceAccount
controller keeping a ``default`` account in every namespace."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from podvisor.apiserver.authn import Authenticator, ServiceAccountAuthenticator
from podvisor.apiserver.rest import UserInfo
from podvisor.apiserver.server import APIServer
from podvisor.apiserver.strategies.sa_tokens import (
    DEFAULT_AUDIENCES,
    DEFAULT_ISSUER,
    SigningKey,
    TokenIssuer,
    TokenVerifier,
)

ADMIN = "sa-test-admin-token"


def _claims(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    head, body, _ = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return json.loads(base64.urlsafe_b64decode(pad(head))), json.loads(base64.urlsafe_b64decode(pad(body)))


class Clock:
    """The authenticator's clock: real time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class Env:
    server: APIServer
    session: aiohttp.ClientSession
    key: SigningKey
    clock: Clock
    service_accounts: ServiceAccountAuthenticator

    async def call(self, method: str, path: str, body: Any = None, *, token: str = ADMIN) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"}
        async with self.session.request(method, self.server.url + path, json=body, headers=headers) as r:
            text = await r.text()
            return r.status, (json.loads(text) if text.startswith("{") else text)

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, out = await self.call(method, path, body)
        assert status < 300, (status, out)
        return out

    async def token(self, ns: str, sa: str, spec: dict[str, Any] | None = None) -> tuple[int, Any]:
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec or {}}
        return await self.call("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token", body)

    async def namespace_with_account(self, ns: str, sa: str) -> dict[str, Any]:
        await self.ok("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        return await self.ok(  # type: ignore[no-any-return]
            "POST", f"/api/v1/namespaces/{ns}/serviceaccounts",
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa}})

    async def api_status(self, token: str) -> int:
        status, _ = await self.call("GET", "/api", token=token)
        return status


async def eventually(check: Callable[[], Awaitable[bool]], what: str, *, within: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {within}s: {what}")


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    from podvisor.apiserver.registry import bootstrap, build_registry
    from podvisor.storage.sqlite import SQLiteStorage

    storage = await SQLiteStorage.open(tmp_path / "state.db")
    key = SigningKey.generate()
    registry: Any = await build_registry(storage, token_issuer=TokenIssuer(key))
    await bootstrap(registry)
    clock = Clock()
    sa_authn = ServiceAccountAuthenticator(TokenVerifier([key.public_key]), registry, clock=clock, retry_delay=0.1)
    authn = Authenticator(tokens={ADMIN: UserInfo("admin", groups=("system:masters",))}, service_accounts=sa_authn)
    await authn.start()
    server = APIServer(registry, host="127.0.0.1", port=0, ssl_context=None, authenticator=authn, storage=storage,
                       shutdown_timeout=5)
    await server.start()
    session = aiohttp.ClientSession()
    try:
        yield Env(server, session, key, clock, sa_authn)
    finally:
        await session.close()
        await server.stop()
        await authn.stop()
        await storage.close()


async def test_token_request_answers_with_a_signed_token_in_kubernetes_format(env: Env) -> None:
    sa = await env.namespace_with_account("t1", "robot")
    status, out = await env.token("t1", "robot")
    assert status == 201, out
    assert out["kind"] == "TokenRequest" and out["apiVersion"] == "authentication.k8s.io/v1"
    assert out["metadata"]["name"] == "robot" and out["metadata"]["namespace"] == "t1"
    assert out["spec"]["audiences"] == list(DEFAULT_AUDIENCES)
    assert out["spec"]["expirationSeconds"] == 3600
    header, claims = _claims(out["status"]["token"])
    assert header["alg"] == "ES256" and header["kid"] == env.key.key_id
    assert claims["iss"] == DEFAULT_ISSUER
    assert claims["sub"] == "system:serviceaccount:t1:robot"
    assert claims["aud"] == list(DEFAULT_AUDIENCES)
    assert claims["exp"] - claims["iat"] == 3600 and claims["nbf"] == claims["iat"]
    assert claims["jti"]
    assert claims["kubernetes.io"] == {"namespace": "t1", "serviceaccount": {"name": "robot", "uid": sa["metadata"]["uid"]}}
    # the expiration the client is told is the token's own
    exp = out["status"]["expirationTimestamp"]
    assert exp == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(claims["exp"]))


async def test_token_authenticates_as_the_service_account(env: Env) -> None:
    sa = await env.namespace_with_account("t2", "robot")
    _, out = await env.token("t2", "robot")
    token = out["status"]["token"]
    user = env.service_accounts.authenticate_token(token)
    assert user == UserInfo(
        name="system:serviceaccount:t2:robot", uid=sa["metadata"]["uid"],
        groups=("system:serviceaccounts", "system:serviceaccounts:t2", "system:authenticated"),
    )
    assert await env.api_status(token) == 200
    status, listed = await env.call("GET", "/api/v1/namespaces/t2/serviceaccounts", token=token)
    assert status == 200 and [i["metadata"]["name"] for i in listed["items"]] == ["robot"]


async def test_expired_token_is_refused(env: Env) -> None:
    await env.namespace_with_account("t3", "robot")
    _, out = await env.token("t3", "robot", {"expirationSeconds": 600})
    token = out["status"]["token"]
    assert await env.api_status(token) == 200
    env.clock.offset = 600 + 30  # past exp, inside the 60 s leeway clocks are allowed
    assert await env.api_status(token) == 200
    env.clock.offset = 600 + 120
    status, body = await env.call("GET", "/api", token=token)
    assert status == 401 and body["reason"] == "Unauthorized"


async def test_expiration_is_defaulted_and_at_least_ten_minutes(env: Env) -> None:
    await env.namespace_with_account("t4", "robot")
    status, out = await env.token("t4", "robot", {"expirationSeconds": 60})
    assert status == 422
    assert out["message"] == ('TokenRequest.authentication.k8s.io "" is invalid: spec.expirationSeconds: '
                              "Invalid value: 60: may not specify a duration less than 10 minutes")
    status, out = await env.token("t4", "robot", {"expirationSeconds": 7200})
    assert status == 201 and out["spec"]["expirationSeconds"] == 7200
    _, claims = _claims(out["status"]["token"])
    assert claims["exp"] - claims["iat"] == 7200


async def test_token_for_another_audience_does_not_authenticate_here(env: Env) -> None:
    await env.namespace_with_account("t5", "robot")
    _, out = await env.token("t5", "robot", {"audiences": ["https://vault.example"]})
    assert out["spec"]["audiences"] == ["https://vault.example"]
    assert _claims(out["status"]["token"])[1]["aud"] == ["https://vault.example"]
    assert await env.api_status(out["status"]["token"]) == 401
    # naming one of the API server's audiences among others is enough
    _, out = await env.token("t5", "robot", {"audiences": ["https://vault.example", "podvisor"]})
    assert await env.api_status(out["status"]["token"]) == 200


async def test_missing_account_is_404(env: Env) -> None:
    await env.namespace_with_account("t6", "robot")
    status, out = await env.token("t6", "nobody")
    assert status == 404 and out["message"] == 'serviceaccounts "nobody" not found'
    status, out = await env.call("POST", "/api/v1/namespaces/t6/serviceaccounts/robot/token",
                                 {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                  "metadata": {"name": "other"}, "spec": {}})
    assert status == 422 and "must match the service account name" in out["message"]


async def test_deleted_or_recreated_account_invalidates_its_tokens(env: Env) -> None:
    await env.namespace_with_account("t7", "robot")
    _, out = await env.token("t7", "robot")
    token = out["status"]["token"]
    assert await env.api_status(token) == 200
    await env.ok("DELETE", "/api/v1/namespaces/t7/serviceaccounts/robot")

    async def refused() -> bool:
        return await env.api_status(token) == 401

    await eventually(refused, "token of a deleted account refused")
    # an account of the same name is another account: the old token stays refused
    await env.ok("POST", "/api/v1/namespaces/t7/serviceaccounts",
                 {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}})
    _, out = await env.token("t7", "robot")
    fresh = out["status"]["token"]

    async def fresh_accepted() -> bool:
        return await env.api_status(fresh) == 200

    await eventually(fresh_accepted, "token of the new account accepted")
    assert await env.api_status(token) == 401


async def test_pod_bound_token_lives_as_long_as_the_pod(env: Env) -> None:
    await env.namespace_with_account("t8", "robot")
    pod = await env.ok("POST", "/api/v1/namespaces/t8/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"serviceAccountName": "robot", "containers": [{"name": "c", "image": "busybox"}]}})
    uid = pod["metadata"]["uid"]
    ref = {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": uid}
    status, out = await env.token("t8", "robot", {"boundObjectRef": ref})
    assert status == 201, out
    assert out["spec"]["boundObjectRef"] == ref
    token = out["status"]["token"]
    assert _claims(token)[1]["kubernetes.io"]["pod"] == {"name": "p", "uid": uid}

    async def accepted() -> bool:
        return await env.api_status(token) == 200

    await eventually(accepted, "pod-bound token accepted")
    # the pod must exist, be the one named, and run as this account
    status, out = await env.token("t8", "robot", {"boundObjectRef": {**ref, "uid": "not-the-uid"}})
    assert status == 409 and "does not match the UID in record" in out["message"]
    status, out = await env.token("t8", "robot", {"boundObjectRef": {**ref, "name": "ghost", "uid": ""}})
    assert status == 404 and out["message"] == 'pods "ghost" not found'
    await env.ok("POST", "/api/v1/namespaces/t8/serviceaccounts",
                 {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "other"}})
    status, out = await env.token("t8", "other", {"boundObjectRef": ref})
    assert status == 400 and "different serviceaccount name" in out["message"]
    status, out = await env.token("t8", "robot", {"boundObjectRef": {"kind": "ConfigMap", "apiVersion": "v1", "name": "x"}})
    assert status == 400 and out["message"] == "cannot bind token to object of type /v1, Kind=ConfigMap"

    await env.ok("DELETE", "/api/v1/namespaces/t8/pods/p", {"gracePeriodSeconds": 0})

    async def refused() -> bool:
        return await env.api_status(token) == 401

    await eventually(refused, "token of a deleted pod refused")
    assert await env.api_status(_issued(await env.token("t8", "robot"))) == 200


def _issued(answer: tuple[int, Any]) -> str:
    status, out = answer
    assert status == 201, out
    return str(out["status"]["token"])


async def test_secret_bound_token_dies_with_the_secret(env: Env) -> None:
    await env.namespace_with_account("t9", "robot")
    secret = await env.ok("POST", "/api/v1/namespaces/t9/secrets",
                          {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"a": "b"}})
    ref = {"kind": "Secret", "apiVersion": "v1", "name": "s", "uid": secret["metadata"]["uid"]}
    status, out = await env.token("t9", "robot", {"boundObjectRef": ref})
    assert status == 201, out
    token = out["status"]["token"]
    assert _claims(token)[1]["kubernetes.io"]["secret"] == {"name": "s", "uid": secret["metadata"]["uid"]}

    async def accepted() -> bool:
        return await env.api_status(token) == 200

    await eventually(accepted, "secret-bound token accepted")
    await env.ok("DELETE", "/api/v1/namespaces/t9/secrets/s")

    async def refused() -> bool:
        return await env.api_status(token) == 401

    await eventually(refused, "token of a deleted secret refused")


async def test_garbage_and_foreign_tokens_are_refused(env: Env) -> None:
    sa = await env.namespace_with_account("t10", "robot")
    assert await env.api_status("not-a-token") == 401
    assert await env.api_status("a.b.c") == 401
    # well-formed, our issuer, but signed by a key that is not the cluster's
    now = int(time.time())
    forged = SigningKey.generate().sign({
        "iss": DEFAULT_ISSUER, "sub": "system:serviceaccount:t10:robot", "aud": list(DEFAULT_AUDIENCES),
        "exp": now + 600, "iat": now, "nbf": now,
        "kubernetes.io": {"namespace": "t10", "serviceaccount": {"name": "robot", "uid": sa["metadata"]["uid"]}}})
    assert await env.api_status(forged) == 401
    # a token whose signature was tampered with
    _, out = await env.token("t10", "robot")
    head, body, sig = out["status"]["token"].split(".")
    tampered = f"{head}.{body}.{sig[:-4]}{'AAAA' if sig[-4:] != 'AAAA' else 'BBBB'}"
    assert await env.api_status(tampered) == 401
    assert await env.api_status(out["status"]["token"]) == 200
    # the static token file still works beside service account tokens
    assert await env.api_status(ADMIN) == 200


async def test_without_a_signing_key_tokens_are_not_served(tmp_path: Path) -> None:
    from podvisor.apiserver.errors import NotFoundError
    from podvisor.apiserver.registry import build_registry
    from podvisor.apiserver.rest import RequestOptions
    from podvisor.storage.sqlite import SQLiteStorage

    storage = await SQLiteStorage.open(tmp_path / "state.db")
    try:
        registry = await build_registry(storage)
        store = registry.store("", "serviceaccounts")
        with pytest.raises(NotFoundError):
            await store.create("default", {"spec": {}}, RequestOptions(user=UserInfo("admin")),
                               subresource="token", name="default")
    finally:
        await storage.close()


async def test_controller_keeps_a_default_account_in_every_namespace(env: Env) -> None:
    from podvisor.client import APIClient, ClientConfig
    from podvisor.controllers.serviceaccount import ServiceAccountController

    client = APIClient(ClientConfig(server=env.server.url, ssl_context=None,
                                    headers={"Authorization": f"Bearer {ADMIN}"}))
    controller = ServiceAccountController(client)
    await controller.start()
    try:
        async def has_default(ns: str) -> bool:
            status, _ = await env.call("GET", f"/api/v1/namespaces/{ns}/serviceaccounts/default")
            return status == 200

        async def in_default() -> bool:
            return await has_default("default")

        await eventually(in_default, "default/default made for a namespace that existed before")
        await env.ok("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "c1"}})

        async def in_c1() -> bool:
            return await has_default("c1")

        await eventually(in_c1, "c1/default made for a new namespace")
        first = await env.ok("GET", "/api/v1/namespaces/c1/serviceaccounts/default")
        await env.ok("DELETE", "/api/v1/namespaces/c1/serviceaccounts/default")

        async def recreated() -> bool:
            status, sa = await env.call("GET", "/api/v1/namespaces/c1/serviceaccounts/default")
            return status == 200 and sa["metadata"]["uid"] != first["metadata"]["uid"]

        await eventually(recreated, "c1/default recreated after deletion")
    finally:
        await controller.stop()
        await client.close()
