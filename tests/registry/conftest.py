"""Fixtures for the embedded registry's tests: one real registry per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.registry.harness import RunningRegistry, start_registry


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    running = start_registry(tmp_path_factory.mktemp("registry-data"))
    yield running
    running.stop()
