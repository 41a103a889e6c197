"""A save through ``registry_insert_events`` (one statement) against the pipelined
transaction it replaced, on a fresh PostgreSQL database.

    .venv/bin/python -m bench.save_statement [--database-url URL] [--saves 2000] [--rounds 3]

Each round saves ``--saves`` saves of 3 events (a single trade's save: its transaction
record and two accounts' events, ~250 bytes each) one way, then the other, and prints
the client's CPU (``time.process_time``) and the wall time per save; then 20 saves of
1,000 events each way (a batch: above 16 KiB, so the transaction is sent plainly, not
pipelined). The database (default ``h_save_statement`` on the local server) is
dropped and made again, migrated to head, and dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from collections.abc import Sequence

import psycopg
from eventsourcing.persistence import StoredEvent

from registry.bootstrap import build_registry
from registry.persistence import migrate
from registry.persistence.recorder import RegistryPostgresRecorder
from registry.settings import Settings

SERVER = "postgresql://root@127.0.0.1:5432"


def events(count: int, size: int) -> list[StoredEvent]:
    topic = "bench.save_statement:Filler"
    return [
        StoredEvent(uuid.uuid4(), 1, topic, os.urandom(size // 2).hex().encode())
        for _ in range(count)
    ]


def timed(recorder: RegistryPostgresRecorder, saves: Sequence[list[StoredEvent]]) -> str:
    cpu, wall = time.process_time(), time.perf_counter()
    for save in saves:
        ids = recorder.insert_events(save)
        assert ids is not None and len(ids) == len(save)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    n = len(saves)
    return f"CPU {1e6 * cpu / n:,.0f} us, wall {1e6 * wall / n:,.0f} us"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=f"{SERVER}/h_save_statement")
    parser.add_argument("--saves", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    server, name = args.database_url.rsplit("/", 1)
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        settings = Settings(args.database_url)
        migrate.upgrade(settings)
        registry = build_registry(settings)
        recorder = registry.recorder
        assert isinstance(recorder, RegistryPostgresRecorder) and recorder.has_insert_function()
        try:
            for round_ in range(1, args.rounds + 1):
                for function in (False, True):
                    recorder._has_function = function
                    saves = [events(3, 250) for _ in range(args.saves)]
                    how = "function   " if function else "transaction"
                    print(f"round {round_}, 3-event saves, {how}: {timed(recorder, saves)}")
            for function in (False, True):
                recorder._has_function = function
                saves = [events(1000, 300) for _ in range(20)]
                how = "function   " if function else "transaction"
                print(f"1,000-event saves, {how}: {timed(recorder, saves)}")
        finally:
            registry.close()
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
