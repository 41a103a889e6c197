"""The digest chain over a real event log, on SQLite and PostgreSQL: events written by
the registry, the chain extended, then the database changed by hand with raw SQL; each
change must fail verification at the first position it touched."""

from __future__ import annotations

import argparse
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, inspect, text

from registry.application import Registry
from registry.bootstrap import build_registry
from registry.cli import verify as cli
from registry.domain.units import UnitClass, UnitSelector, UnitType
from registry.integrity.chain import GENESIS
from registry.integrity.ledger import ExtendResult, extend_chain, latest_digest
from registry.integrity.signing import (
    generate_key,
    key_id,
    load_public_key,
    save_private_key,
    save_public_key,
)
from registry.integrity.verify import Reason, VerifyReport, check_checkpoint, verify_ledger
from registry.persistence import migrate
from registry.persistence.engine import make_engine
from registry.persistence.eventlog import EventLog
from registry.settings import Settings
from tests.support import REGULATOR, FakeClock, fresh_pg_database, open_company, open_trader

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
CEA25 = UnitClass(UnitType.CEA, 2025)
ANY_CEA = UnitSelector(UnitType.CEA)
EVERY = 5
"""Checkpoint interval in these tests: several checkpoints in a small log."""


@dataclass
class Store:
    registry: Registry
    engine: Engine
    url: str
    key: Ed25519PrivateKey

    @property
    def postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @property
    def table(self) -> str:
        return "registry_events" if self.postgres else "stored_events"

    @property
    def pos(self) -> str:
        return "notification_id" if self.postgres else "rowid"

    def sql(self, statement: str, **params: Any) -> list[Any]:
        with self.engine.begin() as conn:
            result = conn.execute(text(statement.format(table=self.table, pos=self.pos)), params)
            return list(result) if result.returns_rows else []

    def positions(self) -> list[int]:
        return [int(p) for (p,) in self.sql("SELECT {pos} FROM {table} ORDER BY {pos}")]

    def state(self, position: int) -> bytes:
        [(state,)] = self.sql("SELECT state FROM {table} WHERE {pos} = :p", p=position)
        return bytes(state)

    def set_state(self, position: int, state: bytes) -> None:
        self.sql("UPDATE {table} SET state = :s WHERE {pos} = :p", s=state, p=position)

    def move(self, position: int, to: int) -> None:
        self.sql("UPDATE {table} SET {pos} = :to WHERE {pos} = :p", to=to, p=position)

    def extend(self, key: Ed25519PrivateKey | None = None, **options: Any) -> Any:
        return extend_chain(
            self.engine,
            key or self.key,
            log=self.log(),
            checkpoint_every=EVERY,
            batch_size=7,
            **options,
        )

    def verify(self, *keys: Ed25519PrivateKey) -> VerifyReport:
        return verify_ledger(
            self.engine,
            [k.public_key() for k in keys or (self.key,)],
            log=self.log(),
            batch_size=4,
            checkpoint_every=EVERY,
        )

    def log(self) -> EventLog:
        return EventLog.of(self.registry.recorder)


def write_some_events(registry: Registry, prefix: str = "") -> None:
    """Accounts opened, units issued, moved to the reserve and allocated."""
    open_company(registry, f"PWR-{prefix}0001")
    open_company(registry, f"PWR-{prefix}0002")
    open_trader(registry, f"TRD-{prefix}0001")
    registry.issue_units(REGULATOR, f"ISS-{prefix}1", CEA25, 5000, "vintage 2025")
    registry.transfer(
        REGULATOR,
        f"RES-{prefix}1",
        "CN-ISSUANCE",
        "CN-ALLOCATION-RESERVE",
        ANY_CEA,
        5000,
        "to reserve",
    )
    for n, account in enumerate([f"PWR-{prefix}0001", f"PWR-{prefix}0002"]):
        assert registry.allocate(REGULATOR, f"AL-{prefix}{n}", account, ANY_CEA, 1000, "pre").ok


@contextmanager
def store_on(backend: str, tmp_path: Path) -> Iterator[Store]:
    """A registry with some events, an engine on its database and a signing key."""
    with _database(backend, tmp_path) as url:
        registry = build_registry(Settings(url), clock=FakeClock())
        engine = make_engine(Settings(url))
        try:
            write_some_events(registry)
            yield Store(registry, engine, url, generate_key())
        finally:
            registry.close()
            engine.dispose()


@contextmanager
def _database(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "postgres":
        with fresh_pg_database() as url:
            yield url
    else:
        yield f"sqlite:///{tmp_path / 'registry.sqlite'}"


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with store_on(request.param, tmp_path) as chained:
        chained.extend()
        yield chained


def failed_at(report: VerifyReport, position: int, reason: Reason) -> None:
    assert not report.ok, report.summary()
    assert report.failure is not None
    assert (report.failure.position, report.failure.reason) == (position, reason), report.summary()
    assert f"FAILED at position {position:,}: {reason.value}" in report.summary()


# -- an untouched store -----------------------------------------------------------------


def test_an_untouched_store_verifies(store: Store) -> None:
    positions = store.positions()
    report = store.verify()
    assert report.ok, report.summary()
    assert report.events_checked == len(positions) > 2 * EVERY
    assert report.chain_head == report.log_head == positions[-1]
    assert report.checkpoints_checked == len(positions) // EVERY
    assert report.last_checkpoint == positions[len(positions) // EVERY * EVERY - 1]
    assert report.unchained == 0 and report.signatures_checked
    head = latest_digest(store.engine)
    assert (head.position, head.seq, head.digest) == (positions[-1], len(positions), report.digest)
    assert head.checkpoint is not None and head.checkpoint.key_id == key_id(store.key)
    assert report.summary().startswith(
        f"OK: {len(positions):,} events chained up to position {positions[-1]:,} verified"
    )


def test_events_after_the_chain_are_not_yet_chained_then_chained(store: Store) -> None:
    before = store.positions()
    write_some_events(store.registry, "B")
    report = store.verify()
    added = len(store.positions()) - len(before)
    assert report.ok and report.unchained == added > 0
    assert f"{added:,} events after it not yet chained" in report.summary()
    result = store.extend(checkpoint_at_head=True)
    assert result.chained == added
    report = store.verify()
    assert report.ok and report.unchained == 0
    assert report.last_checkpoint == report.chain_head == store.positions()[-1]


def test_extending_twice_and_from_two_threads_does_not_fork_the_chain(store: Store) -> None:
    assert store.extend().chained == 0, "nothing new: nothing chained"
    chained_before = len(store.positions())
    for round_ in "CDE":
        write_some_events(store.registry, round_)
    start = threading.Barrier(2)
    results: list[ExtendResult] = []
    errors: list[BaseException] = []

    def extend() -> None:
        start.wait()
        try:
            results.append(
                extend_chain(
                    store.engine,
                    store.key,
                    log=store.log(),
                    batch_size=2,
                    checkpoint_every=EVERY,
                    checkpoint_at_head=True,
                )
            )
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=extend) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    positions = store.positions()
    rows = store.sql("SELECT position, seq FROM ledger_digests ORDER BY position")
    assert [int(p) for p, _ in rows] == positions, "one row per event, none twice"
    assert [int(s) for _, s in rows] == list(range(1, len(positions) + 1))
    assert sum(r.chained for r in results) == len(positions) - chained_before
    heads = store.sql(
        "SELECT count(*) FROM ledger_checkpoints WHERE position = :p", p=positions[-1]
    )
    assert heads == [(1,)], "one checkpoint at the head, not one per extender"
    report = store.verify()
    assert report.ok, report.summary()


# -- changes made by hand ------------------------------------------------------------------


def test_an_altered_payload_fails_at_its_position(store: Store) -> None:
    position = store.positions()[7]
    state = bytearray(store.state(position))
    state[len(state) // 2] ^= 0x01
    store.set_state(position, bytes(state))
    failed_at(store.verify(), position, Reason.PAYLOAD_ALTERED)


def test_a_deleted_event_fails_at_its_position(store: Store) -> None:
    position = store.positions()[9]
    store.sql("DELETE FROM {table} WHERE {pos} = :p", p=position)
    report = store.verify()
    failed_at(report, position, Reason.EVENT_MISSING)
    assert report.events_checked == 9


def test_the_last_event_deleted_fails_too(store: Store) -> None:
    position = store.positions()[-1]
    store.sql("DELETE FROM {table} WHERE {pos} = :p", p=position)
    failed_at(store.verify(), position, Reason.EVENT_MISSING)


def test_swapped_payloads_fail_at_the_first_of_the_two(store: Store) -> None:
    first, second = store.positions()[4], store.positions()[11]
    a, b = store.state(first), store.state(second)
    assert a != b
    store.set_state(first, b)
    store.set_state(second, a)
    failed_at(store.verify(), first, Reason.PAYLOAD_ALTERED)


def test_swapped_positions_are_reported_as_reordered(store: Store) -> None:
    first, second = store.positions()[6], store.positions()[12]
    spare = store.positions()[-1] + 1000  # positions are positive (migration 0003)
    store.move(first, spare)
    store.move(second, first)
    store.move(spare, second)
    report = store.verify()
    failed_at(report, first, Reason.EVENTS_REORDERED)
    assert report.failure is not None and f"now at position {second}" in report.failure.detail


def test_an_event_moved_past_the_head_is_reordered(store: Store) -> None:
    position = store.positions()[3]
    store.move(position, store.positions()[-1] + 100)
    failed_at(store.verify(), position, Reason.EVENTS_REORDERED)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_event_inserted_into_a_gap_is_extra(backend: str, tmp_path: Path) -> None:
    with store_on(backend, tmp_path) as store:
        gap = _make_a_gap(store)
        store.extend()
        assert store.verify().ok
        store.sql(
            "INSERT INTO {table} ({pos}, originator_id, originator_version, topic, "
            "state) VALUES (:p, :o, 1, 'registry.Account.Opened', :s)",
            p=gap,
            o=uuid4() if store.postgres else uuid4().hex,
            s=b"{}",
        )
        failed_at(store.verify(), gap, Reason.EXTRA_EVENT)


def _make_a_gap(store: Store) -> int:
    """A position with no event before the head (notification ids have gaps)."""
    store.sql(
        "INSERT INTO {table} (originator_id, originator_version, topic, state) "
        "VALUES (:o, 1, 'test.Placeholder', :s)",
        o=uuid4() if store.postgres else uuid4().hex,
        s=b"{}",
    )
    [(gap,)] = store.sql("SELECT max({pos}) FROM {table}")
    write_some_events(store.registry, "G")
    store.sql("DELETE FROM {table} WHERE {pos} = :p", p=gap)
    return int(gap)


def test_a_deleted_chain_row_fails_at_its_position(store: Store) -> None:
    position = store.positions()[5]
    store.sql("DELETE FROM ledger_digests WHERE position = :p", p=position)
    failed_at(store.verify(), position, Reason.CHAIN_ROW_MISSING)


def test_an_altered_chain_digest_fails_at_its_position(store: Store) -> None:
    position = store.positions()[2]
    store.sql("UPDATE ledger_digests SET digest = :d WHERE position = :p", d=bytes(32), p=position)
    failed_at(store.verify(), position, Reason.CHAIN_ROW_ALTERED)


def test_a_rewritten_chain_is_caught_by_the_next_signed_checkpoint(store: Store) -> None:
    """Whoever alters an event and recomputes the chain rows after it cannot sign: the
    genuine checkpoint after the change no longer matches."""
    positions = store.positions()
    altered = positions[EVERY + 1]
    store.set_state(altered, store.state(altered) + b" ")
    store.sql("DELETE FROM ledger_digests WHERE position >= :p", p=altered)
    forger = generate_key()
    store.extend(forger)
    store.sql("DELETE FROM ledger_checkpoints WHERE key_id = :k", k=key_id(forger))
    failed_at(store.verify(), positions[2 * EVERY - 1], Reason.CHECKPOINT_MISMATCH)
    # deleting the genuine checkpoints after the change leaves a hole where one is due
    store.sql("DELETE FROM ledger_checkpoints WHERE position >= :p", p=altered)
    failed_at(store.verify(), positions[2 * EVERY - 1], Reason.CHECKPOINT_MISSING)
    # and the forger's own checkpoints in their place are refused for their key
    store.sql("DELETE FROM ledger_digests WHERE position >= :p", p=altered)
    store.extend(forger)
    failed_at(store.verify(), positions[2 * EVERY - 1], Reason.UNKNOWN_KEY)


def test_a_tampered_checkpoint_signature_fails(store: Store) -> None:
    position = store.positions()[EVERY - 1]
    [(signature,)] = store.sql(
        "SELECT signature FROM ledger_checkpoints WHERE position = :p", p=position
    )
    flipped = bytes([signature[0] ^ 0x80]) + bytes(signature[1:])
    store.sql(
        "UPDATE ledger_checkpoints SET signature = :s WHERE position = :p", s=flipped, p=position
    )
    failed_at(store.verify(), position, Reason.BAD_SIGNATURE)


def test_a_checkpoint_keeps_its_link_in_columns_of_its_own(store: Store) -> None:
    """``signature`` holds the 64-byte Ed25519 signature and nothing else; the link to
    the key's previous checkpoint is in ``previous_position``/``previous_digest``
    (revision 0003's code packed it into a 104-byte "signature": this failed then)."""
    rows = store.sql(
        "SELECT position, digest, signature, previous_position, "
        "previous_digest FROM ledger_checkpoints ORDER BY position"
    )
    assert len(rows) >= 2
    assert {len(bytes(row[2])) for row in rows} == {64}
    assert (rows[0][3], bytes(rows[0][4])) == (0, GENESIS)
    for before, after in pairwise(rows):
        assert (after[3], bytes(after[4])) == (before[0], bytes(before[1]))


def test_a_rewritten_checkpoint_link_fails_its_signature(store: Store) -> None:
    """The link columns are covered by the signature: pointing a checkpoint past a
    deleted one (to hide the deletion) breaks it."""
    [first, second] = [
        int(p)
        for (p,) in store.sql("SELECT position FROM ledger_checkpoints ORDER BY position LIMIT 2")
    ]

    def verify() -> VerifyReport:  # no interval: only the links tell the deletion
        return verify_ledger(
            store.engine, [store.key.public_key()], log=store.log(), checkpoint_every=None
        )

    store.sql("DELETE FROM ledger_checkpoints WHERE position = :p", p=first)
    failed_at(verify(), second, Reason.CHECKPOINT_MISSING)
    store.sql(
        "UPDATE ledger_checkpoints SET previous_position = 0, previous_digest = :g "
        "WHERE position = :p",
        g=GENESIS,
        p=second,
    )
    failed_at(verify(), second, Reason.BAD_SIGNATURE)
    store.sql(
        "UPDATE ledger_checkpoints SET previous_position = NULL, "
        "previous_digest = NULL WHERE position = :p",
        p=second,
    )
    failed_at(verify(), second, Reason.BAD_SIGNATURE)


def test_checkpoints_of_another_key_fail(store: Store) -> None:
    failed_at(store.verify(generate_key()), store.positions()[EVERY - 1], Reason.UNKNOWN_KEY)


# -- a third party holding an earlier checkpoint -------------------------------------------


def test_an_earlier_checkpoint_checks_against_the_store_with_the_public_key_alone(
    store: Store, tmp_path: Path
) -> None:
    head = latest_digest(store.engine)
    held = head.checkpoint
    assert held is not None
    save_public_key(store.key, tmp_path / "registry.pub.pem")
    public = load_public_key(tmp_path / "registry.pub.pem")
    write_some_events(store.registry, "L")  # the log has moved on since
    store.extend()
    check = check_checkpoint(
        public,
        held.position,
        held.digest,
        held.signature,
        kid=held.key_id,
        previous=held.previous,
        engine=store.engine,
        log=store.log(),
    )
    assert check.ok and check.log_checked
    assert check_checkpoint(
        public, held.position, held.digest, held.signature, previous=held.previous
    ).ok
    bad = check_checkpoint(
        public,
        held.position,
        held.digest,
        held.signature[::-1],
        previous=held.previous,
        engine=store.engine,
    )
    assert bad.failure is not None and bad.failure.reason is Reason.BAD_SIGNATURE
    early = store.positions()[1]
    store.set_state(early, store.state(early).replace(b"1", b"2", 1))
    changed = check_checkpoint(
        public,
        held.position,
        held.digest,
        held.signature,
        previous=held.previous,
        engine=store.engine,
        log=store.log(),
    )
    assert changed.failure is not None
    assert changed.failure.reason is Reason.CHECKPOINT_MISMATCH


# -- schema and command ---------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_ledger_tables_come_with_the_migrations(backend: str, tmp_path: Path) -> None:
    with _database(backend, tmp_path) as url:
        settings = Settings(url)
        if backend == "sqlite":
            build_registry(settings).close()  # the embedded store migrates itself
        engine = make_engine(settings)
        try:
            assert {"ledger_digests", "ledger_checkpoints"} <= set(
                inspect(engine).get_table_names()
            )
            migrate.downgrade(settings, "0001")
            assert not {"ledger_digests", "ledger_checkpoints"} & set(
                inspect(engine).get_table_names()
            )
            migrate.upgrade(settings)
            assert {"ledger_digests", "ledger_checkpoints"} <= set(
                inspect(engine).get_table_names()
            )
        finally:
            engine.dispose()


def test_registry_verify_command(
    store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("REGISTRY_DATABASE_URL", store.url)
    monkeypatch.setenv("REGISTRY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("REGISTRY_LEDGER_KEY", raising=False)
    monkeypatch.delenv("REGISTRY_LEDGER_PUBLIC_KEY", raising=False)
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers(dest="command"))
    public = tmp_path / "public.pem"
    save_public_key(store.key, public)

    args = parser.parse_args(["verify", "--public-key", str(public)])
    assert args.run(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("OK: ")

    save_private_key(store.key, tmp_path / "signing.pem")  # the signer's own file
    monkeypatch.setenv("REGISTRY_LEDGER_KEY", str(tmp_path / "signing.pem"))
    args = parser.parse_args(["verify"])
    assert args.run(args) == 0
    capsys.readouterr()

    position = store.positions()[3]
    store.set_state(position, store.state(position) + b" ")
    assert args.run(args) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    assert out[0].startswith(f"FAILED at position {position:,}: payload altered")

    monkeypatch.delenv("REGISTRY_LEDGER_KEY")
    with pytest.raises(cli.ConfigurationError, match="no public key"):
        args.run(args)
