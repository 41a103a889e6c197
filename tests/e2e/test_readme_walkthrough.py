"""The README's command blocks, run as written against a fresh embedded server with four
eyes required, so what a newcomer copies keeps working: the compliance year walkthrough
(its closing report checked against figures computed here from the example files) and
"How an exchange settles" (the administrators' two-step exchange grant, the exchange's
token, and the Python client example). A block is found by the HTML comment marker
(``<!-- walkthrough -->``, ``<!-- exchange -->``, ...) on the line before its fence."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

from registry.cli.benchmark_tables import (
    ILLUSTRATIVE_BENCHMARKS_2025,
    read_benchmark_table,
    read_output_data,
)
from registry.domain.allocation import (
    OutputUse,
    account_targets,
)
from registry.domain.rule_defaults import shipped_rules
from tests.e2e.test_server_process import (
    BIN,
    environment,
    serving,
)

ROOT = Path(__file__).resolve().parents[2]
EXPORT = re.compile(r"^export (\w+)=\$\((.+)\)$")
EXAMPLES = ROOT / "docs" / "examples"


def readme_block(marker: str) -> str:
    """The text of the README's fenced block that follows ``<!-- marker -->``."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(rf"<!-- {re.escape(marker)} -->\n```\w*\n(.+?)\n```", text, re.DOTALL)
    assert block, f"the README lost its {marker} block"
    return block.group(1)


REFUSAL = re.compile(r"^refused \(exit (\d+)\): (\S+)")
"""A README command's comment ``refused (exit 6): INSUFFICIENT_UNITS``."""


def _refusal(comment: str) -> tuple[str, int]:
    """The reason and exit status a README comment says the command is refused with
    (``"", 0``: it succeeds)."""
    found = REFUSAL.match(comment)
    assert found or not comment.startswith("refused"), f"say the exit status: {comment}"
    return (found.group(2), int(found.group(1))) if found else ("", 0)


def commands(marker: str) -> list[tuple[str, str, int]]:
    """(command, the reason it is refused with or "", its exit status) for each command
    of the README's block."""
    commands = []
    for line in readme_block(marker).splitlines():
        command, _, comment = line.partition("  # ")
        if command.strip() and not command.startswith("#"):
            commands.append((command.strip(), *_refusal(comment)))
    return commands


def run_block(marker: str, work: Path, env: dict[str, str]) -> dict[str, str]:
    """Run the block's commands one by one in ``work`` as a reader would in one shell:
    each must succeed (or be refused with the exit status and reason its comment names), and
    ``export X=$(...)`` sets X, to the command's last line, for those that follow.
    Returns each command's output; ``env`` keeps the exports."""
    outputs: dict[str, str] = {}
    for command, refusal, status in commands(marker):
        exported = EXPORT.match(command)  # `export X=$(...)`: X for what follows
        script = exported.group(2) if exported else command
        ran = subprocess.run(
            ["bash", "-c", script],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert ran.returncode == status, f"{command}\n{ran.stdout}\n{ran.stderr}"
        assert refusal in ran.stderr and "Traceback" not in ran.stderr, ran.stderr
        if exported:
            env[exported.group(1)] = ran.stdout.strip().splitlines()[-1]
        outputs[command] = ran.stdout
    return outputs


def cli_environment(data: Path, server_address: str) -> dict[str, str]:
    """What a reader's shell has: the server's data directory and address, the
    installed ``registry`` on PATH, and no REGISTRY_TOKEN."""
    env = environment(data, int(server_address.rsplit(":", 1)[1]))
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_the_readme_walkthrough_runs_a_compliance_year(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "docs").mkdir(parents=True)
    (work / "registry" / "data").mkdir(parents=True)
    (work / "docs" / "examples").symlink_to(EXAMPLES)
    (work / "registry" / "data" / "allocation").symlink_to(
        ROOT / "registry" / "data" / "allocation"
    )
    data = tmp_path / "data"
    data.mkdir()
    with serving(data, REGISTRY_FOUR_EYES="") as server:  # the default: required
        outputs = run_block("walkthrough", work, cli_environment(data, server.address))
    check_figures(outputs)


def test_the_readme_exchange_example_runs_on_a_fresh_server(tmp_path: Path) -> None:
    """ "How an exchange settles" as written: before issue 16 its `registry access`
    commands carried no administrator's token (ROLE_NOT_GRANTED on a fresh server) and
    made the exchange grant with one administrator, which only proposes it."""
    work = tmp_path / "work"
    work.mkdir()
    data = tmp_path / "data"
    data.mkdir()
    with serving(data, REGISTRY_FOUR_EYES="") as server:
        env = cli_environment(data, server.address)
        outputs = run_block("exchange", work, env)
        token = env["REGISTRY_TOKEN"]
        assert token not in (
            line.split(" ")[0] for line in (data / "credentials").read_text().splitlines()
        )
        digest = next(
            out for command, out in outputs.items() if command == "registry ledger-digest"
        )
        assert digest.strip(), "the exchange's ledger-digest printed nothing"
        client = tmp_path / "settle.py"
        client.write_text(readme_block("exchange-client"), encoding="utf-8")
        ran = subprocess.run(
            [sys.executable, str(client)],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.split() == [
        "SSE-20260615-000001",
        "TRADE_STATUS_REFUSED",
        "UNKNOWN_ACCOUNT",
    ], ran.stdout + ran.stderr


def test_the_walkthrough_adopts_the_shipped_2025_rules() -> None:
    """Each RULE_CHANGE payload of the walkthrough is the shipped 2025 rules of its key
    (what `registry rules set-shipped 2025` sets), and every key is proposed."""
    proposed = {}
    for command, _, _ in commands("walkthrough"):
        words = shlex.split(command)
        if words[:3] == ["registry", "propose", "RULE_CHANGE"]:
            path = words[words.index("--payload") + 1].removeprefix("@")
            payload = json.loads((ROOT / path).read_text(encoding="utf-8"))
            assert payload["year"] == 2025
            proposed[payload["sector"]] = payload["rules"]
    assert proposed == {key: s.rules.as_dict() for key, s in shipped_rules(2025).items()}


def check_figures(outputs: dict[str, str]) -> None:
    """The closing report and the enforcement of a shortfall (its notice and fine)
    against the example files' own sums, each obligation computed here by the shipped
    2025 rules (power: verified emissions capped at allocation + 20 % of them), and the
    README's prose against the same figures."""
    table = read_benchmark_table(ILLUSTRATIVE_BENCHMARKS_2025)
    final = {
        account: target
        for account, (_, _, target) in account_targets(
            read_output_data(EXAMPLES / "output-2025.csv", table, OutputUse.TRUE_UP),
            table,
            OutputUse.TRUE_UP,
        ).items()
    }
    with (EXAMPLES / "verified-2025.csv").open(encoding="utf-8") as lines:
        emissions = {r["account_id"]: int(r["verified_emissions"]) for r in csv.DictReader(lines)}
    surrendered = {}
    for command in outputs:
        words = shlex.split(command)
        if (
            words[:2] == ["registry", "surrender"]
            and "S-2025-AH1" not in words
            and "--token" in words
        ):  # the operator's, not the refused regulator's
            surrendered[words[2]] = int(words[3])
    with (EXAMPLES / "accounts-2025.csv").open(encoding="utf-8") as lines:
        sector = {r["account_id"]: r["sector"] for r in csv.DictReader(lines)}
    shipped = {key: s.rules for key, s in shipped_rules(2025).items()}

    def obligation(account: str) -> int:
        cap = shipped.get(sector[account], shipped["*"]).obligation_cap_bps
        verified = emissions[account]
        return verified if cap is None else min(verified, final[account] + verified * cap // 10_000)

    shortfall = {a: max(obligation(a) - surrendered[a], 0) for a in final}
    report = next(text for command, text in outputs.items() if command.endswith("--csv"))
    rows = list(csv.DictReader(io.StringIO(report)))
    assert sum(int(r["shortfall"]) for r in rows) == sum(shortfall.values()) > 0
    assert sum(int(r["verified_emissions"]) for r in rows) == sum(emissions.values())
    assert sum(int(r["surrendered_cea"]) for r in rows) == sum(surrendered.values())
    by_state: Counter[str] = Counter()
    for r in rows:  # one row per sector, province and state
        by_state[r["state"]] += int(r["accounts"])
    assert by_state == {
        "COMPLIANT": sum(not s for s in shortfall.values()),
        "SHORTFALL": sum(bool(s) for s in shortfall.values()),
    }
    # Decree 775, Art. 24: ordered to correct (nothing carried yet), and the fine
    # 5 x 80.00 CNY/t x the tonnes short
    status = next(text for command, text in outputs.items() if "compliance-status" in command)
    short = shortfall["PWR-JS-0002"]
    assert re.search(r"enforcement\s+ORDERED_TO_CORRECT \(correction deadline \d{4}-", status)
    assert re.search(rf"still short\s+{short:,} t", status), status
    assert f"fine                {5 * 80 * short}.00 CNY (5 x 80.00 CNY/t x {short:,} t)" in status
    # the README's prose says the same
    words = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
    compliant = sum(not s for s in shortfall.values())
    prose = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert (
        f"The year closes with {words[compliant]} companies compliant and "
        f"{words[len(final) - compliant]} short by {sum(shortfall.values()):,} t in all."
    ) in prose
    assert f"the {short:,} t still short" in prose
    assert f"(5 x 80.00 x {short:,} = {5 * 80 * short:,}.00 CNY;" in prose
