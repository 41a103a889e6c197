"""Four eyes on (``REGISTRY_FOUR_EYES=required``), with the CLI against a real server process:
`registry rules set-shipped YEAR` says what to do instead, `--propose` proposes the
shipped rules (one RULE_CHANGE per sector of the table) and a second regulator's
approvals adopt them; a provincial regulator's rejection is listed under its province."""

from __future__ import annotations

import json
from pathlib import Path

from registry.client import RegistryClient
from registry.domain.rule_defaults import shipped_rules
from registry.v1 import administration_service_pb2 as admin_pb
from services.convert import rules_from_proto
from tests.e2e.test_server_process import add_principal, admin_token, cli, first_token, serving

ACCOUNTS = (
    "account_id,account_type,name,credit_code,sector,province\n"
    "PWR-SD-0001,COMPLIANCE,Jinan Power,91370000163081422B,POWER,Shandong\n"
)


def test_shipped_rules_are_proposed_and_approved_under_four_eyes(tmp_path: Path) -> None:
    shipped = shipped_rules(2025)
    ids = [f"RULES-2025-{'ALL' if key == '*' else key}" for key in shipped]
    with serving(tmp_path, REGISTRY_FOUR_EYES="required") as server:
        wang = add_principal(server, "mee", "regulator-wang", "regulator")

        direct = cli(server, "rules", "set-shipped", "2025", "--reason", "2025 plan")
        assert direct.returncode == 6, direct.stdout + direct.stderr
        assert "PROPOSAL_REQUIRED" in direct.stderr and "nothing was changed" in direct.stderr
        assert "registry rules set-shipped 2025 --reason '2025 plan' --propose" in direct.stderr
        assert "Traceback" not in direct.stderr
        assert "0 change(s)" in cli(server, "rules", "show", "2025").stdout

        proposed = cli(server, "rules", "set-shipped", "2025", "--reason", "2025 plan", "--propose")
        assert proposed.returncode == 0, proposed.stderr
        for key, proposal_id in zip(shipped, ids, strict=True):
            assert f"proposed mee:{proposal_id}: RULE_CHANGE 2025 {key}\n" in proposed.stdout
            assert f"registry proposals approve mee {proposal_id}\n" in proposed.stdout
        assert "0 change(s)" in cli(server, "rules", "show", "2025").stdout  # not yet
        again = cli(server, "rules", "set-shipped", "2025", "--reason", "2025 plan", "--propose")
        assert again.returncode == 0 and again.stdout.count("already proposed") == len(ids)

        for proposal_id in ids:
            own = cli(server, "proposals", "approve", "mee", proposal_id)
            assert own.returncode == 6 and "SELF_APPROVAL" in own.stderr, own.stderr
            done = cli(server, "proposals", "approve", "mee", proposal_id, "--token", wang)
            assert done.returncode == 0 and " EXECUTED: rules 2025 " in done.stdout, done.stdout
        token, _, _ = first_token(tmp_path)
        with RegistryClient(server.address, token, attempts=1) as client:
            year = client.call(
                client.administration.GetComplianceRules,
                admin_pb.GetComplianceRulesRequest(compliance_year=2025),
            )
        assert {line.sector: rules_from_proto(line.rules) for line in year.rules} == {
            key: s.rules for key, s in shipped.items()
        }

        custom = cli(
            server, "rules", "set-shipped", "2024", "--reason", "2024 plan", "--propose", "P24"
        )
        assert (
            custom.returncode == 0 and "proposed mee:P24-ALL: RULE_CHANGE 2024 *" in custom.stdout
        )
        none = cli(server, "rules", "set-shipped", "2031", "--reason", "x", "--propose")
        assert none.returncode == 2 and "ships no rules for 2031" in none.stderr


def test_a_provincial_rejection_is_listed_under_its_province(tmp_path: Path) -> None:
    """The national regulator proposes PWR-SD-0001's verified emissions; Shandong's
    department rejects them: `proposals list --province Shandong` finds the proposal
    only through the rejection, and shows who rejected it in which province."""
    (tmp_path / "accounts.csv").write_text(ACCOUNTS, encoding="utf-8")
    data = tmp_path / "data"
    data.mkdir()
    with serving(data, REGISTRY_FOUR_EYES="required") as server:
        opened = cli(server, "import", "accounts", str(tmp_path / "accounts.csv"))
        assert opened.returncode == 0, opened.stdout + opened.stderr
        for admin in ("admin", "admin-2"):
            granted = cli(
                server,
                *("access", "grant", "sd-zhang", "sd-eeb", "zhang", "regulator"),
                *("--province", "Shandong", "--reason", "Shandong department"),
                *("--token", admin_token(data, admin)),
            )
            assert granted.returncode == 0, granted.stderr
        issued = cli(
            server,
            *("access", "token", "issue", "sd-eeb", "zhang", "--reason", "department"),
            *("--token", admin_token(data)),
        )
        zhang = issued.stdout.split()[-1]
        table = {
            "reason": "report SD-1",
            "rows": [
                {"account_id": "PWR-SD-0001", "compliance_year": 2025, "verified_emissions": 900}
            ],
        }
        proposed = cli(
            server,
            *("propose", "VERIFIED_EMISSIONS", "P-VE", "--payload", json.dumps(table)),
            *("--reason", "2025"),
        )
        assert proposed.returncode == 0, proposed.stderr
        assert "(no proposals)" in cli(server, "proposals", "list", "--province", "Shandong").stdout
        rejected = cli(
            server,
            *("proposals", "reject", "mee", "P-VE", "--reason", "wrong figure"),
            *("--token", zhang),
        )
        assert rejected.returncode == 0 and "REJECTED: wrong figure" in rejected.stdout
        listed = cli(server, "proposals", "list", "--province", "shandong")
        assert listed.returncode == 0, listed.stderr
        [line] = [line for line in listed.stdout.splitlines() if line.startswith("mee:P-VE")]
        assert "REJECTED" in line and "sd-eeb/zhang (Shandong)" in line, listed.stdout
