"""A national compliance year, end to end through gRPC.

Sized from the national scheme's published figures (MEE press release on the Work Plan
of 26 March 2025): power 2,200 companies and over 5.0 Gt CO2 a year; steel, cement and
aluminium smelting 1,500 companies and about 3.0 Gt together. How those 1,500 and 3.0 Gt
split between the three sectors is not in the sources found: this suite assumes
(UNCERTAIN) steel 450 / 1.5 Gt, cement 900 / 1.2 Gt, aluminium 150 / 0.3 Gt. At the
default 3,700 accounts each sector has its real count; a smaller run scales every
count by the same factor (largest remainder first). Each company's allocation is its
sector's real mean (tonnes / companies) x 0.4-1.6, so each sector's share of the
~8 Gt is near its real share. 100,000 exchange trades, verified emissions for every
account, and one surrender per account of its obligation.

The year runs on the rules the registry ships for 2025 (``registry rules set-shipped
2025``, set first): the obligation is verified emissions, capped for power at
allocation + 20 % of them. Half the companies emit 1-10 % more than they were allocated
(and one short power company in 20 emits 30-45 % more, past the relief) and buy the
gap to their obligation on the exchange from the other half, who emit 2-15 % less; so
every surrender is covered and nothing is refused. One company in ten covers the most
the rules let it in CCER (5 % of its obligation: MEE 2020, Art. 29), bought on the
exchange from the owner of one registered project (whose account its issuance
reached) and surrendered before its allowances. The year is played in its real
order: the rules set, accounts opened (concurrent callers), one issuance, the
allocation table (AllocateUnits, 1,000 rows a call), the trades (SettleTrades, 1,000 a
call, one exchange), verified emissions (RecordVerifiedEmissions, 1,000 rows a call),
surrenders (SurrenderUnits: there is no batch call, so concurrent callers), then the
read models catch up and GetSupply checks conservation, and the surrendered total
equals the obligations.

A second year on the same server (``registry bench --year-scale N``) is planned with a
tag, e.g. ``X10``, in every id it makes (accounts ``PWR-X10-SD-0001``, transactions and
trades ``Y2025-X10-...``, project ``CCER-X10-0001`` and its owner ``PRJ-X10-GS-0001``),
so it opens, issues and settles nothing the first year did; the rules it sets are the
same, which the registry answers as a no-op. The untagged plan is the one every earlier
run played (tests/unit/test_bench_year_scale.py pins it).
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.suite.callers import Job
from bench.suite.report import percentile_ms
from registry.domain.conservation import conserved
from registry.domain.rule_defaults import shipped_rules
from registry.domain.rules import ComplianceRules
from registry.v1 import account_service_pb2 as account_pb
from registry.v1 import administration_service_pb2 as admin_pb
from registry.v1 import audit_service_pb2 as audit_pb
from registry.v1 import common_pb2 as common
from registry.v1 import settlement_service_pb2 as settlement_pb
from services.convert import rules_to_proto

if TYPE_CHECKING:
    from bench.suite.run import Bench
    from registry.client import RegistryClient

YEAR = 2025
SECTORS = (  # sector, id prefix, real companies, real tonnes CO2 a year (docstring)
    ("POWER", "PWR", 2_200, 5_000_000_000),
    ("CEMENT", "CEM", 900, 1_200_000_000),
    ("STEEL", "STL", 450, 1_500_000_000),
    ("ALUMINIUM", "ALU", 150, 300_000_000),
)
SHIPPED = {key: shipped.rules for key, shipped in shipped_rules(YEAR).items()}


def rules_of(sector: str) -> ComplianceRules:
    """The shipped rules a sector surrenders under: its own, else every sector's."""
    return SHIPPED.get(sector, SHIPPED["*"])


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
CCER_CLASS = common.UnitClass(unit_type=common.UNIT_TYPE_CCER, vintage=2024, project="CCER-0001")
PROJECT_OWNER = "PRJ-GS-0001"
"""The PROJECT account CCER_CLASS's project is registered to: its issuance lands there,
and the exchange sells it on to the companies that surrender offsets."""
TAG = re.compile(r"[A-Z0-9]{1,8}")
"""A year's namespace: upper-case letters and digits, so every id it is put in stays
within the registry's account id pattern (``[A-Z0-9][A-Z0-9-]{2,63}``) and its client
id pattern (transactions, trades)."""


def check_tag(tag: str) -> str:
    if tag and not TAG.fullmatch(tag):
        raise ValueError(f"year tag {tag!r} must be 1-8 upper-case letters or digits")
    return tag


def _ns(tag: str) -> str:
    """What a tag adds inside an id: nothing for the untagged (first) year."""
    return f"{tag}-" if tag else ""


def year_id(tag: str, name: str) -> str:
    """A transaction or trade id of a year: ``Y2025-ISS``, ``Y2025-X10-ISS``."""
    return f"Y{YEAR}-{_ns(tag)}{name}"


def register_project(regulator: RegistryClient, plan: YearPlan) -> None:
    """Open the project owner's account and register the project (four eyes off)."""
    regulator.call(
        regulator.administration.OpenAccount,
        admin_pb.OpenAccountRequest(
            account_id=plan.project_owner,
            account_type=common.ACCOUNT_TYPE_PROJECT,
            holder=common.Holder(name="Gansu Wind Carbon Co."),
        ),
    )
    regulator.call(
        regulator.administration.RegisterProject,
        admin_pb.RegisterProjectRequest(
            project_id=plan.ccer_class.project,
            details=admin_pb.ProjectDetails(
                owner_account=plan.project_owner,
                province="Gansu",
                methodology="CCER-14-001-V01",
                sector="WIND",
                verifier="China Quality Certification Centre",
                developer="Gansu Wind Carbon Co.",
                crediting_start=common.Date(year=2020, month=1, day=1),
                crediting_end=common.Date(year=2029, month=12, day=31),
            ),
            reason="the project the year's offsets come from",
            reference=f"MEE-CCER-REG-{_ns(plan.tag)}0001",
        ),
    )


@dataclass(frozen=True)
class Company:
    account_id: str
    sector: str
    province: str
    credit_code: str
    allocation: int
    emissions: int
    uses_ccer: bool = False

    @property
    def obligation(self) -> int:
        """What the year's rules make the company surrender."""
        return rules_of(self.sector).obligation(self.emissions, self.allocation)

    @property
    def ccer(self) -> int:
        """The CCER it surrenders: the year's cap (of the obligation), if it uses any."""
        if not self.uses_ccer:
            return 0
        return rules_of(self.sector).ccer_cap(self.emissions, self.allocation)


@dataclass(frozen=True)
class YearPlan:
    companies: list[Company]
    trades: list[tuple[str, str, str, int]]
    """(trade id, seller, buyer, quantity), in the order they are sent."""
    tag: str = ""
    """The namespace in every id of the year ("": the first year's ids)."""

    def id(self, name: str) -> str:
        return year_id(self.tag, name)

    @property
    def project_owner(self) -> str:
        return PROJECT_OWNER.replace("PRJ-", f"PRJ-{_ns(self.tag)}", 1)

    @property
    def ccer_class(self) -> common.UnitClass:
        """The CCER the year's companies surrender: its own project."""
        return common.UnitClass(
            unit_type=CCER_CLASS.unit_type,
            vintage=CCER_CLASS.vintage,
            project=CCER_CLASS.project.replace("CCER-", f"CCER-{_ns(self.tag)}", 1),
        )

    @property
    def issued(self) -> int:
        return sum(c.allocation for c in self.companies)

    @property
    def offsets(self) -> int:
        return sum(c.ccer for c in self.companies)


def scaled_counts(accounts: int) -> list[int]:
    """Each sector's share of the real companies, of ``accounts`` (largest remainder
    first, so they add up)."""
    real = sum(count for _, _, count, _ in SECTORS)
    counts = [accounts * count // real for _, _, count, _ in SECTORS]
    by_remainder = sorted(range(len(SECTORS)), key=lambda i: -(accounts * SECTORS[i][2] % real))
    for i in by_remainder[: accounts - sum(counts)]:
        counts[i] += 1
    return counts


def plan_year(accounts: int, trades: int, seed: int = YEAR, tag: str = "") -> YearPlan:
    """The year's companies and trades, drawn from ``seed``; ``tag`` goes in every id."""
    check_tag(tag)
    rng = random.Random(seed)
    companies = []
    number = 0
    for (sector, prefix, real, tonnes), count in zip(SECTORS, scaled_counts(accounts), strict=True):
        mean = tonnes // real
        for i in range(count):
            number += 1
            code, province = PROVINCES[number % len(PROVINCES)]
            allocation = int(mean * rng.uniform(0.4, 1.6))
            short = rng.random() < 0.5
            factor = rng.uniform(1.01, 1.10) if short else rng.uniform(0.85, 0.98)
            if short and sector == "POWER" and rng.random() < 0.05:
                factor = rng.uniform(1.30, 1.45)  # past the relief: obligation capped
            companies.append(
                Company(
                    f"{prefix}-{_ns(tag)}{code}-{i + 1:04d}",
                    sector,
                    province,
                    f"91{number:016d}",
                    allocation,
                    int(allocation * factor),
                    uses_ccer=number % 10 == 0,
                )
            )
    return YearPlan(companies, _trades(companies, trades, rng, tag), tag)


def _trades(
    companies: list[Company], count: int, rng: random.Random, tag: str = ""
) -> list[tuple[str, str, str, int]]:
    """Split each short company's gap (obligation - allocation) into purchases (in
    proportion to the gap, so the year has ``count`` trades) from randomly chosen long
    companies that can spare it."""
    buyers = [
        (c.account_id, c.obligation - c.allocation)
        for c in companies
        if c.obligation > c.allocation
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
        (year_id(tag, f"T{n:06d}"), seller, buyer, quantity)
        for n, (buyer, seller, quantity) in enumerate(trades)
    ]


def play(bench: Bench, plan: YearPlan, read_model_cap: float | None = None) -> dict[str, Any]:
    """Play the year; returns seconds per phase, calls, retries and the checks. The
    read models get ``read_model_cap`` seconds (default the bench's) to catch up at the
    end. A tagged year follows another on the same server: what CN-SURRENDER already
    holds is read first (not timed), and the conservation check counts what the year
    added to it."""
    cap = bench.sizes.read_model_cap if read_model_cap is None else read_model_cap
    phases: dict[str, dict[str, Any]] = {}
    regulator = bench.client("regulator")
    surrendered_before = _surrendered_before(bench, regulator, cap) if plan.tag else 0
    started = time.perf_counter()
    head_before = bench.head()

    def phase(name: str, began: float, **figures: Any) -> None:
        phases[name] = {"seconds": round(time.perf_counter() - began, 2), **figures}
        bench.log(f"  year: {name} {phases[name]}")

    began = time.perf_counter()
    for key, rules in SHIPPED.items():  # as `registry rules set-shipped 2025` sets them
        regulator.call(
            regulator.administration.SetComplianceRules,
            admin_pb.SetComplianceRulesRequest(
                compliance_year=YEAR,
                sector=key,
                rules=rules_to_proto(rules),
                reason=f"the rules the registry ships for {YEAR}",
            ),
        )
    phase("rules", began, keys=len(SHIPPED))

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
    register_project(regulator, plan)
    ccer_class = plan.ccer_class
    regulator.call(
        regulator.administration.IssueUnits,
        admin_pb.IssueUnitsRequest(
            transaction_id=plan.id("ISS"),
            unit_class=common.UnitClass(unit_type=common.UNIT_TYPE_CEA, vintage=YEAR),
            quantity=plan.issued,
            reason=f"{YEAR} allocation",
        ),
    )
    regulator.call(
        regulator.administration.IssueUnits,
        admin_pb.IssueUnitsRequest(
            transaction_id=plan.id("ISS-CCER"),
            unit_class=ccer_class,
            quantity=plan.offsets,
            reason="CCER of one project",
        ),
    )
    phase("issue", began, quantity=plan.issued, ccer=plan.offsets)

    began = time.perf_counter()
    rows = [
        admin_pb.AllocationRow(
            transaction_id=plan.id(f"AL-{c.account_id}"),
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
    offsets = [
        settlement_pb.Trade(
            trade_id=plan.id(f"CCER-{c.account_id}"),
            seller_account=plan.project_owner,
            buyer_account=c.account_id,
            unit_type=common.UNIT_TYPE_CCER,
            vintage=ccer_class.vintage,
            quantity=c.ccer,
            project=ccer_class.project,
        )
        for c in plan.companies
        if c.ccer
    ]
    exchange = bench.client("exchange")
    for start in range(0, len(offsets), ROWS_PER_CALL):
        results = exchange.settle_trades(offsets[start : start + ROWS_PER_CALL])
        bad = [r for r in results if r.status != settlement_pb.TRADE_STATUS_SETTLED]
        if bad:
            raise RuntimeError(f"CCER delivery {bad[0].trade_id}: {bad[0].reason}")
    phase("deliver ccer", began, trades=len(offsets))

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

    role = bench.grant_operator([c.account_id for c in plan.companies], plan.tag)
    began = time.perf_counter()
    operator = bench.client(role)
    for c in plan.companies:
        if c.ccer:
            reply = operator.call(
                operator.accounts.SurrenderUnits,
                account_pb.SurrenderUnitsRequest(
                    transaction_id=plan.id(f"SUR-CCER-{c.account_id}"),
                    account_id=c.account_id,
                    unit_type=common.UNIT_TYPE_CCER,
                    quantity=c.ccer,
                    compliance_year=YEAR,
                    reason=f"{YEAR} compliance, offsets",
                ),
            )
            if reply.transaction.status != common.TRANSACTION_STATUS_COMPLETED:
                raise RuntimeError(f"CCER surrender of {c.account_id}: refused")
    operator.close()
    phase("surrender ccer", began, accounts=sum(1 for c in plan.companies if c.ccer))

    began = time.perf_counter()
    result = bench.callers(
        Job(
            "bench.suite.api:Surrender",
            bench.client_processes,
            bench.threads_per_process,
            {
                **bench.params(role, "year-surrender"),
                "year": YEAR,
                "rows": [
                    (plan.id(f"SUR-{c.account_id}"), c.account_id, c.obligation - c.ccer)
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
    caught_up = bench.wait_read_models(head, cap)
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
            f"{cap:.0f} s, {behind:,} positions behind: "
            "no conservation check; the time is a lower bound",
        }

    began = time.perf_counter()
    supply = regulator.call(regulator.audit.GetSupply, audit_pb.GetSupplyRequest())
    surrendered_total = _surrendered(regulator, head) - surrendered_before
    balanced = bool(supply.lines) and all(
        conserved(line.issued, line.held_in_accounts) for line in supply.lines
    )
    expected = sum(c.obligation for c in plan.companies)
    phase(
        "conservation check",
        began,
        balanced=balanced,
        surrendered=surrendered_total,
        expected=expected,
        **({"surrendered_before": surrendered_before} if plan.tag else {}),
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
        "verified_emissions": sum(c.emissions for c in plan.companies),
        "obligations": expected,
        "phases": phases,
        "complete": True,
    }


def _surrendered(regulator: RegistryClient, position: int) -> int:
    """Units CN-SURRENDER holds once the read models include ``position``."""
    reply = regulator.call(
        regulator.accounts.GetBalances,
        account_pb.GetBalancesRequest(account_id=NATIONAL_SURRENDER, min_position=position),
    )
    return sum(h.total for h in reply.holdings)


def _surrendered_before(bench: Bench, regulator: RegistryClient, cap: float) -> int:
    """What earlier years left in CN-SURRENDER, once the read models reach the head."""
    head = bench.head()
    if not bench.wait_read_models(head, cap):
        raise RuntimeError(f"the read models did not reach position {head:,} in {cap:.0f} s")
    return _surrendered(regulator, head)


def _p50(values: list[float]) -> float | None:
    return percentile_ms(values, 50)


def _p99(values: list[float]) -> float | None:
    return percentile_ms(values, 99)
