"""The `registry` command as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


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

    again = run("demo", "--data-dir", str(tmp_path))
    assert again.returncode == 0 and again.stdout == out, "the demo starts afresh each run"

    supply = run("supply", env={"REGISTRY_DATABASE_URL": f"sqlite:///{tmp_path}/demo.sqlite"})
    assert supply.returncode == 0, supply.stderr
    assert "CCER/2024/CCER-2024-0117" in supply.stdout and "MISMATCH" not in supply.stdout


def test_bad_configuration_is_reported_not_traced(tmp_path: Path) -> None:
    done = run("supply", env={"REGISTRY_DATABASE_URL": "mysql://nowhere/db"})
    assert done.returncode == 2
    assert "INVALID_CONFIGURATION" in done.stderr and "Traceback" not in done.stderr
