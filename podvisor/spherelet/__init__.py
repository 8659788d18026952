"""The spherelet: Podvisor's node agent, one per host (a kubelet whose pods are VMs).

Entry points: `Spherelet` (the component `podvisor up` starts), `podvisor.spherelet.runtime` (the
narrow runtime interface below it) and `podvisor.spherelet.hostd_runtime` (that interface over hostd
and the guest agent). Module map: node (Node, Lease) · worker (one worker per pod UID, the state
machine) · podsync (one convergence pass) · lifecycle (graceful stop, clean-up) · podstate/status
(what `kubectl get/describe pod` shows) · envvars/volumes/containers (the pod spec made concrete) ·
probes/handlers/backoff (health and restarts) · server/streams/logs (logs, exec, attach, port-forward).
"""

from podvisor.spherelet.spherelet import NetworkFactory, Spherelet

__all__ = ["Spherelet", "NetworkFactory"]
