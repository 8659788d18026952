"""The two writes a node agent makes to pods: the status (``pods/<name>/status``, a merge patch of
only what changed) and the final delete (grace 0 with a uid precondition, so a new pod that reuses
the name is never touched). Both treat a pod that is already gone as done."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from podvisor.client import APIClient, Conflict, NotFound, Res

__all__ = ["PODS", "APIPods"]

PODS = Res("", "v1", "pods", kind="Pod")


class APIPods:
    def __init__(self, client: APIClient, *, field_manager: str = "spherelet") -> None:
        self.client, self.field_manager = client, field_manager

    async def patch_status(self, pod: Mapping[str, Any], patch: dict[str, Any]) -> dict[str, Any] | None:
        md = pod.get("metadata") or {}
        try:
            return await self.client.patch(PODS, str(md.get("name")), patch, str(md.get("namespace")),
                                           subresource="status", field_manager=self.field_manager)
        except NotFound:
            return None

    async def delete_pod(self, pod: Mapping[str, Any]) -> None:
        md = pod.get("metadata") or {}
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                "preconditions": {"uid": md.get("uid")}}
        try:
            await self.client.delete(PODS, str(md.get("name")), str(md.get("namespace")), body=body)
        except (NotFound, Conflict):
            pass
