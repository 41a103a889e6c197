"""Python function calls per request in the server process: work per call, load-independent.

    .venv/bin/python -m bench.call_count --database-url postgresql://root@127.0.0.1/bench_calls

Throughput on a shared 2-core machine varies by 10-20 % from run to run, so it cannot
tell whether a change made each request do a few per cent more work. This counts, in
the server process and in every thread of it, the Python and C function calls made
while 32 callers settle single trades and read balances (a profile hook, so the server
runs several times slower while measured: the counts are the figure, not the rates).
To compare two commits, run it from a checkout of each: the same requests on the same
seed give counts that differ only by what the code does per request (+-1 %).

Starts `registry serve` (with the counting hook) and a `registry project` worker on a
fresh PostgreSQL database (dropped and created), seeds it as `bench.api_throughput`
does, then prints calls per trade and per GetBalances, and the server's CPU per call.
"""

from __future__ import annotations

import argparse
import os
import runpy
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from bench import api_throughput as api
from bench.access import seed_principals
from bench.ledger_throughput import reset_postgres
from registry.client import RegistryClient
from registry.domain.transactions import Principal
from registry.persistence import migrate
from registry.settings import Settings
from registry.v1 import account_service_pb2 as account_pb
from registry.v1 import common_pb2 as common
from registry.v1 import settlement_service_pb2 as settlement_pb

COUNT_FILE = "BENCH_CALL_COUNT_FILE"
"""Where the counted server writes its count when sent SIGUSR1."""


def serve_counted(argv: list[str]) -> None:
    """Run ``registry`` with ``argv`` under a hook counting every function call."""
    calls = [0]

    def hook(frame: FrameType, event: str, arg: Any) -> None:
        if event in ("call", "c_call"):
            calls[0] += 1  # a lost increment between threads costs one count, no more

    def dump(*_: object) -> None:
        Path(os.environ[COUNT_FILE]).write_text(str(calls[0]))

    signal.signal(signal.SIGUSR1, dump)
    threading.setprofile(hook)
    sys.setprofile(hook)
    sys.argv = ["registry", *argv]
    runpy.run_module("registry.cli", run_name="__main__")


def cpu_seconds(pid: int) -> float:
    """User and system CPU of a process, all its threads (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CountedServer:
    """A counted `registry serve` and a `registry project` worker on ``url``."""

    def __init__(self, url: str, work: Path) -> None:
        self.address = f"127.0.0.1:{api.free_port()}"
        self.count_file = work / "count"
        env = {
            **os.environ,
            COUNT_FILE: str(self.count_file),
            "REGISTRY_DATABASE_URL": url,
            "REGISTRY_DATA_DIR": str(work),
            "REGISTRY_LISTEN": self.address,
            "REGISTRY_MAX_CONCURRENT_RPCS": "256",
            "REGISTRY_FOUR_EYES": "off",
            "REGISTRY_MAX_CALLS_PER_PRINCIPAL": "16",
        }
        self.log = (work / "server.log").open("w")
        here = [sys.executable, "-m", "bench.call_count", "--counted-server"]
        self.server = subprocess.Popen([*here, "serve"], env=env, stdout=self.log, stderr=self.log)
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "registry.cli", "project"],
            env=env,
            stdout=self.log,
            stderr=self.log,
        )

    def calls(self) -> int:
        """The calls counted so far (after a pause, so the last requests have finished)."""
        self.count_file.unlink(missing_ok=True)
        os.kill(self.server.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not self.count_file.exists() or not self.count_file.read_text():
            if time.monotonic() > deadline:
                raise SystemExit("the counted server did not write its count")
            time.sleep(0.05)
        return int(self.count_file.read_text())

    def measure(self, requests: int, run: Callable[[], None]) -> tuple[float, float]:
        """(calls per request, server CPU ms per request) of ``run``."""
        time.sleep(1)
        calls, cpu = self.calls(), cpu_seconds(self.server.pid)
        run()
        time.sleep(1)
        return (
            (self.calls() - calls) / requests,
            1000 * (cpu_seconds(self.server.pid) - cpu) / requests,
        )

    def close(self) -> None:
        for process in (self.server, self.worker):
            process.terminate()
        for process in (self.server, self.worker):
            process.wait(timeout=30)
        self.log.close()


def in_threads(callers: int, target: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=target, args=(i,)) for i in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def main() -> None:
    if sys.argv[1:2] == ["--counted-server"]:
        serve_counted(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", required=True, help="PostgreSQL; dropped and created")
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--trades", type=int, default=1000, help="single trades, all callers")
    parser.add_argument("--calls", type=int, default=50, help="GetBalances per caller")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    reset_postgres(args.database_url)
    migrate.upgrade(Settings(args.database_url))
    principal = Principal("exchange", "bench")
    token = seed_principals(
        args.database_url,
        {"bench": (principal, (("regulator", ()), ("exchange", ("*",))))},
    )["bench"]
    server = CountedServer(args.database_url, Path(tempfile.mkdtemp(prefix="registry-calls-")))
    try:
        api.wait_serving(server.address)
        with RegistryClient(server.address, token, timeout=120) as client:
            api.seed(client)
        for round_ in range(args.rounds):

            def trade(index: int, round_: int = round_) -> None:
                with RegistryClient(server.address, token) as client:
                    for n in range(index, args.trades, args.callers):
                        row = settlement_pb.Trade(
                            trade_id=f"C{round_}-{n}",
                            seller_account=api.ACCOUNTS[n % 2],
                            buyer_account=api.ACCOUNTS[1 - n % 2],
                            unit_type=common.UNIT_TYPE_CEA,
                            quantity=1,
                        )
                        client.settle_trades([row], batch_size=1)

            def read(index: int) -> None:
                request = account_pb.GetBalancesRequest(account_id=api.ACCOUNTS[index % 2])
                with RegistryClient(server.address, token) as client:
                    for _ in range(args.calls):
                        client.accounts.GetBalances(request, metadata=client.metadata, timeout=30)

            calls, cpu = server.measure(args.trades, lambda: in_threads(args.callers, trade))
            print(f"round {round_}: single trade: {calls:,.0f} calls, {cpu:.2f} ms CPU")
            reads = args.callers * args.calls
            calls, cpu = server.measure(reads, lambda: in_threads(args.callers, read))
            print(f"round {round_}: GetBalances: {calls:,.0f} calls, {cpu:.2f} ms CPU")
    finally:
        server.close()


if __name__ == "__main__":
    main()
