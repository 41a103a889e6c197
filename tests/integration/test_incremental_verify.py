"""Incremental verification (issue 21): a run resumes after the last signed checkpoint
a successful run matched, recorded in ``ledger_verified``. It checks only what came
since (and that the boundary is still the one recorded); a change to the verified prefix
that keeps the boundary intact is caught only by a full run. On SQLite and PostgreSQL."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from registry.bootstrap import ledger_check
from registry.cli import verify as cli
from registry.integrity.signing import save_private_key, save_public_key
from registry.integrity.verify import (
    Reason,
    Verified,
    VerifyReport,
    last_verified,
    record_verified,
    verify_ledger,
)
from registry.observability.metrics import RegistryMetrics
from registry.persistence.engine import make_engine
from registry.settings import Settings
from tests.integration.test_ledger_verify import (
    BACKENDS,
    EVERY,
    Store,
    failed_at,
    store_on,
    write_some_events,
)

T0 = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with store_on(request.param, tmp_path) as chained:
        chained.extend()
        yield chained


def verify(store: Store, since: Verified | None) -> VerifyReport:
    return verify_ledger(
        store.engine,
        [store.key.public_key()],
        log=store.log(),
        batch_size=4,
        checkpoint_every=EVERY,
        since=since,
    )


def full_then_more(store: Store) -> tuple[Verified, list[int]]:
    """A full run recorded, then a second batch of events chained and signed: the
    record and the positions added since it."""
    positions = store.positions()
    report = verify(store, None)
    assert report.ok, report.summary()
    record = record_verified(store.engine, report, now=T0)
    assert record is not None
    # the last checkpoint: every EVERY-th event is signed
    signed = len(positions) // EVERY * EVERY
    assert (record.position, record.seq) == (positions[signed - 1], signed)
    assert record.full_at == T0
    write_some_events(store.registry, "B")
    store.extend()
    return record, [p for p in store.positions() if p > record.position]


def test_an_incremental_run_checks_only_the_events_since_the_record(store: Store) -> None:
    positions = store.positions()
    assert len(positions) == 25  # write_some_events: figures below
    record, new = full_then_more(store)
    # 25 events (6 of them the registry's own accounts), signed every 5: the record is
    # at the 25th. The second batch adds 19 (no registry accounts this time): 44 in all,
    # so the incremental run walks events 26..44 (19), signed at 30, 35 and 40 (3).
    assert (record.seq, len(new)) == (25, 19)
    report = verify(store, record)
    assert report.ok, report.summary()
    assert report.since == record.position
    assert report.events_checked == 19
    assert report.checkpoints_checked == 3
    assert report.chain_head == store.positions()[-1]
    assert report.summary().startswith(
        f"OK (incremental: after position {record.position:,}, verified before;"
    )
    full = verify(store, None)
    assert full.ok and full.events_checked == 44 and full.digest == report.digest
    later = record_verified(store.engine, report, now=T0 + timedelta(hours=1))
    assert later is not None and later.seq == 40
    assert later.full_at == T0, "an incremental run keeps the last full run's time"


def test_tampering_in_the_new_range_is_caught_incrementally(store: Store) -> None:
    record, new = full_then_more(store)
    position = new[3]
    state = bytearray(store.state(position))
    state[len(state) // 2] ^= 0x01
    store.set_state(position, bytes(state))
    failed_at(verify(store, record), position, Reason.PAYLOAD_ALTERED)


def test_a_changed_boundary_is_caught(store: Store) -> None:
    record, _ = full_then_more(store)
    store.sql(
        "UPDATE ledger_digests SET digest = :d WHERE position = :p",
        d=bytes(32),
        p=record.position,
    )
    failed_at(verify(store, record), record.position, Reason.BOUNDARY_CHANGED)


def test_a_deleted_boundary_checkpoint_is_caught(store: Store) -> None:
    record, _ = full_then_more(store)
    store.sql("DELETE FROM ledger_checkpoints WHERE position = :p", p=record.position)
    failed_at(verify(store, record), record.position, Reason.BOUNDARY_CHANGED)


def test_only_a_full_run_catches_a_tampered_event_in_the_verified_prefix(store: Store) -> None:
    record, new = full_then_more(store)
    old = store.positions()[7]  # the 8th event: before the record's 25th
    assert old < record.position
    state = bytearray(store.state(old))
    state[len(state) // 2] ^= 0x01
    store.set_state(old, bytes(state))
    incremental = verify(store, record)
    assert incremental.ok and incremental.events_checked == len(new) == 19, (
        "the prefix is not re-derived: incremental does not see it (documented)"
    )
    failed_at(verify(store, None), old, Reason.PAYLOAD_ALTERED)


def test_a_failed_run_records_nothing(store: Store) -> None:
    record, new = full_then_more(store)
    store.set_state(new[0], store.state(new[0]) + b" ")
    report = verify(store, record)
    assert not report.ok
    assert record_verified(store.engine, report, now=T0 + timedelta(hours=1)) is None
    assert last_verified(store.engine) == record


def test_the_record_survives_a_restart(store: Store) -> None:
    record, _ = full_then_more(store)
    store.engine.dispose()
    engine = make_engine(Settings(store.url))
    try:
        assert last_verified(engine) == record
    finally:
        engine.dispose()


def test_registry_verify_incremental_and_full(
    store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("REGISTRY_DATABASE_URL", store.url)
    monkeypatch.setenv("REGISTRY_DATA_DIR", str(tmp_path / "data"))
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers(dest="command"))
    public = tmp_path / "public.pem"
    save_public_key(store.key, public)
    options = ["verify", "--public-key", str(public), "--checkpoint-every", str(EVERY)]

    args = parser.parse_args([*options, "--incremental"])
    assert args.run(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("no verification recorded yet: running a full one\nOK: 25 events")

    record, _ = full_then_more(store)
    old = store.positions()[7]
    store.set_state(old, store.state(old) + b" ")
    assert args.run(args) == 0
    assert capsys.readouterr().out.startswith(
        f"OK (incremental: after position {record.position:,}"
    )
    args = parser.parse_args([*options, "--full"])
    assert args.run(args) == 1
    assert capsys.readouterr().out.startswith(f"FAILED at position {old:,}: payload altered")
    with pytest.raises(cli.ConfigurationError, match="needs a full run"):
        args = parser.parse_args([*options, "--incremental", "--checkpoint", str(public)])
        args.run(args)


def test_the_worker_verifies_incrementally_and_fully_once_a_day(
    store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    save_private_key(store.key, tmp_path / "signing.pem")
    monkeypatch.setenv("REGISTRY_LEDGER_KEY", str(tmp_path / "signing.pem"))
    monkeypatch.setenv("REGISTRY_VERIFY_FULL_SECONDS", "86400")
    check = ledger_check(store.engine, store.registry, RegistryMetrics())
    check()  # no record: full
    first = last_verified(store.engine)
    assert first is not None and first.seq == 25 and first.full_at is not None
    write_some_events(store.registry, "B")
    store.extend()
    old = store.positions()[7]
    store.set_state(old, store.state(old) + b" ")
    check()  # within the day: incremental, which cannot see the old event
    second = last_verified(store.engine)
    assert second is not None and second.seq == 40 and second.full_at == first.full_at
    assert "ledger verification" not in caplog.text
    monkeypatch.setenv("REGISTRY_VERIFY_FULL_SECONDS", "0")  # every run full
    ledger_check(store.engine, store.registry, RegistryMetrics())()
    assert f"FAILED at position {old:,}: payload altered" in caplog.text
    assert last_verified(store.engine) == second, "a failed run records nothing"
