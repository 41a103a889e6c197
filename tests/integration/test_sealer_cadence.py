"""How often the worker's sealer chains, and how often it tries again after refusing.

Both were measured as costs of the worker while single trades arrive one by one
(docs/performance.md, "The worker's sealer"): each round is a locked transaction of
several statements and rereads a batch of the log, whatever it has to chain. A round
after every projection step took as much of the worker as projecting; a sealer that had
refused (LEDGER_TAMPERED) reread 5,000 events on every step. Real sealer, real stores
(SQLite and PostgreSQL); only the clock is the test's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry.integrity.ledger import latest_digest
from registry.integrity.sealer import CheckpointPublisher, LedgerSealer
from registry.persistence.eventlog import DEFAULT_BATCH
from tests.integration.test_event_authentication import append_with_sql
from tests.integration.test_ledger_verify import BACKENDS, Store, store_on, write_some_events


class Clock:
    """Monotonic seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def own_event_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "keys" / "event-key"
    monkeypatch.setenv("REGISTRY_EVENT_KEY", str(path))
    return path


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with store_on(request.param, tmp_path) as store:
        yield store


def sealer(store: Store, tmp_path: Path, clock: Clock, every: float) -> LedgerSealer:
    return LedgerSealer(
        store.engine,
        store.key,
        store.log(),
        head_every_seconds=60.0,
        clock=clock,
        publisher=CheckpointPublisher(tmp_path / "published.jsonl"),
        chain_every_seconds=every,
    )


def chained(store: Store) -> int:
    return latest_digest(store.engine).position


def test_the_worker_chains_once_a_second_what_its_steps_read(store: Store, tmp_path: Path) -> None:
    """chain_every_seconds = 1: the first step chains (and signs the head: due at
    start); steps 0.4 s and 0.8 s later only count their events; a step at 1.1 s
    (even one that read nothing) chains them all; with a batch's worth waiting
    (5,000 events) it chains at once."""
    clock = Clock()
    sealer_ = sealer(store, tmp_path, clock, every=1.0)
    head = store.positions()[-1]
    assert sealer_.after_step(head) is not None and chained(store) == head

    write_some_events(store.registry, "A")
    clock.now += 0.4
    assert sealer_.after_step(3) is None
    clock.now += 0.4
    assert sealer_.after_step(4) is None
    assert chained(store) == head, "nothing chained within the second"

    clock.now += 0.3  # 1.1 s after the last round
    result = sealer_.after_step(0)
    assert result is not None and chained(store) == store.positions()[-1]

    write_some_events(store.registry, "B")
    clock.now += 0.1
    assert sealer_.after_step(DEFAULT_BATCH) is not None, "a batch's worth does not wait"
    assert chained(store) == store.positions()[-1]


def test_with_no_interval_every_step_chains(store: Store, tmp_path: Path) -> None:
    """chain_every_seconds = 0 (the default; the in-process server's follower): each
    step with events chains at once, at the same instant of the test's clock."""
    clock = Clock()
    sealer_ = sealer(store, tmp_path, clock, every=0.0)
    assert sealer_.after_step(1) is not None
    write_some_events(store.registry, "C")
    assert sealer_.after_step(1) is not None and chained(store) == store.positions()[-1]
    assert sealer_.after_step(0) is None, "nothing read, head not due: nothing to do"


def test_after_a_refusal_the_sealer_tries_again_once_a_minute(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An event appended with SQL and no authenticator: the first round refuses it
    (LEDGER_TAMPERED, logged once). Steps 1 s and 59 s later do not try again (no
    log line, nothing reread); at 60 s it tries, and refuses, again."""
    clock = Clock()
    sealer_ = sealer(store, tmp_path, clock, every=0.0)
    assert sealer_.after_step(1) is not None
    forged = append_with_sql(store, "PWR-0001", None)
    caplog.set_level(logging.ERROR, logger="registry.integrity")

    def refusals() -> int:
        return sum("LEDGER_TAMPERED" in r.getMessage() for r in caplog.records)

    assert sealer_.after_step(1) is None and sealer_.tampered is not None
    assert sealer_.tampered.position == forged and refusals() == 1
    for later in (1.0, 58.0):
        clock.now += later
        assert sealer_.after_step(5) is None
    assert refusals() == 1, "no attempt within the minute"
    clock.now += 1.0  # 60 s after the refusal
    assert sealer_.after_step(1) is None and refusals() == 2
    assert chained(store) < forged
