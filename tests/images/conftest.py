"""Fixtures for the image service's tests: a real registry per session, test images pushed to it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.registry.harness import RunningRegistry, start_registry


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    running = start_registry(tmp_path_factory.mktemp("registry-data"))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def busybox_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.imagebuild import build_busybox_layout

    return build_busybox_layout(tmp_path_factory.mktemp("layouts") / "busybox")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "host-data"
    d.mkdir()
    return d
