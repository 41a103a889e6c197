"""The worker's probes: liveness by the loop's last tick, readiness by its state, both
served over real HTTP with /metrics (registry.observability.worker)."""

from __future__ import annotations

import urllib.error
import urllib.request

from registry.cli.health import NOT_SERVING, SERVING, UNREACHABLE, check_worker
from registry.observability.metrics import RegistryMetrics
from registry.observability.worker import (
    CATCHING_UP,
    FAULT,
    FOLLOWING,
    STANDBY,
    WorkerHealth,
    WorkerMetrics,
    serve,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_live_while_the_loop_ticks_ready_only_following_or_standing_by() -> None:
    clock = Clock()
    health = WorkerHealth(live_seconds=60, clock=clock)
    assert health.live()[0] and health.ready() == (False, "starting")
    health.tick(CATCHING_UP)
    assert health.ready() == (False, CATCHING_UP)
    health.tick(FOLLOWING)
    assert health.ready() == (True, FOLLOWING)
    clock.now += 61  # no tick for longer than the bound: neither live nor ready
    assert not health.live()[0] and not health.ready()[0]
    health.tick()  # a tick keeps the state
    assert health.ready() == (True, FOLLOWING)
    health.tick(FAULT)
    assert not health.ready()[0]
    health.tick(STANDBY)
    assert health.ready() == (True, STANDBY)


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return int(answer.status), answer.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()


def test_probes_and_metrics_share_the_port() -> None:
    metrics = RegistryMetrics(process_metrics=False)
    health = WorkerHealth()
    worker = WorkerMetrics(metrics.registry, health)
    worker.chained(5, 12, [10, 12])
    worker.swept("holds", 2)
    worker.seal_failed("tampered")
    worker.watch_head(lambda: 15)
    server = serve(health, metrics.registry, 0, host="127.0.0.1")
    try:
        assert get(server.port, "/healthz")[0] == 200
        assert get(server.port, "/readyz") == (503, "starting\n")
        assert check_worker("ready", port=server.port)[0] == NOT_SERVING
        health.tick(FOLLOWING)
        assert get(server.port, "/readyz") == (200, "following\n")
        assert check_worker("ready", port=server.port)[0] == SERVING
        assert check_worker("live", port=server.port)[0] == SERVING
        status, text = get(server.port, "/metrics")
        assert status == 200
        for line in (
            "registry_worker_chain_events_total 5.0",
            "registry_worker_chain_position 12.0",
            "registry_worker_chain_lag_events 3.0",
            "registry_worker_checkpoints_signed_total 2.0",
            "registry_worker_signed_position 12.0",
            'registry_worker_expired_total{duty="holds"} 2.0',
            'registry_worker_housekeeping_runs_total{duty="holds"} 1.0',
            'registry_worker_seal_failures_total{reason="tampered"} 1.0',
            'registry_worker_seal_failures_total{reason="error"} 0.0',
            "registry_worker_ready 1.0",
            "registry_worker_lease_held 1.0",
        ):
            assert line in text.splitlines(), line
    finally:
        port = server.port
        server.stop()
    assert check_worker("ready", timeout=1, port=port)[0] == UNREACHABLE
