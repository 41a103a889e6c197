"""Shared test helpers: a controllable clock, PostgreSQL databases, registries per backend."""

from __future__ import annotations

import atexit
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from registry.application import Registry
from registry.application.projects import StatusChange
from registry.bootstrap import build_registry
from registry.domain.accounts import AccountType, Holder
from registry.domain.conservation import imbalances
from registry.domain.errors import UnknownAccount
from registry.domain.projects import ProjectDetails
from registry.domain.transactions import Principal
from registry.persistence import migrate
from registry.settings import Settings

PG_SERVER_URL = os.environ.get("REGISTRY_TEST_PG_URL", "postgresql://root@127.0.0.1:5432/postgres")
START_PG = "start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"

REGULATOR = Principal("mee", "regulator")
EXCHANGE = Principal("exchange", "settlement")


class FakeClock:
    """A clock the test moves by hand (hold expiry)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 6, 15, 9, 30, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def require_postgres() -> None:
    """Fail under CI=true, skip elsewhere, when PostgreSQL cannot be reached."""
    try:
        with psycopg.connect(PG_SERVER_URL, connect_timeout=3):
            return
    except psycopg.OperationalError as error:
        message = f"PostgreSQL unreachable at {PG_SERVER_URL} ({error}); {START_PG}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def _database_url(name: str) -> str:
    return urlunsplit(urlsplit(PG_SERVER_URL)._replace(path=f"/{name}"))


_template: list[str] = []
"""This test process's database migrated to head (at most one), which migrated test
databases are copied from."""


def _migrated_template() -> str:
    """A database migrated to head once per test process, by `registry migrate`'s own
    code; each migrated test database is a copy of it (``CREATE DATABASE ... TEMPLATE``,
    a file copy: about a quarter of the time of migrating each one, over hundreds of
    tests). Dropped when the process exits."""
    if not _template:
        name = f"registry_test_template_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_SERVER_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        atexit.register(_drop_database, name)
        migrate.upgrade(Settings(_database_url(name)))
        _template.append(name)
    return _template[0]


def _drop_database(name: str) -> None:
    with psycopg.connect(PG_SERVER_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def fresh_pg_database(*, migrated: bool = True) -> Iterator[str]:
    """Create a database for one test (or module), migrated to head as `registry migrate`
    would (unless ``migrated=False``), and drop it afterwards."""
    require_postgres()
    name = f"registry_test_{uuid.uuid4().hex[:12]}"
    template = _migrated_template() if migrated else None
    with psycopg.connect(PG_SERVER_URL, autocommit=True) as conn:
        if template is None:
            conn.execute(f'CREATE DATABASE "{name}"')
        else:
            # A copy needs the template idle: end what the migration's engine left open.
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (template,),
            )
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    url = _database_url(name)
    try:
        yield url
    finally:
        with psycopg.connect(PG_SERVER_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def registry_on(backend: str, tmp_path: Path, clock: FakeClock | None = None) -> Iterator[Registry]:
    """A fresh Registry (national accounts open) on 'memory', 'sqlite' or 'postgres'."""
    if backend == "postgres":
        with fresh_pg_database() as url:
            registry = build_registry(Settings(url), clock=clock)
            try:
                yield registry
            finally:
                registry.close()
        return
    url = "memory:" if backend == "memory" else f"sqlite:///{tmp_path / 'registry.sqlite'}"
    registry = build_registry(Settings(url), clock=clock)
    try:
        yield registry
    finally:
        registry.close()


def assert_conserved(registry: Registry) -> None:
    """Conservation (``registry.domain.conservation``): per unit class, units issued equal
    the sum of every account's holding; and something was issued (else it holds vacuously)."""
    lines = registry.supply()
    assert lines, "nothing issued"
    issued = {line.unit_class: line.issued for line in lines}
    held = {line.unit_class: line.held_in_accounts for line in lines}
    assert not imbalances(issued, held), [str(i) for i in imbalances(issued, held)]


def open_company(registry: Registry, account_id: str, sector: str = "POWER") -> None:
    registry.open_account(
        REGULATOR,
        account_id,
        AccountType.COMPLIANCE,
        Holder(f"{account_id} Co.", "91110000100001234X", sector, "Beijing"),
    )


def open_trader(registry: Registry, account_id: str) -> None:
    registry.open_account(REGULATOR, account_id, AccountType.TRADING, Holder(f"{account_id} Ltd"))


def terminate_all(url: str) -> int:
    """What a failover or restart does to the registry: every session of its database
    but this one ends. Returns how many were ended."""
    dbname = url.rsplit("/", 1)[1]
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        ).fetchone()
    assert row is not None
    return int(row[0])


PROJECT_OWNER = "PRJ-0001"


def register_project(
    registry: Registry,
    project_id: str,
    owner: str = PROJECT_OWNER,
    *,
    province: str = "Yunnan",
    methodology: str = "CCER-14-001-V01",
) -> str:
    """Open ``owner``'s PROJECT account (unless it exists) and
    register ``project_id`` to it, crediting 2020-2029: CCER of it may then be issued,
    into ``owner``. Returns the owner account."""
    try:
        registry.get_account(owner)
    except UnknownAccount:
        registry.open_account(REGULATOR, owner, AccountType.PROJECT, Holder(f"{owner} Carbon Co."))
    registry.projects.register(
        REGULATOR,
        project_id,
        ProjectDetails(
            owner_account=owner,
            province=province,
            methodology=methodology,
            sector="FORESTRY",
            verifier="China Quality Certification Centre",
            developer=f"{owner} Carbon Co.",
            crediting_start=date(2020, 1, 1),
            crediting_end=date(2029, 12, 31),
        ),
        StatusChange("registered for the test", f"REG-{project_id}"),
    )
    return owner
