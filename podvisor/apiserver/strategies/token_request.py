"""``serviceaccounts/<name>/token``: a TokenRequest in, a signed token for the account out.

This is how every Kubernetes client gets a service account token today (``kubectl create token``, the
kubelet's projected token volumes, our spherelet's): nothing is stored, the answer is the request
with ``status.token`` and ``status.expirationTimestamp`` filled in, 201 Created. Kubernetes' rules:

* the account must exist (404 otherwise); ``metadata.name``/``namespace`` in the body, when given,
  must match the URL (422);
* ``spec.audiences`` empty means the API server's own audiences; ``spec.expirationSeconds`` defaults
  to one hour and must be at least ten minutes (422 otherwise);
* ``spec.boundObjectRef`` ties the token's life to a Pod (which must run as this account) or a
  Secret in the namespace: 404 if it does not exist, 409 if its uid is not the one named, 400 for any
  other kind. A pod-bound token also names the pod's node when the pod is scheduled.

The token's times come from the store's clock, so ``status.expirationTimestamp`` never lies past the
token's ``exp``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from podvisor.apiserver import errors as api
from podvisor.apiserver.meta import format_time, meta
from podvisor.apiserver.rest import RequestOptions, WriteResult
from podvisor.apiserver.strategies.base import SubresourceHandler
from podvisor.apiserver.strategies.sa_tokens import (
    DEFAULT_EXPIRATION_SECONDS,
    MAX_EXPIRATION_SECONDS,
    MIN_EXPIRATION_SECONDS,
    ObjectRef,
    TokenIssuer,
)
from podvisor.apiserver.validation import FieldErrors

if TYPE_CHECKING:
    from podvisor.apiserver.store import Store

__all__ = ["TokenRequestHandler", "TOKEN_REQUEST_API_VERSION"]

TOKEN_REQUEST_API_VERSION = "authentication.k8s.io/v1"
_KIND = "TokenRequest.authentication.k8s.io"


def _invalid(name: str, errs: FieldErrors) -> api.InvalidError:
    parts = [f"{c.field}: {c.message}" for c in errs]
    detail = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    return api.InvalidError(f'{_KIND} "{name}" is invalid: {detail}', name=name,
                            group="authentication.k8s.io", kind="TokenRequest", causes=list(errs))


class TokenRequestHandler(SubresourceHandler):
    """Issues tokens with ``issuer``. ``objects`` gives the store of a core resource by its plural
    (``pods``, ``secrets``, ``nodes``): bound objects are looked up through it."""

    name = "token"

    def __init__(self, issuer: TokenIssuer, *, objects: Callable[[str], Store]) -> None:
        self.issuer = issuer
        self._objects = objects

    async def create(
        self, store: Store, namespace: str, name: str, obj: dict[str, Any], opts: RequestOptions
    ) -> WriteResult:
        if not isinstance(obj, dict):
            raise api.BadRequestError("the body of the request was not a TokenRequest object")
        req = copy.deepcopy(obj)
        m: dict[str, Any] = req["metadata"] if isinstance(req.get("metadata"), dict) else {}
        errs = FieldErrors()
        if m.get("name") and m["name"] != name:
            errs.invalid("metadata.name", m["name"], "must match the service account name if specified")
        if m.get("namespace") and m["namespace"] != namespace:
            errs.invalid("metadata.namespace", m["namespace"], "must match the service account namespace if specified")
        if errs:
            raise _invalid(name, errs)
        account, _ = await store.read(namespace, name)  # 404: serviceaccounts "x" not found
        am = meta(account)

        spec: dict[str, Any] = req["spec"] if isinstance(req.get("spec"), dict) else {}
        audiences = [str(a) for a in spec.get("audiences") or [] if a]
        if not audiences:
            audiences = list(self.issuer.audiences)
        expiration = spec.get("expirationSeconds")
        if expiration is None:
            expiration = DEFAULT_EXPIRATION_SECONDS
        if isinstance(expiration, bool) or not isinstance(expiration, int):
            errs.invalid("spec.expirationSeconds", expiration, "must be an integer")
        elif expiration < MIN_EXPIRATION_SECONDS:
            errs.invalid("spec.expirationSeconds", expiration, "may not specify a duration less than 10 minutes")
        elif expiration > MAX_EXPIRATION_SECONDS:
            errs.append(api.Cause("FieldValueTooLong", "Too long: may not specify a duration larger than 2^32 seconds",
                                  "spec.expirationSeconds"))
        ref = spec.get("boundObjectRef")
        if ref is not None and not isinstance(ref, dict):
            errs.invalid("spec.boundObjectRef", ref, "must be an object reference")
        if errs:
            raise _invalid("", errs)

        pod = secret = node = None
        if ref:
            pod, secret, node = await self._bound(namespace, name, ref)

        now = store.clock()
        token, claims = self.issuer.issue(
            namespace=namespace, service_account=ObjectRef(str(am.get("name") or name), str(am.get("uid") or "")),
            audiences=audiences, expiration_seconds=int(expiration), now=now.timestamp(),
            pod=pod, secret=secret, node=node,
        )
        out_meta = {k: v for k, v in m.items() if k not in ("resourceVersion", "uid", "generation")}
        out_meta.update(name=name, namespace=namespace, creationTimestamp=format_time(now))
        out_spec: dict[str, Any] = {"audiences": audiences, "expirationSeconds": int(expiration),
                                    "boundObjectRef": copy.deepcopy(ref) if ref else None}
        body = {
            "kind": "TokenRequest",
            "apiVersion": TOKEN_REQUEST_API_VERSION,
            "metadata": out_meta,
            "spec": out_spec,
            "status": {
                "token": token,
                "expirationTimestamp": format_time(datetime.fromtimestamp(claims.expires_at, UTC)),
            },
        }
        return WriteResult(body, 201)

    async def _bound(
        self, namespace: str, account: str, ref: dict[str, Any]
    ) -> tuple[ObjectRef | None, ObjectRef | None, ObjectRef | None]:
        kind = str(ref.get("kind") or "")
        api_version = str(ref.get("apiVersion") or "")
        ref_name = str(ref.get("name") or "")
        group = api_version.rpartition("/")[0] if "/" in api_version else ""
        if group or kind not in ("Pod", "Secret"):
            gvk = f"{api_version if '/' in api_version else '/' + api_version}, Kind={kind}"
            raise api.BadRequestError(f"cannot bind token to object of type {gvk}")
        if not ref_name:
            errs = FieldErrors()
            errs.required("spec.boundObjectRef.name")
            raise _invalid("", errs)
        plural = "pods" if kind == "Pod" else "secrets"
        target, _ = await self._objects(plural).read(namespace, ref_name)  # 404 for a missing object
        tm = meta(target)
        uid = str(tm.get("uid") or "")
        want = str(ref.get("uid") or "")
        if kind == "Pod":
            runs_as = str((target.get("spec") or {}).get("serviceAccountName") or "default")
            if runs_as != account:
                raise api.BadRequestError(
                    f'cannot bind token for serviceaccount "{account}" to pod running with different '
                    "serviceaccount name.")
        if want and want != uid:
            raise api.ConflictError(
                f'Operation cannot be fulfilled on {kind} "{ref_name}": the UID in the bound object reference '
                f"({want}) does not match the UID in record. The object might have been deleted and then recreated",
                name=ref_name, kind=kind,
            )
        if kind == "Secret":
            return None, ObjectRef(ref_name, uid), None
        node: ObjectRef | None = None
        node_name = str((target.get("spec") or {}).get("nodeName") or "")
        if node_name:
            try:
                found, _ = await self._objects("nodes").read("", node_name)
                node = ObjectRef(node_name, str(meta(found).get("uid") or ""))
            except api.NotFoundError:
                node = None  # a pod on a node that is gone: the token is still the pod's
        return ObjectRef(ref_name, uid), None, node
