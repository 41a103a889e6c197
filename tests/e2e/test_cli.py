"""The `registry` command as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from registry.cli import demo
from registry.domain.rule_defaults import shipped_rules


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "registry.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_demo_plays_a_year_and_balances(tmp_path: Path) -> None:
    done = run("demo", "--data-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "REFUSED INSUFFICIENT_UNITS" in out
    assert "replayed=True" in out
    assert "MISMATCH" not in out
    assert "events projected in-process; registry check: OK" in out
    assert "CEA/2025                  62,700,000        62,700,000  OK" in out
    assert (tmp_path / "demo.sqlite").exists()
    # the demo year runs on the shipped 2025 rules: each figure they give, computed here
    # from the same rules (the power relief caps Tuoketuo's obligation, and the CCER cap
    # is 5 % of that obligation, not of its verified emissions)
    power = shipped_rules(demo.YEAR)["POWER"].rules
    allocated = {c[0]: c[-1] for c in demo.COMPANIES}
    assert f"  POWER: {demo.describe(power)}" in out
    assert "CCER up to 5 % of the obligation" in out and "1.5 x net sales + 10,000 t" in out
    for account_id, verified in demo.VERIFIED.items():
        alloc = allocated[account_id]
        obligation = power.obligation(verified, alloc)
        assert (
            f"{account_id} {verified:,} t, allocated {alloc:,} t -> obligation "
            f"{obligation:,} t, CCER cap {power.ccer_cap(verified, alloc):,} t, gap "
            f"{power.gap(verified, alloc):,} t, may borrow 0 t, carry-over limit "
            f"{power.carry_over_limit(None):,} t"
        ) in out
    # Tuoketuo, by hand: min(31,000,000, 24,500,000 + 20 % x 31,000,000) = 30,700,000;
    # CCER cap 5 % x 30,700,000 = 1,535,000 (5 % of verified would be 1,550,000)
    assert power.obligation(31_000_000, 24_500_000) == 30_700_000
    assert power.ccer_cap(31_000_000, 24_500_000) == 1_535_000

    again = run("demo", "--data-dir", str(tmp_path))
    assert again.returncode == 0 and again.stdout == out, "the demo starts afresh each run"

    supply = run("supply", env={"REGISTRY_DATABASE_URL": f"sqlite:///{tmp_path}/demo.sqlite"})
    assert supply.returncode == 0, supply.stderr
    assert "CCER/2024/CCER-2024-0117" in supply.stdout and "MISMATCH" not in supply.stdout


def test_bad_configuration_is_reported_not_traced(tmp_path: Path) -> None:
    done = run("supply", env={"REGISTRY_DATABASE_URL": "mysql://nowhere/db"})
    assert done.returncode == 2
    assert "INVALID_CONFIGURATION" in done.stderr and "Traceback" not in done.stderr
