"""The README's compliance year walkthrough, run command by command against a real
server with four eyes required, so the documented year keeps working; the closing
report is checked against figures computed here from the example files."""

from __future__ import annotations

import csv
import io
import os
import re
import shlex
import subprocess
from collections import Counter
from pathlib import Path

from registry.domain.allocation import (
    ILLUSTRATIVE_BENCHMARKS_2025,
    OutputUse,
    account_targets,
    read_benchmark_table,
    read_output_data,
)
from tests.e2e.test_server_process import (
    BIN,
    environment,
    serving,
)

ROOT = Path(__file__).resolve().parents[2]
EXPORT = re.compile(r"^export (\w+)=\$\((.+)\)$")
EXAMPLES = ROOT / "docs" / "examples"


def walkthrough() -> list[tuple[str, str]]:
    """(command, the reason it is refused with, or "") for each command of the README's
    block."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- walkthrough -->\n```\n(.+?)\n```", text, re.S)
    assert block, "the README lost its walkthrough block"
    commands = []
    for line in block.group(1).splitlines():
        command, _, comment = line.partition("  # ")
        if command.strip() and not command.startswith("#"):
            commands.append((command.strip(), comment.removeprefix("refused: ")
                             if comment.startswith("refused") else ""))
    return commands


def test_the_readme_walkthrough_runs_a_compliance_year(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "docs").mkdir(parents=True)
    (work / "registry" / "data").mkdir(parents=True)
    (work / "docs" / "examples").symlink_to(EXAMPLES)
    (work / "registry" / "data" / "allocation").symlink_to(
        ROOT / "registry" / "data" / "allocation")
    data = tmp_path / "data"
    data.mkdir()
    outputs: dict[str, str] = {}
    with serving(data, REGISTRY_FOUR_EYES="") as server:   # the default: required
        port = int(server.address.rsplit(":", 1)[1])
        env = environment(data, port)
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        for command, refusal in walkthrough():
            exported = EXPORT.match(command)   # `export X=$(...)`: X for what follows
            script = exported.group(2) if exported else command
            ran = subprocess.run(["bash", "-c", script], cwd=work, env=env,
                                 capture_output=True, text=True, timeout=120, check=False)
            assert ran.returncode == (2 if refusal else 0), (
                f"{command}\n{ran.stdout}\n{ran.stderr}")
            assert refusal in ran.stderr and "Traceback" not in ran.stderr, ran.stderr
            if exported:
                env[exported.group(1)] = ran.stdout.strip().splitlines()[-1]
            outputs[command] = ran.stdout
    check_figures(outputs)


def check_figures(outputs: dict[str, str]) -> None:
    """The closing report and the carried debt against the example files' own sums."""
    table = read_benchmark_table(ILLUSTRATIVE_BENCHMARKS_2025)
    final = {account: target for account, (_, _, target) in account_targets(
        read_output_data(EXAMPLES / "output-2025.csv", table, OutputUse.TRUE_UP), table,
        OutputUse.TRUE_UP).items()}
    with (EXAMPLES / "verified-2025.csv").open(encoding="utf-8") as lines:
        emissions = {r["account_id"]: int(r["verified_emissions"])
                     for r in csv.DictReader(lines)}
    surrendered = {}
    for command in outputs:
        words = shlex.split(command)
        if words[:2] == ["registry", "surrender"] and "S-2025-AH1" not in words \
                and "--token" in words:   # the operator's, not the refused regulator's
            surrendered[words[2]] = int(words[3])
    shortfall = {a: max(emissions[a] - min(surrendered[a], final[a]), 0) for a in final}
    report = next(text for command, text in outputs.items() if command.endswith("--csv"))
    rows = list(csv.DictReader(io.StringIO(report)))
    assert sum(int(r["shortfall"]) for r in rows) == sum(shortfall.values()) > 0
    assert sum(int(r["verified_emissions"]) for r in rows) == sum(emissions.values())
    assert sum(int(r["surrendered_cea"]) for r in rows) == sum(surrendered.values())
    by_state: Counter[str] = Counter()
    for r in rows:   # one row per sector, province and state
        by_state[r["state"]] += int(r["accounts"])
    assert by_state == {"COMPLIANT": sum(not s for s in shortfall.values()),
                        "SHORTFALL": sum(bool(s) for s in shortfall.values())}
    debt = next(text for command, text in outputs.items() if "compliance-status" in command)
    assert re.search(rf"debt carried in\s+{shortfall['PWR-JS-0002']:,} t", debt), debt
