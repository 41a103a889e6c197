"""Every PostgreSQL session the registry opens runs with JIT off (see
``registry.persistence.sessions``), and keeps what the database URL's own ``options``
ask for."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from sqlalchemy import Engine, text

from registry.bootstrap import build_registry
from registry.persistence.engine import (
    make_engine,
    make_read_engine,
    make_read_only_engine,
    make_replica_engine,
)
from registry.settings import Settings
from tests.support import fresh_pg_database

pytestmark = pytest.mark.postgres


def _shown(engine: Engine, name: str) -> str:
    with engine.connect() as conn:
        return str(conn.execute(text(f"SHOW {name}")).scalar_one())


def test_the_event_store_and_every_engine_run_without_jit() -> None:
    with fresh_pg_database() as url:
        settings = Settings(url, read_database_url=url)
        registry = build_registry(settings)
        try:
            with registry.recorder.datastore.get_connection() as conn:  # the event store's
                assert conn.execute("SHOW jit").fetchone() == {"jit": "off"}
        finally:
            registry.close()
        replica = make_replica_engine(settings, 1)
        assert replica is not None
        engines = [make_engine(settings), make_read_engine(settings, 1), replica]
        engines.append(make_read_only_engine(settings))
        try:
            assert [_shown(e, "jit") for e in engines] == ["off"] * 4
            assert _shown(replica, "default_transaction_read_only") == "on"
        finally:
            for engine in engines:
                engine.dispose()


def test_the_urls_own_options_are_kept() -> None:
    """A URL asking for ``statement_timeout=5s`` still gets it, with JIT off too."""
    with fresh_pg_database() as url:
        asked = f"{url}?options={quote('-c statement_timeout=5s')}"
        engine = make_engine(Settings(asked))
        try:
            assert (_shown(engine, "statement_timeout"), _shown(engine, "jit")) == ("5s", "off")
        finally:
            engine.dispose()
