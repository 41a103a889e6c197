"""The upgrade to ``MsgspecTranscoder`` on a real store, and a rollback from it.

One log written in three eras: by the previous code (the library's ``JSONTranscoder``),
then by the new (msgspec), then by the previous again (``TRANSCODER_TOPIC``, the
rollback). Each era loads the accounts the others left (their events and their
snapshots, taken often here) and settles more on them; then every stored event
re-encodes to its own bytes through either transcoder, the digest chain, the
authenticators and the snapshot check verify over the mixed log, and the projections
(whose raw fast path must be taken for the new transcoder) reconcile with the write
model. SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import JSONTranscoder, Mapper, StoredEvent

from registry.application import Registry, Trade
from registry.bootstrap import build_registry
from registry.domain.accounts import Account
from registry.domain.obligations import ComplianceObligation
from registry.domain.serials import SerialCounter
from registry.domain.transactions import Principal
from registry.integrity.authentication import load_event_key
from registry.integrity.ledger import extend_chain
from registry.integrity.signing import generate_key
from registry.integrity.verify import verify_ledger
from registry.persistence.engine import make_engine
from registry.persistence.eventlog import EventLog
from registry.persistence.transcoder import MsgspecTranscoder
from registry.readmodels.check import reconcile
from registry.readmodels.runner import ProjectionRunner
from registry.settings import Settings
from tests.integration.test_ledger_verify import ANY_CEA, BACKENDS, write_some_events
from tests.support import REGULATOR, FakeClock, assert_conserved, fresh_pg_database

LIBRARY = "eventsourcing.persistence:JSONTranscoder"
EXCHANGE = Principal("exchange", "upgrade-test")
ACCOUNTS = ("PWR-0001", "PWR-0002", "TRD-0001")


@pytest.fixture(autouse=True)
def often_snapshotted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Snapshots every few events, so each era writes some and loads the others'; and
    an event key of the test's own (the writers' authenticators, checked by verify)."""
    monkeypatch.setattr(
        Registry,
        "snapshotting_intervals",
        {Account: 3, SerialCounter: 3, ComplianceObligation: 3},
    )
    monkeypatch.setenv("REGISTRY_EVENT_KEY", str(tmp_path / "keys" / "event-key"))


@contextmanager
def database(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "postgres":
        with fresh_pg_database() as url:
            yield url
    else:
        yield f"sqlite:///{tmp_path / 'registry.sqlite'}"


@contextmanager
def era(url: str, monkeypatch: pytest.MonkeyPatch, *, library: bool) -> Iterator[Registry]:
    """A registry on ``url`` with the previous code's transcoder or the new one."""
    with monkeypatch.context() as env:
        if library:
            env.setenv("TRANSCODER_TOPIC", LIBRARY)
        else:
            env.delenv("TRANSCODER_TOPIC", raising=False)
        registry = build_registry(Settings(url), clock=FakeClock())
    expected = JSONTranscoder if library else MsgspecTranscoder
    assert type(registry.mapper.transcoder) is expected
    try:
        yield registry
    finally:
        registry.close()


def balances(registry: Registry) -> dict[str, Any]:
    """Each account's version and holdings, serial blocks included."""
    return {
        account: (registry.get_account(account).version, registry.get_holdings(account))
        for account in ACCOUNTS
    }


def settle(registry: Registry, prefix: str) -> None:
    """A batch (one MovementsPosted per account) and single trades, both ways."""
    batch = [
        Trade(f"{prefix}-B{n}", *(("PWR-0001", "PWR-0002")[:: 1 if n % 2 else -1]), "CEA", 3)
        for n in range(12)
    ]
    assert all(r.outcome == "SETTLED" for r in registry.settle_trades(EXCHANGE, batch))
    for n in range(4):
        trade = Trade(f"{prefix}-S{n}", "PWR-0001", "PWR-0002", "CEA", 1 + n)
        assert registry.settle_trade(EXCHANGE, trade).ok
    assert registry.transfer(
        REGULATOR, f"{prefix}-T", "PWR-0002", "TRD-0001", ANY_CEA, 7, "to the trader"
    ).ok


def stored(registry: Registry) -> list[StoredEvent]:
    events = [
        StoredEvent(n.originator_id, n.originator_version, n.topic, n.state)
        for n in registry.recorder.select_notifications(1, 100_000)
    ]
    snapshots = registry.snapshots
    assert snapshots is not None
    for account in ACCOUNTS:
        events.extend(snapshots.recorder.select_events(Account.id_for(account)))
    return events


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_log_written_by_the_previous_code_the_new_and_the_previous_again(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with database(backend, tmp_path) as url:
        with era(url, monkeypatch, library=True) as previous:
            write_some_events(previous)
            settle(previous, "OLD")
            before_upgrade = balances(previous)
            written_before = len(stored(previous))
        with era(url, monkeypatch, library=False) as new:
            assert balances(new) == before_upgrade  # loaded from the old events/snapshots
            settle(new, "NEW")
            after_upgrade = balances(new)
            assert after_upgrade != before_upgrade
            assert len(stored(new)) > written_before
        with era(url, monkeypatch, library=True) as rolled_back:
            assert balances(rolled_back) == after_upgrade  # the new events and snapshots
            settle(rolled_back, "BACK")
            assert_conserved(rolled_back)
        with era(url, monkeypatch, library=False) as new:
            assert_conserved(new)
            final = balances(new)
            everything = stored(new)
            assert sum(e.topic == "eventsourcing.domain:Snapshot" for e in everything) >= 6
            check_both_ways(everything)
            engine = make_engine(Settings(url))
            try:
                log = EventLog.of(new.recorder)
                key = generate_key()
                extend_chain(engine, key, log=log, checkpoint_every=5, batch_size=7)
                report = verify_ledger(
                    engine,
                    [key.public_key()],
                    log=log,
                    batch_size=4,
                    checkpoint_every=5,
                    event_key=load_event_key(tmp_path / "keys" / "event-key"),
                )
                assert report.ok, report.summary()
                assert report.snapshots_checked, report.summary()
                runner = ProjectionRunner(new, engine, batch_size=9)
                assert runner.reader.decode.fast
                runner.catch_up()
                assert reconcile(new, engine) == []
            finally:
                engine.dispose()
        with era(url, monkeypatch, library=True) as previous:
            assert balances(previous) == final


def check_both_ways(events: list[StoredEvent]) -> None:
    """Every stored state decodes alike through both transcoders, and re-encodes to its
    own bytes through either: nothing in the log tells which code wrote it."""
    bare: Any = object.__new__(Registry)
    library, ours = JSONTranscoder(), MsgspecTranscoder()
    bare.register_transcodings(library)
    bare.register_transcodings(ours)
    old, new = Mapper[UUID](transcoder=library), Mapper[UUID](transcoder=ours)
    for event in events:
        by_old, by_new = old.to_domain_event(event), new.to_domain_event(event)
        assert vars(by_old) == vars(by_new), event.topic
        assert old.to_stored_event(by_new).state == event.state, event.topic
        assert new.to_stored_event(by_old).state == event.state, event.topic
