from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from registry.application import Registry
from tests.support import FakeClock, registry_on

BACKENDS = ["memory", "sqlite", "postgres"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=BACKENDS)
def registry(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> Iterator[Registry]:
    """The same application cases run on every backend."""
    if request.param == "postgres":
        request.applymarker(pytest.mark.postgres)
    with registry_on(request.param, tmp_path, clock) as app:
        yield app
