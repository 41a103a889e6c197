"""Read-model queries on a real streaming replica (``REGISTRY_READ_DATABASE_URL``).

Issue 21: queries could only run on the primary. Here a throwaway PostgreSQL 15
primary and a ``pg_basebackup -R`` hot standby of it are started on free ports, and a
server is built the way ``registry serve`` builds one (``build_backend``) with the read
URL naming the standby:

- the registry writes on the primary and the projection worker projects there; the
  tracking table is replicated, so a GetBalances with ``min_position`` waits on the
  standby until it has replayed the projection (replay is paused, then resumed, to
  show the wait), and a read without it may be stale but never fails;
- with replay paused, the wait is bounded: UNAVAILABLE (``READ_MODELS_BEHIND``), as on
  the primary when the worker lags;
- a write sent through the read URL's engine is refused by the replica;
- the access check and the log's head stay on the primary.

The clusters run as the ``postgres`` user when the tests run as root (as CI does).
Under ``CI=true`` clusters that cannot start fail the tests; elsewhere they skip.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from registry.bootstrap import build_backend, build_server, build_worker, close_backend
from registry.client import RegistryClient, error_details
from registry.domain.units import UnitClass, UnitSelector, UnitType
from registry.persistence import migrate
from registry.persistence.engine import make_replica_engine
from registry.readmodels.runner import ProjectionRunner
from registry.settings import ConfigurationError, Settings, check, effective
from registry.v1 import account_service_pb2 as account_pb
from services.backend import Backend
from services.server import ServerSettings
from tests.e2e.conftest import grant_principals
from tests.pg_cluster import FAST, free_port, workspace
from tests.support import REGULATOR, open_company

pytestmark = pytest.mark.postgres

DBNAME = "registry"
CEA25 = UnitClass(UnitType.CEA, 2025)
CEA = UnitSelector(UnitType.CEA)


@dataclass(frozen=True)
class Pair:
    primary_port: int
    standby_port: int

    def primary(self) -> str:
        return f"postgresql://root@127.0.0.1:{self.primary_port}/{DBNAME}"

    def standby(self) -> str:
        return f"postgresql://root@127.0.0.1:{self.standby_port}/{DBNAME}?sslmode=disable"

    def on_standby(self, sql: str) -> object:
        with psycopg.connect(self.standby(), autocommit=True) as conn:
            row = conn.execute(sql).fetchone()
            return row[0] if row else None


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    with workspace("registry-pgreplica-", "a primary and its streaming replica") as work:
        primary, standby = work.base / "primary", work.base / "standby"
        found = Pair(free_port(), free_port())
        work.initdb(primary)
        work.configure(primary, *FAST)
        (primary / "pg_hba.conf").write_text(
            "host all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n"
        )
        work.start(primary, port=found.primary_port)
        with psycopg.connect(
            f"postgresql://root@127.0.0.1:{found.primary_port}/postgres", autocommit=True
        ) as conn:
            conn.execute(f"CREATE DATABASE {DBNAME}")
        migrate.upgrade(Settings(found.primary()))
        work.standby(found.primary_port, standby)
        work.start(standby, port=found.standby_port)
        assert found.on_standby("SELECT pg_is_in_recovery()") is True
        yield found


@dataclass
class Served:
    pair: Pair
    client: RegistryClient
    backend: Backend
    worker: ProjectionRunner


@pytest.fixture
def served(pair: Pair, tmp_path: Path) -> Iterator[Served]:
    """A server built as ``registry serve`` builds it, its queries on the standby; no
    in-process projections: the test runs the worker's catch-up itself."""
    store = Settings(pair.primary(), read_database_url=pair.standby())
    store.check_read_replica()
    options = ServerSettings(
        listen="127.0.0.1:0",
        max_workers=4,
        max_concurrent_rpcs=16,
        projections_in_process=False,
        grace_seconds=1.0,
        four_eyes=False,
        ledger_key=tmp_path / "ledger-signing-key.pem",
    )
    backend = build_backend(store, options)
    try:
        assert backend.read_models.queries is not backend.read_models.reads
        tokens = grant_principals(backend.registry)
        server = build_server(backend, options)
        server.start()
        try:
            with RegistryClient(
                server.address, tokens["auditor"], timeout=10, attempts=1
            ) as client:
                worker = build_worker(backend.registry, backend.read_models.engine)
                yield Served(pair, client, backend, worker)
        finally:
            server.stop(0.5)
    finally:
        try:
            pair.on_standby("SELECT pg_wal_replay_resume()")
        finally:
            close_backend(backend)


def _total(served: Served, account: str, min_position: int = 0) -> int:
    return sum(h.total for h in served.client.balances(account, min_position=min_position))


def test_read_your_writes_waits_for_the_replicas_replay(served: Served) -> None:
    registry = served.backend.registry
    open_company(registry, "RR-A")
    registry.issue_units(REGULATOR, "RR-ISS", CEA25, 100, "issuance")
    registry.transfer(REGULATOR, "RR-RES", "CN-ISSUANCE", "CN-ALLOCATION-RESERVE", CEA, 100, "r")
    first = registry.allocate(REGULATOR, "RR-AL1", "RR-A", CEA, 40, "allocation").position
    assert first is not None
    served.worker.catch_up()
    assert _total(served, "RR-A", first) == 40

    # Replay stopped: the next write and its projection reach the primary only.
    served.pair.on_standby("SELECT pg_wal_replay_pause()")
    second = registry.allocate(REGULATOR, "RR-AL2", "RR-A", CEA, 2, "allocation").position
    assert second is not None and second > first
    served.worker.catch_up()

    # Without min_position: stale (the replica's snapshot), never an error.
    assert _total(served, "RR-A") == 40

    # With it: the wait is bounded (and the position is checked against the primary's
    # head, not the paused replica's, which would refuse it
    # as INVALID_ARGUMENT), UNAVAILABLE as when the worker lags on the primary.
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as lagging:
        served.client.accounts.GetBalances(
            account_pb.GetBalancesRequest(account_id="RR-A", min_position=second),
            timeout=1.0,
            metadata=served.client.metadata,
        )
    code = lagging.value.code()
    assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), code
    if code is grpc.StatusCode.UNAVAILABLE:
        assert error_details(lagging.value).reason == "READ_MODELS_BEHIND"
    assert time.monotonic() - started < 3

    # Replay resumes while the call waits: the call returns the new balance.
    resume = threading.Timer(0.5, served.pair.on_standby, ("SELECT pg_wal_replay_resume()",))
    resume.start()
    try:
        assert _total(served, "RR-A", second) == 42
    finally:
        resume.join()

    # The access check reads the primary: a revocation the replica has not replayed
    # still takes effect at once.
    served.pair.on_standby("SELECT pg_wal_replay_pause()")
    registry.access.revoke_grant(REGULATOR, "auditor-auditor", "revoked while replay paused")
    with pytest.raises(grpc.RpcError) as refused:
        served.client.balances("RR-A")
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED, refused.value


def test_a_write_through_the_read_url_is_refused(pair: Pair) -> None:
    replica = make_replica_engine(Settings(pair.primary(), read_database_url=pair.standby()), 1)
    assert replica is not None
    try:
        with replica.connect() as conn:
            assert conn.execute(text("SELECT pg_is_in_recovery()")).scalar() is True
            # The URL's TLS parameters reach the connection, as the primary's do.
            driver = conn.connection.dbapi_connection
            assert isinstance(driver, psycopg.Connection)
            assert driver.info.get_parameters()["sslmode"] == "disable"
            with pytest.raises(DBAPIError, match="read-only transaction"):
                conn.execute(text("CREATE TABLE never_here (id int)"))
    finally:
        replica.dispose()
    # Even a read URL naming the primary by mistake cannot write: its sessions are
    # read-only.
    wrong = make_replica_engine(Settings(pair.primary(), read_database_url=pair.primary()), 1)
    assert wrong is not None
    try:
        with wrong.connect() as conn, pytest.raises(DBAPIError, match="read-only transaction"):
            conn.execute(text("CREATE TABLE never_here (id int)"))
    finally:
        wrong.dispose()


def test_the_read_url_is_checked_before_anything_starts(tmp_path: Path) -> None:
    """No cluster needed: what ``registry serve`` refuses at start, naming the setting."""
    primary = "postgresql://root@127.0.0.1:5432/registry"
    replica = "postgresql://reader:s3cret@standby:5432/registry"
    settings = check({"REGISTRY_DATABASE_URL": primary, "REGISTRY_READ_DATABASE_URL": replica})
    assert settings.read_database_url == replica
    assert check({"REGISTRY_DATABASE_URL": primary}).read_database_url == ""
    refused = {
        "a SQLite store": {"REGISTRY_DATABASE_URL": f"sqlite:///{tmp_path}/r.sqlite"},
        "not PostgreSQL": {"REGISTRY_READ_DATABASE_URL": "sqlite:///replica.sqlite"},
        "no database": {"REGISTRY_READ_DATABASE_URL": "postgresql://reader@standby:5432"},
        "sslmode": {"REGISTRY_READ_DATABASE_URL": f"{replica}?sslmode=sometimes"},
        "sslrootcert": {"REGISTRY_READ_DATABASE_URL": f"{replica}?sslrootcert=/no/such.pem"},
    }
    for case, given in refused.items():
        environ = {"REGISTRY_DATABASE_URL": primary, "REGISTRY_READ_DATABASE_URL": replica}
        environ.update(given)
        with pytest.raises(ConfigurationError, match="REGISTRY_READ_DATABASE_URL") as error:
            check(environ)
        assert "s3cret" not in str(error.value), case
    # A typo is refused as every unknown name is.
    with pytest.raises(ConfigurationError, match="did you mean REGISTRY_READ_DATABASE_URL"):
        check({"REGISTRY_DATABASE_URL": primary, "REGISTRY_READ_DATABASE_ULR": replica})
    # Shown masked, as the primary's URL is.
    [shown] = [
        value
        for name, value, _ in effective({"REGISTRY_READ_DATABASE_URL": replica})
        if name == "REGISTRY_READ_DATABASE_URL"
    ]
    assert shown == "postgresql://reader:***@standby:5432/registry"
