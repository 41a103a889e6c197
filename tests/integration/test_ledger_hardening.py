"""Issue 15 items 3, 4 and 6: an insider with SQL access to the database (but not the
signing key, nor the files outside the database) forges rows; `registry verify` and the
sealer must catch it. Each test reproduces an attack that verify passed, or the sealer
signed, before the fix; on SQLite and PostgreSQL alike."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from registry.cli import verify as cli
from registry.domain.accounts import Account
from registry.integrity.ledger import extend_chain
from registry.integrity.sealer import CheckpointPublisher, LedgerSealer
from registry.integrity.signing import generate_key, save_public_key
from registry.integrity.verify import Reason, VerifyReport, verify_ledger
from registry.settings import ConfigurationError
from tests.integration.test_ledger_verify import (
    BACKENDS,
    EVERY,
    Store,
    failed_at,
    store_on,
    write_some_events,
)
from tests.support import fresh_pg_database


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    with store_on(request.param, tmp_path) as chained:
        chained.extend()
        yield chained


def _uuid_param(store: Store, originator: Any) -> Any:
    return originator if store.postgres else originator.hex


def _next_event_of(store: Store, account: str) -> tuple[Any, int, str, bytes]:
    """A copy of an account's last event as its next version: what the write model
    would apply on its next load, wherever the row sits in the log."""
    aid = Account.id_for(account)
    [(version, topic, state)] = store.sql(
        "SELECT originator_version, topic, state FROM {table} WHERE originator_id = :o "
        "ORDER BY originator_version DESC LIMIT 1",
        o=_uuid_param(store, aid),
    )
    return aid, int(version) + 1, str(topic), bytes(state)


def _drop_position_guard(store: Store) -> None:
    """What an insider with DDL rights does first: migration 0003's guard goes."""
    if store.postgres:
        store.sql(
            "ALTER TABLE registry_events DROP CONSTRAINT registry_events_notification_id_positive"
        )
    else:
        store.sql("DROP TRIGGER stored_events_position_positive_insert")


def _verify(store: Store, **options: Any) -> VerifyReport:
    options.setdefault("checkpoint_every", EVERY)
    return verify_ledger(
        store.engine, [store.key.public_key()], log=store.log(), batch_size=4, **options
    )


# -- item 3: forged rows ------------------------------------------------------------------


def test_an_event_at_position_zero_or_below_is_refused_by_the_schema(store: Store) -> None:
    aid, version, topic, state = _next_event_of(store, "PWR-0001")
    with pytest.raises(Exception, match=r"notification_id_positive|must be positive"):
        store.sql(
            "INSERT INTO {table} ({pos}, originator_id, originator_version, topic, "
            "state) VALUES (0, :o, :v, :t, :s)",
            o=_uuid_param(store, aid),
            v=version,
            t=topic,
            s=state,
        )


def test_an_event_forged_below_position_one_fails_verify(store: Store) -> None:
    """Before: verify streamed positions > 0 only and said OK, while the write model
    applied the forged event (the account's next version) on its next load."""
    assert _verify(store).ok
    _drop_position_guard(store)
    aid, version, topic, state = _next_event_of(store, "PWR-0001")
    store.sql(
        "INSERT INTO {table} ({pos}, originator_id, originator_version, topic, state) "
        "VALUES (-5, :o, :v, :t, :s)",
        o=_uuid_param(store, aid),
        v=version,
        t=topic,
        s=state,
    )
    report = _verify(store)
    failed_at(report, -5, Reason.FORGED_POSITION)
    assert "PWR" not in report.summary() and str(aid) in report.summary()


def test_an_aggregate_whose_versions_skip_fails_verify(store: Store) -> None:
    """An event appended past the chain with a version gap breaks every later load of
    the aggregate: named, although the tail is not yet chained."""
    aid, version, topic, state = _next_event_of(store, "PWR-0002")
    store.sql(
        "INSERT INTO {table} (originator_id, originator_version, topic, state) "
        "VALUES (:o, :v, :t, :s)",
        o=_uuid_param(store, aid),
        v=version + 1,
        t=topic,
        s=state,
    )
    report = _verify(store)
    assert report.failure is not None and report.failure.reason is Reason.VERSION_GAP, (
        report.summary()
    )
    assert str(aid) in report.failure.detail


def _snapshot(store: Store, account: str) -> tuple[Any, int, bytes]:
    aid = Account.id_for(account)
    store.registry.take_snapshot(aid)
    table = "registry_snapshots" if store.postgres else "stored_snapshots"
    [(version, state)] = store.sql(
        f"SELECT originator_version, state FROM {table} WHERE originator_id = :o "
        "ORDER BY originator_version DESC LIMIT 1",
        o=_uuid_param(store, aid),
    )
    return aid, int(version), bytes(state)


def test_a_forged_snapshot_fails_verify_and_a_true_one_passes(store: Store) -> None:
    """Before: snapshots were not checked at all, and the write model loads an account
    from its latest snapshot: 1,000 units became 100,000."""
    aid, version, state = _snapshot(store, "PWR-0001")
    report = _verify(store)
    assert report.ok and report.snapshots_checked, report.summary()
    forged = state.replace(b'["CEA/2025",1,1000]', b'["CEA/2025",1,100000]')
    assert forged != state
    table = "registry_snapshots" if store.postgres else "stored_snapshots"
    store.sql(
        f"UPDATE {table} SET state = :s WHERE originator_id = :o AND originator_version = :v",
        s=forged,
        o=_uuid_param(store, aid),
        v=version,
    )
    report = _verify(store)
    assert report.failure is not None, report.summary()
    assert report.failure.reason is Reason.SNAPSHOT_FORGED
    assert f"{aid} version {version}" in report.failure.detail
    assert "not the replay" in report.failure.detail


def test_a_snapshot_ahead_of_the_events_or_undecodable_fails_verify(store: Store) -> None:
    aid, version, state = _snapshot(store, "PWR-0002")
    table = "registry_snapshots" if store.postgres else "stored_snapshots"
    store.sql(
        f"INSERT INTO {table} (originator_id, originator_version, topic, state) "
        "VALUES (:o, :v, 'eventsourcing.domain:Snapshot', :s)",
        o=_uuid_param(store, aid),
        v=version + 50,
        s=state,
    )
    report = _verify(store)
    assert report.failure is not None and report.failure.reason is Reason.SNAPSHOT_FORGED
    assert f"not the snapshot's {version + 50}" in report.failure.detail
    store.sql(
        f"UPDATE {table} SET state = :s WHERE originator_id = :o AND originator_version = :v",
        s=b"{not json",
        o=_uuid_param(store, aid),
        v=version + 50,
    )
    report = _verify(store)
    assert report.failure is not None and "does not decode" in report.failure.detail


# -- item 4: the recent past rewritten, checkpoints deleted -------------------------------


def test_a_deleted_checkpoint_breaks_the_link_of_the_next(store: Store) -> None:
    """Before: with no checkpoint due at that position (``checkpoint_every`` unknown to
    the verifier), a deleted checkpoint went unnoticed."""
    positions = store.positions()
    assert _verify(store, checkpoint_every=None).ok
    store.sql("DELETE FROM ledger_checkpoints WHERE position = :p", p=positions[EVERY - 1])
    failed_at(
        _verify(store, checkpoint_every=None), positions[2 * EVERY - 1], Reason.CHECKPOINT_MISSING
    )


def _sealer(store: Store, published: Path) -> LedgerSealer:
    return LedgerSealer(
        store.engine,
        store.key,
        store.log(),
        checkpoint_every=EVERY,
        head_every_seconds=0.0,
        publisher=CheckpointPublisher(published),
    )


def _rewrite_from(store: Store, position: int) -> None:
    """The insider's rewrite: change the event, recompute every chain row after it (with
    any key: its checkpoints are then thrown away), delete the later checkpoints."""
    store.set_state(position, store.state(position).replace(b"1", b"2", 1))
    store.sql("DELETE FROM ledger_digests WHERE position >= :p", p=position)
    forger = generate_key()
    extend_chain(store.engine, forger, log=store.log(), checkpoint_every=10**9)
    store.sql("DELETE FROM ledger_checkpoints WHERE position >= :p", p=position)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_rewrite_after_the_last_multiple_is_caught_by_the_published_checkpoints(
    backend: str, tmp_path: Path
) -> None:
    """Before: verify said OK (the deleted checkpoints were head checkpoints, not at a
    multiple of the interval) and the worker went on to sign the forged chain."""
    published = tmp_path / "published" / "ledger-checkpoints.jsonl"
    with store_on(backend, tmp_path) as store:
        sealer = _sealer(store, published)
        assert sealer.after_step(1) is not None
        write_some_events(store.registry, "B")
        assert sealer.after_step(1) is not None
        positions = store.positions()
        lines = published.read_text().splitlines()
        assert json.loads(lines[-1])["position"] == positions[-1]
        last_multiple = positions[len(positions) // EVERY * EVERY - 1]
        assert last_multiple < positions[-2]
        _rewrite_from(store, positions[-2])
        report = _verify(store)
        assert report.ok, "the database alone cannot tell: its end was cut"

        kept = cli.read_kept(published)
        report = _verify(store, kept=kept)
        assert report.failure is not None, report.summary()
        assert report.failure.reason in (Reason.CHECKPOINT_MISMATCH, Reason.CHAIN_CUT)

        # the sealer that signed the lost checkpoint refuses to sign the forgery
        write_some_events(store.registry, "C")
        assert sealer.after_step(1) is None
        assert sealer.tampered is not None and "gone from the database" in str(sealer.tampered)
        # and so does a new one (a restart), from the file it published to
        restarted = _sealer(store, published)
        assert restarted.after_step(1) is None and restarted.tampered is not None
        assert store.sql("SELECT max(position) FROM ledger_digests") != [(store.positions()[-1],)]
        assert len(published.read_text().splitlines()) == len(lines), "nothing signed"


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_sealer_reverifies_the_events_since_its_last_checkpoint_before_signing(
    backend: str, tmp_path: Path
) -> None:
    """An event chained but not yet signed is altered in place: before, the next head
    checkpoint signed the altered event (the chain rows were never compared again)."""
    with store_on(backend, tmp_path) as store:
        extend_chain(
            store.engine,
            store.key,
            log=store.log(),
            checkpoint_every=10**9,
            checkpoint_at_head=True,
        )
        write_some_events(store.registry, "R")
        extend_chain(store.engine, store.key, log=store.log(), checkpoint_every=10**9)
        victim = store.positions()[-3]
        store.set_state(victim, store.state(victim) + b" ")
        write_some_events(store.registry, "S")
        sealer = LedgerSealer(
            store.engine, store.key, store.log(), checkpoint_every=10**9, head_every_seconds=0.0
        )
        assert sealer.after_step(1) is None
        assert sealer.tampered is not None and sealer.tampered.position == victim
        report = _verify(store, checkpoint_every=None)
        failed_at(report, victim, Reason.PAYLOAD_ALTERED)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_sealer_refuses_when_a_chain_row_it_wrote_was_recomputed(
    backend: str, tmp_path: Path
) -> None:
    """The rows since the last checkpoint recomputed over an altered event agree with
    the events; the sealer remembers the digest it chained there and refuses."""
    with store_on(backend, tmp_path) as store:
        sealer = LedgerSealer(
            store.engine, store.key, store.log(), checkpoint_every=10**9, head_every_seconds=3600.0
        )
        sealer.after_step(0)  # signs the head once
        write_some_events(store.registry, "T")
        assert sealer.after_step(5) is not None  # chained, not signed (not due)
        chained_head = store.positions()[-1]
        victim = store.positions()[-2]
        store.set_state(victim, store.state(victim) + b" ")
        store.sql("DELETE FROM ledger_digests WHERE position >= :p", p=victim)
        extend_chain(store.engine, generate_key(), log=store.log(), checkpoint_every=10**9)
        write_some_events(store.registry, "U")
        assert sealer.after_step(5) is None and sealer.tampered is not None
        assert "the chain row this registry wrote here is changed" in str(sealer.tampered)
        assert sealer.tampered.position == chained_head


# -- item 6: verify is read-only and never decodes through the application ----------------


def _verify_command(url: str, public: Path, monkeypatch: pytest.MonkeyPatch, *extra: str) -> int:
    monkeypatch.setenv("REGISTRY_DATABASE_URL", url)
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["verify", "--public-key", str(public), *extra])
    result: int = args.run(args)
    return result


@pytest.mark.postgres
def test_verify_writes_nothing_to_the_store_it_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: verify built the registry, which opened the national accounts (events
    written into the store under audit)."""
    public = tmp_path / "public.pem"
    save_public_key(generate_key(), public)
    with fresh_pg_database() as url:
        assert _verify_command(url, public, monkeypatch) == 0
        from sqlalchemy import create_engine

        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            with engine.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM registry_events")).scalar() == 0
        finally:
            engine.dispose()


def test_verify_does_not_create_a_missing_sqlite_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    public = tmp_path / "public.pem"
    save_public_key(generate_key(), public)
    with pytest.raises(ConfigurationError, match="nothing to verify"):
        _verify_command(f"sqlite:///{tmp_path / 'none.sqlite'}", public, monkeypatch)
    assert not (tmp_path / "none.sqlite").exists()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_tampered_national_account_is_named_not_a_traceback(
    backend: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before: verify crashed decoding the national account while opening the registry."""
    with store_on(backend, tmp_path) as store:
        store.extend()
        public = tmp_path / "public.pem"
        save_public_key(store.key, public)
        aid = Account.id_for("CN-ISSUANCE")
        [(position,)] = store.sql(
            "SELECT {pos} FROM {table} WHERE originator_id = :o AND originator_version = 1",
            o=_uuid_param(store, aid),
        )
        store.set_state(int(position), b"\x00 not an event")
        store.registry.close()
        capsys.readouterr()
        assert _verify_command(store.url, public, monkeypatch) == 1
        assert capsys.readouterr().out.startswith(
            f"FAILED at position {int(position):,}: payload altered"
        )
