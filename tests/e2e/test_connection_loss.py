"""Every connection to the registry's database terminated mid-load, as a PostgreSQL
failover or restart does: two server processes, a `registry project` worker and four
client processes (settlements, holds, cancellations) keep going.

Reproduces issue 15 item 8: writes answered INTERNAL ("a registry defect, do not retry")
from dead pooled connections, and the worker exited with status 1 and left the read
models stopped. Now no call answers INTERNAL (the clients stop on any status that is not
retryable), the worker takes the lease again by itself, and nothing is lost or doubled.

Also: CLI commands on an unreachable database exit 3 with one line, not a traceback and
exit 1 (which means "mismatch" for `registry check` and "tampered" for `registry verify`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from registry.bootstrap import build_registry, build_worker
from registry.client import RegistryClient
from registry.persistence.engine import make_engine
from registry.readmodels.check import check
from registry.settings import Settings
from registry.v1 import audit_service_pb2 as audit_pb
from tests.e2e.market import caught_up, seed_market
from tests.e2e.test_scale_out import Cluster, principals, wait_for
from tests.e2e.test_server_process import environment, free_port, registry_command
from tests.support import assert_conserved, fresh_pg_database, terminate_all

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = (
    ("settle", "exchange", 60),
    ("settle", "exchange", 60),
    ("hold", "exchange", 50),
    ("cancel", "operator", 50),
)
"""(kind, principal, writes) per client process."""
TERMINATIONS = 2


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def acks(path: Path) -> list[dict[str, object]]:
    return [line for line in lines(path) if "code" not in line]


@pytest.mark.slow
@pytest.mark.postgres
def retried_once(call: Callable[[], object]) -> None:
    """``call``, sent again once if the first answer is UNAVAILABLE (and only then)."""
    try:
        call()
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.UNAVAILABLE:
            raise
        call()


def test_every_connection_terminated_mid_load_is_survived(tmp_path: Path) -> None:
    with fresh_pg_database() as url:
        tokens = principals(url)
        cluster = Cluster(url, tmp_path)
        outs = [tmp_path / f"client-{n}.jsonl" for n in range(len(CLIENTS))]
        try:
            cluster.start("worker-1")
            wait_for(
                lambda: "holding the projection lease" in cluster.log("worker-1"),
                "the worker never took the lease",
            )
            for name in ("server-a", "server-b"):
                cluster.start(name)
            with RegistryClient(cluster.address("server-a"), tokens["regulator"]) as reg:
                seed_market(reg)
                caught_up(reg)
            servers = [cluster.address("server-a"), cluster.address("server-b")]
            clients = [
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "tests.e2e.fault_client",
                        kind,
                        str(out),
                        tokens[who],
                        f"C{n}",
                        str(count),
                        *(servers if n % 2 else servers[::-1]),
                    ],
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                )
                for n, ((kind, who, count), out) in enumerate(zip(CLIENTS, outs, strict=True))
            ]

            terminated = []
            for round_ in range(1, TERMINATIONS + 1):
                wait_for(
                    lambda r=round_: sum(len(acks(o)) for o in outs) > 40 * r,
                    "the clients made no progress",
                    timeout=180,
                )
                terminated.append(terminate_all(url))
            for client in clients:
                output = client.communicate(timeout=400)[0].decode(errors="replace")
                assert client.returncode == 0, output  # a non-retryable status stops it

            failures = [line for out in outs for line in lines(out) if "code" in line]
            assert not [f for f in failures if f["code"] == "INTERNAL"], failures
            worker_log = cluster.log("worker-1")
            assert cluster.processes["worker-1"].poll() is None, worker_log
            assert "again" in worker_log, worker_log  # it lost the lease and took it back
            with RegistryClient(cluster.address("server-a"), tokens["regulator"]) as reg:
                # The worker follows again: read your writes works. A pooled read
                # connection the last termination killed fails its first call, once,
                # UNAVAILABLE (docs/api.md: retry as is); the retry gets a new one.
                retried_once(lambda: caught_up(reg))
                supply = reg.call(reg.audit.GetSupply, audit_pb.GetSupplyRequest())
                assert supply.lines and all(line.balanced for line in supply.lines)
            print(
                f"\nconnection loss: terminated {terminated} sessions; "
                f"{sum(len(acks(o)) for o in outs)} writes acknowledged; retried "
                f"{Counter(str(f['reason']) for f in failures)}\n{worker_log}"
            )
        finally:
            cluster.stop()

        registry = build_registry(Settings(url))
        engine = make_engine(Settings(url))
        try:
            completed: Counter[str] = Counter()
            for notification in registry.recorder.select_notifications(
                start=1, limit=1_000_000, topics=["registry.Transaction.Completed"]
            ):
                completed[json.loads(notification.state)["client_id"]] += 1
            for n, ((kind, _, count), out) in enumerate(zip(CLIENTS, outs, strict=True)):
                ids = [a["id"] for a in acks(out)]
                assert ids == [f"C{n}-{i}" for i in range(count)], kind
                if kind != "hold":  # every acknowledged movement stored exactly once
                    assert all(completed[str(i)] == 1 for i in ids), kind
            [holder] = list(registry.get_holdings("PWR-SD-0002"))
            assert holder.held == CLIENTS[2][2]  # every hold once, none doubled
            assert_conserved(registry)
            report = check(build_worker(registry, engine))  # the read models equal a rebuild
            assert report.ok, report.differences[:5]
        finally:
            registry.close()
            engine.dispose()


@pytest.mark.parametrize(
    "command",
    [
        ("check",),
        ("verify", "--public-key", "{key}"),
        ("supply",),
        ("project", "--once"),
        ("project", "--status"),
        ("migrate",),
        ("serve",),
    ],
)
def test_a_command_on_an_unreachable_database_exits_3_with_one_line(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """Before: a traceback and exit 1, which for `check` means a mismatch and for
    `verify` a tampered ledger."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = tmp_path / "public.pem"
    key.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    port = free_port()  # nothing listens there
    url = f"postgresql://registry:s3cret@127.0.0.1:{port}/registry"
    done = subprocess.run(
        [*registry_command(), *(part.format(key=key) for part in command)],
        env=environment(tmp_path, free_port(), REGISTRY_DATABASE_URL=url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(
        f"registry: cannot use the database postgresql://registry:***@127.0.0.1:{port}/registry: "
    )
    assert "s3cret" not in done.stdout + done.stderr
    assert "PostgreSQL" in line
