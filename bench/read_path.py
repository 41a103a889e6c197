"""GetBalances through four servers: the registry's, and the bare read on a thread pool
and on ``grpc.aio``: what the transport costs, and whether ``grpc.aio`` would pay.

    .venv/bin/python -m bench.read_path --database-url postgresql://root@127.0.0.1/bench_reads

Starts `registry serve` and a `registry project` worker on a fresh database (dropped
and created), seeds it as `bench.api_throughput` does, then, for each server kind:

- ``registry``: `registry serve` itself (interceptor: authentication, policy, request
  id, metrics, log line), REGISTRY_SERVER_PROCESSES / REGISTRY_MAX_WORKERS as given;
- ``thread``: one process, ``grpc.server`` on a pool of --workers threads, serving
  only GetBalances by the registry's own servicer (no interceptor);
- ``aio``: the same servicer under ``grpc.aio``, each call run on a pool of
  --workers threads (the servicer and the store are synchronous);
- ``aio-inline``: under ``grpc.aio``, each call run on the event loop itself (one
  thread: the database round trip blocks the loop).

and measures, from client processes: a closed loop (--callers callers, as fast as
answers come) and an open loop (--rate calls a second, sent on schedule whatever the
answers do, latency counted from the intended send time), with each server's CPU per
call (all its processes, from ``/proc``). The machine is shared: compare CPU per call
first, rates second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

from bench import api_throughput as api
from bench.access import seed_principals
from bench.call_count import cpu_seconds
from bench.ledger_throughput import reset_postgres
from registry.client import RegistryClient
from registry.domain.transactions import Principal
from registry.persistence import migrate
from registry.settings import Settings
from registry.v1 import account_service_pb2 as account_pb
from registry.v1 import account_service_pb2_grpc as account_grpc

KINDS = ("registry", "thread", "aio", "aio-inline")
SERVICE = "registry.v1.AccountService"


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a multi-process `registry serve`)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        for child in children:
            found.extend(tree(int(child)))
    return found


def tree_cpu(pid: int) -> float:
    total = 0.0
    for each in tree(pid):
        with contextlib.suppress(FileNotFoundError):  # a process that just ended
            total += cpu_seconds(each)
    return total


# -- the bare servers --------------------------------------------------------------


def bare_handler(kind: str, workers: int) -> Any:
    """The registry's GetBalances servicer, alone, as a generic handler for ``kind``."""
    from registry.bootstrap import build_backend
    from services.accounts import AccountServicer
    from services.server import ServerSettings

    store = Settings.from_env(os.environ)
    backend = build_backend(store, ServerSettings.from_env(store, os.environ))
    servicer = AccountServicer(backend)
    call = servicer.GetBalances
    if kind == "thread":
        behaviour: Any = call
    elif kind == "aio":
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reads")

        async def behaviour(request: Any, context: Any) -> Any:
            return await asyncio.get_running_loop().run_in_executor(pool, call, request, context)

    else:

        async def behaviour(request: Any, context: Any) -> Any:
            return call(request, context)

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "GetBalances": grpc.unary_unary_rpc_method_handler(
                behaviour,
                request_deserializer=account_pb.GetBalancesRequest.FromString,
                response_serializer=account_pb.GetBalancesResponse.SerializeToString,
            )
        },
    )


def serve_bare(kind: str, address: str, workers: int) -> None:
    handler = bare_handler(kind, workers)
    if kind == "thread":
        server = grpc.server(ThreadPoolExecutor(max_workers=workers))
        server.add_generic_rpc_handlers((handler,))
        server.add_insecure_port(address)
        server.start()
        signal.sigwait({signal.SIGTERM})
        server.stop(0)
        return

    async def run() -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handler,))
        server.add_insecure_port(address)
        await server.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await server.stop(0)

    asyncio.run(run())


# -- the load ----------------------------------------------------------------------


def closed_loop(address: str, token: str, callers: int, seconds: float, out: Any) -> None:
    """One client process: ``callers`` threads calling back to back for ``seconds``."""
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    metadata = (("authorization", f"Bearer {token}"),)
    channel = grpc.insecure_channel(address)
    stub = account_grpc.AccountServiceStub(channel)
    end = time.monotonic() + seconds

    def caller(index: int) -> None:
        request = account_pb.GetBalancesRequest(account_id=api.ACCOUNTS[index % 2])
        mine = []
        failed = 0
        while time.monotonic() < end:
            began = time.perf_counter()
            try:
                stub.GetBalances(request, metadata=metadata, timeout=30)
            except grpc.RpcError:  # e.g. the shared database out of connections
                failed += 1
                continue
            mine.append(time.perf_counter() - began)
        with lock:
            latencies.extend(mine)
            failures[0] += failed

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    channel.close()
    out.put((latencies, failures[0]))


def open_loop(address: str, token: str, rate: float, seconds: float) -> tuple[list[float], int]:
    """Calls sent at ``rate`` a second on schedule (futures: a slow answer does not
    delay the next send); each latency counted from its intended send time. With how
    many failed (the server refuses calls past its concurrency limit when it falls
    behind)."""
    metadata = (("authorization", f"Bearer {token}"),)
    latencies: list[float] = []
    lock = threading.Lock()
    with grpc.insecure_channel(address) as channel:
        stub = account_grpc.AccountServiceStub(channel)
        requests = [account_pb.GetBalancesRequest(account_id=a) for a in api.ACCOUNTS]
        start = time.perf_counter() + 0.1
        total = int(rate * seconds)
        pending = []
        for n in range(total):
            intended = start + n / rate
            delay = intended - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            future = stub.GetBalances.future(requests[n % 2], metadata=metadata, timeout=30)

            def done(answer: Any, intended: float = intended) -> None:
                finished = time.perf_counter()
                if answer.exception() is None:
                    with lock:
                        latencies.append(finished - intended)

            future.add_done_callback(done)
            pending.append(future)
        for future in pending:
            future.exception()  # wait; a refusal (over capacity) is counted, not raised
    return latencies, total - len(latencies)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def measure(pid: int, address: str, token: str, args: argparse.Namespace) -> dict[str, float]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    per = max(1, args.callers // args.client_processes)
    processes = [
        context.Process(target=closed_loop, args=(address, token, per, args.seconds, queue))
        for _ in range(args.client_processes)
    ]
    cpu = tree_cpu(pid)
    began = time.perf_counter()
    for process in processes:
        process.start()
    latencies: list[float] = []
    failed = 0
    for _ in processes:
        answered, refused = queue.get()
        latencies.extend(answered)
        failed += refused
    for process in processes:
        process.join()
    wall = time.perf_counter() - began
    closed_cpu = tree_cpu(pid) - cpu
    result = {
        "closed_calls_per_s": len(latencies) / args.seconds,
        "closed_failed": failed,
        "closed_p50_ms": statistics.median(latencies) * 1000,
        "closed_p99_ms": percentile(latencies, 0.99),
        "closed_cpu_ms_per_call": 1000 * closed_cpu / len(latencies),
        "closed_wall_s": wall,
    }
    cpu = tree_cpu(pid)
    opened, failed = open_loop(address, token, args.rate, args.seconds)
    result.update(
        {
            "open_rate": args.rate,
            "open_failed": failed,
            "open_p50_ms": statistics.median(opened) * 1000,
            "open_p99_ms": percentile(opened, 0.99),
            "open_cpu_ms_per_call": 1000 * (tree_cpu(pid) - cpu) / len(opened),
        }
    )
    return result


def main() -> None:
    if sys.argv[1:2] == ["--serve-bare"]:
        serve_bare(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", required=True, help="PostgreSQL; dropped and created")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"of {', '.join(KINDS)}")
    parser.add_argument("--server-processes", type=int, default=2, help="registry kind only")
    parser.add_argument("--workers", type=int, default=8, help="threads per server process")
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="open loop, calls a second")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    reset_postgres(args.database_url)
    migrate.upgrade(Settings(args.database_url))
    principal = Principal("exchange", "bench")
    token = seed_principals(
        args.database_url,
        {"bench": (principal, (("regulator", ()), ("exchange", ("*",))))},
    )["bench"]
    work = Path(tempfile.mkdtemp(prefix="registry-reads-"))
    address = f"127.0.0.1:{api.free_port()}"
    env = {
        **os.environ,
        "REGISTRY_DATABASE_URL": args.database_url,
        "REGISTRY_DATA_DIR": str(work),
        "REGISTRY_LISTEN": address,
        "REGISTRY_MAX_CONCURRENT_RPCS": "256",
        "REGISTRY_FOUR_EYES": "off",
        "REGISTRY_PROJECTIONS": "external",
        "REGISTRY_SERVER_PROCESSES": str(args.server_processes),
        "REGISTRY_MAX_WORKERS": str(args.workers),
        "REGISTRY_MAX_CALLS_PER_PRINCIPAL": str(max(16, args.callers)),
    }
    log = (work / "server.log").open("w")
    registry = subprocess.Popen(
        [sys.executable, "-m", "registry.cli", "serve"], env=env, stdout=log, stderr=log
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "registry.cli", "project"], env=env, stdout=log, stderr=log
    )
    try:
        api.wait_serving(address)
        with RegistryClient(address, token, timeout=120) as client:
            api.seed(client)
        time.sleep(2)  # the worker projects the seed
        for round_ in range(args.rounds):
            for kind in kinds:
                if kind == "registry":
                    figures = measure(registry.pid, address, token, args)
                else:
                    bare_address = f"127.0.0.1:{api.free_port()}"
                    bare = subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "bench.read_path",
                            "--serve-bare",
                            kind,
                            bare_address,
                            str(args.workers),
                        ],
                        env=env,
                        stdout=log,
                        stderr=log,
                    )
                    try:
                        channel = grpc.insecure_channel(bare_address)
                        grpc.channel_ready_future(channel).result(timeout=60)
                        channel.close()
                        figures = measure(bare.pid, bare_address, token, args)
                    finally:
                        bare.terminate()
                        bare.wait(timeout=30)
                shown = ", ".join(f"{k} {v:,.2f}" for k, v in figures.items())
                print(f"round {round_} {kind}: {shown}", flush=True)
    finally:
        for process in (registry, worker):
            process.terminate()
        for process in (registry, worker):
            process.wait(timeout=30)
        log.close()


if __name__ == "__main__":
    main()
