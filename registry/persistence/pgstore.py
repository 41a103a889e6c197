"""The event store's PostgreSQL factory: the library's, plus the database URL's TLS
and the registry's session settings (``registry.persistence.sessions``).

The library builds its connection pool from ``POSTGRES_DBNAME/HOST/PORT/USER/PASSWORD``
only, so ``sslmode``/``sslrootcert``/... in ``REGISTRY_DATABASE_URL`` reached the read
models (SQLAlchemy passes the URL's query to psycopg) but not the event store: its
writes connected with libpq's default ``prefer``, never verifying the server.
``registry.settings`` copies the URL's TLS parameters to ``POSTGRES_SSL*`` keys; this
factory adds them to the pool's connect arguments before the pool opens (it is built
closed), and the start-up lock's connection takes them from the same keys.
"""

from __future__ import annotations

from collections.abc import Mapping

import eventsourcing.postgres as es_postgres
from eventsourcing.utils import Environment, EnvType

from registry.persistence.sessions import session_options

TLS_ENV_PREFIX = "POSTGRES_SSL"
"""``registry.settings`` writes the URL's ``sslmode`` as ``POSTGRES_SSLMODE``, etc."""


def tls_connect_kwargs(env: Mapping[str, str]) -> dict[str, str]:
    """libpq's TLS connection parameters from the event store's environment."""
    return {
        key.removeprefix("POSTGRES_").lower(): value
        for key, value in env.items()
        if key.startswith(TLS_ENV_PREFIX) and value
    }


class RegistryPostgresFactory(es_postgres.PostgresFactory):
    """``PostgresFactory`` whose pool connects with the URL's TLS parameters."""

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        kwargs = self.datastore.pool.kwargs
        assert isinstance(kwargs, dict)  # the library's: a dict it updates itself
        kwargs.update(tls_connect_kwargs(self.env))
        kwargs["options"] = session_options(kwargs.get("options"))
