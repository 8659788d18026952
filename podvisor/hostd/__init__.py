"""hostd: the host agent. One per host; HTTPS on 127.0.0.1 with local tickets; the host's inventory and
its pod VMs (create, reconfigure, power, destroy, console, the guest agent relayed), state on disk,
running VMs adopted after a restart, VM templates for fast starts.

For callers: `podvisor.hostd.component.HostdComponent` (run it), `podvisor.hostd.client.HostdClient`
(talk to it), `podvisor.hostd.sizing` (how big a pod's VM is). The API is docs/hostd-openapi.yaml.
"""
