"""Scale-out on one PostgreSQL: two server processes and two projection workers, client
processes settling and surrendering through both servers; one server and the worker
holding the projection lease are SIGKILLed mid-run and restarted. Afterwards units are
conserved, every acknowledged settlement and surrender is in the log exactly once, the
read models equal a rebuild from the log, and the standby worker took over."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from registry.bootstrap import build_registry, build_worker
from registry.client import RegistryClient
from registry.domain.transactions import Principal
from registry.persistence.engine import make_engine
from registry.readmodels.check import check
from registry.settings import Settings
from registry.v1 import audit_service_pb2 as audit_pb
from tests.e2e.market import ALLOCATIONS, caught_up, seed_market
from tests.e2e.test_server_process import (
    Server,
    environment,
    free_port,
    registry_command,
    wait_serving,
)
from tests.support import assert_conserved, fresh_pg_database

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]
TRADES_PER_CLIENT = 150
SURRENDERS = 60


def principals(url: str) -> dict[str, str]:
    """A regulator, an exchange over every account, the companies' operator: tokens."""
    registry = build_registry(Settings(url))
    system = Principal("system", "tests")
    grants = {
        "regulator": (Principal("mee", "li"), "regulator", ()),
        "exchange": (Principal("shanghai-exchange", "settlement"), "exchange", ("*",)),
        "operator": (Principal("huaneng", "ops"), "operator", tuple(ALLOCATIONS)),
    }
    try:
        tokens = {}
        for name, (principal, role, accounts) in grants.items():
            registry.access.grant_role(system, name, principal, role, accounts, "scale-out")
            tokens[name] = registry.access.issue_token(system, principal, "scale-out").token
        return tokens
    finally:
        registry.close()


class Cluster:
    """The processes under test, started and killed by name."""

    def __init__(self, url: str, work: Path) -> None:
        self.url, self.work = url, work
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.ports = {"server-a": free_port(), "server-b": free_port()}

    def env(self, name: str) -> dict[str, str]:
        data = self.work / name
        data.mkdir(exist_ok=True)
        return environment(
            data,
            self.ports.get(name, 0),
            REGISTRY_DATABASE_URL=self.url,
            REGISTRY_PROJECTIONS="external",
            REGISTRY_FOUR_EYES="off",
            REGISTRY_LEDGER_KEY=str(self.work / "ledger-key.pem"),
            REGISTRY_EVENT_KEY=str(self.work / "event-key"),
        )

    def start(self, name: str) -> None:
        command = [*registry_command(), "serve" if name.startswith("server") else "project"]
        run = len(list(self.work.glob(f"{name}-*.log")))
        with (self.work / f"{name}-{run}.log").open("wb") as out:
            self.processes[name] = subprocess.Popen(
                command, env=self.env(name), stdout=out, stderr=subprocess.STDOUT
            )
        if name.startswith("server"):
            wait_serving(
                Server(
                    self.processes[name],
                    self.address(name),
                    self.work,
                    self.work / f"{name}-{run}.log",
                    self.work / f"{name}-{run}.log",
                )
            )

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def kill(self, name: str) -> None:
        self.processes[name].send_signal(signal.SIGKILL)
        self.processes[name].wait(timeout=30)

    def log(self, name: str) -> str:
        return "".join(
            p.read_text(errors="replace") for p in sorted(self.work.glob(f"{name}-*.log"))
        )

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def wait_for(condition: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def acknowledged(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_servers_and_workers_killed_mid_run_lose_and_double_nothing(tmp_path: Path) -> None:
    with fresh_pg_database() as url:
        tokens = principals(url)
        cluster = Cluster(url, tmp_path)
        try:
            cluster.start("worker-1")
            wait_for(
                lambda: "holding the projection lease" in cluster.log("worker-1"),
                "the first worker never took the lease",
            )
            cluster.start("worker-2")
            wait_for(
                lambda: "standing by" in cluster.log("worker-2"),
                "the second worker should stand by",
            )
            for name in ("server-a", "server-b"):
                cluster.start(name)
            with RegistryClient(cluster.address("server-a"), tokens["regulator"]) as reg:
                seed_market(reg)
                caught_up(reg)

            servers = [cluster.address("server-a"), cluster.address("server-b")]
            clients = []
            for n, (kind, token, count) in enumerate(
                (
                    ("settle", tokens["exchange"], TRADES_PER_CLIENT),
                    ("settle", tokens["exchange"], TRADES_PER_CLIENT),
                    ("surrender", tokens["operator"], SURRENDERS),
                )
            ):
                order = servers if n % 2 == 0 else servers[::-1]
                clients.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "tests.e2e.scale_client",
                            kind,
                            str(tmp_path / f"client-{n}.jsonl"),
                            token,
                            f"C{n}",
                            str(count),
                            *order,
                        ],
                        cwd=ROOT,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                    )
                )
            # mid-run: one server and the lease holder die without a word
            wait_for(
                lambda: (
                    sum(len(acknowledged(tmp_path / f"client-{n}.jsonl")) for n in range(3)) > 60
                ),
                "the clients made no progress",
            )
            cluster.kill("server-a")
            cluster.kill("worker-1")
            wait_for(
                lambda: "holding the projection lease" in cluster.log("worker-2"),
                "the standby worker never took over",
            )
            cluster.start("server-a")
            cluster.start("worker-1")  # back, and now it is the one standing by
            for client in clients:
                output = client.communicate(timeout=240)[0].decode(errors="replace")
                assert client.returncode == 0, output

            with RegistryClient(cluster.address("server-a"), tokens["regulator"]) as reg:
                caught_up(reg)
                supply = reg.call(reg.audit.GetSupply, audit_pb.GetSupplyRequest())
                assert supply.lines and all(line.balanced for line in supply.lines)
            wait_for(
                lambda: "standing by" in cluster.log("worker-1"),
                "the restarted worker should stand by",
            )
        finally:
            cluster.stop()

        # every acknowledged id exactly once in the log, nothing unacknowledged missing
        registry = build_registry(Settings(url))
        engine = make_engine(Settings(url))
        try:
            completed: Counter[str] = Counter()
            for notification in registry.recorder.select_notifications(
                start=1, limit=1_000_000, topics=["registry.Transaction.Completed"]
            ):
                payload = json.loads(notification.state)
                completed[payload["client_id"]] += 1
            for n, count in ((0, TRADES_PER_CLIENT), (1, TRADES_PER_CLIENT), (2, SURRENDERS)):
                acks = acknowledged(tmp_path / f"client-{n}.jsonl")
                assert [a["id"] for a in acks] == [f"C{n}-{i}" for i in range(count)]
                assert all(completed[a["id"]] == 1 for a in acks), n
            assert_conserved(registry)
            report = check(build_worker(registry, engine))  # the read models equal a rebuild
            assert report.ok, report.differences[:5]
            moved = sum(
                a["server"] != first
                for n in range(3)
                for a, first in [
                    (a, (servers if n % 2 == 0 else servers[::-1])[0])
                    for a in acknowledged(tmp_path / f"client-{n}.jsonl")
                ]
            )
            print(
                f"\nscale-out: {registry.recorder.max_notification_id():,} events, "
                f"{sum(completed.values()):,} transactions, {moved} acknowledgements "
                f"through the other server after the kill, {report.checks:,} read-model "
                "checks"
            )
        finally:
            registry.close()
            engine.dispose()
