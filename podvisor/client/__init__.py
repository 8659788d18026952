"""The async Kubernetes client used by every Podvisor component that talks to the API server."""

from podvisor.client.config import ClientConfig, load_kubeconfig
from podvisor.client.errors import AlreadyExists, APIStatusError, Conflict, Gone, NotFound
from podvisor.client.informer import Informer, obj_key
from podvisor.client.rest import APIClient, Res
from podvisor.client.workqueue import WorkQueue

__all__ = [
    "APIClient", "APIStatusError", "AlreadyExists", "ClientConfig", "Conflict", "Gone", "Informer",
    "NotFound", "Res", "WorkQueue", "load_kubeconfig", "obj_key",
]
