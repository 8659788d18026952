"""The image service: pull OCI/Docker images from any registry, stage each onto a read-only disk.

Entry points: `podvisor.images.service.ImageService` (the node agent's API), `podvisor.images.cli`
(`podvisor image push|pull|ls|rm|gc`), `podvisor.images.mirrors` (``--registry-mirror`` parsing).
Module map: reference/manifest/auth/mirrors (names and formats) -> client (HTTP) -> puller (resolve,
fetch, verify) -> unpack/compression (layers onto a root) -> disk (mkfs) -> stager -> store (the cache
on disk) -> service; build/sources/push for the way out.
"""
