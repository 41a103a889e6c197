"""Read models against the event store: reconciliation, rebuild equality, read-your-writes.

The property test plays random command histories (refusals, replays, holds, reversals,
freezes included) while the projection runner applies the log in random small batches
and restarts now and then. Afterwards ``reconcile`` must find no difference from the
aggregates, and rebuilding every table from position zero with batches of 1 and of
1000 must give exactly the rows the incremental run gave. It runs on SQLite and on
PostgreSQL.

A deliberately corrupted read model must be named precisely, by ``reconcile`` and by
``registry check``; and a command's position, waited for, must be readable at once.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select, text

from registry.application import Registry, Trade
from registry.bootstrap import build_registry
from registry.cli.demo import run_demo
from registry.domain.accounts import AccountType, Holder
from registry.domain.errors import RegistryError
from registry.domain.units import UnitClass, UnitSelector, UnitType
from registry.persistence.engine import make_engine
from registry.readmodels import tables
from registry.readmodels.check import Difference, reconcile
from registry.readmodels.runner import ProjectionRunner, ReadModelTimeout
from registry.settings import Settings
from tests.support import (
    EXCHANGE,
    REGULATOR,
    FakeClock,
    fresh_pg_database,
    open_trader,
    register_project,
)

ROOT = Path(__file__).resolve().parents[2]

ISSUANCE, RESERVE = "CN-ISSUANCE", "CN-ALLOCATION-RESERVE"
POOL = {
    "CMP-1": AccountType.COMPLIANCE,
    "CMP-2": AccountType.COMPLIANCE,
    "TRD-1": AccountType.TRADING,
    "PRJ-1": AccountType.PROJECT,
}
ACCOUNTS = [ISSUANCE, RESERVE, *POOL, "GHOST-1"]
CLASSES = [
    UnitClass(UnitType.CEA, 2024),
    UnitClass(UnitType.CEA, 2025),
    UnitClass(UnitType.CCER, 2024, "P-A"),
]
SELECTORS = [
    UnitSelector(UnitType.CEA),
    UnitSelector(UnitType.CEA, 2025),
    UnitSelector(UnitType.CCER),
]
KINDS = ["TRANSFER", "ALLOCATION", "ALLOCATION_RETURN", "SETTLEMENT", "SURRENDER", "CANCELLATION"]


# == random histories ================================================================

Command = tuple[Any, ...]
ACCOUNT = st.sampled_from(ACCOUNTS)
HOLDER = st.sampled_from(sorted(POOL))
QUANTITY = st.integers(1, 12)
SELECTOR = st.integers(0, len(SELECTORS) - 1)
INDEX = st.integers(0, 50)
MOVE_BETWEEN_HOLDERS = st.tuples(
    st.just("move"), st.sampled_from(KINDS), HOLDER, HOLDER, SELECTOR, QUANTITY
)
HOLD = st.tuples(
    st.just("hold"),
    HOLDER,
    SELECTOR,
    QUANTITY,
    st.sampled_from([60, 3600]),
    st.sampled_from(["later", "part now", "all now", "expire", "release"]),
    HOLDER,
)
RETIRE = st.tuples(
    st.just("move"),
    st.sampled_from(["SURRENDER", "CANCELLATION"]),
    HOLDER,
    HOLDER,
    SELECTOR,
    QUANTITY,
)
SETTLE_HOLD = st.tuples(st.just("settle_hold"), INDEX, HOLDER, QUANTITY)
STEP = st.tuples(st.just("step"))
COMMAND: st.SearchStrategy[Command] = st.one_of(
    MOVE_BETWEEN_HOLDERS,
    HOLD,
    SETTLE_HOLD,
    STEP,
    st.tuples(st.just("move"), st.sampled_from(KINDS), ACCOUNT, ACCOUNT, SELECTOR, QUANTITY),
    st.tuples(
        st.just("trades"),
        st.lists(
            st.tuples(HOLDER, HOLDER, st.sampled_from(["CEA", "CCER"]), QUANTITY, st.booleans()),
            min_size=1,
            max_size=4,
        ),
    ),
    MOVE_BETWEEN_HOLDERS,
    HOLD,
    SETTLE_HOLD,
    STEP,
    RETIRE,
    st.tuples(st.just("reverse"), INDEX),
    st.tuples(st.just("issue"), st.integers(0, len(CLASSES) - 1), st.integers(1, 60)),
    st.tuples(st.just("release"), INDEX),
    st.tuples(st.just("expire"), st.sampled_from([120, 7200])),
    st.tuples(st.just("state"), st.sampled_from(["freeze", "unfreeze", "close"]), ACCOUNT),
    st.tuples(st.just("state"), st.sampled_from(["freeze", "unfreeze"]), HOLDER),
    st.tuples(st.just("restart")),
    st.tuples(st.just("open"), HOLDER),
)
"""Movements between holders, holds and runner steps are drawn twice as often."""
HISTORY = st.lists(COMMAND, min_size=12, max_size=40)
TOUR: list[Command] = [
    ("step",),
    ("move", "TRANSFER", "CMP-1", "TRD-1", 1, 5),
    ("move", "SETTLEMENT", "TRD-1", "CMP-2", 1, 5),
    ("step",),
    (
        "trades",
        [
            ("TRD-1", "CMP-1", "CEA", 3, False),
            ("TRD-1", "CMP-1", "CEA", 3, True),
            ("CMP-2", "TRD-1", "CEA", 90, False),
        ],
    ),
    ("hold", "TRD-1", 0, 6, 60, "part now", "CMP-1"),
    ("hold", "TRD-1", 0, 4, 60, "all now", "CMP-2"),
    ("hold", "CMP-1", 0, 4, 60, "release", "TRD-1"),
    ("hold", "CMP-2", 0, 4, 60, "expire", "TRD-1"),
    ("hold", "PRJ-1", 2, 5, 3600, "later", "TRD-1"),
    ("settle_hold", 0, "TRD-1", 3),
    ("restart",),
    ("move", "SURRENDER", "CMP-1", "CMP-1", 1, 5),
    ("reverse", -1),
    ("move", "CANCELLATION", "TRD-1", "TRD-1", 0, 2),
    ("reverse", -1),
    ("reverse", -1),
    ("state", "freeze", "TRD-1"),
    ("move", "TRANSFER", "TRD-1", "CMP-1", 0, 1),
    ("state", "unfreeze", "TRD-1"),
    ("issue", 0, 10),
    ("step",),
    ("move", "ALLOCATION_RETURN", "CMP-1", "CMP-1", 1, 2),
    ("expire", 7200),
]
"""A history that succeeds at every kind of command (and is refused at some): always
played, so that the run is never vacuous whatever the random histories turn out."""


@dataclass
class Player:
    """Sends commands to a registry and steps a projection runner between them."""

    registry: Registry
    engine: Engine
    clock: FakeClock
    batch_size: int
    stats: Counter[str]
    runner: ProjectionRunner = field(init=False)
    sent: list[tuple[str, str]] = field(default_factory=list)
    holds: list[tuple[str, str, str, int]] = field(default_factory=list)
    """(hold id, account, unit type, quantity) of every hold placed."""
    frozen: set[str] = field(default_factory=set)
    active: set[str] = field(default_factory=set)
    count: int = 0

    def __post_init__(self) -> None:
        self.runner = ProjectionRunner(self.registry, self.engine, batch_size=self.batch_size)

    def next_id(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}-{self.count}"

    def prelude(self) -> None:
        """Every account open and funded, so that random movements often succeed."""
        for account_id in POOL:
            self.play(("open", account_id))
        register_project(self.registry, "P-A", "PRJ-1")  # its issuance lands in PRJ-1
        self.play(("issue", 1, 200))
        self.play(("issue", 2, 60))
        self.play(("move", "TRANSFER", ISSUANCE, RESERVE, 1, 40))
        self.play(("move", "ALLOCATION", RESERVE, "CMP-1", 1, 30))
        self.play(("move", "ALLOCATION", ISSUANCE, "CMP-2", 1, 30))
        self.play(("move", "TRANSFER", ISSUANCE, "TRD-1", 0, 30))
        self.play(("move", "TRANSFER", "PRJ-1", "TRD-1", 2, 20))

    def play(self, command: Command) -> None:
        try:
            self._play(command)
        except RegistryError as error:
            self.stats[f"{command[0]} raised {error.reason}"] += 1

    def _play(self, command: Command) -> None:
        registry, name = self.registry, command[0]
        if name == "step":
            self.stats["runner steps"] += self.runner.step() > 0
        elif name == "restart":  # a new process: empty account directory, resumes
            self.runner = ProjectionRunner(registry, self.engine, batch_size=self.batch_size)
        elif name == "open":
            account_id = command[1]
            holder = (
                Holder("Co", "91110000100001234X", "POWER", "Beijing")
                if POOL[account_id] is AccountType.COMPLIANCE
                else Holder("Ltd")
            )
            registry.open_account(REGULATOR, account_id, POOL[account_id], holder)
        elif name == "issue":
            self.record(
                registry.issue_units(
                    REGULATOR, self.next_id("ISS"), CLASSES[command[1]], command[2], "issue"
                )
            )
        elif name == "move":
            self.move(*command[1:])
        elif name == "trades":
            trades: list[Trade] = []
            for seller, buyer, unit_type, quantity, repeat in command[1]:
                trade_id = trades[-1].trade_id if repeat and trades else self.next_id("TRD")
                trades.append(Trade(trade_id, seller, buyer, unit_type, quantity))
            for outcome in registry.settle_trades(EXCHANGE, trades):
                self.stats[f"batch trade {outcome.outcome}"] += 1
                if outcome.transaction is not None:
                    self.sent.append((EXCHANGE.party, outcome.trade_id))
        elif name == "hold":
            self.hold(*command[1:])
        elif name == "settle_hold" and self.holds:
            hold_id, seller, unit_type, _ = self.pick_hold(command[1])
            result = registry.settle_trade(
                EXCHANGE,
                Trade(
                    self.next_id("TRD"), seller, command[2], unit_type, command[3], hold_id=hold_id
                ),
            )
            self.record(result)
            if result.ok:
                self.active.discard(hold_id)
        elif name == "release" and self.holds:
            hold = registry.release_hold(EXCHANGE, self.pick_hold(command[1])[0])
            self.stats[f"release {hold.status}"] += 1
            self.active.discard(hold.hold_id)
        elif name == "expire":
            self.clock.advance(command[1])
            self.expire_due()
        elif name == "reverse":
            party, txn_id = (
                self.sent[command[1] % len(self.sent)]
                if self.sent
                else (REGULATOR.party, "NO-SUCH-TXN")
            )
            self.record(registry.reverse(REGULATOR, self.next_id("REV"), party, txn_id, "fix"))
        elif name == "state":
            action, account_id = command[1:]
            if action == "unfreeze" and self.frozen:  # mostly one that is frozen
                account_id = min(self.frozen)
            getattr(registry, f"{action}_account")(REGULATOR, account_id, "by order")
            self.stats[f"account {action}"] += 1
            if action == "freeze":
                self.frozen.add(account_id)
            else:
                self.frozen.discard(account_id)

    def move(
        self, kind: str, source: str, destination: str, selector_index: int, quantity: int
    ) -> None:
        registry, selector, txn_id = self.registry, SELECTORS[selector_index], self.next_id(kind)
        if kind == "SETTLEMENT":
            result = registry.settle_trade(
                EXCHANGE,
                Trade(
                    txn_id,
                    source,
                    destination,
                    selector.unit_type.value,
                    quantity,
                    selector.vintage,
                ),
            )
        elif kind == "ALLOCATION":
            result = registry.allocate(
                REGULATOR, txn_id, destination, selector, quantity, "alloc", source=source
            )
        elif kind == "ALLOCATION_RETURN":
            result = registry.return_allocation(
                REGULATOR, txn_id, source, selector, quantity, "return"
            )
        elif kind == "SURRENDER":
            result = registry.surrender(
                REGULATOR, txn_id, source, selector, quantity, 2025, "comply"
            )
        elif kind == "CANCELLATION":
            result = registry.cancel(REGULATOR, txn_id, source, selector, quantity, "cancel")
        else:
            result = registry.transfer(
                REGULATOR, txn_id, source, destination, selector, quantity, "move"
            )
        self.record(result)

    def hold(
        self,
        account_id: str,
        selector_index: int,
        quantity: int,
        timeout: int,
        settle: str,
        buyer: str,
    ) -> None:
        """Place a hold, then maybe settle it at once (settling part frees the rest, an
        Account.HeldUnitsDebited with released blocks), release it or let it expire."""
        unit_type = SELECTORS[selector_index].unit_type.value
        hold = self.registry.place_hold(
            EXCHANGE, self.next_id("ORD"), account_id, SELECTORS[selector_index], quantity, timeout
        )
        self.stats[f"hold {hold.status}"] += 1
        self.holds.append((hold.hold_id, account_id, unit_type, quantity))
        if hold.ok:
            self.active.add(hold.hold_id)
        if hold.ok and settle == "expire":
            self.clock.advance(timeout)
            self.expire_due()
        elif hold.ok and settle == "release":
            self.play(("release", len(self.holds) - 1))
        elif hold.ok and settle != "later" and buyer != account_id:
            sold = quantity if settle == "all now" else max(1, quantity // 2)
            result = self.registry.settle_trade(
                EXCHANGE,
                Trade(
                    self.next_id("TRD"), account_id, buyer, unit_type, sold, hold_id=hold.hold_id
                ),
            )
            self.record(result)
            self.stats[f"hold settled {settle} {result.status}"] += 1
            if result.ok:
                self.active.discard(hold.hold_id)

    def pick_hold(self, index: int) -> tuple[str, str, str, int]:
        """Mostly an active hold (when there is one), else any hold placed."""
        active = [hold for hold in self.holds if hold[0] in self.active]
        return (active or self.holds)[index % len(active or self.holds)]

    def expire_due(self) -> None:
        expired = self.registry.expire_due_holds()
        self.stats["holds expired"] += len(expired)
        self.active -= {hold.hold_id for hold in expired}

    def record(self, result: Any) -> None:
        self.stats[f"{result.kind} {result.status}"] += 1
        self.sent.append((result.party, result.transaction_id))


def dump(engine: Engine) -> dict[str, set[tuple[Any, ...]]]:
    """Every read-model table as a set of rows (each table has a primary key)."""
    with engine.connect() as conn:
        return {
            table.name: {tuple(row) for row in conn.execute(select(table))}
            for table in tables.metadata.sorted_tables
        }


def rebuilt(registry: Registry, engine: Engine, batch_size: int) -> dict[str, set[tuple[Any, ...]]]:
    """The read models replayed from position zero into emptied tables."""
    tables.metadata.drop_all(engine)
    tables.metadata.create_all(engine)
    ProjectionRunner(registry, engine, batch_size=batch_size).catch_up()
    return dump(engine)


def play_and_compare(
    registry: Registry,
    engine: Engine,
    clock: FakeClock,
    history: list[Command],
    batch_size: int,
    stats: Counter[str],
) -> None:
    player = Player(registry, engine, clock, batch_size, stats)
    player.prelude()
    for command in history:
        player.play(command)
    head = int(registry.recorder.max_notification_id() or 0)
    if min(player.runner.positions().values()) < head:
        lag = reconcile(registry, engine)
        assert lag and all(d.projection == "tracking" for d in lag), lag
        stats["lag reported"] += 1
    player.runner.catch_up()
    assert reconcile(registry, engine) == []
    incremental = dump(engine)
    assert incremental["rm_transactions"], "the history recorded no transaction"
    assert rebuilt(registry, engine, 1) == incremental
    assert rebuilt(registry, engine, 1000) == incremental
    assert reconcile(registry, engine) == []


def assert_exercised(stats: Counter[str]) -> None:
    """Guard against a vacuous run: every kind of command succeeded somewhere, refusals
    were recorded, and the runner both lagged and caught up."""
    wanted = [
        "ISSUANCE COMPLETED",
        "TRANSFER COMPLETED",
        "ALLOCATION COMPLETED",
        "ALLOCATION_RETURN COMPLETED",
        "SETTLEMENT COMPLETED",
        "SURRENDER COMPLETED",
        "CANCELLATION COMPLETED",
        "REVERSAL COMPLETED",
        "REVERSAL REFUSED",
        "TRANSFER REFUSED",
        "batch trade SETTLED",
        "batch trade ALREADY_SETTLED",
        "batch trade REFUSED",
        "hold ACTIVE",
        "hold settled part now COMPLETED",
        "release RELEASED",
        "holds expired",
        "account freeze",
        "account unfreeze",
        "runner steps",
        "lag reported",
    ]
    missing = [label for label in wanted if not stats[label]]
    assert not missing, f"never seen: {missing}; seen: {sorted(stats)}"


HYPOTHESIS = settings(
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
"""Derandomized: every run (and CI) plays the same histories, so a failure reproduces."""


def test_read_models_equal_event_store_and_replay_on_sqlite(tmp_path: Path) -> None:
    stats: Counter[str] = Counter()
    examples = itertools.count()

    @settings(HYPOTHESIS, max_examples=30)
    @example(history=TOUR, batch_size=3)
    @given(history=HISTORY, batch_size=st.integers(1, 50))
    def check(history: list[Command], batch_size: int) -> None:
        path = tmp_path / f"example-{next(examples)}.sqlite"
        clock = FakeClock()
        registry = build_registry(Settings(f"sqlite:///{path}"), clock=clock)
        engine = make_engine(Settings(f"sqlite:///{path}"))
        try:
            play_and_compare(registry, engine, clock, history, batch_size, stats)
        finally:
            registry.close()
            engine.dispose()

    check()
    assert_exercised(stats)


@pytest.mark.postgres
def test_read_models_equal_event_store_and_replay_on_postgres() -> None:
    stats: Counter[str] = Counter()
    with fresh_pg_database() as url:
        engine = make_engine(Settings(url))

        @settings(HYPOTHESIS, max_examples=15)
        @example(history=TOUR, batch_size=3)
        @given(history=HISTORY, batch_size=st.integers(1, 50))
        def check(history: list[Command], batch_size: int) -> None:
            clock = FakeClock()
            registry = build_registry(Settings(url), clock=clock)
            try:
                play_and_compare(registry, engine, clock, history, batch_size, stats)
            finally:
                registry.close()
                empty_database(engine)

        try:
            check()
        finally:
            engine.dispose()
    assert_exercised(stats)


def empty_database(engine: Engine) -> None:
    """Every example starts from empty tables (the schema and its version stay)."""
    with engine.begin() as conn:
        names = [
            name
            for (name,) in conn.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            )
            if name != "alembic_version"
        ]
        if names:
            quoted = ", ".join(f'"{name}"' for name in names)
            conn.execute(text(f"TRUNCATE {quoted} RESTART IDENTITY"))


# == corruption is reported precisely ==================================================


@contextmanager
def sqlite_registry(path: Path) -> Iterator[tuple[Registry, Engine, str]]:
    """A registry on a migrated SQLite file, and an engine on the same file."""
    url = f"sqlite:///{path}"
    registry = build_registry(Settings(url))
    engine = make_engine(Settings(url))
    try:
        yield registry, engine, url
    finally:
        registry.close()
        engine.dispose()


def registry_check(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "registry.cli", "check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "REGISTRY_DATABASE_URL": url},
    )


def test_corrupted_read_models_are_reported_precisely(tmp_path: Path) -> None:
    with sqlite_registry(tmp_path / "registry.sqlite") as (registry, engine, url):
        assert run_demo(registry, out=lambda _: None)
        clean = registry_check(url)  # the command catches the projections up
        assert clean.returncode == 0, clean.stdout + clean.stderr
        assert clean.stdout.startswith("OK: ") and clean.stdout.rstrip().endswith(
            "checks, read models equal the event store"
        )
        assert reconcile(registry, engine) == []

        with engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE rm_holdings SET total = total + 1, "
                    "available = available + 1 "
                    "WHERE account_id = 'PWR-NM-0002' AND unit_class = 'CEA/2025'"
                )
            )
            first, last = conn.execute(
                text(
                    "SELECT first, last FROM rm_serial_blocks WHERE account_id = 'CEM-AH-0001' "
                    "ORDER BY first LIMIT 1"
                )
            ).one()
            conn.execute(
                text(
                    "DELETE FROM rm_serial_blocks WHERE unit_class = 'CEA/2025' AND first = :first"
                ),
                {"first": first},
            )
            conn.execute(
                text("UPDATE rm_transactions SET status = 'REFUSED' WHERE client_id = 'CXL-0001'")
            )

        differences = reconcile(registry, engine)
        [holding] = [
            h for h in registry.get_holdings("PWR-NM-0002") if h.unit_class.key == "CEA/2025"
        ]
        [issued] = [line.issued for line in registry.supply() if line.unit_class.key == "CEA/2025"]
        assert differences[:4] == [
            Difference(
                "holdings",
                "rm_holdings PWR-NM-0002 CEA/2025",
                holding.total,
                holding.total + 1,
                "total differs",
            ),
            Difference(
                "holdings",
                "rm_holdings PWR-NM-0002 CEA/2025",
                holding.available,
                holding.available + 1,
                "available differs",
            ),
            Difference(  # one unit more held than issued: conservation breaks
                "conservation",
                "rm_holdings CEA/2025",
                issued,
                issued + 1,
                "units held in all accounts differ from units issued",
            ),
            Difference(
                "transactions",
                "rm_transactions green-fund CXL-0001",
                "COMPLETED",
                "REFUSED",
                "status differs",
            ),
        ]
        [serials] = differences[4:]
        assert (serials.projection, serials.key) == (
            "serials",
            "rm_serial_blocks CEM-AH-0001 CEA/2025",
        )
        assert f"missing {first}-{last}, unexpected none" in serials.message

        corrupt = registry_check(url)
        assert corrupt.returncode == 1, corrupt.stdout + corrupt.stderr
        lines = corrupt.stdout.splitlines()
        assert lines[:-1] == [str(d) for d in differences]
        assert lines[-1].startswith(f"MISMATCH: {len(differences)} differences in ")


# == read your writes =================================================================


def holding_total(engine: Engine, account_id: str, unit_class: str) -> int:
    with engine.connect() as conn:
        value = conn.execute(
            select(tables.holdings.c.total).where(
                tables.holdings.c.account_id == account_id,
                tables.holdings.c.unit_class == unit_class,
            )
        ).scalar()
    return int(value or 0)


def test_wait_for_a_commands_position_reads_its_write(tmp_path: Path) -> None:
    """The follower polls only every 0.1 s, so a wait_for that returned early would read
    the balance before the command's events were applied."""
    with sqlite_registry(tmp_path / "registry.sqlite") as (registry, engine, _):
        open_trader(registry, "TRD-1")
        cea = UnitSelector(UnitType.CEA)
        registry.issue_units(REGULATOR, "ISS-1", CLASSES[1], 1_000, "issue")
        follower = ProjectionRunner(registry, engine)
        waiter = ProjectionRunner(registry, engine)
        stop = threading.Event()
        thread = threading.Thread(target=follower.follow, args=(stop, 0.1))
        thread.start()
        try:
            for n in range(1, 6):
                result = registry.transfer(
                    REGULATOR, f"T-{n}", ISSUANCE, "TRD-1", cea, 10, "to trader"
                )
                assert result.ok and result.position is not None
                waiter.wait_for(result.position, timeout=10)
                assert holding_total(engine, "TRD-1", "CEA/2025") == 10 * n
                assert holding_total(engine, ISSUANCE, "CEA/2025") == 1_000 - 10 * n
            replay = registry.transfer(REGULATOR, "T-5", ISSUANCE, "TRD-1", cea, 10, "to trader")
            assert replay.replayed and replay.position is None
            waiter.wait_for(replay.position, timeout=0)  # nothing new to wait for
        finally:
            stop.set()
            thread.join(timeout=10)
        assert not thread.is_alive()

        late = registry.transfer(REGULATOR, "T-6", ISSUANCE, "TRD-1", cea, 10, "to trader")
        with pytest.raises(ReadModelTimeout):
            waiter.wait_for(late.position, timeout=0.3)
        assert holding_total(engine, "TRD-1", "CEA/2025") == 50
