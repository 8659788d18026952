"""The embedded registry: one project per namespace behind the token service, as a client sees it."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
from pathlib import Path

import aiohttp
import pytest
import yaml

from podvisor.images.errors import RegistryUnauthorizedError
from podvisor.registry.component import EmbeddedRegistry, read_registry_state
from podvisor.registry.identity import Identity
from podvisor.registry.keys import SigningKey, b64url_decode
from podvisor.registry.policy import ProjectPolicy, Scope, parse_scopes
from tests.imagebuild import build_busybox_layout, push_layout
from tests.registry.harness import RunningRegistry, free_port


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def _token(registry: RunningRegistry, auth: str | None, *scopes: str) -> tuple[int, dict]:
    realm = registry.component.token_realm
    params = [("service", "podvisor-registry")] + [("scope", s) for s in scopes]
    async with aiohttp.ClientSession() as s:
        async with s.get(realm, params=params, headers={"Authorization": auth} if auth else {}) as r:
            return r.status, await r.json(content_type=None)


def _claims(token: str) -> dict:
    return json.loads(b64url_decode(token.split(".")[1]))


async def test_anonymous_is_refused_with_a_bearer_challenge(registry: RunningRegistry) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://{registry.address}/v2/default/bbox/manifests/1") as r:
            assert r.status == 401
            challenge = r.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'scope="repository:default/bbox:pull"' in challenge
    status, _ = await _token(registry, None, "repository:default/bbox:pull")
    assert status == 401


async def test_wrong_password_is_refused(registry: RunningRegistry) -> None:
    status, body = await _token(registry, _basic("admin", "not-the-token"), "repository:default/bbox:pull")
    assert status == 401
    assert body["errors"][0]["code"] == "UNAUTHORIZED"


async def test_admin_gets_every_action_it_asks_for(registry: RunningRegistry) -> None:
    status, body = await _token(registry, _basic("admin", registry.admin_token),
                                "repository:anything/app:pull,push", "registry:catalog:*")
    assert status == 200
    access = {a["name"]: a["actions"] for a in _claims(body["token"])["access"]}
    assert access == {"anything/app": ["pull", "push"], "catalog": ["*"]}


async def test_project_member_rights(registry: RunningRegistry) -> None:
    auth = _basic("dev", registry.tokens["dev"])
    status, body = await _token(registry, auth, "repository:team1/app:pull,push",
                                "repository:library/busybox:pull,push", "repository:team2/app:pull,push")
    assert status == 200
    access = {a["name"]: a["actions"] for a in _claims(body["token"])["access"]}
    assert access == {"team1/app": ["pull", "push"], "library/busybox": ["pull"], "team2/app": []}


async def test_user_name_does_not_choose_the_identity(registry: RunningRegistry) -> None:
    # dev's token typed with the user name "admin" is still dev
    status, body = await _token(registry, _basic("admin", registry.tokens["dev"]), "repository:team2/app:pull")
    assert status == 200
    assert _claims(body["token"])["sub"] == "dev"
    assert _claims(body["token"])["access"][0]["actions"] == []


async def test_push_and_pull_across_projects(registry: RunningRegistry, tmp_path: Path) -> None:
    layout = build_busybox_layout(tmp_path / "bb")
    a = registry.address
    await push_layout(layout, f"{a}/team1/app:1", username="dev", password=registry.tokens["dev"])
    await push_layout(layout, f"{a}/library/busybox:latest", password=registry.admin_token)
    with pytest.raises(RegistryUnauthorizedError):
        await push_layout(layout, f"{a}/team2/app:1", username="dev", password=registry.tokens["dev"])
    with pytest.raises(RegistryUnauthorizedError):
        await push_layout(layout, f"{a}/library/busybox:mine", username="dev", password=registry.tokens["dev"])
    with pytest.raises(RegistryUnauthorizedError):
        await push_layout(layout, f"{a}/team1/app:2", username="", password="")

    async def manifest(user: str, repo: str) -> int:
        cred = registry.credential(user)
        status, body = await _token(registry, _basic(cred.username, cred.password), f"repository:{repo}:pull")
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://{a}/v2/{repo}/manifests/{'1' if repo.startswith('team') else 'latest'}",
                             headers={"Authorization": f"Bearer {body['token']}",
                                      "Accept": "application/vnd.oci.image.manifest.v1+json"}) as r:
                return r.status

    assert await manifest("dev", "team1/app") == 200
    assert await manifest("other", "team1/app") == 401        # another team's project
    assert await manifest("other", "library/busybox") == 200   # the public project
    assert await manifest("node", "team1/app") == 200         # nodes pull for every namespace
    assert await manifest("nobody", "team1/app") == 401


def test_scopes_parse_with_hosts_and_several_actions() -> None:
    scopes = parse_scopes(["repository:team1/app:pull,push repository:library/x:pull", "registry:catalog:*"])
    assert scopes == [Scope("repository", "team1/app", ("pull", "push")), Scope("repository", "library/x", ("pull",)),
                      Scope("registry", "catalog", ("*",))]
    assert parse_scopes(["repository:127.0.0.1:5000/a/b:pull"])[0].name == "127.0.0.1:5000/a/b"


async def test_policy_defaults() -> None:
    policy = ProjectPolicy()
    sa = Identity("system:serviceaccount:team1:builder", ("system:serviceaccounts", "system:serviceaccounts:team1"))
    assert await policy.allowed(sa, Scope("repository", "team1/app", ("pull", "push"))) == {"pull", "push"}
    assert await policy.allowed(sa, Scope("repository", "team2/app", ("pull", "push"))) == set()
    assert await policy.allowed(sa, Scope("registry", "catalog", ("*",))) == set()
    assert await policy.allowed(Identity("root", ("system:masters",)), Scope("repository", "x/y", ("delete",))) \
        == {"delete"}


def test_signing_key_is_made_once_and_tokens_verify(tmp_path: Path) -> None:
    key = SigningKey.load_or_create(tmp_path)
    again = SigningKey.load_or_create(tmp_path)
    assert key.cert.serial_number == again.cert.serial_number
    assert oct((tmp_path / SigningKey.KEY_FILE).stat().st_mode & 0o777) == "0o600"
    token = key.sign_jwt({"sub": "x"})
    assert again.verify_jwt(token) == {"sub": "x"}
    head, body, sig = token.split(".")
    with pytest.raises(ValueError):
        again.verify_jwt(f"{head}.{body[:-2]}AA.{sig}")


def test_config_map_follows_local_registry_hosting_v1(registry: RunningRegistry) -> None:
    cm = registry.component.config_map()
    assert cm["metadata"] == {"name": "local-registry-hosting", "namespace": "kube-public"}
    hosting = yaml.safe_load(cm["data"]["localRegistryHosting.v1"])
    assert hosting["host"] == registry.address
    assert "help" in hosting


async def test_port_is_remembered_and_a_dead_registry_comes_back(tmp_path: Path) -> None:
    port = free_port()
    first = EmbeddedRegistry(tmp_path, port=port)
    await first.start()
    await first.stop()
    assert read_registry_state(tmp_path)["port"] == port
    second = EmbeddedRegistry(tmp_path)       # no port asked: the remembered one
    await second.start()
    try:
        assert second.address == f"127.0.0.1:{port}"
        assert second._proc is not None
        os.kill(second._proc.pid, signal.SIGKILL)
        for _ in range(100):
            await asyncio.sleep(0.1)
            if second._proc is not None and second._proc.returncode is None and second.status()["running"]:
                try:
                    async with aiohttp.ClientSession() as s:
                        async with s.get(f"http://{second.address}/v2/") as r:
                            if r.status == 401:
                                break
                except aiohttp.ClientError:
                    continue
        else:
            pytest.fail("the registry was not restarted")
    finally:
        await second.stop()
