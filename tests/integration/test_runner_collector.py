"""The runner pauses the cyclic garbage collector for each batch only: it is back on
after a batch (and after a failed one), and a process that turned it off keeps it off."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from registry.bootstrap import build_registry
from registry.cli.demo import run_demo
from registry.persistence.engine import make_engine
from registry.readmodels import runner as runner_module
from registry.readmodels.check import reconcile
from registry.readmodels.runner import ProjectionRunner
from registry.settings import Settings


def test_collector_paused_per_batch_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(f"sqlite:///{tmp_path}/registry.sqlite")
    registry, engine = build_registry(settings), make_engine(settings)
    try:
        assert run_demo(registry, out=lambda _: None)
        runner = ProjectionRunner(registry, engine, batch_size=7)
        seen: list[bool] = []
        step = runner._step

        def watched(conn: object) -> int:
            seen.append(gc.isenabled())
            return step(conn)  # type: ignore[arg-type]

        monkeypatch.setattr(runner, "_step", watched)
        assert gc.isenabled()
        assert runner.catch_up() > 0
        assert seen and not any(seen)  # off within every batch
        assert gc.isenabled()  # on again after
        assert reconcile(registry, engine) == []

        def failing(conn: object) -> int:
            raise RuntimeError("boom")

        monkeypatch.setattr(runner, "_step", failing)
        with pytest.raises(RuntimeError):
            runner.step()
        assert gc.isenabled()

        gc.disable()
        try:
            with runner_module._collector_paused():
                pass
            assert not gc.isenabled()  # left as the process had it
        finally:
            gc.enable()
    finally:
        registry.close()
        engine.dispose()
