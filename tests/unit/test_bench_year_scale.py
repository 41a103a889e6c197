"""The bench's scaled national year (issue 20, `registry bench --year-scale N`): a second
year on the same server must not touch an id of the first, the first must stay the year
every earlier run played, and its target is computed from the first year of the run."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

import pytest

from bench.suite import national, report
from bench.suite.national import YearPlan, plan_year
from bench.suite.report import Row
from bench.suite.run import FULL, SMOKE, parser, scaled_cache_size, scaled_year_target, sizes_of
from registry.domain.accounts import check_account_id
from registry.domain.ids import check_client_id
from registry.domain.units import check_project


def digest(plan: YearPlan) -> str:
    """Every company's figures and every trade, in order."""
    h = hashlib.sha256()
    for c in plan.companies:
        h.update(
            f"{c.account_id}|{c.sector}|{c.province}|{c.credit_code}|{c.allocation}|"
            f"{c.emissions}|{c.uses_ccer}\n".encode()
        )
    for t in plan.trades:
        h.update(("|".join(map(str, t)) + "\n").encode())
    return h.hexdigest()


def transaction_ids(plan: YearPlan) -> set[str]:
    """Every transaction and trade id ``national.play`` sends for the plan."""
    ids = {plan.id("ISS"), plan.id("ISS-CCER")}
    for c in plan.companies:
        ids |= {plan.id(f"AL-{c.account_id}"), plan.id(f"SUR-{c.account_id}")}
        if c.ccer:
            ids |= {plan.id(f"CCER-{c.account_id}"), plan.id(f"SUR-CCER-{c.account_id}")}
    return ids | {t[0] for t in plan.trades}


def test_the_1x_year_is_the_one_earlier_runs_played() -> None:
    """Digests taken from the plan before the tag existed (commit 1129a88): same seed,
    same companies, same trades, same ids."""
    full = plan_year(3_700, 100_000)
    assert digest(full) == "09b1804e1cf9f9fca9ad1577b0a3fe36b726f8b4b11e6fbdf724752c0ff1ce38"
    assert (full.issued, full.offsets, len(full.trades)) == (7_866_460_453, 38_315_351, 100_000)
    assert full.companies[0].account_id == "PWR-JS-0001"
    assert full.trades[0] == ("Y2025-T000000", "ALU-SD-0086", "PWR-HA-1110", 2_470)
    smoke = plan_year(120, 2_000)
    assert digest(smoke) == "15760db153b6739a6f9505904847c238f8854c4aceef35a6ac218165ec54a955"
    assert (full.project_owner, full.ccer_class.project) == ("PRJ-GS-0001", "CCER-0001")
    assert (full.id("ISS"), full.id("ISS-CCER")) == ("Y2025-ISS", "Y2025-ISS-CCER")


def test_the_scaled_year_shares_no_id_with_the_1x_year() -> None:
    """Smoke sizes x3 (360 accounts, 6,000 trades) against the smoke year."""
    first, scaled = plan_year(120, 2_000), plan_year(360, 6_000, tag="X3")
    assert (len(scaled.companies), len(scaled.trades)) == (360, 6_000)
    first_accounts = {c.account_id for c in first.companies} | {first.project_owner}
    scaled_accounts = {c.account_id for c in scaled.companies} | {scaled.project_owner}
    assert len(scaled_accounts) == 361
    assert not first_accounts & scaled_accounts
    assert not transaction_ids(first) & transaction_ids(scaled)
    assert first.ccer_class.project != scaled.ccer_class.project
    assert scaled.companies[0].account_id == "PWR-X3-JS-0001"
    assert scaled.trades[0][0] == "Y2025-X3-T000000"
    assert (scaled.project_owner, scaled.ccer_class.project) == ("PRJ-X3-GS-0001", "CCER-X3-0001")
    # the trades move the scaled year's own accounts only
    assert {s for _, s, b, _ in scaled.trades} | {b for _, s, b, _ in scaled.trades} <= (
        scaled_accounts
    )


def test_the_10x_years_ids_pass_the_registrys_validation() -> None:
    """The 10x year's accounts (37,000: power 22,000, so 5-digit numbers) with a tenth
    of its trades, to keep the test short (the ids of 1,000,000 trades run to
    Y2025-X10-T999999, checked directly)."""
    plan = plan_year(37_000, 100_000, tag="X10")
    accounts = [c.account_id for c in plan.companies] + [plan.project_owner]
    assert len(set(accounts)) == 37_001
    last_power = plan.companies[21_999].account_id  # 37,000 x 2,200 / 3,700 = 22,000
    assert last_power.startswith("PWR-X10-") and last_power.endswith("-22000")
    assert plan.companies[22_000].account_id.startswith("CEM-X10-")
    for account in accounts:
        check_account_id(account)
    for txn in transaction_ids(plan) | {plan.id("T999999")}:
        check_client_id(txn, "transaction id")
    check_project(plan.ccer_class.project)


@pytest.mark.parametrize("tag", ["x3", "X-3", "X123456789", " "])
def test_a_tag_that_would_make_bad_ids_is_refused(tag: str) -> None:
    with pytest.raises(ValueError, match="upper-case"):
        plan_year(120, 2_000, tag=tag)


def test_year_scale_option() -> None:
    assert sizes_of(parser().parse_args([])) == FULL  # the default run is unchanged
    assert FULL.year_scale == SMOKE.year_scale == 1
    ten = sizes_of(parser().parse_args(["--year-scale", "10"]))
    assert (ten.year_scale, ten.year_accounts, ten.year_trades) == (10, 3_700, 100_000)
    smoke = sizes_of(parser().parse_args(["--smoke", "--year-scale", "3"]))
    assert smoke.year_scale == 3 and smoke.year_accounts == SMOKE.year_accounts


@pytest.mark.parametrize("value", ["0", "-2", "2.5", "ten"])
def test_year_scale_refuses_what_is_not_a_whole_number_from_1(value: str) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["--year-scale", value])


def year_row(key: str, seconds: float) -> Row:
    return Row(key=key, title=key, value=seconds, unit="s", peak_mib={"server": 400.0})


def test_the_scaled_years_target_is_1_2_x_scale_times_the_1x_year() -> None:
    """1x year 35.2 s: x10 must take < 12 x 35.2 = 422.4 s; x3 < 3.6 x 35.2 = 126.72 s."""
    first = year_row("national_year", 35.2)
    target = scaled_year_target(10, first)
    assert target.threshold == 422.4
    assert target.text == "< 12x the 1x year's time (422.4 s)"
    assert target.basis == "12 x national_year.value 35.2"
    assert scaled_year_target(3, first).threshold == 126.72
    passed, failed = year_row("national_year_scaled", 400), year_row("national_year_scaled", 430)
    passed.targets, failed.targets = [target], [scaled_year_target(10, first)]
    passed.evaluate()
    failed.evaluate()
    assert (passed.targets[0].passed, failed.targets[0].passed) == (True, False)
    assert failed.targets[0].measured == 430


def test_without_a_1x_year_the_scaled_target_fails() -> None:
    for reference in (None, year_row("national_year", 0.0)):
        row = year_row("national_year_scaled", 1.0)
        row.targets = [scaled_year_target(10, reference)]
        row.evaluate()
        target = row.targets[0]
        assert target.threshold is None and target.passed is False
        assert "no threshold" in target.basis
        json.dumps(report.document([row]))  # threshold null, still JSON


def complete_doc(year_scale: int | None, scaled: Row | None) -> dict[str, Any]:
    """A run's JSON with a figure in every row but the scaled year's."""
    rows = []
    for key in report.SCENARIOS:
        if key == report.SCALED_YEAR:
            if scaled is not None:
                rows.append(scaled)
            continue
        row = Row(key=key, title=key, value=1.0, unit="x", peak_mib={"server": 1.0})
        if key in report.WITH_RAW:
            row.raw_value, row.ratio_to_raw = 2.0, 0.5
        rows.append(row)
    settings = {} if year_scale is None else {"year_scale": year_scale}
    doc = report.document(rows, machine={}, settings=settings, data={})
    return json.loads(json.dumps(doc, default=str))  # as read back from the file


def test_validate_asks_for_the_scaled_year_only_when_the_run_played_one() -> None:
    assert report.validate(complete_doc(None, None)) == []  # runs before --year-scale
    assert report.validate(complete_doc(1, None)) == []
    assert report.validate(complete_doc(3, None)) == ["no row national_year_scaled"]
    scaled = year_row(report.SCALED_YEAR, 100.0)
    scaled.targets = [scaled_year_target(3, year_row("national_year", 35.2))]
    scaled.evaluate()
    assert report.validate(complete_doc(3, scaled)) == [
        "national_year_scaled: no server memory growth"
    ]
    scaled.details["server_rss_growth_mib"] = 120.5
    assert report.validate(complete_doc(3, scaled)) == []


def test_the_scaled_row_follows_the_1x_year() -> None:
    keys = list(report.SCENARIOS)
    assert keys.index(report.SCALED_YEAR) == keys.index("national_year") + 1
    assert national.year_id("X10", "ISS") == "Y2025-X10-ISS"


def test_a_10x_year_operator_is_granted_its_companies_in_grants_of_10000() -> None:
    """37,000 companies: grants of 10,000, 10,000, 10,000 and 7,000 (the registry
    refuses more than 10,000 accounts in one grant), each id distinct, every company
    in exactly one; 10,000 or fewer stay one grant under the plain id."""
    from bench.access import grant_scopes

    companies = tuple(f"PWR-X10-SD-{n:05d}" for n in range(37_000))
    scopes = grant_scopes("bench-operator-X10-operator", companies)
    assert [len(accounts) for _, accounts in scopes] == [10_000, 10_000, 10_000, 7_000]
    assert [grant_id for grant_id, _ in scopes] == [
        "bench-operator-X10-operator",
        "bench-operator-X10-operator-2",
        "bench-operator-X10-operator-3",
        "bench-operator-X10-operator-4",
    ]
    assert tuple(a for _, accounts in scopes for a in accounts) == companies
    assert grant_scopes("g", companies[:10_000]) == [("g", companies[:10_000])]


def test_a_scaled_run_gives_its_servers_the_capacity_plans_cache() -> None:
    """docs/operations.md sets the cache at 10x to 80,000: 2 aggregates (the account and
    its obligation) per company of the year, rounded up to ten thousand; never below
    the default 20,000.

    - 10x: 2 x 37,000 = 74,000 -> 80,000;
    - 2x: 2 x 7,400 = 14,800 -> 20,000 (the default);
    - 100x: 2 x 370,000 = 740,000 -> 740,000.
    """
    assert scaled_cache_size(replace(FULL, year_scale=10)) == 80_000
    assert scaled_cache_size(replace(FULL, year_scale=2)) == 20_000
    assert scaled_cache_size(replace(FULL, year_scale=100)) == 740_000
