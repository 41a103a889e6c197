"""A scripted national compliance year through the gRPC API on PostgreSQL, with four
eyes required, on the rules the registry ships for 2025 (adopted first, each rule key as a
``RULE_CHANGE`` proposal approved by a second regulator, as ``registry rules set-shipped
2025`` would set them): 2,000 compliance accounts in the four sectors, issuance,
pre-allocation from the benchmark table, trading (a hold too), verified emissions, true-up,
surrenders mixing CEA and CCER (some over the cap, one power company past the relief
offering 5 % of its verified emissions rather than of its obligation, some of a vintage
the year does not accept, some of 2026 in advance, which 2025 does not allow), a frozen
account and a detained project, the year closed, and the shortfalls
deducted from the next allocation. Every figure of the compliance report equals an
independent computation here that follows the year's rules (obligation capped at
allocation + 20 % of verified emissions for power, CCER up to 5 % of the obligation,
advance use only where the year allows it: not in 2025), and the supply balances after
every phase.

Sizing: each sector's share of the real figures, scaled to 2,000 accounts.
- Power: 2,200 companies, over 5.0 Gt CO2 a year (MEE press release on the Work Plan of
  26 March 2025; Xinhua, 26 March 2025).
- Steel, cement and aluminium smelting: 1,500 companies, about 3.0 Gt together (same
  sources). Their split among the three is not in the sources found: assumed here
  (UNCERTAIN) steel 450 companies / 1.5 Gt, cement 900 / 1.2 Gt, aluminium 150 / 0.3 Gt.
- Companies: each sector's count x 2,000 / 3,700, largest remainder first: power 1,189,
  steel 243, cement 487, aluminium 81 (``scaled_counts``).
- Emissions: each company's output is drawn so that its allocation is its sector's real
  mean per company (power 5.0 Gt / 2,200 = 2.27 Mt, steel 3.33 Mt, cement 1.33 Mt,
  aluminium 2.0 Mt) x 0.5-1.5, so each sector's share of the year's verified emissions
  is near its real share (power 62.5 %, steel 18.75 %, cement 15 %, aluminium 3.75 %),
  checked within 3 points.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest

from registry.cli.benchmark_tables import (
    ILLUSTRATIVE_BENCHMARKS_2025,
    read_benchmark_table,
)
from registry.client import RegistryClient, error_details
from registry.domain.accounts import Sector
from registry.domain.allocation import (
    Subtype,
    final_allocation,
    pre_allocation,
    true_up,
)
from registry.domain.rule_defaults import shipped_rules
from registry.domain.rules import AdvanceUseBase, CcerCapBase, ComplianceRules
from registry.domain.transactions import Principal
from registry.v1 import account_service_pb2 as account_pb
from registry.v1 import administration_service_pb2 as admin_pb
from registry.v1 import audit_service_pb2 as audit_pb
from registry.v1 import common_pb2 as common
from registry.v1 import settlement_service_pb2 as settlement_pb
from tests.e2e.conftest import Api, rpc_error, running_api
from tests.e2e.market import caught_up, head_position

pytestmark = pytest.mark.postgres

YEAR = 2025
ACCOUNTS = 2_000
REAL_2025 = {  # companies, tonnes CO2 a year (see the module docstring for the sources)
    Sector.POWER: (2_200, 5_000_000_000),
    Sector.STEEL: (450, 1_500_000_000),
    Sector.CEMENT: (900, 1_200_000_000),
    Sector.ALUMINIUM: (150, 300_000_000),
}


def scaled_counts(total: int) -> dict[Sector, int]:
    """Each sector's share of the real companies, of ``total`` accounts (largest
    remainder first, so the counts add up to ``total``)."""
    real = sum(n for n, _ in REAL_2025.values())
    counts = {s: n * total // real for s, (n, _) in REAL_2025.items()}
    by_remainder = sorted(REAL_2025, key=lambda s: -(REAL_2025[s][0] * total % real))
    for sector in by_remainder[: total - sum(counts.values())]:
        counts[sector] += 1
    return counts


SECTORS = scaled_counts(ACCOUNTS)
SUBTYPES = {
    Sector.POWER: [
        Subtype.COAL_CONVENTIONAL_300MW_PLUS,
        Subtype.COAL_CONVENTIONAL_BELOW_300MW,
        Subtype.COAL_UNCONVENTIONAL,
        Subtype.GAS,
    ],
    Sector.STEEL: [Subtype.STEEL],
    Sector.CEMENT: [Subtype.CEMENT_CLINKER],
    Sector.ALUMINIUM: [Subtype.ALUMINIUM],
}
PROVINCES = ["Shandong", "Guangdong", "Jiangsu", "Hebei"]
SHIPPED = {key: shipped.rules for key, shipped in shipped_rules(YEAR).items()}
BPS = 10_000


def test_the_sizing_follows_the_real_shares() -> None:
    """By hand: 2,000 / 3,700 x 2,200 = 1,189.19, x 450 = 243.24, x 900 = 486.49,
    x 150 = 81.08; the floors add up to 1,999 and the last account goes to the largest
    remainder (cement's .49): power 1,189, steel 243, cement 487, aluminium 81."""
    assert SECTORS == {
        Sector.POWER: 1_189,
        Sector.STEEL: 243,
        Sector.CEMENT: 487,
        Sector.ALUMINIUM: 81,
    }
    assert sum(SECTORS.values()) == ACCOUNTS


@dataclass
class Company:
    account_id: str
    sector: Sector
    subtype: Subtype
    province: str
    pre: int = 0
    final: int = 0
    emissions: int = 0
    ccer: int = 0
    plan: str = "comply"


def admin(api: Api, who: str) -> RegistryClient:
    return api.regulator if who == "li" else api.clients["regulator2"]


def decide(api: Api, proposal_id: str, kind: int, payload: dict[str, Any]) -> admin_pb.Proposal:
    """Proposed by one regulator, approved by another (four eyes are required)."""
    li, wang = admin(api, "li"), admin(api, "wang")
    li.call(
        li.administration.ProposeAction,
        admin_pb.ProposeActionRequest(
            proposal_id=proposal_id,
            kind=kind,
            payload_json=json.dumps(payload),
            reason="national year",
        ),
    )
    done = wang.call(
        wang.administration.ApproveProposal,
        admin_pb.ApproveProposalRequest(party="mee", proposal_id=proposal_id),
        timeout=300,
    )
    assert done.proposal.status == admin_pb.PROPOSAL_STATUS_EXECUTED, done.proposal
    return done.proposal


def chunks(items: list[Any], size: int = 1_000) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def balanced(api: Api) -> None:
    client = api.regulator
    supply = client.call(client.audit.GetSupply, audit_pb.GetSupplyRequest())
    assert supply.lines and all(line.balanced for line in supply.lines), supply


def wait_projected(api: Api) -> None:
    caught_up(api.regulator)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with running_api("postgres", tmp_path, four_eyes=True) as running:
        yield running


def test_a_national_compliance_year(api: Api) -> None:
    started = time.perf_counter()
    rng = random.Random(YEAR)
    table = read_benchmark_table(ILLUSTRATIVE_BENCHMARKS_2025)
    li = api.regulator
    companies: list[Company] = []
    for sector, count in SECTORS.items():
        for n in range(count):
            companies.append(
                Company(
                    f"{sector.value[:3]}-{n:05d}",
                    sector,
                    rng.choice(SUBTYPES[sector]),
                    rng.choice(PROVINCES),
                )
            )

    # accounts, rules, issuance -------------------------------------------------------
    for c in companies:
        li.call(
            li.administration.OpenAccount,
            admin_pb.OpenAccountRequest(
                account_id=c.account_id,
                account_type=common.ACCOUNT_TYPE_COMPLIANCE,
                holder=common.Holder(
                    name=f"{c.account_id} Co.",
                    credit_code="91370000163081422B",
                    sector=getattr(common, f"SECTOR_{c.sector.value}"),
                    province=c.province,
                ),
            ),
        )
    denied = rpc_error(
        lambda: li.call(
            li.administration.IssueUnits,
            admin_pb.IssueUnitsRequest(
                transaction_id="DIRECT",
                unit_class=common.UnitClass(unit_type=common.UNIT_TYPE_CEA, vintage=YEAR),
                quantity=1,
            ),
        )
    )
    assert denied.reason == "PROPOSAL_REQUIRED"
    # the shipped 2025 rules, adopted as `registry rules set-shipped 2025` sets them: one
    # RULE_CHANGE per rule key, each approved by a second regulator
    for key, rules in SHIPPED.items():
        decide(
            api,
            f"RULES-{'ALL' if key == '*' else key}",
            admin_pb.PROPOSAL_KIND_RULE_CHANGE,
            {"year": YEAR, "sector": key, "reason": "shipped 2025", "rules": rules.as_dict()},
        )
    adopted = li.call(
        li.administration.GetComplianceRules,
        admin_pb.GetComplianceRulesRequest(compliance_year=YEAR),
    )
    assert sorted(r.sector for r in adopted.rules) == sorted(SHIPPED)

    # allocation from the benchmark table: pre-allocation now, true-up after verification
    for c in companies:
        row = table.row(YEAR, c.sector, c.subtype)
        companies_real, tonnes_real = REAL_2025[c.sector]
        assert row.benchmark
        mean_output = Decimal(tonnes_real // companies_real) / row.benchmark
        previous = (mean_output * rng.randrange(50, 151) / 100).quantize(Decimal(1))
        actual = previous * Decimal(rng.choice(["1.00", "1.03", "1.08"]))
        c.pre = pre_allocation(row, previous)
        c.final = final_allocation(row, actual)
        # 1.4: past the power relief (1.4 x final > final + 20 % x 1.4 x final)
        c.emissions = int(c.final * rng.choice([0.9, 1.0, 1.1, 1.25, 1.4]))
    total = sum(c.emissions for c in companies)
    real_total = sum(t for _, t in REAL_2025.values())
    for sector, (_, tonnes_real) in REAL_2025.items():
        share = sum(c.emissions for c in companies if c.sector is sector) / total
        assert abs(share - tonnes_real / real_total) < 0.03, (sector, share)
    issued = sum(c.final for c in companies) + 1_000_000
    decide(
        api,
        "ISS-CEA",
        admin_pb.PROPOSAL_KIND_ISSUANCE,
        {
            "transaction_id": "ISS-CEA-2025",
            "unit_type": "CEA",
            "vintage": YEAR,
            "quantity": issued,
            "reason": "2025 cap",
        },
    )
    decide(
        api,
        "ISS-CEA-27",
        admin_pb.PROPOSAL_KIND_ISSUANCE,
        {
            "transaction_id": "ISS-CEA-2027",
            "unit_type": "CEA",
            "vintage": 2027,
            "quantity": 10_000,
            "reason": "early vintage",
        },
    )
    for n, rows in enumerate(chunks(companies)):
        decide(
            api,
            f"PRE-{n}",
            admin_pb.PROPOSAL_KIND_ALLOCATION_TABLE,
            {
                "rows": [
                    {
                        "transaction_id": f"PRE-{c.account_id}",
                        "account_id": c.account_id,
                        "unit_type": "CEA",
                        "vintage": YEAR,
                        "quantity": c.pre,
                        "source": "CN-ISSUANCE",
                    }
                    for c in rows
                ]
            },
        )
    wait_projected(api)
    balanced(api)

    def rules_of(c: Company) -> ComplianceRules:
        return SHIPPED.get(c.sector.value, SHIPPED["*"])

    def obligation(c: Company) -> int:
        """Verified emissions, capped at allocation + a share of them where the year's
        rules set a cap (2025: power, 20 %)."""
        cap = rules_of(c).obligation_cap_bps
        if cap is None:
            return c.emissions
        return min(c.emissions, c.final + c.emissions * cap // BPS)

    def ccer_cap(c: Company) -> int:
        """A share of the obligation (MEE 2020, Art. 29), not of verified emissions."""
        assert rules_of(c).ccer_cap_base == CcerCapBase.OBLIGATION.value
        return obligation(c) * rules_of(c).ccer_cap_bps // BPS

    def may_borrow(c: Company) -> int:
        """Next year's allowances the company may use: only where the year allows
        advance use, only over the gap-rate threshold, a share of the gap."""
        rules, gap = rules_of(c), max(0, obligation(c) - c.final)
        if not rules.advance_use_bps or gap * BPS < rules.advance_use_min_gap_bps * c.emissions:
            return 0
        base = gap if rules.advance_use_base == AdvanceUseBase.GAP.value else c.emissions
        return base * rules.advance_use_bps // BPS

    power = [c for c in companies if c.sector is Sector.POWER]
    assert any(obligation(c) < c.emissions for c in power), "the relief bites somewhere"
    assert all(obligation(c) == c.emissions for c in companies if c.sector is not Sector.POWER)
    assert sum(may_borrow(c) for c in companies) == 0, "2025 allows no advance use"

    # the plans: most comply; some try CCER over the cap, some a 2027 vintage, some 2026
    # allowances in advance (2025 allows none), some fall short; one account is frozen
    # and one company's offsets are of a detained project
    for c in rng.sample(companies, 300):
        c.plan = rng.choice(["ccer_over_cap", "vintage_2027", "borrow", "short"])
    frozen, detained = companies[5], companies[6]
    frozen.plan, detained.plan = "frozen", "detained"
    offsets = [c for c in companies if c.plan in ("comply", "ccer_over_cap")][:400]
    for c in offsets:  # the cap is 5 % of the obligation (MEE 2020, Art. 29)
        c.ccer = ccer_cap(c)
    held_ccer = {c.account_id: c.ccer + 10 for c in offsets if c.ccer}
    # a power company past the relief tries 5 % of its verified emissions first: more
    # than 5 % of its (capped) obligation, so refused; it holds enough for either
    relieved = next(c for c in offsets if c.plan == "comply" and obligation(c) < c.emissions)
    of_verified = relieved.emissions * rules_of(relieved).ccer_cap_bps // BPS
    assert of_verified > relieved.ccer
    held_ccer[relieved.account_id] = of_verified + 10
    # the detained company's offsets are the whole of project P-0; everyone else's are of
    # P-1. Each project is registered (four eyes) to its owner's PROJECT account, which
    # its issuance reaches, and sold from there on the exchange, the trade naming it.
    owners = {"P-0": "PRJ-GS-0000", "P-1": "PRJ-YN-0001"}
    for project, owner in owners.items():
        li.call(
            li.administration.OpenAccount,
            admin_pb.OpenAccountRequest(
                account_id=owner,
                account_type=common.ACCOUNT_TYPE_PROJECT,
                holder=common.Holder(name=f"{owner} Carbon Co."),
            ),
        )
        decide(
            api,
            f"REG-{project}",
            admin_pb.PROPOSAL_KIND_PROJECT_REGISTRATION,
            {
                "project_id": project,
                "owner_account": owner,
                "province": "Gansu" if project == "P-0" else "Yunnan",
                "methodology": "CCER-14-001-V01",
                "sector": "WIND",
                "verifier": "China Quality Certification Centre",
                "developer": f"{owner} Carbon Co.",
                "crediting_start": "2020-01-01",
                "crediting_end": "2029-12-31",
                "reason": "validated",
                "reference": f"MEE-CCER-REG-{project}",
            },
        )
    for project, quantity in (("P-0", 100), ("P-1", sum(held_ccer.values()))):
        decide(
            api,
            f"ISS-{project}",
            admin_pb.PROPOSAL_KIND_ISSUANCE,
            {
                "transaction_id": f"ISS-{project}",
                "unit_type": "CCER",
                "vintage": 2024,
                "project": project,
                "quantity": quantity,
                "reason": "offsets",
            },
        )
    deliveries = [
        settlement_pb.Trade(
            trade_id=f"CCER-{c.account_id}",
            seller_account=owners[project],
            buyer_account=c.account_id,
            unit_type=common.UNIT_TYPE_CCER,
            vintage=2024,
            quantity=quantity,
            project=project,
        )
        for c, project, quantity in [
            (detained, "P-0", 100),
            *((c, "P-1", held_ccer[c.account_id]) for c in offsets if c.ccer),
        ]
    ]
    for batch in chunks(deliveries):
        reply = api.exchange.call(
            api.exchange.settlement.SettleTrades,
            settlement_pb.SettleTradesRequest(trades=batch),
            timeout=300,
        )
        assert all(r.status == settlement_pb.TRADE_STATUS_SETTLED for r in reply.results), reply
    decide(
        api,
        "ISS-CEA-26",
        admin_pb.PROPOSAL_KIND_ISSUANCE,
        {
            "transaction_id": "ISS-CEA-2026-EARLY",
            "unit_type": "CEA",
            "vintage": 2026,
            "quantity": 10_000,
            "reason": "early vintage",
        },
    )
    early = [c for c in companies if c.plan in ("vintage_2027", "borrow")]
    decide(
        api,
        "EARLY",
        admin_pb.PROPOSAL_KIND_ALLOCATION_TABLE,
        {
            "rows": [
                {
                    "transaction_id": f"EARLY-{c.account_id}",
                    "account_id": c.account_id,
                    "unit_type": "CEA",
                    "vintage": 2027 if c.plan == "vintage_2027" else 2026,
                    "quantity": 5,
                    "source": "CN-ISSUANCE",
                }
                for c in early
            ]
        },
    )

    # trading: companies short of allowances buy from long ones, one trade on a hold ------
    exchange = api.exchange
    sellers = [c for c in companies if c.final > c.emissions and c.plan == "comply"]
    trades = []
    for n, buyer in enumerate(c for c in companies if c.emissions > c.final):
        seller = sellers[n % len(sellers)]
        trades.append(
            settlement_pb.Trade(
                trade_id=f"T-{n}",
                seller_account=seller.account_id,
                buyer_account=buyer.account_id,
                unit_type=common.UNIT_TYPE_CEA,
                vintage=YEAR,
                quantity=1_000,
            )
        )
    bought: Counter[str] = Counter()
    sold: Counter[str] = Counter()
    for batch in chunks(trades):
        reply = exchange.call(
            exchange.settlement.SettleTrades,
            settlement_pb.SettleTradesRequest(trades=batch),
            timeout=300,
        )
        for trade, result in zip(batch, reply.results, strict=True):
            assert result.status == settlement_pb.TRADE_STATUS_SETTLED, result
            bought[trade.buyer_account] += trade.quantity
            sold[trade.seller_account] += trade.quantity
    hold_seller, hold_buyer = sellers[-1], sellers[-2]
    exchange.call(
        exchange.settlement.PlaceHold,
        settlement_pb.PlaceHoldRequest(
            hold_id="H-1",
            account_id=hold_seller.account_id,
            unit_type=common.UNIT_TYPE_CEA,
            vintage=YEAR,
            quantity=500,
            timeout_seconds=3_600,
        ),
    )
    reply = exchange.call(
        exchange.settlement.SettleTrades,
        settlement_pb.SettleTradesRequest(
            trades=[
                settlement_pb.Trade(
                    trade_id="T-HOLD",
                    seller_account=hold_seller.account_id,
                    buyer_account=hold_buyer.account_id,
                    unit_type=common.UNIT_TYPE_CEA,
                    vintage=YEAR,
                    quantity=300,
                    hold_id="H-1",
                )
            ]
        ),
    )
    assert reply.results[0].status == settlement_pb.TRADE_STATUS_SETTLED
    sold[hold_seller.account_id] += 300
    bought[hold_buyer.account_id] += 300
    wait_projected(api)
    balanced(api)

    # verified emissions (four eyes: they fix every obligation), then the true-up -------
    one = admin_pb.VerifiedEmissionsRow(
        account_id=companies[0].account_id, compliance_year=YEAR, verified_emissions=1
    )
    direct = rpc_error(
        lambda: li.call(
            li.administration.RecordVerifiedEmissions,
            admin_pb.RecordVerifiedEmissionsRequest(rows=[one]),
        )
    )
    assert (direct.reason, direct.metadata["kind"]) == ("PROPOSAL_REQUIRED", "VERIFIED_EMISSIONS")
    for n, rows in enumerate(chunks(companies)):
        decide(
            api,
            f"EMISSIONS-{n}",
            admin_pb.PROPOSAL_KIND_VERIFIED_EMISSIONS,
            {
                "reason": "verified report",
                "rows": [
                    {
                        "account_id": c.account_id,
                        "compliance_year": YEAR,
                        "verified_emissions": c.emissions,
                    }
                    for c in rows
                ],
            },
        )
    ups = [(c, true_up(c.final, c.pre)) for c in companies]
    assert all(t.to_return == 0 for _, t in ups)  # outputs grew or held: no returns
    for n, rows in enumerate(chunks([(c, t) for c, t in ups if t.additional])):
        decide(
            api,
            f"TRUE-UP-{n}",
            admin_pb.PROPOSAL_KIND_ALLOCATION_TABLE,
            {
                "rows": [
                    {
                        "transaction_id": f"TU-{c.account_id}",
                        "account_id": c.account_id,
                        "unit_type": "CEA",
                        "vintage": YEAR,
                        "quantity": t.additional,
                        "source": "CN-ISSUANCE",
                    }
                    for c, t in rows
                ]
            },
        )
    decide(
        api,
        "FREEZE",
        admin_pb.PROPOSAL_KIND_ACCOUNT_FREEZE,
        {"account_id": frozen.account_id, "reason": "investigation", "request_id": "FRZ-1"},
    )
    decide(
        api,
        "DETAIN",
        admin_pb.PROPOSAL_KIND_ORIGIN_DETENTION,
        {"project": "P-0", "reference": "CASE-2026-4", "reason": "double counting"},
    )

    # surrenders: by the companies' operator, whose grant names every company's account
    admin = Principal("system", "tests")
    operators = Principal("national", "operators")
    api.registry.access.grant_role(
        admin,
        "national-operators",
        operators,
        "operator",
        [c.account_id for c in companies],
        "the companies",
    )
    operator = api.client(api.registry.access.issue_token(admin, operators, "operators").token)

    def surrender(
        c: Company, txn: str, quantity: int, unit_type: int, vintage: int | None = None
    ) -> str:
        request = account_pb.SurrenderUnitsRequest(
            transaction_id=txn,
            account_id=c.account_id,
            unit_type=unit_type,
            quantity=quantity,
            compliance_year=YEAR,
            reason="compliance",
        )
        if vintage is not None:
            request.vintage = vintage
        try:
            operator.call(operator.accounts.SurrenderUnits, request)
        except grpc.RpcError as error:  # a refusal: its reason
            return error_details(error).reason
        return ""

    surrendered: dict[str, Counter[str]] = {c.account_id: Counter() for c in companies}
    refusals: Counter[str] = Counter()
    for c in companies:
        cea_held = c.final + bought[c.account_id] - sold[c.account_id]
        due = obligation(c)
        ccer = min(c.ccer, due)
        if c.plan == "ccer_over_cap" and c.ccer:
            refusals[surrender(c, f"S-OVER-{c.account_id}", c.ccer + 1, common.UNIT_TYPE_CCER)] += 1
        if c.plan == "vintage_2027":
            refusals[surrender(c, f"S-27-{c.account_id}", 5, common.UNIT_TYPE_CEA, 2027)] += 1
        if c.plan == "borrow":
            refusals[surrender(c, f"S-26-{c.account_id}", 5, common.UNIT_TYPE_CEA, 2026)] += 1
        if c is relieved:
            txn = f"S-VER-{c.account_id}"
            assert surrender(c, txn, of_verified, common.UNIT_TYPE_CCER) == "CCER_CAP_EXCEEDED"
        if c is detained:
            refusals[surrender(c, f"S-DET-{c.account_id}", 50, common.UNIT_TYPE_CCER)] += 1
        if c is frozen:
            refusals[surrender(c, f"S-FRZ-{c.account_id}", 10, common.UNIT_TYPE_CEA, YEAR)] += 1
            continue
        if ccer and c.plan in ("comply", "ccer_over_cap"):
            assert surrender(c, f"S-CCER-{c.account_id}", ccer, common.UNIT_TYPE_CCER) == ""
            surrendered[c.account_id]["CCER"] += ccer
        cea = min(due - surrendered[c.account_id]["CCER"], cea_held)
        if c.plan == "short":
            cea = cea // 2
        if cea > 0:
            assert surrender(c, f"S-CEA-{c.account_id}", cea, common.UNIT_TYPE_CEA, YEAR) == ""
            surrendered[c.account_id]["CEA"] += cea
    plans = Counter(c.plan for c in companies)
    assert min(plans.values()) >= 1 and refusals["CCER_CAP_EXCEEDED"] > 0
    assert refusals["CCER_CAP_EXCEEDED"] == sum(
        1 for c in companies if c.plan == "ccer_over_cap" and c.ccer
    )
    assert refusals["ADVANCE_USE_NOT_ALLOWED"] == plans["borrow"]  # may_borrow: 0 for all
    assert refusals["INELIGIBLE_VINTAGE"] == plans["vintage_2027"]
    assert (refusals["ACCOUNT_FROZEN"], refusals["ORIGIN_DETAINED"]) == (1, 1)
    wait_projected(api)
    balanced(api)

    # the year closes (four eyes): shortfalls fixed, the report equals an independent
    # computation
    close = admin_pb.CloseComplianceYearRequest(compliance_year=YEAR, reason="deadline passed")
    direct = rpc_error(lambda: li.call(li.administration.CloseComplianceYear, close))
    assert (direct.reason, direct.metadata["kind"]) == ("PROPOSAL_REQUIRED", "YEAR_CLOSING")
    closed = decide(
        api,
        "CLOSE",
        admin_pb.PROPOSAL_KIND_YEAR_CLOSING,
        {"year": YEAR, "reason": "deadline passed"},
    )
    expected: dict[tuple[str, str, str], Counter[str]] = {}
    for c in companies:
        done = surrendered[c.account_id]
        due = obligation(c)
        short = max(0, due - done["CEA"] - done["CCER"])
        state = "SHORTFALL" if short else "COMPLIANT"
        line = expected.setdefault((c.sector.value, c.province, state), Counter())
        line.update(
            accounts=1,
            verified=c.emissions,
            obligation=due,
            cea=done["CEA"],
            ccer=done["CCER"],
            shortfall=short,
        )
    shortfalls = {
        c.account_id: obligation(c) - sum(surrendered[c.account_id].values())
        for c in companies
        if obligation(c) > sum(surrendered[c.account_id].values())
    }
    assert closed.result == (
        f"year {YEAR} closed: {len(companies)} obligations, {len(shortfalls)} short by "
        f"{sum(shortfalls.values())} t"
    )
    report = li.call(
        li.audit.GetComplianceReport,
        audit_pb.GetComplianceReportRequest(compliance_year=YEAR),
        timeout=300,
    )
    observed = {
        (
            common.Sector.Name(line.sector).removeprefix("SECTOR_"),
            line.province,
            account_pb.ComplianceState.Name(line.state).removeprefix("COMPLIANCE_STATE_"),
        ): Counter(
            accounts=line.accounts,
            verified=line.verified_emissions,
            obligation=line.obligation,
            cea=line.surrendered_cea,
            ccer=line.surrendered_ccer,
            shortfall=line.shortfall,
        )
        for line in report.lines
    }
    assert observed == expected

    # Decree 775, Art. 24: each company short is ordered to correct by the deadline;
    # once it has passed uncorrected, the deduction step (four eyes) carries the
    # shortfalls into 2026 ----------------------------------------------------------------
    noticed = li.call(
        li.accounts.GetComplianceStatus,
        account_pb.GetComplianceStatusRequest(account_id=min(shortfalls), compliance_year=YEAR),
    )
    assert noticed.enforcement_step == account_pb.ENFORCEMENT_STEP_ORDERED_TO_CORRECT
    closed_on = closed.approve_time.ToDatetime(tzinfo=UTC).date()
    assert noticed.correction_deadline == (closed_on + timedelta(days=30)).isoformat()
    after = datetime.now(UTC) + timedelta(days=31)  # the default 30 days have passed
    api.registry.clock = lambda: after
    deducted = decide(
        api,
        "DEDUCT-2025",
        admin_pb.PROPOSAL_KIND_DEDUCTION,
        {"year": YEAR, "reason": "correction deadline passed"},
    )
    assert deducted.result == (
        f"deducted {sum(shortfalls.values())} t from {len(shortfalls)} accounts' {YEAR + 1}"
    )

    # next year's allocation pays the shortfalls first -----------------------------------
    short_list = sorted(shortfalls)[:50]
    decide(
        api,
        "ISS-2026",
        admin_pb.PROPOSAL_KIND_ISSUANCE,
        {
            "transaction_id": "ISS-CEA-2026",
            "unit_type": "CEA",
            "vintage": 2026,
            "quantity": 50 * 2_000_000,
            "reason": "2026 cap",
        },
    )
    decide(
        api,
        "PRE-2026",
        admin_pb.PROPOSAL_KIND_ALLOCATION_TABLE,
        {
            "rows": [
                {
                    "transaction_id": f"PRE26-{a}",
                    "account_id": a,
                    "unit_type": "CEA",
                    "vintage": 2026,
                    "quantity": 1_000_000,
                    "source": "CN-ISSUANCE",
                }
                for a in short_list
            ]
        },
    )
    for account_id in short_list:
        status = li.call(
            li.accounts.GetComplianceStatus,
            account_pb.GetComplianceStatusRequest(account_id=account_id, compliance_year=2026),
        )
        assert (status.debt_carried, status.debt_deducted) == (
            shortfalls[account_id],
            min(shortfalls[account_id], 1_000_000),
        )
    wait_projected(api)
    balanced(api)
    print(
        f"\nnational year: {len(companies):,} accounts, {head_position(li):,} events, "
        f"{time.perf_counter() - started:.1f} s"
    )
