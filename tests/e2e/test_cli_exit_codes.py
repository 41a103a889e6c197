"""Every exit status of the ``registry`` command (README, "Exit status"), each from a
real CLI process against a real server process, and ``--output json|csv`` of the table
commands, which must carry the table's own rows.

Covered elsewhere, through a process too: 1 (``verify``: tests/e2e/test_ledger_cli.py;
``check``: tests/integration/test_readmodels.py), 141 (tests/e2e/test_cli_pipes.py);
70, a defect, in-process: tests/unit/test_cli_exits.py."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from registry.client import RegistryClient
from tests.e2e.market import ALLOCATIONS, caught_up, seed_market
from tests.e2e.test_server_process import cli, first_token, free_port, serving

HALT = ("propose", "MARKET_HALT", "P-HALT", "--reason", "inquiry", "--payload")


def table_rows(text: str) -> list[list[str]]:
    """An aligned table's rows (after its header) as words; numbers without separators."""
    return [[w.replace(",", "") for w in line.split()] for line in text.splitlines()[1:]]


def test_each_class_of_outcome_exits_with_its_own_status(tmp_path: Path) -> None:
    with serving(tmp_path) as server:
        token, _, _ = first_token(tmp_path)
        with RegistryClient(server.address, token, attempts=1) as client:
            seed_market(client)
            caught_up(client)
        account = next(iter(ALLOCATIONS))

        def status(*args: str, **env: str) -> int:
            done = cli(server, *args, **env)
            assert "Traceback" not in done.stderr, done.stderr
            return done.returncode

        assert status("balances", account) == 0
        assert status("balances") == 2  # usage: argparse
        assert status("balances", account, "--output", "xml") == 2
        assert (
            status("balances", account, "--token", "", REGISTRY_DATA_DIR=str(tmp_path / "x")) == 2
        )
        assert status("balances", account, "--server", f"127.0.0.1:{free_port()}") == 3
        assert status("supply", REGISTRY_DATABASE_URL="postgresql://root@127.0.0.1:1/none") == 3
        assert status("balances", "NOPE-0001") == 4  # NOT_FOUND UNKNOWN_ACCOUNT
        assert (
            status("rules", "set", "2025", "POWER", "--ccer-cap-bps", "20000", "--reason", "x") == 5
        )
        assert status(*HALT, '{"reason": "inquiry"}') == 0
        assert status(*HALT, '{"reason": "another inquiry"}') == 7  # the id, other content
        assert status("proposals", "approve", "mee", "P-HALT") == 6  # SELF_APPROVAL_FORBIDDEN
        assert (
            status(  # a regulator may not surrender: ROLE_NOT_GRANTED
                "surrender", account, "1", "--year", "2025", "--id", "S-1", "--reason", "x"
            )
            == 8
        )
        wrong = "0123456789abcdef.wrong-secret-0000000000000"
        assert status("balances", account, "--token", wrong) == 8  # UNAUTHENTICATED
        # The token from a file (a mounted Secret), with no credentials file to fall back on:
        # read after the command line is parsed, so it counts like REGISTRY_TOKEN.
        (tmp_path / "token").write_text(token + "\n")
        (tmp_path / "wrong-token").write_text(wrong + "\n")
        empty = str(tmp_path / "no-credentials")
        from_file = str(tmp_path / "token")
        assert (
            status("balances", account, REGISTRY_DATA_DIR=empty, REGISTRY_TOKEN_FILE=from_file) == 0
        )
        bad_file = str(tmp_path / "wrong-token")
        assert (
            status("balances", account, REGISTRY_DATA_DIR=empty, REGISTRY_TOKEN_FILE=bad_file) == 8
        )


def test_table_commands_print_the_same_rows_as_json_and_csv(tmp_path: Path) -> None:
    with serving(tmp_path) as server:
        token, _, _ = first_token(tmp_path)
        with RegistryClient(server.address, token, attempts=1) as client:
            seed_market(client)
            caught_up(client)
        account = next(iter(ALLOCATIONS))

        def output(*args: str) -> dict[str, str]:
            runs = {kind: cli(server, *args, "--output", kind) for kind in ("table", "json", "csv")}
            for done in runs.values():
                assert done.returncode == 0 and not done.stderr, done.stderr
            return {kind: done.stdout for kind, done in runs.items()}

        balances = output("balances", account)
        as_json = json.loads(balances["json"])
        assert as_json == [
            {
                "unit class": "CEA/2025",
                "total": ALLOCATIONS[account],
                "held": 0,
                "available": ALLOCATIONS[account],
                "detained": 0,
                "frozen": 0,
            }
        ]
        assert [[str(v) for v in row.values()][:4] for row in as_json] == table_rows(
            balances["table"]
        )
        assert list(csv.DictReader(io.StringIO(balances["csv"]))) == [
            {k: str(v) for k, v in row.items()} for row in as_json
        ]

        history = output("history", account)
        moves = json.loads(history["json"])
        assert [m["kind"] for m in moves] == ["ALLOCATION"] and moves[0]["quantity"] == (
            ALLOCATIONS[account]
        )
        assert isinstance(moves[0]["position"], int)
        assert [list(map(str, m.values()))[:7] for m in moves] == table_rows(history["table"])
        assert list(csv.DictReader(io.StringIO(history["csv"]))) == [
            {k: str(v) for k, v in m.items()} for m in moves
        ]

        assert cli(server, *HALT, '{"reason": "inquiry"}').returncode == 0
        proposals = output("proposals", "list")
        listed = json.loads(proposals["json"])
        assert [(p["proposal"], p["kind"], p["status"]) for p in listed] == [
            ("mee:P-HALT", "MARKET_HALT", "PENDING")
        ]
        assert list(csv.DictReader(io.StringIO(proposals["csv"]))) == listed
        assert proposals["table"].splitlines()[1].split()[:3] == [
            "mee:P-HALT",
            "MARKET_HALT",
            "PENDING",
        ]
