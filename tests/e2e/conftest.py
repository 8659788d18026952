from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cluster import Cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base: Path = tmp_path_factory.mktemp("pv")
    home = base / "home"
    home.mkdir()
    c = Cluster(data_dir=base / "data", home=home)
    c.data_dir.mkdir()
    c.start()
    try:
        yield c
    finally:
        c.stop()
