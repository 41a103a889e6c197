"""SettleTrades throughput and GetBalances latency through the real gRPC server.

    .venv/bin/python -m bench.api_throughput --database-url postgresql://root@127.0.0.1/bench_api

Starts `registry serve` and a `registry project` worker as separate processes on a fresh
database (PostgreSQL: dropped, created and migrated; without --database-url, a temporary
SQLite file with projections in the server), seeds two compliance accounts through the
API, then measures from this process over one channel:
- SettleTrades with batches of 1, 100 and 1,000 trades (one caller);
- GetBalances with --callers concurrent callers (p50/p99 per call).
Client and server share the machine's cores. This is the quick API figure; the full
benchmark against the raw database is a separate suite.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.access import seed_principals
from bench.ledger_throughput import reset_postgres
from registry.client import RegistryClient
from registry.domain.transactions import Principal
from registry.persistence import migrate
from registry.settings import Settings
from registry.v1 import account_service_pb2 as account_pb
from registry.v1 import administration_service_pb2 as admin_pb
from registry.v1 import common_pb2 as common
from registry.v1 import settlement_service_pb2 as settlement_pb

ACCOUNTS = ("PWR-A", "PWR-B")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_serving(address: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                time.sleep(0.2)
    raise SystemExit(f"server at {address} did not become SERVING")


def seed(client: RegistryClient) -> None:
    admin = client.administration
    for account in ACCOUNTS:
        client.call(
            admin.OpenAccount,
            admin_pb.OpenAccountRequest(
                account_id=account,
                account_type=common.ACCOUNT_TYPE_COMPLIANCE,
                holder=common.Holder(
                    name=account,
                    credit_code="91110000100001234X",
                    sector=common.SECTOR_POWER,
                    province="Beijing",
                ),
            ),
        )
    client.call(
        admin.IssueUnits,
        admin_pb.IssueUnitsRequest(
            transaction_id="ISS",
            unit_class=common.UnitClass(unit_type=common.UNIT_TYPE_CEA, vintage=2025),
            quantity=10**9,
            reason="bench",
        ),
    )
    client.call(
        admin.AllocateUnits,
        admin_pb.AllocateUnitsRequest(
            rows=[
                admin_pb.AllocationRow(
                    transaction_id=f"AL-{a}",
                    account_id=a,
                    unit_type=common.UNIT_TYPE_CEA,
                    quantity=10**8,
                    source_account="CN-ISSUANCE",
                )
                for a in ACCOUNTS
            ]
        ),
    )


def trades(prefix: str, count: int) -> list[settlement_pb.Trade]:
    return [
        settlement_pb.Trade(
            trade_id=f"{prefix}-{n}",
            seller_account=ACCOUNTS[n % 2],
            buyer_account=ACCOUNTS[1 - n % 2],
            unit_type=common.UNIT_TYPE_CEA,
            quantity=1 + n % 7,
        )
        for n in range(count)
    ]


def settle_rate(client: RegistryClient, batch: int, total: int) -> tuple[float, float, int]:
    """(trades/s, p99 ms per call, last commit position) settling ``total`` trades in
    calls of ``batch``."""
    all_trades = trades(f"B{batch}", total)
    latencies = []
    started = time.perf_counter()
    for start in range(0, total, batch):
        began = time.perf_counter()
        results = client.settle_trades(all_trades[start : start + batch], batch_size=batch)
        latencies.append(time.perf_counter() - began)
        assert all(r.status == settlement_pb.TRADE_STATUS_SETTLED for r in results), results
    elapsed = time.perf_counter() - started
    return total / elapsed, percentile(latencies, 99) * 1000, results[-1].position


def balances_latency(
    address: str, token: str, callers: int, calls: int
) -> tuple[float, float, float]:
    """(calls/s, p50 ms, p99 ms) of GetBalances from ``callers`` threads."""
    latencies: list[float] = []
    lock = threading.Lock()

    def caller(index: int) -> None:
        with RegistryClient(address, token) as client:
            mine = []
            request = account_pb.GetBalancesRequest(account_id=ACCOUNTS[index % 2])
            for _ in range(calls):
                began = time.perf_counter()
                client.accounts.GetBalances(request, metadata=client.metadata, timeout=10)
                mine.append(time.perf_counter() - began)
            with lock:
                latencies.extend(mine)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return (
        len(latencies) / elapsed,
        percentile(latencies, 50) * 1000,
        percentile(latencies, 99) * 1000,
    )


def wait_for_read_models(client: RegistryClient, position: int) -> float:
    """Seconds until the read models include ``position`` (so the latency measure does
    not compete with the projection worker catching up)."""
    started = time.perf_counter()
    while True:
        try:
            client.accounts.GetBalances(
                account_pb.GetBalancesRequest(account_id=ACCOUNTS[0], min_position=position),
                metadata=client.metadata,
                timeout=10,
            )
        except grpc.RpcError as error:
            if error.code() is not grpc.StatusCode.UNAVAILABLE:
                raise
            continue
        return time.perf_counter() - started


def percentile(values: list[float], pct: int) -> float:
    return statistics.quantiles(values, n=100)[pct - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default="")
    parser.add_argument(
        "--trades", type=int, default=10_000, help="trades per batch size (batch 1 settles a tenth)"
    )
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--calls", type=int, default=200, help="GetBalances per caller")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="registry-bench-"))
    url = args.database_url or f"sqlite:///{work / 'bench.sqlite'}"
    postgres = url.startswith("postgres")
    if postgres:
        reset_postgres(url)
    migrate.upgrade(Settings(url))
    token = seed_principals(
        url, {"bench": (Principal("exchange", "bench"), (("regulator", ()), ("exchange", ("*",))))}
    )["bench"]
    address = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "REGISTRY_DATABASE_URL": url,
        "REGISTRY_DATA_DIR": str(work),
        "REGISTRY_LISTEN": address,
        "REGISTRY_MAX_CONCURRENT_RPCS": "256",
        "REGISTRY_FOUR_EYES": "off",
    }
    # the callers are one principal standing for many clients: it may use every thread
    # (the per-caller share protects others, whom this benchmark does not have)
    env.setdefault("REGISTRY_MAX_CALLS_PER_PRINCIPAL", env.get("REGISTRY_MAX_WORKERS", "16"))
    registry = [sys.executable, "-m", "registry.cli"]
    log = (work / "server.log").open("w")
    processes = [subprocess.Popen([*registry, "serve"], env=env, stdout=log, stderr=log)]
    try:
        if postgres:
            processes.append(
                subprocess.Popen([*registry, "project"], env=env, stdout=log, stderr=log)
            )
        wait_serving(address)
        print(
            f"store: {'PostgreSQL' if postgres else 'SQLite'}; server and "
            f"{'worker processes' if postgres else 'in-process projections'}; machine: "
            f"{os.cpu_count()} cores, {platform.machine()}, Python "
            f"{platform.python_version()}"
        )
        with RegistryClient(address, token, timeout=120) as client:
            seed(client)
            for batch in (1, 100, 1000):
                total = max(batch, args.trades // 10 if batch == 1 else args.trades)
                rate, p99, last = settle_rate(client, batch, total)
                print(
                    f"SettleTrades batch {batch:>5}: {rate:>8,.0f} trades/s "
                    f"({total:,} trades, p99 {p99:,.1f} ms per call)"
                )
            caught_up = wait_for_read_models(client, last)
            print(f"(projections caught up {caught_up:.1f} s after the last batch)")
        rate, p50, p99 = balances_latency(address, token, args.callers, args.calls)
        print(
            f"GetBalances, {args.callers} callers: {rate:,.0f} calls/s, "
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms"
        )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
        log.close()


if __name__ == "__main__":
    main()
