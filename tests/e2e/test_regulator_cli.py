"""The regulator's `registry` commands against a real server process: rules, the
compliance report (table and CSV) and closing the year."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from registry.client import RegistryClient
from registry.v1 import administration_service_pb2 as admin_pb
from tests.e2e.market import caught_up, emissions, record_emissions, seed_market
from tests.e2e.test_server_process import add_principal, cli, first_token, serving


def test_a_regulator_sets_rules_reports_and_closes_a_year(tmp_path: Path) -> None:
    with serving(tmp_path) as server:
        token, _, _ = first_token(tmp_path)
        with RegistryClient(server.address, token, attempts=1) as client:
            seed_market(client)
            record_emissions(
                client, emissions("PWR-SD-0001", 120_000), emissions("PWR-SD-0002", 40_000)
            )
            caught_up(client)

        bad = cli(
            server, "rules", "set", "2025", "POWER", "--ccer-cap-bps", "20000", "--reason", "typo"
        )
        assert bad.returncode == 5 and "INVALID_RULE" in bad.stderr
        assert "rules.ccer_cap_bps" in bad.stderr and "Traceback" not in bad.stderr
        done = cli(
            server,
            "rules",
            "set",
            "2025",
            "POWER",
            "--obligation-cap-bps",
            "2000",
            "--reason",
            "first cycles: relief for power",
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("changed\ncompliance year 2025: open, 2 change(s)")
        shown = cli(server, "rules", "show", "2025")
        assert "POWER" in shown.stdout and "alloc+20%" in shown.stdout

        report = cli(server, "report", "compliance", "2025", "--csv")
        assert report.returncode == 0, report.stderr
        rows = list(csv.DictReader(io.StringIO(report.stdout)))
        # PWR-SD-0001 got 100,000, owes min(120,000, 100,000 + 24,000); PWR-SD-0002 owes 40,000
        assert [(r["state"], r["accounts"], r["obligation"]) for r in rows] == [
            ("OPEN", "2", str(120_000 + 40_000))
        ]
        as_json = json.loads(cli(server, "report", "compliance", "2025", "--output", "json").stdout)
        assert [{k: str(v) for k, v in r.items()} for r in as_json] == rows
        assert isinstance(as_json[0]["obligation"], int)
        table = cli(server, "report", "compliance", "2025").stdout.splitlines()
        assert table[0] == "compliance year 2025 (open)" and table[1].split()[:3] == [
            "sector",
            "province",
            "state",
        ]
        tonnes = ["accounts", "verified_emissions", "obligation", "surrendered_cea"]
        tonnes += ["surrendered_ccer", "shortfall"]
        numbers = [int(w) for w in table[2].replace(",", "").split()[-6:]]
        assert numbers == [as_json[0][name] for name in tonnes], table
        assert table[-1].startswith("all")  # the totals: the table's alone

        closed = cli(
            server, "close-year", "2025", "--reason", "deadline passed", "--correction-days", "20"
        )
        assert closed.returncode == 0, closed.stderr
        assert "2 obligations, 2 short by 160,000 t" in closed.stdout
        assert "ordered to correct by 20" in closed.stdout
        # Decree 775, Art. 24: PWR-SD-0002 owes 40,000 and surrendered nothing:
        # 5 x 80.00 CNY/t x 40,000 t = 16,000,000.00 CNY
        fined = cli(
            server,
            *("enforce", "fine", "PWR-SD-0002", "2025", "--multiple", "5", "--price", "80.00"),
            *("--reason", "order 2026-17"),
        )
        assert fined.returncode == 0, fined.stderr
        assert "fined 16000000.00 CNY (5 x 80.00 CNY/t x 40,000 t)" in fined.stdout
        bad = cli(
            server,
            *("enforce", "fine", "PWR-SD-0002", "2025", "--multiple", "12", "--price", "80"),
            *("--reason", "x"),
        )
        assert bad.returncode == 5 and "INVALID_FINE_MULTIPLE" in bad.stderr
        early = cli(server, "enforce", "deductions", "2025", "--reason", "deadline passed")
        assert early.returncode == 0, early.stderr
        assert "0 shortfalls (0 t) carried into 2026's allocation; 2 still inside" in early.stdout
        status = cli(server, "compliance-status", "PWR-SD-0002", "2025")
        assert "ORDERED_TO_CORRECT (correction deadline 20" in status.stdout, status.stdout
        assert "16000000.00 CNY" in status.stdout
        again = cli(server, "close-year", "2025", "--reason", "deadline passed")
        assert "was already closed" in again.stdout
        table = cli(server, "report", "compliance", "2025")
        assert "SHORTFALL" in table.stdout and table.stdout.splitlines()[-1].split()[1:3] == [
            "2",
            "160,000",
        ]


def test_a_second_regulator_approves_a_proposal_from_the_command_line(tmp_path: Path) -> None:
    with serving(tmp_path) as server:
        token, _, _ = first_token(tmp_path)
        # the second regulator exists before the proposal: one granted after it could
        # not approve it (SEPARATION_OF_DUTIES)
        second = add_principal(server, "mee", "regulator-wang", "regulator")
        with RegistryClient(server.address, token, attempts=1) as client:
            client.call(
                client.administration.ProposeAction,
                admin_pb.ProposeActionRequest(
                    proposal_id="P-HALT",
                    kind=admin_pb.PROPOSAL_KIND_MARKET_HALT,
                    payload_json=json.dumps({"reason": "inquiry"}),
                    reason="urgent",
                ),
            )
        garbled = cli(
            server, "propose", "MARKET_HALT", "P-BAD", "--payload", "{inquiry", "--reason", "urgent"
        )
        assert garbled.returncode == 5 and "INVALID_PAYLOAD" in garbled.stderr
        missing = cli(
            server,
            "propose",
            "MARKET_HALT",
            "P-BAD",
            "--payload",
            f"@{tmp_path / 'nowhere.json'}",
            "--reason",
            "urgent",
        )
        assert missing.returncode == 2 and "cannot read" in missing.stderr
        resumption = cli(
            server,
            "propose",
            "MARKET_RESUMPTION",
            "P-RESUME",
            "--payload",
            '{"reason": "inquiry closed"}',
            "--reason",
            "later",
        )
        assert resumption.returncode == 0, resumption.stderr
        assert resumption.stdout.startswith("proposed mee:P-RESUME MARKET_RESUMPTION")
        listed = cli(server, "proposals", "list", "--status", "PENDING")
        assert listed.returncode == 0, listed.stderr
        assert "mee:P-HALT" in listed.stdout and "MARKET_HALT" in listed.stdout
        own = cli(server, "proposals", "approve", "mee", "P-HALT")
        assert own.returncode == 6 and "SELF_APPROVAL_FORBIDDEN" in own.stderr
        done = cli(server, "proposals", "approve", "mee", "P-HALT", "--token", second)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "mee:P-HALT EXECUTED: market halted"
        pending = cli(server, "proposals", "list", "--status", "PENDING").stdout
        assert "mee:P-RESUME" in pending and "mee:P-HALT" not in pending
        expired = cli(server, "proposals", "expire")
        assert expired.returncode == 0 and expired.stdout.strip() == "0 proposal(s) expired"
