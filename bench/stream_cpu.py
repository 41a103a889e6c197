"""Server CPU per event of StreamEvents: one `registry serve` over a log already in
PostgreSQL, this process streams it in pages; the server's utime + stime from /proc.

    .venv/bin/python -m bench.projection_catchup --events 200000 --skip-rebuild \\
        --database-url postgresql://root@127.0.0.1:5432/bench_stream      # writes a log
    .venv/bin/python -m bench.stream_cpu \\
        --database-url postgresql://root@127.0.0.1:5432/bench_stream --rounds 2

Prints per round the events/s, the server's and this client's CPU µs per event (the
machine is shared: CPU per event is the steadier figure). REGISTRY_DATA_DIR defaults
to ./registry-data, where bench.projection_catchup keeps the event key.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.access import seed_principals
from registry.domain.transactions import Principal
from registry.v1 import audit_service_pb2 as pb
from registry.v1 import audit_service_pb2_grpc as pb_grpc


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--listen", default="127.0.0.1:50977")
    args = parser.parse_args()
    regulator = (Principal("mee", "bench"), (("regulator", ()),))
    token = seed_principals(args.database_url, {"regulator": regulator})["regulator"]
    env = dict(
        os.environ,
        REGISTRY_DATABASE_URL=args.database_url,
        REGISTRY_LISTEN=args.listen,
        REGISTRY_PROJECTIONS="external",
        REGISTRY_FOUR_EYES="off",
    )
    env.setdefault("REGISTRY_DATA_DIR", "registry-data")
    server = subprocess.Popen(
        [sys.executable, "-m", "registry.cli", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        channel = grpc.insecure_channel(
            args.listen, options=[("grpc.max_receive_message_length", 64 << 20)]
        )
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(300):
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    break
            except grpc.RpcError:
                time.sleep(0.3)
        audit = pb_grpc.AuditServiceStub(channel)
        metadata = (("authorization", f"Bearer {token}"),)
        warm = pb.StreamEventsRequest(max_events=20_000, page_size=args.page_size)
        sum(len(page.events) for page in audit.StreamEvents(warm, metadata=metadata))
        request = pb.StreamEventsRequest(max_events=args.events, page_size=args.page_size)
        for _ in range(args.rounds):
            server0, wall0, client0 = (
                cpu_seconds(server.pid),
                time.perf_counter(),
                time.process_time(),
            )
            pages = audit.StreamEvents(request, metadata=metadata, timeout=600)
            n = sum(len(page.events) for page in pages)
            server1, wall1, client1 = (
                cpu_seconds(server.pid),
                time.perf_counter(),
                time.process_time(),
            )
            print(
                f"{n:,} events: {n / (wall1 - wall0):,.0f} events/s, server "
                f"{1e6 * (server1 - server0) / n:.2f} µs/event, client "
                f"{1e6 * (client1 - client0) / n:.2f} µs/event, load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
