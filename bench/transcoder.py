"""CPU per event of the event store's transcoders, on the stored events of a settlement.

    .venv/bin/python -m bench.transcoder                     # SQLite (temp file)
    .venv/bin/python -m bench.transcoder --database-url postgresql://root@127.0.0.1/h_bench

Settles batches of 1,000 trades and single trades (so accounts are snapshotted), reads
back what was stored, adds a snapshot of an account holding many serial blocks, then
times encode (``mapper.to_stored_event``) and decode (``mapper.to_domain_event``) per
event with the library's ``JSONTranscoder`` and with ``MsgspecTranscoder``: CPU time
(``time.process_time``), best of ``--rounds``. Then the CPU per trade of
``Registry.settle_trades`` in batches of 1,000 with each (``TRANSCODER_TOPIC`` selects
the library's), each on a store of its own, rounds interleaved so both see the same
machine load. ``--rounds 0`` or ``--settle-rounds 0`` skips a part.
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

from eventsourcing.domain import Snapshot
from eventsourcing.persistence import JSONTranscoder, Mapper, StoredEvent, Transcoder

from bench.ledger_throughput import EXCHANGE, reset_postgres, setup, trades
from registry.application import Registry
from registry.bootstrap import build_registry
from registry.domain.accounts import Account
from registry.domain.units import SerialBlock, UnitClass, UnitType
from registry.persistence.transcoder import MsgspecTranscoder
from registry.settings import Settings

LIBRARY = "eventsourcing.persistence:JSONTranscoder"


def transcoders() -> dict[str, Transcoder]:
    bare: Any = object.__new__(Registry)  # register_transcodings reads no state
    found: dict[str, Transcoder] = {}
    for name, transcoder in (("json", JSONTranscoder()), ("msgspec", MsgspecTranscoder())):
        bare.register_transcodings(transcoder)
        found[name] = transcoder
    return found


def stored_events(url: str, batches: int, singles: int) -> list[StoredEvent]:
    """The stored events and snapshots of a settlement run, plus a many-block snapshot."""
    registry = build_registry(Settings(url))
    setup(registry)
    for batch in range(batches):
        registry.settle_trades(EXCHANGE, trades(f"B{batch}", 1000))
    for n in range(singles):
        registry.settle_trade(EXCHANGE, trades(f"S{n}", 1)[0])
    stored = [
        StoredEvent(n.originator_id, n.originator_version, n.topic, n.state)
        for n in registry.recorder.select_notifications(1, 10**9)
    ]
    account = registry.repository.get(Account.id_for("PWR-A"))
    cea = UnitClass(UnitType.CEA, 2025)
    account.available = [SerialBlock(cea, 10 * n + 1, 10 * n + 5) for n in range(5000)]
    stored.append(registry.mapper.to_stored_event(Snapshot.take(account)))
    registry.close()
    return stored


def cpu(run: Callable[[], object], rounds: int) -> float:
    """Best CPU seconds of ``rounds`` runs."""
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        started = time.process_time()
        run()
        best = min(best, time.process_time() - started)
    return best


def _all(function: Callable[[Any], object], items: list[Any]) -> None:
    for item in items:
        function(item)


def microbench(stored: list[StoredEvent], rounds: int) -> None:
    kinds: dict[str, list[StoredEvent]] = defaultdict(list)
    for event in stored:
        kind = event.topic.rsplit(".", 2)[-2:]
        name = ".".join(kind) if "Snapshot" not in event.topic else "Snapshot"
        if name == "Snapshot" and len(event.state) > 50_000:
            name = "Snapshot (5,000 blocks)"
        kinds[name].append(event)
    mappers = {name: Mapper[UUID](transcoder=t) for name, t in transcoders().items()}
    print(f"{'stored event':<32}{'n':>6}{'bytes':>9}  {'encode µs':>21}  {'decode µs':>21}")
    for name, events in sorted(kinds.items(), key=lambda kv: -len(kv[1])):
        domain = [mappers["json"].to_domain_event(e) for e in events]
        size = sum(len(e.state) for e in events) / len(events)
        figures = []
        for step in ("encode", "decode"):
            for mapper in mappers.values():
                if step == "encode":
                    run = partial(_all, mapper.to_stored_event, domain)
                else:
                    run = partial(_all, mapper.to_domain_event, events)
                seconds = cpu(run, rounds)
                figures.append(seconds / len(events) * 1e6)
        print(
            f"{name:<32}{len(events):>6}{size:>9.0f}  "
            f"{figures[0]:>9.1f} -> {figures[1]:>8.1f}  {figures[2]:>9.1f} -> {figures[3]:>8.1f}"
        )


def settle_cpu(url: str, rounds: int, batch: int) -> None:
    """CPU µs per trade of settle_trades batches, each transcoder on a store of its own
    (``url`` with a suffix: a shared store would make each read the other's events),
    rounds interleaved so both see the same machine load."""
    registries: dict[str, Registry] = {}
    for name in ("json", "msgspec"):
        store = _suffixed(url, name)
        if store.startswith("postgres"):
            reset_postgres(store)
        if name == "json":
            os.environ["TRANSCODER_TOPIC"] = LIBRARY
        try:
            registries[name] = build_registry(Settings(store))
        finally:
            os.environ.pop("TRANSCODER_TOPIC", None)
        setup(registries[name])
    assert type(registries["json"].mapper.transcoder) is JSONTranscoder
    assert type(registries["msgspec"].mapper.transcoder) is MsgspecTranscoder
    per_trade: dict[str, list[float]] = defaultdict(list)
    for round_ in range(rounds):
        for name, registry in registries.items():
            gc.collect()
            started = time.process_time()
            results = registry.settle_trades(EXCHANGE, trades(f"C-{round_}", batch))
            per_trade[name].append((time.process_time() - started) / batch * 1e6)
            assert all(r.outcome == "SETTLED" for r in results)
    for name, figures in per_trade.items():
        ordered = sorted(figures)
        print(
            f"settle_trades batch {batch}, {name:>7}: CPU µs/trade median "
            f"{ordered[len(ordered) // 2]:.0f}, best {ordered[0]:.0f} "
            f"({' '.join(f'{f:.0f}' for f in figures)})"
        )
    for registry in registries.values():
        registry.close()


def _suffixed(url: str, suffix: str) -> str:
    """The same kind of store, another database (or file) named with ``suffix``."""
    if url.startswith("sqlite"):
        return url.replace(".sqlite", f"-{suffix}.sqlite")
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"{parts.path}_{suffix}"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default="")
    parser.add_argument("--batches", type=int, default=3, help="batches of 1,000 stored")
    parser.add_argument("--singles", type=int, default=450, help="single trades stored")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--settle-rounds", type=int, default=8)
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite"
    if url.startswith("postgres"):
        reset_postgres(url)
    if args.rounds:
        microbench(stored_events(url, args.batches, args.singles), args.rounds)
    if args.settle_rounds:
        settle_cpu(url, args.settle_rounds, 1000)


if __name__ == "__main__":
    main()
