"""A following runner wakes on PostgreSQL's NOTIFY, not on its poll timer."""

from __future__ import annotations

import threading
import time

import pytest

from registry.application import Trade
from registry.bootstrap import build_registry
from registry.persistence.engine import make_engine
from registry.readmodels.runner import ProjectionRunner
from registry.settings import Settings
from tests.support import EXCHANGE, fresh_pg_database, open_trader

pytestmark = pytest.mark.postgres


def test_follower_wakes_on_new_events_long_before_its_poll_interval() -> None:
    with fresh_pg_database() as url:
        settings = Settings(url)
        registry = build_registry(settings)
        engine = make_engine(settings)
        runner = ProjectionRunner(registry, engine)
        stop = threading.Event()
        follower = threading.Thread(target=runner.follow, args=(stop, 60.0))
        try:
            open_trader(registry, "TRD-0001")
            runner.catch_up()
            follower.start()
            time.sleep(0.3)  # the follower is now asleep on its 60 s timer
            waits = []
            for n in range(5):
                result = registry.settle_trade(
                    EXCHANGE, Trade(f"T-{n}", "TRD-0001", "TRD-0002", "CEA", 1)
                )
                started = time.monotonic()
                runner.wait_for(result.position, timeout=10)
                waits.append(time.monotonic() - started)
            assert max(waits) < 5, waits
            assert result.position is not None
            assert min(runner.positions().values()) >= result.position
        finally:
            stop.set()
            if follower.is_alive():
                follower.join(timeout=5)
                assert not follower.is_alive(), "the follower did not stop promptly"
            engine.dispose()
            registry.close()
