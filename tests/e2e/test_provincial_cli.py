"""A provincial regulator with the CLI, against a real server process: `registry access
grant ... regulator --province` by two administrators, then its verified emissions file
of its province's companies goes in, another province's is refused and named, and a
national act (closing the year) is refused."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.test_server_process import admin_token, cli, serving

ACCOUNTS = (
    "account_id,account_type,name,credit_code,sector,province\n"
    "PWR-SD-0001,COMPLIANCE,Jinan Power,91370000163081422B,POWER,Shandong\n"
    "PWR-GD-0001,COMPLIANCE,Guangzhou Power,91440000190321456C,POWER,Guangdong\n"
)
HEADER = "account_id,compliance_year,verified_emissions,reason\n"


def test_a_provincial_regulator_with_the_cli(tmp_path: Path) -> None:
    (tmp_path / "accounts.csv").write_text(ACCOUNTS, encoding="utf-8")
    (tmp_path / "sd.csv").write_text(HEADER + "PWR-SD-0001,2025,900,report SD-1\n")
    (tmp_path / "both.csv").write_text(
        HEADER + "PWR-SD-0001,2025,900,report SD-1\nPWR-GD-0001,2025,800,report GD-1\n"
    )
    data = tmp_path / "data"
    data.mkdir()
    with serving(data) as server:
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
        assert "regulator in Shandong" in granted.stdout
        listed = cli(server, "access", "list", "--token", admin_token(data))
        assert "sd-zhang: regulator in Shandong" in listed.stdout, listed.stdout
        issued = cli(
            server,
            *("access", "token", "issue", "sd-eeb", "zhang", "--reason", "department"),
            *("--token", admin_token(data)),
        )
        zhang = issued.stdout.split()[-1]

        mine = cli(server, "import", "emissions", str(tmp_path / "sd.csv"), "--token", zhang)
        assert mine.returncode == 0 and "RECORDED 1" in mine.stdout, mine.stdout + mine.stderr
        both = cli(server, "import", "emissions", str(tmp_path / "both.csv"), "--token", zhang)
        assert both.returncode == 8, both.stdout
        assert "ACCOUNT_NOT_IN_PROVINCE" in both.stderr and "PWR-GD-0001" in both.stderr
        close = cli(server, "close-year", "2025", "--reason", "deadline", "--token", zhang)
        assert close.returncode == 8 and "NATIONAL_ACT" in close.stderr, close.stderr
        assert "Traceback" not in both.stderr + close.stderr
