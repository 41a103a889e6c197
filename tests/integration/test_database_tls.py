"""Every database connection honours the URL's TLS parameters, the event store's too.

Issue 21: ``sslmode``/``sslrootcert`` in ``REGISTRY_DATABASE_URL`` reached the read
models but not the event store, whose writes connected without verifying the server.
Here a throwaway PostgreSQL 15 cluster serves TLS only (``ssl=on``, ``hostssl``-only
``pg_hba.conf``), with a certificate from a CA made at test time, and:

- with ``sslmode=verify-full`` and the right CA, the registry migrates, settles a trade
  and reads it back through the event store, its log and a read-model engine, every one
  of those connections encrypted and verifying;
- with another CA, the event store's own pool is refused: the write fails and the pool's
  connection attempts failed on the certificate;
- with ``sslmode=disable``, the server refuses the connection.

The cluster is started as the ``postgres`` user when the tests run as root (as CI does).
Under ``CI=true`` a cluster that cannot start fails the tests; elsewhere they skip.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from eventsourcing.persistence import OperationalError
from sqlalchemy import text

from registry.application import Registry, Trade, TradeOutcome
from registry.bootstrap import build_registry
from registry.domain.units import UnitClass, UnitSelector, UnitType
from registry.persistence import migrate
from registry.persistence.engine import make_read_engine
from registry.persistence.recorder import RegistryPostgresRecorder
from registry.settings import Settings
from tests.pg_cluster import FAST, free_port, give_to_server_user, workspace
from tests.support import EXCHANGE, REGULATOR, open_company
from tests.tls_material import write_tls_material

pytestmark = pytest.mark.postgres

DBNAME = "registry"
CEA25 = UnitClass(UnitType.CEA, 2025)
CEA = UnitSelector(UnitType.CEA)


@dataclass(frozen=True)
class TlsCluster:
    port: int
    ca: Path
    other_ca: Path

    def url(self, query: str) -> str:
        return f"postgresql://root@127.0.0.1:{self.port}/{DBNAME}?{query}"


@pytest.fixture(scope="module")
def cluster() -> Iterator[TlsCluster]:
    with workspace("registry-pgtls-", "a TLS PostgreSQL cluster") as work:
        data = work.base / "data"
        tls = write_tls_material(work.base / "tls")
        port = free_port()
        work.initdb(data)
        for source, name in ((tls.server.cert, "server.pem"), (tls.server.key, "server-key.pem")):
            shutil.copy(source, data / name)
            (data / name).chmod(0o600)
            give_to_server_user(data / name)
        work.configure(
            data,
            "ssl = on",
            "ssl_cert_file = 'server.pem'",
            "ssl_key_file = 'server-key.pem'",
            *FAST,
        )
        # TLS or nothing: no local socket, no plain host line.
        (data / "pg_hba.conf").write_text("hostssl all all 127.0.0.1/32 trust\n")
        work.start(data, port=port)
        with psycopg.connect(
            f"postgresql://root@127.0.0.1:{port}/postgres",
            sslmode="verify-full",
            sslrootcert=str(tls.ca_cert),
            autocommit=True,
        ) as conn:
            conn.execute(f"CREATE DATABASE {DBNAME}")
        found = TlsCluster(port, tls.ca_cert, tls.other_ca_cert)
        # Migrations (Alembic's SQLAlchemy engine) over verified TLS.
        migrate.upgrade(Settings(found.url(f"sslmode=verify-full&sslrootcert={found.ca}")))
        yield found


def _fund(registry: Registry) -> None:
    for account in ("TLS-S", "TLS-B"):
        open_company(registry, account)
    registry.issue_units(REGULATOR, "TLS-ISS", CEA25, 100, "issuance")
    registry.transfer(
        REGULATOR, "TLS-RES", "CN-ISSUANCE", "CN-ALLOCATION-RESERVE", CEA, 100, "reserve"
    )
    registry.allocate(REGULATOR, "TLS-AL", "TLS-S", CEA, 100, "allocation")


def _settle(registry: Registry) -> None:
    [settled] = registry.settle_trades(EXCHANGE, [Trade("TLS-T1", "TLS-S", "TLS-B", "CEA", 10)])
    assert settled.outcome is TradeOutcome.SETTLED, settled


def test_verified_tls_migrates_writes_and_reads(cluster: TlsCluster) -> None:
    settings = Settings(cluster.url(f"sslmode=verify-full&sslrootcert={cluster.ca}"))
    migrate.ensure_migrated(settings)
    registry = build_registry(settings)
    try:
        _fund(registry)
        recorder = registry.recorder
        assert isinstance(recorder, RegistryPostgresRecorder)
        before = recorder.max_notification_id() or 0
        _settle(registry)
        [holding] = registry.get_holdings("TLS-B")
        assert holding.total == 10

        # The event store's pooled connection: encrypted, and made verifying the server.
        with recorder.datastore.get_connection() as conn:
            assert conn.info.get_parameters()["sslmode"] == "verify-full"
            row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            assert row.fetchone() == {"ssl": True}
        # The settlement's events, read back from the log.
        assert recorder.select_notifications(start=before + 1, limit=100)

        reads = make_read_engine(settings, 1)
        try:
            with reads.connect() as conn:
                assert conn.execute(text("SHOW ssl")).scalar() == "on"
                ssl = conn.execute(text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"))
                assert ssl.scalar() is True
        finally:
            reads.dispose()
    finally:
        registry.close()


def test_event_store_refuses_a_server_its_ca_did_not_sign(
    cluster: TlsCluster, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(cluster.url(f"sslmode=verify-full&sslrootcert={cluster.other_ca}"))
    # Start-up's own connection (the advisory lock) is refused first.
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        build_registry(settings)

    # The event store's pool on its own: the write fails, its connections never made.
    env = settings.eventsourcing_env()
    env["POSTGRES_CONNECT_TIMEOUT"] = "2"
    caplog.set_level(logging.WARNING, logger="psycopg.pool")
    with pytest.raises(OperationalError, match="couldn't get a connection") as refused:
        registry = Registry(env=env)
        try:
            open_company(registry, "TLS-NEVER")
        finally:
            registry.close()
    assert "certificate verify failed" in caplog.text, (refused.value, caplog.text)


def test_server_refuses_a_connection_without_tls(cluster: TlsCluster) -> None:
    settings = Settings(cluster.url("sslmode=disable"))
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        build_registry(settings)
