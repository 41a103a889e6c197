"""`registry serve` as a real process on the embedded SQLite store: first start, the
token file, the operator commands, grpcurl through reflection, graceful shutdown."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from registry.client import RegistryClient, error_details
from registry.v1 import account_service_pb2 as account_pb
from registry.v1 import audit_service_pb2 as audit_pb
from registry.v1 import settlement_service_pb2 as settlement_pb
from tests.e2e.conftest import rpc_error
from tests.e2e.market import (
    ALLOCATIONS,
    TRADER,
    balance,
    caught_up,
    seed_market,
    trade,
    transaction,
)

pytestmark = pytest.mark.slow

A, B = list(ALLOCATIONS)
BIN = Path(sys.executable).parent
GRPCURL = BIN / "grpcurl"
GRACE_SECONDS = 10.0
"""services.server.ServerSettings.grace_seconds."""
BATCH = 5_000
REGISTRY_SERVICES = {
    "registry.v1.AccountService",
    "registry.v1.AdministrationService",
    "registry.v1.AuditService",
    "registry.v1.SettlementService",
    "registry.v1.AccessService",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def environment(data_dir: Path, port: int, **extra: str) -> dict[str, str]:
    """The process environment: the embedded store in data_dir, listening on port; four
    eyes off (one regulator's direct calls seed the scenarios) unless ``extra`` says."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env.update(
        REGISTRY_DATA_DIR=str(data_dir),
        REGISTRY_LISTEN=f"127.0.0.1:{port}",
        REGISTRY_SERVER=f"127.0.0.1:{port}",
        REGISTRY_FOUR_EYES="off",
    )
    env.update(extra)
    return env


def registry_command() -> list[str]:
    script = BIN / "registry"
    return [str(script)] if script.exists() else [sys.executable, "-m", "registry.cli"]


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    address: str
    data_dir: Path
    stdout: Path
    stderr: Path

    def output(self) -> str:
        return self.stdout.read_text() + self.stderr.read_text()


@contextmanager
def serving(data_dir: Path, **extra: str) -> Iterator[Server]:
    """`registry serve` in data_dir on a free port; killed on the way out if it still runs."""
    port = free_port()
    run = len(list(data_dir.glob("serve-*.out")))
    stdout, stderr = data_dir / f"serve-{run}.out", data_dir / f"serve-{run}.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [*registry_command(), "serve"],
            env=environment(data_dir, port, **extra),
            stdout=out,
            stderr=err,
        )
    server = Server(process, f"127.0.0.1:{port}", data_dir, stdout, stderr)
    try:
        wait_serving(server)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def wait_serving(server: Server, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                pytest.fail(f"the server exited {server.process.returncode}:\n{server.output()}")
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    pytest.fail(f"the server did not become SERVING within {timeout}s:\n{server.output()}")


def wait_shutting_down(channel: grpc.Channel, timeout: float = 5.0) -> None:
    """Wait until the server has begun its graceful shutdown: health says NOT_SERVING
    (set first), then calls are refused UNAVAILABLE.

    A call that reaches the server in the instant its stop begins can be CANCELLED by
    gRPC's core instead (accepted, then dropped by the shutdown; seen once in CI): that
    is the transition, so look again; only UNAVAILABLE says the stop has begun."""
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            health.Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.CANCELLED:
                continue
            assert error.code() == grpc.StatusCode.UNAVAILABLE, error
            return
        time.sleep(0.02)
    pytest.fail(f"the server still answered health checks {timeout}s after SIGTERM")


def cli(server: Server, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """An operator command against the server (token: the data dir's token file)."""
    port = int(server.address.rsplit(":", 1)[1])
    return subprocess.run(
        [*registry_command(), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment(server.data_dir, port, **extra),
        check=False,
    )


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GRPCURL), "-plaintext", *args], capture_output=True, text=True, timeout=60, check=False
    )


def credentials(data_dir: Path) -> list[tuple[str, str, str]]:
    """(token, party, name) of each line of the credentials file the first start wrote."""
    lines = (data_dir / "credentials").read_text().splitlines()
    return [(token, party, name) for token, party, name in (line.split() for line in lines)]


def first_token(data_dir: Path) -> tuple[str, str, str]:
    """The first regulator's token (the CLI's default)."""
    return credentials(data_dir)[0]


def admin_token(data_dir: Path, name: str = "admin") -> str:
    return next(token for token, _, n in credentials(data_dir) if n == name)


def add_principal(server: Server, party: str, name: str, role: str, accounts: str = "") -> str:
    """Grant a role (proposed by the first administrator and approved by the second,
    through the CLI) and issue a token."""
    admin = admin_token(server.data_dir)
    scope = ["--accounts", accounts] if accounts else []
    for token in (admin, admin_token(server.data_dir, "admin-2")):
        granted = cli(
            server,
            "access",
            "grant",
            f"{party}.{name}.{role}",
            party,
            name,
            role,
            *scope,
            "--reason",
            "test principal",
            "--token",
            token,
        )
        assert granted.returncode == 0, granted.stderr
    issued = cli(
        server, "access", "token", "issue", party, name, "--reason", "test token", "--token", admin
    )
    assert issued.returncode == 0, issued.stderr
    return issued.stdout.split()[-1]


def settled_batch_ids(client: RegistryClient) -> list[str]:
    """Client ids of every completed settlement of the batch, from the event stream."""
    ids = []
    for event in client.stream_events(event_types=["registry.Transaction.Completed"]):
        payload = json.loads(event.payload_json)
        if payload["kind"] == "SETTLEMENT" and payload["client_id"].startswith("B-"):
            ids.append(payload["client_id"])
    return ids


def test_serve_operator_commands_grpcurl_and_graceful_shutdown(tmp_path: Path) -> None:
    with serving(tmp_path) as server:
        # first start: a regulator's and two administrators' tokens, shown once and kept
        # for the local CLI in a file only its owner reads; the registry keeps hashes
        token, party, name = first_token(tmp_path)
        assert (party, name) == ("mee", "regulator")
        assert [line[1:] for line in credentials(tmp_path)] == [
            ("mee", "regulator"),
            ("mee", "admin"),
            ("mee", "admin-2"),
        ]
        assert (tmp_path / "credentials").stat().st_mode & 0o777 == 0o600
        assert token in server.stderr.read_text()
        with sqlite3.connect(tmp_path / "registry.sqlite") as db:
            stored = b"".join(
                bytes(state) for (state,) in db.execute("SELECT state FROM stored_events")
            )
        assert stored and token.split(".")[1].encode() not in stored  # only its hash
        exchange_token = add_principal(server, "shanghai-exchange", "settlement", "exchange", "*")
        assert f"registry serving on {server.address}" in server.stdout.read_text()
        assert (tmp_path / "registry.sqlite").exists()

        with (
            RegistryClient(server.address, token, attempts=1) as client,
            RegistryClient(server.address, exchange_token, attempts=1) as exchange,
        ):
            seed_market(client)
            [sold] = exchange.settle_trades([trade("T-1", A, TRADER, 1_000)])
            assert sold.status == settlement_pb.TRADE_STATUS_SETTLED
            caught_up(client)

            # the operator commands, as subprocesses, with the local token file
            done = cli(server, "balances", A)
            assert done.returncode == 0, done.stderr
            assert done.stdout.splitlines() == [
                f"{'unit class':<32}{'total':>16}{'held':>16}{'available':>16}",
                f"{'CEA/2025':<32}{'99,000':>16}{'0':>16}{'99,000':>16}",
            ]
            done = cli(server, "history", A)
            assert done.returncode == 0, done.stderr
            rows = [line.split() for line in done.stdout.splitlines()[1:]]
            assert [row[1:] for row in rows] == [
                [
                    "ALLOCATION",
                    "CREDIT",
                    "CEA/2025",
                    "100,000",
                    "CN-ISSUANCE",
                    f"mee:ALLOC-2025-{A}",
                ],
                ["SETTLEMENT", "DEBIT", "CEA/2025", "1,000", TRADER, "shanghai-exchange:T-1"],
            ]
            assert [int(row[0]) for row in rows] == [m.position for m in client.transactions(A)]
            done = cli(server, "trace", "CEA/2025", "1")
            assert done.returncode == 0, done.stderr
            lines = done.stdout.splitlines()
            assert lines[0] == f"serial 1 of CEA/2025 is in {TRADER}"
            assert [line.split()[1:] for line in lines[1:]] == [
                ["ISSUANCE", "(new)", "->", "CN-ISSUANCE", "mee:ISS-CEA-2025"],
                ["ALLOCATION", "CN-ISSUANCE", "->", A, f"mee:ALLOC-2025-{A}"],
                ["SETTLEMENT", A, "->", TRADER, "shanghai-exchange:T-1"],
            ]
            for args, message, status in (
                (
                    ("balances", "NOPE-0001"),
                    "registry: NOT_FOUND UNKNOWN_ACCOUNT: no account NOPE-0001",
                    4,  # not found
                ),
                (("trace", "CEA/2025", "5000000"), "registry: NOT_FOUND UNKNOWN_SERIAL: ", 4),
                (
                    ("balances", A, "--token", "0123456789abcdef.wrong-secret-0000000000000"),
                    "registry: UNAUTHENTICATED INVALID_CREDENTIALS: ",
                    8,  # denied
                ),
                (("trace", "CEA", "1"), "registry: unit class 'CEA': expected ", 2),  # usage
            ):
                done = cli(server, *args)
                assert done.returncode == status, (args, done.stdout, done.stderr)
                assert done.stderr.startswith(message), done.stderr
                assert "Traceback" not in done.stderr

            # grpcurl: discovery through reflection, and a call with the bearer token
            listed = grpcurl(server.address, "list")
            assert listed.returncode == 0, listed.stderr
            assert set(listed.stdout.split()) == REGISTRY_SERVICES | {
                "grpc.health.v1.Health",
                "grpc.reflection.v1alpha.ServerReflection",
            }
            methods = grpcurl(server.address, "list", "registry.v1.AccountService")
            assert "registry.v1.AccountService.GetAccount" in methods.stdout.split()
            got = grpcurl(
                "-H",
                f"authorization: Bearer {token}",
                "-d",
                json.dumps({"account_id": A}),
                server.address,
                "registry.v1.AccountService/GetAccount",
            )
            assert got.returncode == 0, got.stderr
            account = json.loads(got.stdout)["account"]
            assert (account["account_id"], account["account_type"], account["state"]) == (
                A,
                "ACCOUNT_TYPE_COMPLIANCE",
                "ACCOUNT_STATE_OPEN",
            )
            refused = grpcurl(
                "-d",
                json.dumps({"account_id": A}),
                server.address,
                "registry.v1.AccountService/GetAccount",
            )
            assert refused.returncode != 0
            assert "Unauthenticated" in refused.stderr and "MISSING_CREDENTIALS" in refused.stderr
            health = grpcurl(server.address, "grpc.health.v1.Health/Check")
            assert json.loads(health.stdout) == {"status": "SERVING"}

            # a token works as soon as it is issued and stops as soon as it is revoked
            spare = add_principal(server, "shanghai-exchange", "backup", "exchange", "*")
            with RegistryClient(server.address, spare, attempts=1) as backup:
                assert backup.balances(A)
                revoked = cli(
                    server,
                    "access",
                    "revoke",
                    spare.split(".")[0],
                    "--reason",
                    "laptop lost",
                    "--token",
                    admin_token(tmp_path),
                )
                assert revoked.returncode == 0, revoked.stderr
                error = rpc_error(lambda: backup.balances(A))
                assert (error.code, error.reason) == (
                    grpc.StatusCode.UNAUTHENTICATED,
                    "INVALID_CREDENTIALS",
                )

            # graceful shutdown: SIGTERM while a big batch is in flight
            outcome: dict[str, object] = {}

            def settle_batch() -> None:
                request = settlement_pb.SettleTradesRequest(
                    trades=[trade(f"B-{i}", A, TRADER, 1) for i in range(BATCH)]
                )
                try:
                    outcome["response"] = exchange.settlement.SettleTrades(
                        request, metadata=exchange.metadata, timeout=60
                    )
                except grpc.RpcError as error:
                    outcome["error"] = error_details(error)

            worker = threading.Thread(target=settle_batch)
            worker.start()
            time.sleep(0.3)  # the batch is on the wire and being settled
            assert worker.is_alive(), "the batch finished before SIGTERM: make it bigger"
            server.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            wait_shutting_down(client.channel)
            # new calls are refused at once, on the open connection and on a new one
            error = rpc_error(
                lambda: client.call(
                    client.accounts.GetAccount,
                    account_pb.GetAccountRequest(account_id=A),
                    timeout=5,
                )
            )
            assert error.code == grpc.StatusCode.UNAVAILABLE
            with RegistryClient(server.address, token, attempts=1, timeout=5) as late:
                error = rpc_error(lambda: late.balances(A))
                assert error.code == grpc.StatusCode.UNAVAILABLE
            returncode = server.process.wait(timeout=GRACE_SECONDS + 20)
            stopped = time.monotonic() - signalled
            worker.join(timeout=60)
        assert returncode == 0, server.output()
        assert stopped < GRACE_SECONDS + 2, f"took {stopped:.1f}s to stop"
        assert "signal SIGTERM: shutting down gracefully" in server.stderr.read_text()
        assert "INFO registry.server stopped" in server.stderr.read_text()

    # restart on the same data: the batch is there exactly once, or not at all
    with (
        serving(tmp_path) as again,
        RegistryClient(again.address, token, attempts=1) as client,
        RegistryClient(again.address, exchange_token, attempts=1) as exchange,
    ):
        ids = settled_batch_ids(client)
        head = caught_up(client)
        if "response" in outcome:
            response = outcome["response"]
            assert isinstance(response, settlement_pb.SettleTradesResponse)
            assert {r.status for r in response.results} == {settlement_pb.TRADE_STATUS_SETTLED}
            assert len(response.results) == BATCH
            assert sorted(ids) == sorted(f"B-{i}" for i in range(BATCH))
            assert balance(client, TRADER, head) == 1_000 + BATCH
            assert transaction(exchange, f"B-{BATCH - 1}").quantity == 1
        else:
            error = outcome["error"]
            assert getattr(error, "code", None) == grpc.StatusCode.UNAVAILABLE, error
            assert ids == []
            assert balance(client, TRADER, head) == 1_000
        # the token added while the first server ran works now
        assert balance(exchange, A, head) == ALLOCATIONS[A] - 1_000 - len(ids)
        again.process.send_signal(signal.SIGTERM)
        assert again.process.wait(timeout=GRACE_SECONDS + 20) == 0


def test_a_taken_port_is_reported_as_bad_configuration(tmp_path: Path) -> None:
    """grpcio raises on a taken port; the server reports it as configuration, untraced."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*registry_command(), "serve"],
            capture_output=True,
            text=True,
            timeout=60,
            env=environment(tmp_path, port),
            check=False,
        )
    assert done.returncode == 2, done.stderr
    assert f"registry: INVALID_CONFIGURATION: cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


def test_read_model_times_do_not_depend_on_the_local_time_zone(tmp_path: Path) -> None:
    """SQLite gives read-model times back naive; they are UTC whatever the server's zone."""
    with serving(tmp_path, TZ="Asia/Shanghai") as server:
        token = first_token(tmp_path)[0]
        with RegistryClient(server.address, token, attempts=1) as client:
            seed_market(client)
            caught_up(client)
            recorded = transaction(client, f"ALLOC-2025-{A}").record_time
            [movement] = list(client.transactions(A))
            opened = client.call(
                client.accounts.GetAccount, account_pb.GetAccountRequest(account_id=A)
            ).account.open_time
            listed = [
                a.open_time
                for a in client.call(
                    client.accounts.ListAccounts, account_pb.ListAccountsRequest()
                ).accounts
                if a.account_id == A
            ]
            history = client.call(
                client.audit.GetAccountHistory, audit_pb.GetAccountHistoryRequest(account_id=A)
            )
            assert history.events  # the write model's own times are right
            assert (movement.record_time, listed) == (recorded, [opened])
