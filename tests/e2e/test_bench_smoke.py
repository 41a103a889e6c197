"""`registry bench --smoke` runs every scenario of the benchmark suite end to end.

It checks that the suite ran (every scenario produced a figure and the JSON is
complete), not that any performance target was met: targets are for the full run on a
known machine, and CI machines vary.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.suite import report
from tests.support import fresh_pg_database

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TIME_LIMIT = 300
"""Seconds; the smoke run takes about one minute on 2 cores."""


def test_smoke_run_produces_every_figure(tmp_path: Path) -> None:
    """With a scaled year (x2), so the smoke run has every row there is."""
    output = tmp_path / "bench.json"
    with fresh_pg_database() as url:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "registry.cli",
                "bench",
                "--smoke",
                "--year-scale",
                "2",
                "--database-url",
                url,
                "--json",
                str(output),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=TIME_LIMIT,
        )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    doc = json.loads(output.read_text())
    assert report.validate(doc) == []
    assert doc["mode"] == "smoke"
    rows = {row["key"]: row for row in doc["rows"]}
    assert list(rows) == list(report.SCENARIOS) == report.required(doc)
    for key in report.WITH_RAW:
        assert rows[key]["raw_value"] > 0 and rows[key]["ratio_to_raw"] > 0
    for key in ("settle_single_concurrent", "get_balances_concurrent"):
        assert rows[key]["details"]["client_processes"] > 1, "callers share one process"
        assert rows[key]["p99_ms"] >= rows[key]["p50_ms"] > 0
    for key in ("settle_single_open_loop", "get_balances_open_loop"):
        assert rows[key]["details"]["offered_per_second"] > 0
        assert rows[key]["count"] > 0 and rows[key]["p99_ms"] >= rows[key]["p50_ms"] > 0
    year = rows["national_year"]["details"]
    if year["complete"]:  # else the read models did not catch up in time (reported)
        assert year["phases"]["conservation check"]["balanced"]
    scaled = rows["national_year_scaled"]
    assert scaled["details"]["accounts"] == 2 * year["accounts"]
    assert scaled["details"]["trades"] == 2 * year["trades"]
    if scaled["details"]["complete"]:
        assert scaled["details"]["phases"]["conservation check"]["balanced"]
    [target] = scaled["targets"]  # < 2.4x the 1x year of this run
    assert target["threshold"] == round(2.4 * rows["national_year"]["value"], 2)
    assert scaled["details"]["server_rss_peak_mib"] >= scaled["details"]["server_rss_before_mib"]
    assert rows["server_memory"]["peak_mib"]["server"] > 0
    assert "| SettleTrades, batches of 1,000" in run.stdout


def test_call_count_counts_the_servers_calls_per_request() -> None:
    """`bench.call_count` (the load-independent comparison of two commits) runs end to
    end and counts work in the server: a settlement and a read each take hundreds of
    Python calls there (about 1,600 and 1,400 at the time of writing)."""
    with fresh_pg_database() as url:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.call_count",
                "--database-url",
                url,
                "--callers",
                "2",
                "--trades",
                "20",
                "--calls",
                "5",
                "--rounds",
                "1",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=TIME_LIMIT,
        )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    figures = {}
    for line in run.stdout.splitlines():
        what, _, rest = line.partition(": ")[2].partition(": ")
        figures[what] = int(rest.split(" calls")[0].replace(",", ""))
    assert set(figures) == {"single trade", "GetBalances"}, run.stdout
    assert 300 < figures["single trade"] < 20_000, figures
    assert 300 < figures["GetBalances"] < 20_000, figures
