"""`registry demo`: a small but realistic national year on the embedded store, printed
as tables. The year runs on the rules the registry ships for 2025
(``registry/domain/rule_defaults.py``), adopted first as a regulator would; every figure
the rules give (obligation, CCER cap, carry-over limit) is the registry's own answer."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from registry.domain.transactions import Principal
from registry.domain.units import UnitClass, UnitSelector, UnitType
from registry.settings import Settings

if TYPE_CHECKING:
    from registry.application import Registry, TransactionResult
    from registry.domain.rules import ComplianceRules

REGULATOR = Principal("mee", "regulator-li")
EXCHANGE = Principal("shanghai-exchange", "settlement")
OPERATOR = Principal("huaneng-dezhou", "operator-wang")

COMPANIES = [
    # account, legal name, unified social credit code, sector, province, allocation (t)
    (
        "PWR-SD-0001",
        "Huaneng Dezhou Power Plant",
        "91371400163081422B",
        "POWER",
        "Shandong",
        9_200_000,
    ),
    (
        "PWR-NM-0002",
        "Datang Tuoketuo Power Generation",
        "911501006114106725",
        "POWER",
        "Inner Mongolia",
        24_500_000,
    ),
    (
        "STL-GD-0001",
        "Baowu Zhanjiang Iron & Steel",
        "91440800559170483M",
        "STEEL",
        "Guangdong",
        16_800_000,
    ),
    ("CEM-AH-0001", "Anhui Conch Wuhu Cement", "913402001490103656", "CEMENT", "Anhui", 4_300_000),
    (
        "ALU-NM-0001",
        "Chalco Baotou Aluminium",
        "91150200114177681Y",
        "ALUMINIUM",
        "Inner Mongolia",
        2_900_000,
    ),
]
YEAR = 2025
VERIFIED = {"PWR-SD-0001": 8_820_000, "PWR-NM-0002": 31_000_000}
"""Verified 2025 emissions: Dezhou under its allocation, Tuoketuo far over it (its
obligation is capped by the power sector's relief)."""
CEA_2025 = UnitClass(UnitType.CEA, 2025)
CCER_WIND = UnitClass(UnitType.CCER, 2024, "CCER-2024-0117")


def run(args: argparse.Namespace) -> int:
    from registry.bootstrap import build_registry, build_worker
    from registry.persistence.engine import make_engine
    from registry.readmodels import check

    data_dir = Path(args.data_dir)
    path = data_dir / "demo.sqlite"
    for stale in data_dir.glob("demo.sqlite*"):
        stale.unlink()
    settings = Settings(f"sqlite:///{path}")
    registry = build_registry(settings)
    print(f"Demo registry on {path} (embedded SQLite)\n")
    balanced = run_demo(registry)
    # The embedded store runs the projections in-process: one command is enough.
    engine = make_engine(settings)
    report = check.check(build_worker(registry, engine))
    head = registry.recorder.max_notification_id() or 0
    print(
        f"\nRead models: {head:,} events projected in-process; registry check: "
        + ("OK, " if report.ok else "MISMATCH, ")
        + f"{report.checks:,} checks"
    )
    for difference in report.differences:
        print(f"  {difference}")
    engine.dispose()
    registry.close()
    return 0 if balanced and report.ok else 1


def run_demo(registry: Registry, out: Callable[[str], None] = print) -> bool:
    """Play the scenario; return True when every unit class is conserved."""
    from registry.application import EmissionsRow, Trade
    from registry.application.projects import StatusChange
    from registry.domain.accounts import AccountType, Holder
    from registry.domain.projects import ProjectDetails
    from registry.domain.rule_defaults import shipped_rules

    step = _Steps(out)
    adopted = shipped_rules(YEAR)
    for key, shipped in adopted.items():
        registry.set_compliance_rules(
            REGULATOR, YEAR, key, shipped.rules, f"the rules the registry ships for {YEAR}"
        )
    out(f"Rules {YEAR}: the shipped rules (registry rules set-shipped {YEAR})")
    for key, shipped in adopted.items():
        out(f"  {key}: {describe(shipped.rules)}")
    out("")
    for account_id, name, code, sector, province, _ in COMPANIES:
        registry.open_account(
            REGULATOR, account_id, AccountType.COMPLIANCE, Holder(name, code, sector, province)
        )
    registry.open_account(
        REGULATOR, "TRD-SH-0001", AccountType.TRADING, Holder("Shanghai Green Carbon Fund")
    )
    registry.open_account(
        REGULATOR, "PRJ-GS-0117", AccountType.PROJECT, Holder("Gansu Jiuquan Wind Farm Co.")
    )
    out(f"Opened {len(COMPANIES)} compliance accounts, 1 trading, 1 project account.\n")

    cea = UnitSelector(UnitType.CEA, 2025)
    total_allocation = sum(c[-1] for c in COMPANIES)
    step(
        registry.issue_units(
            REGULATOR,
            "ISS-CEA-2025",
            CEA_2025,
            total_allocation + 5_000_000,
            "CEA vintage 2025 for the 2025 compliance year",
        )
    )
    step(
        registry.transfer(
            REGULATOR,
            "RES-CEA-2025",
            "CN-ISSUANCE",
            "CN-ALLOCATION-RESERVE",
            cea,
            total_allocation,
            "allocation budget to the reserve",
        )
    )
    for account_id, *_, allocation in COMPANIES:
        step(
            registry.allocate(
                REGULATOR,
                f"ALLOC-2025-{account_id}",
                account_id,
                cea,
                allocation,
                "2025 pre-allocation",
            )
        )
    project = registry.projects.register(
        REGULATOR,
        CCER_WIND.project,
        ProjectDetails(
            owner_account="PRJ-GS-0117",
            province="Gansu",
            methodology="CCER-14-001-V01",
            sector="WIND",
            verifier="China Quality Certification Centre",
            developer="Gansu Jiuquan Wind Farm Co.",
            crediting_start=date(2024, 1, 1),
            crediting_end=date(2033, 12, 31),
        ),
        StatusChange("validated grid-connected offshore wind", "MEE-CCER-REG-2024-0117"),
    ).project
    out(
        f"Project {project.project_id} registered ({project.details.methodology}, "
        f"{project.details.province}): its CCER are issued into {project.details.owner_account}"
    )
    step(
        registry.issue_units(
            REGULATOR,
            "ISS-CCER-0117",
            CCER_WIND,
            400_000,
            "CCER for 2024 generation of project 0117",
        )
    )

    trading_day = date(2026, 6, 15)
    step(
        registry.settle_trade(
            EXCHANGE,
            Trade(
                "SEEE-20260615-000101",
                "PWR-NM-0002",
                "TRD-SH-0001",
                "CEA",
                600_000,
                2025,
                trade_date=trading_day,
            ),
        )
    )
    hold = registry.place_hold(EXCHANGE, "ORD-88812", "TRD-SH-0001", cea, 250_000, 3600)
    out(f"hold {hold.hold_id}: {hold.quantity:,} CEA held on TRD-SH-0001 for a sell order")
    step(
        registry.settle_trade(
            EXCHANGE,
            Trade(
                "SEEE-20260615-000102",
                "TRD-SH-0001",
                "CEM-AH-0001",
                "CEA",
                180_000,
                2025,
                hold_id="ORD-88812",
                trade_date=trading_day,
            ),
        )
    )
    out("  (the other 70,000 held units were released when the hold settled)")
    batch = registry.settle_trades(
        EXCHANGE,
        [
            Trade(
                "SEEE-20260615-000103",
                "PRJ-GS-0117",
                "PWR-SD-0001",
                "CCER",
                120_000,
                trade_date=trading_day,
                project=CCER_WIND.project,
            ),
            Trade(
                "SEEE-20260615-000104",
                "STL-GD-0001",
                "ALU-NM-0001",
                "CEA",
                90_000,
                2025,
                trade_date=trading_day,
            ),
            Trade(
                "SEEE-20260615-000105",
                "TRD-SH-0001",
                "STL-GD-0001",
                "CEA",
                40_000,
                2025,
                trade_date=trading_day,
            ),
        ],
    )
    out(
        f"batch of {len(batch)} trades: "
        + ", ".join(f"{r.trade_id[-6:]} {r.outcome}" for r in batch)
    )
    retry = registry.settle_trade(
        EXCHANGE,
        Trade(
            "SEEE-20260615-000101",
            "PWR-NM-0002",
            "TRD-SH-0001",
            "CEA",
            600_000,
            2025,
            trade_date=trading_day,
        ),
    )
    out(f"exchange retries trade 000101: replayed={retry.replayed}, nothing moved twice")

    registry.record_verified_emissions(
        REGULATOR,
        [
            EmissionsRow(account_id, YEAR, tonnes, "2025 emissions report, verified")
            for account_id, tonnes in VERIFIED.items()
        ],
    )
    for account_id in VERIFIED:
        out(_status_line(registry, account_id))
    step(
        registry.surrender(
            OPERATOR,
            "SUR-2025-PWR-SD-0001-A",
            "PWR-SD-0001",
            cea,
            8_700_000,
            2025,
            "2025 compliance, allowances",
        )
    )
    step(
        registry.surrender(
            OPERATOR,
            "SUR-2025-PWR-SD-0001-B",
            "PWR-SD-0001",
            UnitSelector(UnitType.CCER),
            120_000,
            2025,
            "2025 compliance, offsets (under the 5% cap)",
        )
    )
    step(
        registry.cancel(
            Principal("green-fund", "trader-chen"),
            "CXL-0001",
            "TRD-SH-0001",
            cea,
            10_000,
            "voluntary cancellation for a corporate net-zero claim",
        )
    )
    step(
        registry.settle_trade(
            EXCHANGE,
            Trade("SEEE-20260616-000001", "CEM-AH-0001", "TRD-SH-0001", "CEA", 99_000_000, 2025),
        )
    )

    open_hold = registry.place_hold(EXCHANGE, "ORD-88813", "STL-GD-0001", cea, 300_000, 3600)
    out(
        f"hold {open_hold.hold_id}: {open_hold.quantity:,} CEA held on STL-GD-0001 "
        "for an open sell order"
    )

    out("\nBalances (tonnes CO2e)")
    _table(
        out,
        ["account", "type", "unit class", "total", "held", "available"],
        [
            [
                account_id,
                registry.get_account(account_id).account_type.value,
                h.unit_class.key,
                f"{h.total:,}",
                f"{h.held:,}",
                f"{h.available:,}",
            ]
            for account_id in registry.account_ids()
            for h in registry.get_holdings(account_id)
        ],
    )
    surrendered = registry.get_surrendered("PWR-SD-0001", 2025)
    out(
        "\nSurrendered by PWR-SD-0001 for 2025: "
        + ", ".join(f"{q:,} {t}" for t, q in sorted(surrendered.items()))
        + f" ({registry.get_compliance_status('PWR-SD-0001', 2025).state})"
    )

    out("\nConservation: units issued == sum of all holdings, per unit class")
    supply = registry.supply()
    _table(
        out,
        ["unit class", "issued", "held in accounts", "check"],
        [
            [
                line.unit_class.key,
                f"{line.issued:,}",
                f"{line.held_in_accounts:,}",
                "OK" if line.balanced else "MISMATCH",
            ]
            for line in supply
        ],
    )
    return all(line.balanced for line in supply)


def describe(rules: ComplianceRules) -> str:
    """The year's rules in a line: CCER cap and its base, relief, advance use, carry-over."""
    from registry.domain.rules import CarryOver

    parts = [f"CCER up to {rules.ccer_cap_bps / 100:g} % of the {rules.ccer_cap_base.lower()}"]
    if rules.obligation_cap_bps is not None:
        parts.append(
            f"obligation capped at allocation + {rules.obligation_cap_bps / 100:g} % of "
            "verified emissions"
        )
    if rules.advance_use_bps:
        parts.append(f"advance use up to {rules.advance_use_bps / 100:g} % of the gap")
    if rules.carry_over == CarryOver.NET_SALES.value:
        parts.append(
            f"carry-over of vintages <= {rules.carry_over_max_vintage}: "
            f"{rules.carry_over_net_sales_bps / 10_000:g} x net sales + "
            f"{rules.carry_over_base_tonnes:,} t"
        )
    parts.append(f"surrender by {rules.deadline(YEAR)}")
    return "; ".join(parts)


def _status_line(registry: Registry, account_id: str) -> str:
    """What the year's rules make of one company's verified emissions, as the registry
    computes it (GetComplianceStatus)."""
    s = registry.get_compliance_status(account_id, YEAR)
    carry = "no limit" if s.carry_over_limit is None else f"{s.carry_over_limit:,} t"
    return (
        f"verified emissions {YEAR}: {account_id} {s.verified_emissions:,} t, allocated "
        f"{s.allocated:,} t -> obligation {s.obligation:,} t, CCER cap {s.ccer_cap:,} t, "
        f"gap {s.gap:,} t, may borrow {s.advance_use_limit:,} t, carry-over limit {carry}"
    )


class _Steps:
    def __init__(self, out: Callable[[str], None]) -> None:
        self.out = out

    def __call__(self, result: TransactionResult) -> None:
        route = f"{result.source or '(new units)'} -> {result.destination}"
        if result.ok:
            blocks = ", ".join(str(b) for b in result.blocks)
            self.out(f"{result.kind:<13} {result.quantity:>12,}  {route}  [{blocks}]")
        else:
            self.out(
                f"{result.kind:<13} REFUSED {result.refusal_reason}: "
                f"{result.refusal_message} ({route}; recorded as "
                f"{result.party}:{result.transaction_id})"
            )


def _table(out: Callable[[str], None], header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    numeric = [i > 0 and all(r[i][:1].isdigit() for r in rows) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cells, widths, numeric, strict=True)
        )

    out(line(header))
    out("  ".join("-" * w for w in widths))
    for row in rows:
        out(line(row))
