"""The projection worker as an orchestrator and Prometheus see it: a real `registry
project` process against PostgreSQL answers its liveness probe at once, its readiness
probe 503 until it has caught up and 200 after, and its metrics show the chain and the
signing move after a settlement made through a real server."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from registry.client import RegistryClient
from registry.readmodels import tables as t
from registry.readmodels.runner import PROJECTION_NAMES
from tests.e2e.market import TRADER, seed_market, trade
from tests.e2e.test_observability import check_alert_selectors, scrape
from tests.e2e.test_server_process import environment, free_port, registry_command, serving
from tests.e2e.test_server_processes import first_principal
from tests.support import fresh_pg_database

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def probe(port: int, path: str) -> tuple[int, str]:
    """(HTTP status, body) of a probe; (0, reason) while nothing listens."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return int(answer.status), answer.read().decode().strip()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode().strip()
    except OSError as error:
        return 0, str(error)


def until(predicate: object, what: str, timeout: float = 60.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def health_command(tmp_path: Path, port: int) -> int:
    """`registry health --worker`'s exit status (compose's healthcheck of the worker)."""
    env = environment(tmp_path, free_port(), REGISTRY_METRICS_PORT=str(port))
    return subprocess.run(
        [*registry_command(), "health", "--worker"], env=env, capture_output=True, timeout=60
    ).returncode


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@contextmanager
def worker(tmp_path: Path, url: str, metrics_port: int) -> Iterator[subprocess.Popen[bytes]]:
    env = environment(
        tmp_path,
        free_port(),
        REGISTRY_DATABASE_URL=url,
        REGISTRY_METRICS_PORT=str(metrics_port),
        REGISTRY_LEDGER_SIGN_SECONDS="1",
        REGISTRY_LOG_FORMAT="json",
    )
    with (tmp_path / "worker.err").open("wb") as err:
        process = subprocess.Popen(
            [*registry_command(), "project"], env=env, stdout=subprocess.DEVNULL, stderr=err
        )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


def test_probes_and_chain_metrics_of_a_real_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One event key for this process's writes and the worker's and server's (their data
    # directory's), or the worker refuses to chain what this process wrote.
    monkeypatch.setenv("REGISTRY_EVENT_KEY", str(tmp_path / "event-key"))
    with fresh_pg_database() as url:
        token = first_principal(url)
        db = url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(db, autocommit=True) as conn:
            for name in PROJECTION_NAMES:  # the rows the worker's first batch locks
                conn.execute(
                    f'INSERT INTO "{t.tracking.name}" (projection, position) VALUES (%s, 0)'
                    " ON CONFLICT DO NOTHING",
                    (name,),
                )
        port = free_port()
        with psycopg.connect(db) as blocker:
            # Hold the tracking rows: the worker takes the lease and starts its catch-up,
            # whose first batch waits for them, so it is live but not ready.
            blocker.execute(f'SELECT * FROM "{t.tracking.name}" FOR UPDATE')
            with worker(tmp_path, url, port) as process:
                until(lambda: probe(port, "/readyz") == (503, "catching-up"), "catching up")
                assert probe(port, "/healthz")[0] == 200
                assert value(scrape(port), "registry_worker_ready") == 0
                assert value(scrape(port), "registry_worker_lease_held") == 1
                assert health_command(tmp_path, port) == 1  # answered, not ready
                blocker.rollback()  # the catch-up goes on
                until(lambda: probe(port, "/readyz") == (200, "following"), "ready")
                assert probe(port, "/healthz")[0] == 200

                assert health_command(tmp_path, port) == 0
                before = scrape(port)
                assert value(before, "registry_worker_ready") == 1
                started = time.time()
                with (
                    serving(
                        tmp_path, REGISTRY_DATABASE_URL=url, REGISTRY_PROJECTIONS="external"
                    ) as server,
                    RegistryClient(server.address, token) as client,
                ):
                    seed_market(client)
                    [settled] = client.settle_trades([trade("T-1", "PWR-SD-0001", TRADER, 10)])
                    assert settled.status == 1
                    head = settled.position
                    assert head > 0

                    def sealed() -> bool:
                        now = scrape(port)
                        return (
                            value(now, "registry_worker_chain_position") >= head
                            and value(now, "registry_worker_signed_position") >= head
                            and value(now, "registry_worker_last_signed_timestamp_seconds")
                            >= started
                        )

                    until(sealed, "the settlement chained and signed")
                after = scrape(port)
                assert process.poll() is None
    chained = value(after, "registry_worker_chain_events_total")
    assert chained >= value(before, "registry_worker_chain_events_total") + 1
    assert value(after, "registry_worker_checkpoints_signed_total") > value(
        before, "registry_worker_checkpoints_signed_total"
    )
    assert value(after, "registry_worker_chain_lag_events") >= 0
    assert value(after, "registry_worker_seal_failures_total", reason="tampered") == 0
    assert value(after, "registry_worker_seal_failures_total", reason="error") == 0
    assert value(after, "registry_worker_housekeeping_runs_total", duty="holds") >= 1
    assert value(after, "registry_worker_housekeeping_failures_total", duty="holds") == 0
    assert 0 <= value(after, "registry_worker_loop_tick_seconds_ago") < 60
    for name in PROJECTION_NAMES:  # lag per projection, from the worker itself
        assert ("registry_projection_lag_events", frozenset({("projection", name)})) in after
    check_alert_selectors(after, worker=True)
