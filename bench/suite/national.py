"""A national compliance year, end to end through gRPC.

Sized from the national scheme's published figures: about 3,700 compliance accounts
(~2,100 power companies, and the ~1,500 steel, cement and aluminium companies of the
2025 Work Plan; how those 1,500 split between the three sectors is this suite's
assumption), ~8 Gt of free allocation, 100,000 exchange trades, verified emissions
for every account, and one surrender per account of its verified emissions.

Half the companies emit 1-10 % more than they were allocated and buy the gap on the
exchange from the other half, who emit 2-15 % less; so every surrender is covered and
nothing is refused. The year is played in its real order: accounts opened (concurrent
callers), one issuance, the allocation table (AllocateUnits, 1,000 rows a call), the
trades (SettleTrades, 1,000 a call, one exchange), verified emissions
(RecordVerifiedEmissions, 1,000 rows a call), surrenders (SurrenderUnits: there is no
batch call, so concurrent callers), then the read models catch up and GetSupply checks
conservation.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.suite.callers import Job
from bench.suite.report import percentile_ms
from registry.domain.conservation import conserved
from registry.v1 import account_service_pb2 as account_pb
from registry.v1 import administration_service_pb2 as admin_pb
from registry.v1 import audit_service_pb2 as audit_pb
from registry.v1 import common_pb2 as common

if TYPE_CHECKING:
    from bench.suite.run import Bench

YEAR = 2025
SECTORS = (  # sector, id prefix, companies of 3,700, mean allocation (t CO2)
    ("POWER", "PWR", 2_100, 2_500_000),
    ("CEMENT", "CEM", 900, 1_000_000),
    ("STEEL", "STL", 500, 2_000_000),
    ("ALUMINIUM", "ALU", 200, 1_000_000),
)
PROVINCES = (
    ("SD", "Shandong"),
    ("JS", "Jiangsu"),
    ("NM", "Inner Mongolia"),
    ("GD", "Guangdong"),
    ("HE", "Hebei"),
    ("SX", "Shanxi"),
    ("HA", "Henan"),
    ("ZJ", "Zhejiang"),
    ("AH", "Anhui"),
    ("XJ", "Xinjiang"),
    ("HB", "Hubei"),
    ("SC", "Sichuan"),
)
ROWS_PER_CALL = 1_000
NATIONAL_ISSUANCE = "CN-ISSUANCE"
NATIONAL_SURRENDER = "CN-SURRENDER"


@dataclass(frozen=True)
class Company:
    account_id: str
    sector: str
    province: str
    credit_code: str
    allocation: int
    emissions: int


@dataclass(frozen=True)
class YearPlan:
    companies: list[Company]
    trades: list[tuple[str, str, str, int]]
    """(trade id, seller, buyer, quantity), in the order they are sent."""

    @property
    def issued(self) -> int:
        return sum(c.allocation for c in self.companies)


def plan_year(accounts: int, trades: int, seed: int = YEAR) -> YearPlan:
    rng = random.Random(seed)
    total = sum(count for _, _, count, _ in SECTORS)
    counts = [round(accounts * count / total) for _, _, count, _ in SECTORS]
    counts[0] += accounts - sum(counts)
    companies = []
    number = 0
    for (sector, prefix, _, mean), count in zip(SECTORS, counts, strict=True):
        for i in range(count):
            number += 1
            code, province = PROVINCES[number % len(PROVINCES)]
            allocation = int(mean * rng.uniform(0.4, 1.6))
            short = rng.random() < 0.5
            factor = rng.uniform(1.01, 1.10) if short else rng.uniform(0.85, 0.98)
            companies.append(
                Company(
                    f"{prefix}-{code}-{i + 1:04d}",
                    sector,
                    province,
                    f"91{number:016d}",
                    allocation,
                    int(allocation * factor),
                )
            )
    return YearPlan(companies, _trades(companies, trades, rng))


def _trades(
    companies: list[Company], count: int, rng: random.Random
) -> list[tuple[str, str, str, int]]:
    """Split each short company's gap into purchases (in proportion to the gap, so the
    year has ``count`` trades) from randomly chosen long companies that can spare it."""
    buyers = [
        (c.account_id, c.emissions - c.allocation) for c in companies if c.emissions > c.allocation
    ]
    spare = {
        c.account_id: c.allocation - c.emissions for c in companies if c.emissions < c.allocation
    }
    sellers = list(spare)
    gap = sum(d for _, d in buyers)
    shares = [count * d / gap for _, d in buyers]
    purchases = [min(int(s), d) for s, (_, d) in zip(shares, buyers, strict=True)]
    by_remainder = sorted(
        range(len(buyers)), key=lambda i: shares[i] - int(shares[i]), reverse=True
    )
    for i in by_remainder[: max(0, count - sum(purchases))]:
        purchases[i] = min(purchases[i] + 1, buyers[i][1])
    trades = []
    for (buyer, need), pieces in zip(buyers, purchases, strict=True):
        for piece in range(pieces):
            quantity = need // pieces + (1 if piece < need % pieces else 0)
            seller = next(
                (s for s in (rng.choice(sellers) for _ in range(20)) if spare[s] >= quantity), None
            ) or max(spare, key=spare.__getitem__)
            if spare[seller] < quantity:
                raise RuntimeError("the plan ran out of units to sell: widen the surplus")
            spare[seller] -= quantity
            trades.append((buyer, seller, quantity))
    rng.shuffle(trades)
    return [
        (f"Y{YEAR}-T{n:06d}", seller, buyer, quantity)
        for n, (buyer, seller, quantity) in enumerate(trades)
    ]


def play(bench: Bench, plan: YearPlan) -> dict[str, Any]:
    """Play the year; returns seconds per phase, calls, retries and the checks."""
    phases: dict[str, dict[str, Any]] = {}
    regulator = bench.client("regulator")
    started = time.perf_counter()
    head_before = bench.head()

    def phase(name: str, began: float, **figures: Any) -> None:
        phases[name] = {"seconds": round(time.perf_counter() - began, 2), **figures}
        bench.log(f"  year: {name} {phases[name]}")

    began = time.perf_counter()
    result = bench.callers(
        Job(
            "bench.suite.api:OpenAccounts",
            bench.client_processes,
            bench.threads_per_process,
            {
                **bench.params("regulator", "year-open"),
                "rows": [
                    (c.account_id, c.sector, c.province, c.credit_code) for c in plan.companies
                ],
            },
        )
    )
    phase(
        "open accounts",
        began,
        calls=result.calls,
        errors=result.errors,
        p99_ms=_p99(result.all_latencies()),
    )

    began = time.perf_counter()
    regulator.call(
        regulator.administration.IssueUnits,
        admin_pb.IssueUnitsRequest(
            transaction_id=f"Y{YEAR}-ISS",
            unit_class=common.UnitClass(unit_type=common.UNIT_TYPE_CEA, vintage=YEAR),
            quantity=plan.issued,
            reason=f"{YEAR} allocation",
        ),
    )
    phase("issue", began, quantity=plan.issued)

    began = time.perf_counter()
    rows = [
        admin_pb.AllocationRow(
            transaction_id=f"Y{YEAR}-AL-{c.account_id}",
            account_id=c.account_id,
            unit_type=common.UNIT_TYPE_CEA,
            vintage=YEAR,
            quantity=c.allocation,
            reason=f"{YEAR} pre-allocation",
            source_account=NATIONAL_ISSUANCE,
        )
        for c in plan.companies
    ]
    for start in range(0, len(rows), ROWS_PER_CALL):
        reply = regulator.call(
            regulator.administration.AllocateUnits,
            admin_pb.AllocateUnitsRequest(rows=rows[start : start + ROWS_PER_CALL]),
            timeout=300,
        )
        bad = [r for r in reply.results if r.status != common.ROW_STATUS_COMPLETED]
        if bad:
            raise RuntimeError(f"allocation row {bad[0].transaction_id}: {bad[0].reason}")
    phase("allocate", began, rows=len(rows))

    began = time.perf_counter()
    batches = [
        plan.trades[i : i + ROWS_PER_CALL] for i in range(0, len(plan.trades), ROWS_PER_CALL)
    ]
    result = bench.callers(
        Job(
            "bench.suite.api:SettleGiven",
            1,
            1,
            {**bench.params("exchange", "year-trades"), "batches": batches},
        )
    )
    trades_seconds = time.perf_counter() - began
    phase(
        "trades",
        began,
        trades=result.items,
        calls=result.calls,
        errors=result.errors,
        trades_per_second=round(result.items / trades_seconds),
        p99_ms_per_call=_p99(result.all_latencies()),
    )

    began = time.perf_counter()
    emissions = [
        admin_pb.VerifiedEmissionsRow(
            account_id=c.account_id,
            compliance_year=YEAR,
            verified_emissions=c.emissions,
            reason=f"verification report {YEAR}",
        )
        for c in plan.companies
    ]
    for start in range(0, len(emissions), ROWS_PER_CALL):
        regulator.call(
            regulator.administration.RecordVerifiedEmissions,
            admin_pb.RecordVerifiedEmissionsRequest(rows=emissions[start : start + ROWS_PER_CALL]),
            timeout=300,
        )
    phase("verified emissions", began, rows=len(emissions))

    bench.grant_operator([c.account_id for c in plan.companies])
    began = time.perf_counter()
    result = bench.callers(
        Job(
            "bench.suite.api:Surrender",
            bench.client_processes,
            bench.threads_per_process,
            {
                **bench.params("operator", "year-surrender"),
                "year": YEAR,
                "rows": [
                    (f"Y{YEAR}-SUR-{c.account_id}", c.account_id, c.emissions)
                    for c in plan.companies
                ],
            },
        )
    )
    phase(
        "surrender",
        began,
        calls=result.calls,
        errors=result.errors,
        p50_ms=_p50(result.all_latencies()),
        p99_ms=_p99(result.all_latencies()),
    )

    began = time.perf_counter()
    head = bench.head()
    caught_up = bench.wait_read_models(head, bench.sizes.read_model_cap)
    phase("read models catch up", began, position=head, caught_up=caught_up)
    if not caught_up:
        regulator.close()
        behind = head - bench.projected_position()
        seconds = time.perf_counter() - started
        return {
            "seconds": round(seconds, 2),
            "events": bench.head() - head_before,
            "accounts": len(plan.companies),
            "trades": len(plan.trades),
            "allocated": plan.issued,
            "phases": phases,
            "complete": False,
            "note": f"stopped waiting for the read models after "
            f"{bench.sizes.read_model_cap:.0f} s, {behind:,} positions behind: "
            "no conservation check; the time is a lower bound",
        }

    began = time.perf_counter()
    supply = regulator.call(regulator.audit.GetSupply, audit_pb.GetSupplyRequest())
    surrendered = regulator.call(
        regulator.accounts.GetBalances,
        account_pb.GetBalancesRequest(account_id=NATIONAL_SURRENDER, min_position=head),
    )
    surrendered_total = sum(h.total for h in surrendered.holdings)
    balanced = bool(supply.lines) and all(
        conserved(line.issued, line.held_in_accounts) for line in supply.lines
    )
    expected = sum(c.emissions for c in plan.companies)
    phase(
        "conservation check",
        began,
        balanced=balanced,
        surrendered=surrendered_total,
        expected=expected,
    )
    seconds = time.perf_counter() - started
    regulator.close()
    if not balanced or surrendered_total != expected:
        raise RuntimeError(
            f"the national year does not balance: supply balanced={balanced}, "
            f"surrendered {surrendered_total:,} of {expected:,}"
        )
    return {
        "seconds": round(seconds, 2),
        "events": bench.head() - head_before,
        "accounts": len(plan.companies),
        "trades": len(plan.trades),
        "allocated": plan.issued,
        "verified_emissions": expected,
        "phases": phases,
        "complete": True,
    }


def _p50(values: list[float]) -> float | None:
    return percentile_ms(values, 50)


def _p99(values: list[float]) -> float | None:
    return percentile_ms(values, 99)
