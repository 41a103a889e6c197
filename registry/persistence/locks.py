"""Every PostgreSQL advisory lock key the registry takes, in one table.

Advisory locks are per database and keyed by one bigint: two purposes sharing a key
would wait for each other. Running registries (and an operator's scripts) rely on these
exact values, so they never change; a new lock takes a new key here, and the unit test
keeps them distinct.
"""

from __future__ import annotations

STARTUP_LOCK_KEY = 0x7265_6769_7374_7279  # "registry"
"""Session lock held while a process checks the schema and opens the national accounts
(``registry.bootstrap``'s start-up), so servers and workers starting together do it once."""

MIGRATION_LOCK_KEY = STARTUP_LOCK_KEY
"""Transaction lock of every migration (``migrations/env.py``): deliberately the
start-up lock, so a server never starts half-way through a migration."""

WRITER_LOCK_KEY = 0x5245_4749_5354_5259  # "REGISTRY"
"""Shared or exclusive session lock of the group commits of several processes
(``registry.persistence.write_lock``)."""

LEASE_LOCK_KEY = 0x7265_6769_0000_0001  # "regi", 1
"""Session lock of the projection lease: the one worker applying the projections, sealing
the ledger and doing the housekeeping (``registry.persistence.lease``)."""

LEDGER_LOCK_KEY = 0x6C65_6467_6572_0001  # "ledger", 1
"""Transaction lock serialising the ledger's chain extenders
(``registry.integrity.ledger``)."""

LOCK_KEYS: dict[str, int] = {
    "startup and migration": STARTUP_LOCK_KEY,
    "group commit writers": WRITER_LOCK_KEY,
    "projection lease": LEASE_LOCK_KEY,
    "ledger chain": LEDGER_LOCK_KEY,
}
"""One entry per purpose (migrations share the start-up key on purpose)."""
