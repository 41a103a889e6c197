"""`registry serve` with several server processes on one port (REGISTRY_SERVER_PROCESSES),
against PostgreSQL: calls spread over the processes, the ledger stays one, and SIGTERM
stops them all."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

from registry.bootstrap import build_registry
from registry.client import RegistryClient
from registry.domain.transactions import Principal
from registry.settings import Settings
from registry.v1 import account_service_pb2 as account_pb
from tests.e2e.market import TRADER, seed_market, trade
from tests.e2e.test_server_process import serving
from tests.support import fresh_pg_database

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def first_principal(url: str) -> str:
    """A database server starts with nobody allowed in: grant one caller the roles this
    test needs (as `registry access init` would an administrator) and return its token."""
    registry = build_registry(Settings(url))
    try:
        system, caller = Principal("system", "tests"), Principal("shanghai-exchange", "bench")
        for role, accounts in (("regulator", ()), ("exchange", ("*",))):
            registry.access.grant_role(system, role, caller, role, accounts, "test")
        return registry.access.issue_token(system, caller, "test").token
    finally:
        registry.close()


def test_several_server_processes_share_one_port_and_one_ledger(tmp_path: Path) -> None:
    with fresh_pg_database() as url:
        token = first_principal(url)
        run_two_servers(tmp_path, url, token)


def run_two_servers(tmp_path: Path, url: str, token: str) -> None:
    with serving(
        tmp_path,
        REGISTRY_DATABASE_URL=url,
        REGISTRY_SERVER_PROCESSES="2",
        REGISTRY_PROJECTIONS="external",
    ) as server:
        with RegistryClient(server.address, token) as client:
            seed_market(client)
        settled = []
        for n in range(24):  # a new connection each time: the kernel spreads them
            with RegistryClient(server.address, token) as client:
                settled += client.settle_trades([trade(f"T-{n}", "PWR-SD-0001", TRADER, 10)])
                client.call(
                    client.accounts.GetAccount, account_pb.GetAccountRequest(account_id=TRADER)
                )
        assert {r.status for r in settled} == {1} and len(settled) == 24
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=40) == 0
        log = server.output()
        pids = set(re.findall(r" (\d+) INFO registry.api .*SettleTrades", log))
        assert len(pids) == 2, f"calls went to {pids}:\n{log[-2000:]}"
        assert log.count("registry.server stopped") == 2
