"""The embedded registry: CNCF distribution behind Podvisor's token service, one project per namespace.

`podvisor.registry.component.EmbeddedRegistry` is what `podvisor up` starts; `tokens` answers the Docker
token protocol, `identity` checks the credentials Podvisor issued, `policy` decides per project.
"""
