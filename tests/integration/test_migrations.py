"""Alembic owns the schema: upgrade and downgrade on both databases, the migrations agree
with the read-model metadata and with the event store library's own DDL, start-up
refuses an un-migrated PostgreSQL database, and concurrent upgrades both succeed."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from registry.application import Registry
from registry.bootstrap import build_registry
from registry.integrity.chain import GENESIS
from registry.integrity.ledger import iter_checkpoints
from registry.integrity.signing import (
    checkpoint_message,
    generate_key,
    key_id,
    sign_checkpoint,
    verify_signature,
)
from registry.persistence import migrate
from registry.persistence.engine import make_engine
from registry.persistence.locks import MIGRATION_LOCK_KEY
from registry.readmodels.tables import metadata
from registry.settings import ConfigurationError, Settings
from tests.support import fresh_pg_database

READ_MODEL_TABLES = set(metadata.tables) | {
    "ledger_digests",
    "ledger_checkpoints",
    "ledger_event_authentication",
    "ledger_verified",
}
EVENT_STORE_TABLES = {
    "sqlite": {"stored_events", "stored_snapshots"},
    "postgres": {"registry_events", "registry_snapshots"},
}
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@contextmanager
def empty_database(backend: str, tmp_path: Path) -> Iterator[Settings]:
    """A database nobody has migrated yet."""
    if backend == "postgres":
        with fresh_pg_database(migrated=False) as url:
            yield Settings(url)
    else:
        yield Settings(f"sqlite:///{tmp_path / 'registry.sqlite'}")


def table_names(settings: Settings) -> set[str]:
    engine = make_engine(settings)
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def run_cli(*args: str, url: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "registry.cli", *args],
        cwd=cwd,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "REGISTRY_DATABASE_URL": url},
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_upgrade_from_empty_to_head_and_back_to_base(backend: str, tmp_path: Path) -> None:
    with empty_database(backend, tmp_path) as settings:
        assert table_names(settings) == set()
        assert migrate.current_revision(settings) is None
        assert not migrate.is_at_head(settings)

        applied = migrate.upgrade(settings)
        assert [step.split(":")[0] for step in applied] == [
            "base -> 0001",
            "0001 -> 0002",
            "0002 -> 0003",
            "0003 -> 0004",
            "0004 -> 0005",
            "0005 -> 0006",
        ]
        assert table_names(settings) == (
            READ_MODEL_TABLES | EVENT_STORE_TABLES[backend] | {"alembic_version"}
        )
        assert migrate.current_revision(settings) == migrate.head_revision() == "0006"
        assert migrate.is_at_head(settings)
        assert migrate.upgrade(settings) == [], "a second upgrade is a no-op"

        assert [step.split(":")[0] for step in migrate.downgrade(settings)] == [
            "0006 -> 0005",
            "0005 -> 0004",
            "0004 -> 0003",
            "0003 -> 0002",
            "0002 -> 0001",
            "0001 -> base",
        ]
        assert table_names(settings) <= {"alembic_version"}
        assert migrate.current_revision(settings) is None
        if backend == "postgres":
            with psycopg.connect(settings.database_url) as conn:
                types = conn.execute(
                    "SELECT count(*) FROM pg_type WHERE typname = 'stored_event_uuid'"
                ).fetchone()
            assert types == (0,)
            with psycopg.connect(settings.database_url) as conn:
                functions = conn.execute(
                    "SELECT count(*) FROM pg_proc WHERE proname = 'registry_insert_events'"
                ).fetchone()
            assert functions == (0,), "0006's function dropped"

        migrate.upgrade(settings)  # and up again: downgrade left nothing in the way
        assert migrate.is_at_head(settings)


@pytest.mark.parametrize("backend", BACKENDS)
def test_models_and_migrations_agree(backend: str, tmp_path: Path) -> None:
    with empty_database(backend, tmp_path) as settings:
        migrate.upgrade(settings)
        engine = make_engine(settings)
        try:
            with engine.connect() as conn:
                context = MigrationContext.configure(
                    conn, opts={"include_object": migrate.include_object, "compare_type": True}
                )
                diff = compare_metadata(context, migrate.schema_metadata())
        finally:
            engine.dispose()
        assert diff == [], "tables.py and migrations/ disagree: add a revision"


def _sqlite_event_store(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE tbl_name IN "
            "('stored_events', 'stored_snapshots') "
            "AND type <> 'trigger'"
        ).fetchall()  # 0003's are ours
    return {
        name: " ".join(
            (sql or "").replace("IF NOT EXISTS ", "").replace(", authenticator BLOB", "").split()
        )  # 0004's
        for name, sql in rows
    }


PG_EVENT_STORE_CATALOG = {
    "columns": "SELECT table_name, column_name, data_type, is_nullable, column_default "
    "FROM information_schema.columns WHERE table_schema = 'public' "
    "AND table_name IN ('registry_events', 'registry_snapshots') ORDER BY 1, 2",
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes "
    "WHERE schemaname = 'public' "
    "AND tablename IN ('registry_events', 'registry_snapshots') ORDER BY 1, 2",
    "storage": "SELECT relname, reloptions FROM pg_class "
    "WHERE relname IN ('registry_events', 'registry_snapshots') ORDER BY 1",
    "types": "SELECT t.typname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnum "
    "FROM pg_type t JOIN pg_attribute a ON a.attrelid = t.typrelid "
    "WHERE t.typname LIKE 'stored_event%' ORDER BY 1, 4",
    "sequences": "SELECT sequence_name, data_type, start_value, increment "
    "FROM information_schema.sequences ORDER BY 1",
}


def _pg_event_store(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """The catalog, less the column that 0004 adds to the library's table (its
    ``authenticator``, ours: every other column is the library's)."""
    with psycopg.connect(url) as conn:
        catalog = {
            key: conn.execute(query).fetchall() for key, query in PG_EVENT_STORE_CATALOG.items()
        }
    catalog["columns"] = [
        row for row in catalog["columns"] if row[:2] != ("registry_events", "authenticator")
    ]
    return catalog


@pytest.mark.parametrize("backend", BACKENDS)
def test_event_store_tables_are_exactly_what_the_library_creates(
    backend: str, tmp_path: Path
) -> None:
    """The revision copies eventsourcing's DDL: if a library upgrade changes it, this
    fails and a new revision must follow (the library no longer creates tables)."""
    with (
        empty_database(backend, tmp_path / "ours") as ours,
        empty_database(backend, tmp_path / "library") as library,
    ):
        migrate.upgrade(ours)
        env = {**library.eventsourcing_env(), "CREATE_TABLE": "y"}
        env.pop("APPLICATION_RECORDER_TOPIC")  # the library's own recorder and DDL
        Registry(env=env).close()
        if backend == "sqlite":
            mine = _sqlite_event_store(tmp_path / "ours" / "registry.sqlite")
            theirs = _sqlite_event_store(tmp_path / "library" / "registry.sqlite")
            assert {"stored_events", "stored_snapshots"} <= set(mine)
            assert mine == theirs
        else:
            mine_pg = _pg_event_store(ours.database_url)
            assert mine_pg["indexes"] and mine_pg["types"] and mine_pg["storage"]
            assert mine_pg == _pg_event_store(library.database_url)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_store_the_library_created_before_migrations_is_adopted_with_its_events(
    backend: str, tmp_path: Path
) -> None:
    with empty_database(backend, tmp_path) as settings:
        env = {**settings.eventsourcing_env(), "CREATE_TABLE": "y"}
        env.pop("APPLICATION_RECORDER_TOPIC")  # before this registry: the library's
        old = Registry(env=env)
        old.ensure_national_accounts()
        before = old.account_ids()
        old.close()
        assert before

        assert len(migrate.upgrade(settings)) == 6
        registry = build_registry(settings)
        try:
            assert registry.account_ids() == before
        finally:
            registry.close()


@pytest.mark.postgres
def test_registry_refuses_an_unmigrated_postgres_database_naming_the_command() -> None:
    with fresh_pg_database(migrated=False) as url:
        settings = Settings(url)
        with pytest.raises(migrate.NotMigrated, match="run `registry migrate`") as raised:
            build_registry(settings).close()
        assert raised.value.reason == "DATABASE_NOT_MIGRATED"
        assert isinstance(raised.value, ConfigurationError)
        assert "at revision none, head is 0006" in str(raised.value)
        assert table_names(settings) == set(), "the library must not create tables"

        migrate.upgrade(settings)
        build_registry(settings).close()


def test_embedded_sqlite_store_migrates_itself(tmp_path: Path) -> None:
    settings = Settings(f"sqlite:///{tmp_path / 'registry.sqlite'}")
    registry = build_registry(settings)
    registry.close()
    assert migrate.is_at_head(settings)


def test_a_database_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    settings = Settings(f"sqlite:///{tmp_path / 'registry.sqlite'}")
    migrate.upgrade(settings)
    engine = make_engine(settings)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(ConfigurationError, match="revision 9999, which this version"):
        build_registry(settings)


def test_registry_migrate_command_on_sqlite_then_again_is_a_no_op(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'data' / 'registry.sqlite'}"
    first = run_cli("migrate", url=url, cwd=tmp_path)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert "applied base -> 0001" in out and "migrated to head 0006" in out
    assert migrate.is_at_head(Settings(url))

    again = run_cli("migrate", url=url, cwd=tmp_path)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert "applied" not in out and "already at head 0006" in out


WAITING_FOR_ADVISORY_LOCKS = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


@pytest.mark.postgres
def test_concurrent_registry_migrate_processes_on_one_postgres_database_both_succeed(
    tmp_path: Path,
) -> None:
    """Both processes are held at the migration lock, then released together: the
    second must wait for the first and find nothing to do, not fail on its tables."""
    with fresh_pg_database(migrated=False) as url, psycopg.connect(url, autocommit=True) as gate:
        gate.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        runs = [run_cli("migrate", url=url, cwd=tmp_path) for _ in range(2)]
        try:
            deadline = time.monotonic() + 60
            while gate.execute(WAITING_FOR_ADVISORY_LOCKS).fetchone() != (2,):
                assert time.monotonic() < deadline, "the migrations never reached the lock"
                assert all(run.poll() is None for run in runs), runs[0].communicate()
                time.sleep(0.05)
        finally:
            gate.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
        results = [run.communicate(timeout=120) for run in runs]
        assert [run.returncode for run in runs] == [0, 0], results
        assert sum("applied base -> 0001" in out for out, _ in results) == 1, results
        assert migrate.is_at_head(Settings(url))


def test_concurrent_registry_migrate_processes_on_one_sqlite_file_both_succeed(
    tmp_path: Path,
) -> None:
    """The same on SQLite, gated by a write transaction: without BEGIN IMMEDIATE both
    would find the file empty and the second would fail on "table already exists"."""
    path = tmp_path / "registry.sqlite"
    gate = sqlite3.connect(path, isolation_level=None)
    gate.execute("PRAGMA journal_mode=WAL")
    gate.execute("BEGIN IMMEDIATE")
    runs = [run_cli("migrate", url=f"sqlite:///{path}", cwd=tmp_path) for _ in range(2)]
    try:
        time.sleep(3)  # both start and queue on the write lock (30 s busy timeout)
        assert all(run.poll() is None for run in runs), "a migration did not wait"
    finally:
        gate.execute("ROLLBACK")
        gate.close()
    results = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], results
    assert sum("applied base -> 0001" in out for out, _ in results) == 1, results


@pytest.mark.postgres
def test_concurrent_upgrade_calls_in_one_process_both_succeed() -> None:
    with fresh_pg_database(migrated=False) as url:
        settings = Settings(url)
        start = threading.Barrier(2)
        applied: list[list[str]] = []
        errors: list[BaseException] = []

        def upgrade() -> None:
            start.wait()
            try:
                applied.append(migrate.upgrade(settings))
            except BaseException as error:  # reported below, not lost in the thread
                errors.append(error)

        threads = [threading.Thread(target=upgrade) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert errors == []
        assert sorted(len(steps) for steps in applied) == [0, 6]
        assert migrate.is_at_head(settings)


@pytest.mark.parametrize("backend", BACKENDS)
def test_0004_moves_a_checkpoint_link_out_of_the_signature_and_back(
    backend: str, tmp_path: Path
) -> None:
    """Revision 0003's code stored a checkpoint's link inside ``signature`` (a 104-byte
    seal); 0004 splits it into ``previous_position``/``previous_digest``, leaving the
    64-byte signature, which still verifies; a version-1 row stays as it was. Downgrade
    folds the link back."""
    key = generate_key()
    linked = sign_checkpoint(key, 7, bytes(range(32)), (3, GENESIS))
    assert linked.previous is not None
    seal = (
        linked.previous[0].to_bytes(8, "big", signed=True) + linked.previous[1] + linked.signature
    )
    plain = key.sign(checkpoint_message(3, GENESIS, key_id(key)))
    rows = [(7, seal, bytes(range(32))), (3, plain, GENESIS)]
    with empty_database(backend, tmp_path) as settings:
        migrate.upgrade(settings, "0003")
        engine = make_engine(settings)
        try:
            with engine.begin() as conn:
                for position, signature, digest in rows:
                    conn.execute(
                        text(
                            "INSERT INTO ledger_checkpoints (position, key_id, digest, signature, "
                            "signed_at) VALUES (:p, :k, :d, :s, :t)"
                        ),
                        {
                            "p": position,
                            "k": key_id(key),
                            "d": digest,
                            "s": signature,
                            "t": datetime(2026, 12, 1, tzinfo=UTC),
                        },
                    )
            migrate.upgrade(settings)
            with engine.connect() as conn:
                stored = {c.position: c for c in iter_checkpoints(conn)}
            assert stored[7].signature == linked.signature and len(stored[7].signature) == 64
            assert stored[7].previous == (3, GENESIS)
            assert verify_signature(
                key.public_key(),
                7,
                bytes(range(32)),
                stored[7].signature,
                key_id(key),
                stored[7].previous,
            )
            assert stored[3].previous is None and stored[3].signature == plain
            migrate.downgrade(settings, "0003")
            with engine.connect() as conn:
                back = dict(
                    conn.execute(
                        text("SELECT position, signature FROM ledger_checkpoints")
                    ).fetchall()
                )
            assert {p: bytes(s) for p, s in back.items()} == {7: seal, 3: plain}
        finally:
            engine.dispose()
