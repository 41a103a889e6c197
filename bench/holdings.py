"""CPU per credit and per debit of a holding of 10, 1,000 and 100,000 serial blocks.

    .venv/bin/python -m bench.holdings [--sizes 10 1000 100000] [--ops 2000] [--rounds 3]

A national account (CN-SURRENDER) ends a compliance year with ~100,000 blocks, and
every surrender credits it: the cost of one movement must not grow with the holding.
Each figure is ``time.process_time()`` per operation (CPU, not wall clock: the machine
is shared), the best of ``--rounds``, for:

- ``add``/``remove``: ``units.add``/``units.remove`` of one block into / out of a gap
  at a random place in the holding, each update made from the previous version (as
  the account's events do: holdings are immutable, every version stays valid);
- ``credit``/``debit``: the same through an ``Account`` (``credit`` and
  ``debit_blocks``: the event is made and applied), the whole aggregate path;
- ``posted``: a ``MovementsPosted`` of 10 credits applied to the account (a batch);
- ``add27``: ``units.add`` of 27 blocks at once (a company's surrender into
  CN-SURRENDER in the national year), per update, not per block.

``--scattered`` allocates the holding's blocks in random order among other objects, as
a server's CN-SURRENDER is built over a year of decoded events: its neighbours in a
chunk are then far apart in memory, and touching them costs what it costs in the
server (blocks made in order sit side by side and flatter every layout). The process
runs with the servers' collector settings (``registry.cli.runtime.tune_gc``).

``--surrender`` plays a national year's surrender phase instead: 3,700 compliance
accounts holding 100,000 scattered blocks between them each surrender all they hold
to CN-SURRENDER (``debit`` of the company, ``credit`` of CN-SURRENDER, events
collected), which ends with the 100,000 blocks; it prints the phase's CPU seconds.

No database: this is the domain's bookkeeping only.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections.abc import Callable
from uuid import uuid4

from registry.cli.runtime import tune_gc
from registry.domain import units
from registry.domain.accounts import Account, AccountType, Holder
from registry.domain.units import SerialBlock, UnitClass, UnitSelector, UnitType

CEA = UnitClass(UnitType.CEA, 2025)
OLD = UnitClass(UnitType.CEA, 2024)
STRIDE = 10
"""Block ``i`` holds serials ``10i+1..10i+5``; ``10i+7..10i+8`` is a free gap that
joins neither neighbour, so an added block is a new block (the worst case)."""


def holding(size: int, scattered: bool = False) -> tuple[SerialBlock, ...]:
    """``size`` disjoint blocks, the first few of an older vintage (as a real account);
    ``scattered``: made in random order, each beside another small object."""
    order = list(range(size))
    if scattered:
        random.Random(size).shuffle(order)
    made: dict[int, SerialBlock] = {}
    other = []
    for i in order:
        made[i] = SerialBlock(OLD if i < size // 10 else CEA, STRIDE * i + 1, STRIDE * i + 5)
        if scattered:
            other.append([i, str(i)])
    return tuple(made[i] for i in range(size))


def gaps(size: int, ops: int, seed: int) -> list[SerialBlock]:
    """``ops`` distinct free gaps of the holding, in random order."""
    rng = random.Random(seed)
    picks = rng.sample(range(size), min(ops, size))
    return [
        SerialBlock(OLD if i < size // 10 else CEA, STRIDE * i + 7, STRIDE * i + 8) for i in picks
    ]


def per_op(run: Callable[[], int], reps: int) -> float:
    """µs of CPU per operation of ``run`` (which returns how many it made), run ``reps``
    times (a small holding has few gaps: repeating makes the figure measurable)."""
    count = 0
    start = time.process_time()
    for _ in range(reps):
        count += run()
    return (time.process_time() - start) / count * 1e6


def measure(size: int, ops: int, seed: int, scattered: bool = False) -> dict[str, float]:
    base = units.add((), holding(size, scattered))
    extra = gaps(size, ops, seed)
    surrenders = [
        sorted(extra[i : i + 27], key=lambda b: (b.unit_class, b.first))
        for i in range(0, len(extra) - 26, 27)
    ]

    def add27() -> int:
        h = base
        for blocks in surrenders:
            h = units.add(h, blocks)
        return len(surrenders)

    def add() -> int:
        h = base
        for block in extra:
            h = units.add(h, [block])
        return len(extra)

    full = base
    for block in extra:
        full = units.add(full, [block])

    def remove() -> int:
        h = full
        for block in extra:
            h = units.remove(h, [block])
        return len(extra)

    account = Account.open("CN-SURRENDER", AccountType.SURRENDER, Holder("registry"), "bench")
    account.credit(uuid4(), base)
    account.collect_events()

    def credit() -> int:
        for block in extra:
            account.credit(uuid4(), [block])
        account.collect_events()
        return len(extra)

    def debit() -> int:
        for block in extra:
            account.debit_blocks(uuid4(), [block])
        account.collect_events()
        return len(extra)

    def posted() -> int:
        batches = [extra[i : i + 10] for i in range(0, len(extra), 10)]
        for batch in batches:
            for block in batch:
                account.credit(uuid4(), [block])
            account.collect_events()  # the ten credits, as one MovementsPosted
        for batch in batches:
            for block in batch:
                account.debit_blocks(uuid4(), [block])
            account.collect_events()
        return 2 * len(extra)

    reps = max(1, 2_000 // len(extra))
    figures = {"add": per_op(add, reps), "remove": per_op(remove, reps)}
    figures["credit"] = figures["debit"] = 0.0
    for _ in range(reps):  # each credit run is undone by a debit run
        figures["credit"] += per_op(credit, 1) / reps
        figures["debit"] += per_op(debit, 1) / reps
    figures["posted"] = per_op(posted, reps)
    figures["add27"] = per_op(add27, reps) if surrenders else math.nan
    assert account.available == base, "the credits and debits did not cancel out"
    return figures


def surrender_phase(companies: int, blocks: int, seed: int) -> float:
    """CPU seconds of every company surrendering all it holds to CN-SURRENDER."""
    rng = random.Random(seed)
    pieces = list(holding(blocks))
    rng.shuffle(pieces)
    accounts = []
    for number in range(companies):
        company = Account.open(
            f"PWR-{number:04d}",
            AccountType.COMPLIANCE,
            Holder("Plant Co.", "91110000100001234X", "POWER", "Beijing"),
            "bench",
        )
        company.credit(uuid4(), sorted(pieces[number::companies]))
        company.collect_events()
        accounts.append(company)
    national = Account.open("CN-SURRENDER", AccountType.SURRENDER, Holder("registry"), "b")
    national.collect_events()
    everything = UnitSelector(UnitType.CEA)
    start = time.process_time()
    for company in accounts:
        transaction = uuid4()
        taken = company.debit(transaction, everything, units.total(company.available))
        national.credit(transaction, taken)
        company.collect_events()
        national.collect_events()
    seconds = time.process_time() - start
    assert len(national.available) == blocks, "the surrendered blocks did not all arrive"
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 1_000, 100_000])
    parser.add_argument("--ops", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--surrender", action="store_true", help="the surrender phase")
    parser.add_argument(
        "--scattered", action="store_true", help="the holding's blocks spread in memory"
    )
    args = parser.parse_args()
    tune_gc()
    if args.surrender:
        for round_ in range(args.rounds):
            seconds = surrender_phase(3_700, 100_000, seed=round_)
            print(f"surrender phase: 3,700 surrenders, 100,000 blocks: {seconds:.2f} s CPU")
        return
    names = ("add", "remove", "credit", "debit", "posted", "add27")
    print(f"{'blocks':>8} " + " ".join(f"{n + ' µs':>11}" for n in names))
    for size in args.sizes:
        ops = min(args.ops, size)
        best: dict[str, float] = {}
        for round_ in range(args.rounds):
            for name, value in measure(size, ops, round_, args.scattered).items():
                best[name] = min(best.get(name, value), value)
        print(f"{size:>8,} " + " ".join(f"{best[n]:>11.1f}" for n in names))


if __name__ == "__main__":
    main()
