"""Who may pull and push which project: one project per Kubernetes namespace.

A repository ``<namespace>/<repo>`` (any depth below the namespace) belongs to the project
``<namespace>``. The default policy, until an RBAC issue replaces it through the ``Authorizer`` seam:

- administrators (user ``admin`` or group ``system:masters``): pull, push and delete everywhere, and the
  catalog;
- nodes (group ``system:nodes``): pull everywhere, since they run every namespace's pods;
- a namespace's service accounts (``system:serviceaccount:<ns>:*`` or group
  ``system:serviceaccounts:<ns>``) and members of the group ``podvisor:project:<ns>``: pull and push their
  project;
- every authenticated identity: pull the public project ``library`` (as Harbor's public projects);
- anonymous: nothing (the token service refuses it before asking the policy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from podvisor.registry.identity import Identity

__all__ = ["Scope", "Authorizer", "ProjectPolicy", "parse_scopes", "PUBLIC_PROJECTS"]

PUBLIC_PROJECTS = frozenset({"library"})


@dataclass(frozen=True, slots=True)
class Scope:
    """One requested ``type:name:actions`` scope of the Docker token protocol."""

    type: str
    name: str
    actions: tuple[str, ...]

    @property
    def project(self) -> str:
        return self.name.split("/", 1)[0] if "/" in self.name else ""


def parse_scopes(values: list[str]) -> list[Scope]:
    """Parse ``scope`` query values; one value may hold several scopes separated by spaces.
    The name may itself contain ``:`` (a registry host with a port), so split from both ends."""
    scopes: list[Scope] = []
    for value in values:
        for item in value.split():
            kind, sep, rest = item.partition(":")
            name, sep2, actions = rest.rpartition(":")
            if not sep or not sep2 or not kind or not name:
                continue
            scopes.append(Scope(kind, name, tuple(a for a in actions.split(",") if a)))
    return scopes


class Authorizer(Protocol):
    async def allowed(self, identity: Identity, scope: Scope) -> set[str]:
        """The subset of ``scope.actions`` granted to ``identity``."""
        ...


class ProjectPolicy:
    """The default namespace-per-project policy described above."""

    async def allowed(self, identity: Identity, scope: Scope) -> set[str]:
        wanted = set(scope.actions)
        if identity.is_admin:
            return wanted
        if scope.type != "repository" or not scope.project:
            return set()
        project = scope.project
        granted: set[str] = set()
        if "system:nodes" in identity.groups or project in PUBLIC_PROJECTS:
            granted.add("pull")
        if _member_of(identity, project):
            granted |= {"pull", "push"}
        return wanted & granted


def _member_of(identity: Identity, namespace: str) -> bool:
    if identity.user.startswith(f"system:serviceaccount:{namespace}:"):
        return True
    return f"system:serviceaccounts:{namespace}" in identity.groups or f"podvisor:project:{namespace}" in identity.groups
