"""deploy/compose/compose.yaml, run without Docker: each service's own command (its
entrypoint and command) with its own environment, as local processes. Only what a
container would see differently is translated: hosts and ports (127.0.0.1 and free
ones), the secrets' paths (files made by make-secrets.sh), the configs' and the
volumes' paths.

The two database services run on throwaway PostgreSQL 15 clusters
(tests/pg_cluster.py): ``postgres`` is made as the image's entrypoint makes it on an
empty volume (initdb as the registry user with the secret password, the image's
pg_hba.conf, a temporary server on which the init script postgres-replication.sh is
sourced), then started with the service's command; ``postgres-replica`` runs its
script postgres-replica.sh, which copies the primary with pg_basebackup and hands over
to the image's entrypoint (a stand-in here that, as the real one with a cluster in
$PGDATA, runs the command). Both must pass their compose health checks.

The jobs migrate and create the first administrator (a second run succeeds doing
nothing); two servers and the worker start; the image's HEALTHCHECK command says when
the servers are SERVING; calls go through each server's address and what one wrote is
read back through the other once the worker has projected it; the servers' read-model
queries run on the standby and wait for its replay; the primary admits the standby's
replication connection only through the init script's line; the ledger verifies with
the deployment's public key; nginx serves both over TLS on one address (skipped
without nginx, but failed under CI=true); SIGTERM stops every registry process cleanly
and the standby restarts as a standby without copying again."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest

from registry.client import RegistryClient, error_details
from registry.v1 import access_service_pb2 as access_pb
from registry.v1 import account_service_pb2 as account_pb
from registry.v1 import administration_service_pb2 as admin_pb
from registry.v1 import audit_service_pb2 as audit_pb
from tests.deploy.files import (
    COMPOSE_DIR,
    argv,
    built_here,
    compose,
    healthcheck_command,
    image_environment,
    services,
    unescape,
)
from tests.e2e.market import open_company
from tests.pg_cluster import (
    PG_BIN,
    Workspace,
    as_server_user,
    free_port,
    give_to_server_user,
    workspace,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

BIN = Path(sys.executable).parent
SERVERS = ("registry-1", "registry-2")
DATABASES = ("postgres", "postgres-replica")
ACCOUNT = "PWR-SD-0001"
SLOT = "registry_replica"
STANDIN_ENTRYPOINT = """#!/bin/sh
# The postgres image's docker-entrypoint.sh, as it acts when $PGDATA holds a cluster:
# it runs the command. Without one it would make a new, empty primary: refuse here.
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    echo "docker-entrypoint.sh: no cluster in $PGDATA: the image would initdb a primary" >&2
    exit 1
fi
exec "$@"
"""


@dataclass
class Stack:
    """The compose services as processes, and what the test needs to reach them."""

    directory: Path
    work: Workspace
    secrets: Path
    ports: dict[str, int] = field(default_factory=dict)
    volumes: dict[str, Path] = field(default_factory=dict)
    environments: dict[str, dict[str, str]] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    databases: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    jobs: dict[str, list[subprocess.CompletedProcess[str]]] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    admin_token: str = ""
    second_admin_token: str = ""

    def address(self, service: str) -> str:
        return self.environments[service]["REGISTRY_LISTEN"]

    def url(self, service: str, database: str = "registry") -> str:
        """A superuser's URL of a database service (trusted from 127.0.0.1, as inside
        its container)."""
        return f"postgresql://registry@127.0.0.1:{self.ports[service]}/{database}"

    def sql(self, service: str, query: str) -> Any:
        with psycopg.connect(self.url(service), autocommit=True) as conn:
            row = conn.execute(query).fetchone()
            return row[0] if row else None

    def log(self, service: str) -> str:
        directory = self.work.base if service in DATABASES else self.directory
        return "".join(
            path.read_text(errors="replace") for path in sorted(directory.glob(f"{service}.*.log"))
        )

    def command(self, service: str, *args: str) -> list[str]:
        """The service's entrypoint and ``args`` (or its own command), paths of the
        container's config files translated to the repository's."""
        targets = {
            entry["target"]: str(COMPOSE_DIR / compose()["configs"][entry["source"]]["file"])
            for entry in services()[service].get("configs", [])
        }
        full = argv(services()[service])
        if args:
            entrypoint = services()[service]["entrypoint"]
            full = [*entrypoint, *args]
        return [targets.get(word, unescape(word)) for word in full]

    def run(
        self, service: str, *args: str, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.command(service, *args),
            env=self.environments[service],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        self.jobs.setdefault(service, []).append(done)
        return done

    def start(self, service: str) -> None:
        with (
            (self.directory / f"{service}.out.log").open("wb") as out,
            (self.directory / f"{service}.err.log").open("wb") as err,
        ):
            self.processes[service] = subprocess.Popen(
                self.command(service), env=self.environments[service], stdout=out, stderr=err
            )

    def start_database(self, service: str) -> None:
        """The service's command as the server user, listening on 127.0.0.1 at its
        port with its socket in the workspace (in its container: every address, 5432)."""
        local = ["-c", "listen_addresses=127.0.0.1", "-p", str(self.ports[service])]
        local += ["-k", str(self.work.base)]
        with (
            (self.work.base / f"{service}.out.log").open("ab") as out,
            (self.work.base / f"{service}.err.log").open("ab") as err,
        ):
            self.databases[service] = self.work.popen(
                [*self.command(service), *local], self.environments[service], out, err
            )

    def stop_database(self, service: str) -> int:
        """As ``docker stop`` stops it: the image's STOPSIGNAL, SIGINT (a fast shutdown)."""
        process = self.databases[service]
        process.send_signal(signal.SIGINT)
        return process.wait(timeout=60)

    def healthy(self, service: str) -> subprocess.CompletedProcess[str]:
        """The service's health check (its own, else the image's HEALTHCHECK), run as
        the container runs it: in its environment."""
        check = services()[service].get("healthcheck", {}).get("test")
        if check is None:
            command = healthcheck_command()
        elif check[0] == "CMD-SHELL":
            command = ["sh", "-c", unescape(check[1])]
        else:
            command = [unescape(word) for word in check[1:]]
        return subprocess.run(
            command,
            env=self.environments[service],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def wait_healthy(self, service: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            process = {**self.processes, **self.databases}[service]
            if process.poll() is not None:
                pytest.fail(f"{service} exited {process.returncode}:\n{self.log(service)}")
            last = self.healthy(service)
            if last.returncode == 0:
                return
            time.sleep(0.3)
        pytest.fail(f"{service} not healthy in {timeout}s: {last}\n{self.log(service)}")


def environment(service_name: str, service: dict[str, Any], stack: Stack) -> dict[str, str]:
    """The container's environment, as this machine can honour it."""
    secret_files = {
        name: stack.secrets / spec["file"].removeprefix("./secrets/")
        for name, spec in compose()["secrets"].items()
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "PG", "DB_"))}
    env["PATH"] = os.pathsep.join([str(BIN), str(PG_BIN), env.get("PATH", "")])
    given = {k: unescape(str(v)) for k, v in service.get("environment", {}).items()}
    env.update(image_environment() if built_here(service) else {})
    env.update(given)
    # A database service's name (the host on `backend`) and port 5432: 127.0.0.1 and
    # that service's port here.
    for host, port in (("DB_HOST", "DB_PORT"), ("DB_READ_HOST", "DB_READ_PORT")):
        if env.get(host):
            assert env[host] in DATABASES, f"{service_name}: {host}={env[host]}"
            assert env.get(port, "5432") == "5432", f"{service_name}: {port}"
            env[port] = str(stack.ports[env[host]])
            env[host] = "127.0.0.1"
    if "REGISTRY_DATA_DIR" in env:
        env["REGISTRY_DATA_DIR"] = str(stack.directory / "data" / service_name)
    for key in ("DB_NAME", "DB_USER", "POSTGRES_DB", "POSTGRES_USER"):
        assert env.get(key, "registry") == "registry", f"{service_name}: {key}"
    listen = env.get("REGISTRY_LISTEN", "")
    assert listen in ("", "0.0.0.0:50051"), listen
    if listen:
        env["REGISTRY_LISTEN"] = f"127.0.0.1:{free_port()}"
    if env.get("REGISTRY_METRICS_PORT"):  # 9464 in each container; one host here
        env["REGISTRY_METRICS_PORT"] = str(free_port())
    if service_name in DATABASES:
        mounts = dict(volume.split(":", 1)[::-1] for volume in service["volumes"])
        for volume in mounts.values():
            stack.volumes[volume] = stack.work.base / volume
        data = env.get("PGDATA", "/var/lib/postgresql/data")  # the image's default
        (mount,) = [m for m in mounts if Path(data).is_relative_to(m)]
        env["PGDATA"] = str(stack.volumes[mounts[mount]] / Path(data).relative_to(mount))
        # What the health check's 127.0.0.1 reaches inside the container.
        env["PGPORT"] = str(stack.ports[service_name])
        for tmpfs in service.get("tmpfs", []):
            if env.get("PGPASSFILE", "").startswith(f"{tmpfs}/"):
                local = stack.work.base / f"{service_name}-tmpfs"
                env["PGPASSFILE"] = str(local / Path(env["PGPASSFILE"]).relative_to(tmpfs))
        env["PATH"] = os.pathsep.join([str(stack.work.base / "bin"), env["PATH"]])
    for key, value in list(env.items()):
        if value.startswith("/run/secrets/"):
            name = value.removeprefix("/run/secrets/")
            assert name in service.get("secrets", []), f"{service_name}: {key} not mounted"
            env[key] = str(secret_files[name])
    return env


def first_start_of_the_postgres_image(stack: Stack) -> None:
    """What the postgres image's entrypoint does on an empty volume: initdb with the
    registry user and the secret password (trust inside the container), its
    ``host all all all`` line by SCRAM, a temporary socket-only server with the
    service's command line, the database, then each /docker-entrypoint-initdb.d/*.sh
    the service mounts, sourced in bash under ``set -Eeo pipefail``.

    One difference: initdb's ``host replication all 127.0.0.1/32 trust`` (and ::1)
    lines are left out. In the container they admit only the container itself; the
    standby connects from another one, which they never match. Here every connection
    comes from 127.0.0.1, so with them the init script's line would go untested."""
    env = stack.environments["postgres"]
    data = Path(env["PGDATA"])
    password = stack.secrets / "postgres-password"
    stack.work.initdb(data, f"--pwfile={password}", user=env["POSTGRES_USER"])
    hba = data / "pg_hba.conf"
    lines = [
        line
        for line in hba.read_text().splitlines()
        if not re.match(r"host\s+replication\s+all\s+(127\.0\.0\.1/32|::1/128)\s", line)
    ]
    hba.write_text("\n".join([*lines, "", "host all all all scram-sha-256", ""]))
    command = stack.command("postgres")
    assert command[0] == "postgres", command
    port = stack.ports["postgres"]
    temporary = ["-c", "listen_addresses=", "-p", str(port), "-k", str(stack.work.base)]
    stack.work.start(data, *command[1:], *temporary)
    try:
        socket_env = {**env, "PGHOST": str(stack.work.base), "PGPORT": str(port)}
        stack.work.run(
            "psql", "-X", "-v", "ON_ERROR_STOP=1", "-d", "postgres", "-U", env["POSTGRES_USER"],
            "-c", f'CREATE DATABASE "{env["POSTGRES_DB"]}"', env=socket_env,
        )  # fmt: skip
        for target, script in sorted(initdb_scripts().items()):
            sourced = subprocess.run(
                ["bash", "-c", 'set -Eeo pipefail; . "$1"', "bash", str(script)],
                env=socket_env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                cwd=stack.work.base,
                **as_server_user(),
            )
            assert sourced.returncode == 0, (target, sourced.stdout, sourced.stderr)
    finally:
        stack.work.stop(data, "fast")


def initdb_scripts() -> dict[str, Path]:
    """The postgres service's /docker-entrypoint-initdb.d/*.sh: target -> file."""
    found = {}
    for entry in services()["postgres"].get("configs", []):
        if entry["target"].startswith("/docker-entrypoint-initdb.d/"):
            assert entry["target"].endswith(".sh"), entry
            found[entry["target"]] = COMPOSE_DIR / compose()["configs"][entry["source"]]["file"]
    return found


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("compose")
    offered = subprocess.run(
        [*healthcheck_command()[:2], "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
    )
    if offered.returncode != 0:
        pytest.fail(
            "the image's HEALTHCHECK runs `registry health`, which registry/cli/app.py "
            f"does not offer: add `health.add_parser(sub)`\n{offered.stderr}"
        )
    with ExitStack() as cleanup:
        work = cleanup.enter_context(
            workspace("registry-compose-", "the compose stack's PostgreSQL and its standby")
        )
        secrets = work.base / "secrets"
        made = subprocess.run(
            ["sh", str(COMPOSE_DIR / "make-secrets.sh"), str(secrets)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert made.returncode == 0, made.stderr
        give_to_server_user(secrets)  # in the containers: mounted readable (0644)
        running = Stack(directory, work, secrets, ports={name: free_port() for name in DATABASES})
        standin = work.base / "bin" / "docker-entrypoint.sh"
        standin.parent.mkdir()
        standin.write_text(STANDIN_ENTRYPOINT)
        standin.chmod(0o755)
        for name, service in services().items():
            if built_here(service) or name in DATABASES:
                running.environments[name] = environment(name, service, running)
        for path in [*running.volumes.values(), work.base / "postgres-replica-tmpfs"]:
            path.mkdir()  # a new volume's root belongs to postgres in the image
            give_to_server_user(path)
        cleanup.callback(stop_databases, running)
        cleanup.callback(stop_all, running)

        first_start_of_the_postgres_image(running)
        running.start_database("postgres")
        running.wait_healthy("postgres")
        running.start_database("postgres-replica")
        running.wait_healthy("postgres-replica", timeout=120)

        migrated = running.run("migrate")
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        first = running.run("access-init")
        assert first.returncode == 0, first.stdout + first.stderr
        lines = first.stdout.strip().splitlines()
        running.admin_token = lines[-1]
        running.second_admin_token = lines[
            lines.index("mee/admin-2 (admin): token (shown once):") + 1
        ]
        second = running.run("access-init")
        assert second.returncode == 0, second.stdout + second.stderr

        running.start("worker")
        for name in SERVERS:
            running.start(name)
        for name in SERVERS:
            running.wait_healthy(name)
        yield running


def stop_all(stack: Stack) -> None:
    for process in stack.processes.values():
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def stop_databases(stack: Stack) -> None:
    for name in reversed(DATABASES):
        process = stack.databases.get(name)
        if process is None or process.poll() is not None:
            continue
        try:
            stack.stop_database(name)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


def client(stack: Stack, service: str, token: str) -> RegistryClient:
    return RegistryClient(stack.address(service), token, timeout=15)


def token_for(stack: Stack, party: str, name: str, role: int, accounts: list[str]) -> str:
    """A principal granted ``role`` (proposed by one administrator through registry-1,
    approved by the other through registry-2: four eyes) and its token, once."""
    key = f"{party}/{name}"
    if key not in stack.tokens:
        request = access_pb.GrantRoleRequest(
            grant_id=f"{party}-{name}",
            party=party,
            name=name,
            role=role,
            account_ids=accounts,
            reason="compose deployment test",
        )
        with client(stack, "registry-1", stack.admin_token) as admin:
            assert admin.call(admin.access.GrantRole, request).pending
            with client(stack, "registry-2", stack.second_admin_token) as second:
                assert not second.call(second.access.GrantRole, request).pending
            stack.tokens[key] = admin.call(
                admin.access.IssueToken,
                access_pb.IssueTokenRequest(
                    party=party, name=name, reason="compose deployment test"
                ),
            ).token
    return stack.tokens[key]


def regulator(stack: Stack, name: str = "regulator-li") -> str:
    return token_for(stack, "mee", name, access_pb.ROLE_REGULATOR, [])


def test_jobs_migrate_then_initialise_once(stack: Stack) -> None:
    (migrated,) = stack.jobs["migrate"]
    assert "migrated to head" in migrated.stdout, migrated.stdout
    first, second = stack.jobs["access-init"]
    assert "mee/admin (admin): token (shown once):" in first.stdout
    assert re.fullmatch(r"[0-9a-f]{16}\.\S+", stack.admin_token), first.stdout
    assert "principals exist already" in second.stdout
    assert "nothing to do" in second.stdout


def test_calls_through_each_server_read_back_through_the_other(stack: Stack) -> None:
    exchange = token_for(stack, "shanghai-exchange", "settlement", access_pb.ROLE_EXCHANGE, ["*"])
    with client(stack, "registry-2", regulator(stack)) as on_two:
        opened = open_company(on_two, ACCOUNT)
    assert opened.position > 0 and not opened.replayed

    with client(stack, "registry-1", regulator(stack)) as on_one:
        # the aggregate: the same store behind both servers
        account = on_one.call(
            on_one.accounts.GetAccount, account_pb.GetAccountRequest(account_id=ACCOUNT)
        ).account
        assert account.account_id == ACCOUNT
    with client(stack, "registry-1", exchange) as on_one:
        # the read models: the worker projected the opening, the standby replayed it
        assert on_one.balances(ACCOUNT, min_position=opened.position) == []
        listed = on_one.call(on_one.accounts.ListAccounts, account_pb.ListAccountsRequest())
        assert ACCOUNT in {a.account_id for a in listed.accounts}

    public_key = (stack.secrets / "ledger-public-key.pem").read_text()
    with client(stack, "registry-2", regulator(stack)) as on_two:
        deadline = time.monotonic() + 30
        while True:
            digest = on_two.call(on_two.audit.GetLedgerDigest, audit_pb.GetLedgerDigestRequest())
            if digest.position >= opened.position or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert digest.position >= opened.position, "the worker did not chain the log"
    assert digest.public_key_pem.strip() == public_key.strip()

    verified = stack.run(
        "worker", "verify", "--public-key", str(stack.secrets / "ledger-public-key.pem")
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith("OK:"), verified.stdout


def test_the_database_services_are_a_primary_and_its_streaming_standby(stack: Stack) -> None:
    assert stack.sql("postgres", "SELECT pg_is_in_recovery()") is False
    assert stack.sql("postgres-replica", "SELECT pg_is_in_recovery()") is True
    # Streaming through the slot postgres-replica.sh made, which holds the WAL for it.
    assert stack.sql("postgres", "SELECT state FROM pg_stat_replication") == "streaming"
    assert stack.sql(
        "postgres", f"SELECT active FROM pg_replication_slots WHERE slot_name = '{SLOT}'"
    )
    # A standby needs max_connections >= the primary's, or it does not start.
    assert stack.sql("postgres", "SHOW max_connections") == "200"
    assert stack.sql("postgres-replica", "SHOW max_connections") == "200"
    assert stack.sql("postgres-replica", "SHOW hot_standby_feedback") == "on"
    assert stack.sql("postgres", "SHOW max_slot_wal_keep_size") == "8GB"
    assert stack.sql("postgres", "SHOW max_wal_size") == "8GB"
    assert stack.sql("postgres", "SHOW checkpoint_timeout") == "15min"
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        stack.sql("postgres-replica", "CREATE TABLE never_here (id int)")

    # The copy was renamed into place; primary_conninfo names the password file, and
    # no password is written in the replica's volume.
    env = stack.environments["postgres-replica"]
    data = Path(env["PGDATA"])
    assert (data / "standby.signal").exists()
    assert not Path(f"{data}.partial").exists()
    auto = (data / "postgresql.auto.conf").read_text()
    assert f"primary_slot_name = '{SLOT}'" in auto, auto
    assert f"passfile=''{env['PGPASSFILE']}''" in auto, auto
    password = (stack.secrets / "postgres-password").read_text().strip()
    assert "password=" not in auto and password not in auto, auto
    volume = data.parent
    assert not any(
        password in path.read_text(errors="replace")
        for path in volume.rglob("*.conf")
        if path.is_file()
    )
    passfile = Path(env["PGPASSFILE"])
    assert stat.S_IMODE(passfile.stat().st_mode) == 0o600
    assert passfile.read_text() == (f"127.0.0.1:{stack.ports['postgres']}:*:registry:{password}\n")


def replica_reads(stack: Stack) -> int:
    """The servers' connections on the standby (make_replica_engine's name)."""
    return int(
        stack.sql(
            "postgres-replica",
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = 'registry-replica-reads'",
        )
    )


def projected(stack: Stack, service: str) -> int:
    """How far the read models in ``service``'s copy of the database are."""
    return int(stack.sql(service, "SELECT coalesce(max(position), 0) FROM rm_tracking"))


def propose_issuance(
    client: RegistryClient, proposal_id: str, quantity: int
) -> admin_pb.ProposeActionResponse:
    """A regulator's proposal to issue ``quantity`` CEA of 2025 (four eyes: it takes
    effect when another regulator approves it)."""
    payload = {
        "transaction_id": f"ISS-{proposal_id}",
        "unit_type": "CEA",
        "vintage": 2025,
        "quantity": quantity,
        "reason": "2025 issuance",
    }
    return client.call(
        client.administration.ProposeAction,
        admin_pb.ProposeActionRequest(
            proposal_id=proposal_id,
            kind=admin_pb.PROPOSAL_KIND_ISSUANCE,
            payload_json=json.dumps(payload),
            reason="compose deployment test",
        ),
    )


def test_servers_read_through_the_replica_and_wait_for_its_replay(stack: Stack) -> None:
    """An issuance of 5,000 made while the standby's replay is paused: the worker
    projects it on the primary, a GetBalances without min_position shows the
    standby's older total (stale, no error), one with the issuance's position waits
    (bounded: UNAVAILABLE), and returns the new total once replay resumes."""
    wang_token = regulator(stack, "regulator-wang")  # granted before the proposal
    for name in SERVERS:
        with client(stack, name, regulator(stack)) as on_server:
            on_server.balances("CN-ISSUANCE")
    assert replica_reads(stack) >= len(SERVERS)

    with client(stack, "registry-1", regulator(stack)) as li:
        head = propose_issuance(li, "P-REPLICA-0", 1).position
        before = sum(h.total for h in li.balances("CN-ISSUANCE", min_position=head))

    stack.sql("postgres-replica", "SELECT pg_wal_replay_pause()")
    try:
        with client(stack, "registry-1", regulator(stack)) as li:
            proposed = propose_issuance(li, "P-REPLICA", 5_000)
        with client(stack, "registry-2", wang_token) as wang:
            approved = wang.call(
                wang.administration.ApproveProposal,
                admin_pb.ApproveProposalRequest(party="mee", proposal_id="P-REPLICA"),
            )
        assert approved.proposal.status == admin_pb.PROPOSAL_STATUS_EXECUTED
        position = approved.position
        assert position > proposed.position > head

        deadline = time.monotonic() + 30
        while projected(stack, "postgres") < position and time.monotonic() < deadline:
            time.sleep(0.1)
        assert projected(stack, "postgres") >= position, "the worker did not project it"
        assert projected(stack, "postgres-replica") < position, "replay was not paused"

        with client(stack, "registry-2", regulator(stack)) as li:
            assert sum(h.total for h in li.balances("CN-ISSUANCE")) == before
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as behind:
                li.accounts.GetBalances(
                    account_pb.GetBalancesRequest(account_id="CN-ISSUANCE", min_position=position),
                    timeout=1.0,
                    metadata=li.metadata,
                )
            code = behind.value.code()
            assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            if code is grpc.StatusCode.UNAVAILABLE:
                assert error_details(behind.value).reason == "READ_MODELS_BEHIND"
            assert time.monotonic() - started < 3

            resume = threading.Timer(
                0.5, stack.sql, ("postgres-replica", "SELECT pg_wal_replay_resume()")
            )
            resume.start()
            try:
                after = li.balances("CN-ISSUANCE", min_position=position)
            finally:
                resume.join()
        assert sum(h.total for h in after) == before + 5_000
    finally:
        stack.sql("postgres-replica", "SELECT pg_wal_replay_resume()")


def replication_connection(stack: Stack, password: str) -> None:
    """What pg_basebackup and the standby's WAL receiver open: a replication
    connection to the primary over TCP as the registry user."""
    with psycopg.connect(
        host="127.0.0.1",
        port=stack.ports["postgres"],
        user="registry",
        password=password,
        dbname="registry",
        replication="true",
        connect_timeout=10,
    ):
        pass


def test_the_primary_admits_replication_only_through_the_init_script(stack: Stack) -> None:
    """Without postgres-replication.sh's line the primary refuses the standby; run by
    hand on a live primary (as docs/operations.md says for an older volume) it lets
    it in at once, with the password only, and a second run adds nothing."""
    env = stack.environments["postgres"]
    hba = Path(env["PGDATA"]) / "pg_hba.conf"
    line = "host replication registry samenet scram-sha-256"
    assert hba.read_text().splitlines().count(line) == 1
    password = (stack.secrets / "postgres-password").read_text().strip()
    replication_connection(stack, password)

    hba.write_text(hba.read_text().replace(f"{line}\n", ""))
    stack.work.run("pg_ctl", "reload", "-D", env["PGDATA"])
    time.sleep(0.5)  # the postmaster rereads pg_hba.conf on SIGHUP
    with pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry for replication"):
        replication_connection(stack, password)

    (script,) = initdb_scripts().values()
    for _ in range(2):
        by_hand = subprocess.run(
            ["sh", str(script)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=stack.work.base,
            **as_server_user(),
        )
        assert by_hand.returncode == 0, by_hand.stderr
    assert hba.read_text().splitlines().count(line) == 1
    time.sleep(0.5)
    replication_connection(stack, password)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        replication_connection(stack, password + "x")


def test_registry_health_answers_as_the_image_healthcheck_expects(stack: Stack) -> None:
    for name in SERVERS:
        done = stack.healthy(name)
        assert done.returncode == 0 and "SERVING" in done.stdout, done
    unknown = subprocess.run(
        [*healthcheck_command(), "--service", "no.such.Service"],
        env=stack.environments["registry-1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert unknown.returncode == 1, unknown
    nobody = subprocess.run(
        [*healthcheck_command(), "--server", f"127.0.0.1:{free_port()}"],
        env=stack.environments["registry-1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert nobody.returncode == 2, nobody


def nginx_config(stack: Stack, port: int) -> str:
    """deploy/compose/nginx.conf for this machine: the servers' real addresses, a free
    port, the secrets' paths, and for an nginx older than 1.25 the older http2 syntax."""
    config = (COMPOSE_DIR / "nginx.conf").read_text()
    for name in SERVERS:
        config = config.replace(f"server {name}:50051", f"server {stack.address(name)}")
    config = config.replace("listen 50051 ssl;", f"listen 127.0.0.1:{port} ssl;")
    lb = services()["lb"]
    for secret in lb["secrets"]:
        path = stack.secrets / compose()["secrets"][secret]["file"].removeprefix("./secrets/")
        config = config.replace(f"/run/secrets/{secret}", str(path))
    version = subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=False).stderr
    found = re.search(r"nginx/(\d+)\.(\d+)", version)
    assert found, version
    if (int(found.group(1)), int(found.group(2))) < (1, 25):
        config = config.replace(
            f"listen 127.0.0.1:{port} ssl;", f"listen 127.0.0.1:{port} ssl http2;"
        )
        config = config.replace("http2 on;", "")
    pid = stack.directory / "nginx" / "nginx.pid"
    return f"pid {pid};\n" + config


def require_nginx() -> None:
    """Fail under CI=true, skip elsewhere, when nginx is not installed: as PostgreSQL
    (tests.support.require_postgres), CI must exercise the load balancer's configuration,
    never pass by skipping it (.ci/run installs nginx-light and stops if it cannot)."""
    if shutil.which("nginx") is not None:
        return
    message = (
        "nginx is not installed, so deploy/compose/nginx.conf is not exercised: "
        "install it with `apt-get install nginx-light` (Debian) and put it on PATH"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def test_without_nginx_ci_fails_where_a_desk_skips(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The nginx test used to skip under CI=true too, so CI passed without ever
    starting the load balancer."""
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no nginx on it
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="apt-get install nginx-light"):
        require_nginx()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="apt-get install nginx-light"):
        require_nginx()


def test_one_tls_address_in_front_of_both_servers(stack: Stack) -> None:
    require_nginx()
    prefix = stack.directory / "nginx"
    prefix.mkdir(exist_ok=True)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_config(stack, port))
    nginx = ["nginx", "-p", str(prefix), "-e", "stderr", "-c", str(conf)]
    checked = subprocess.run(
        [*nginx, "-t"], capture_output=True, text=True, timeout=30, check=False
    )
    assert checked.returncode == 0, checked.stderr
    with (prefix / "out.log").open("wb") as out, (prefix / "err.log").open("wb") as err:
        proxy = subprocess.Popen([*nginx, "-g", "daemon off;"], stdout=out, stderr=err)
    try:
        address = f"127.0.0.1:{port}"
        ca = stack.secrets / "tls" / "ca.pem"
        health = [*healthcheck_command(), "--server", address, "--tls-ca", str(ca)]
        deadline = time.monotonic() + 20
        while True:
            done = subprocess.run(
                health,
                env=stack.environments["registry-1"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            if done.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert done.returncode == 0, (done, (prefix / "err.log").read_text())
        before = {name: stack.log(name).count("ListPrincipals") for name in SERVERS}
        with RegistryClient(
            address, stack.admin_token, timeout=15, tls_ca=ca.read_bytes()
        ) as admin:
            for _ in range(8):
                admin.call(admin.access.ListPrincipals, access_pb.ListPrincipalsRequest())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            after = {name: stack.log(name).count("ListPrincipals") for name in SERVERS}
            if sum(after.values()) - sum(before.values()) >= 8:
                break
            time.sleep(0.2)
        spread = {name: after[name] - before[name] for name in SERVERS}
        assert sum(spread.values()) == 8 and all(spread.values()), spread
        plaintext = subprocess.run(
            [*healthcheck_command(), "--server", address],
            env=stack.environments["registry-1"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert plaintext.returncode != 0, "the one address must speak TLS only"
    finally:
        proxy.send_signal(signal.SIGQUIT)  # nginx's graceful stop
        assert proxy.wait(timeout=30) == 0


def test_sigterm_stops_every_process_cleanly(stack: Stack) -> None:
    for process in stack.processes.values():
        process.send_signal(signal.SIGTERM)
    for name, process in stack.processes.items():
        assert process.wait(timeout=40) == 0, f"{name}:\n{stack.log(name)[-3000:]}"
    for name in SERVERS:
        assert "registry.server stopped" in stack.log(name), stack.log(name)[-2000:]


def test_the_standby_restarts_as_a_standby_without_copying_again(stack: Stack) -> None:
    """A later start finds the cluster in its volume: no second base backup, the
    password file written again (a fresh tmpfs), streaming from the same slot."""
    passfile = Path(stack.environments["postgres-replica"]["PGPASSFILE"])
    assert stack.stop_database("postgres-replica") == 0
    passfile.unlink()
    copies = stack.log("postgres-replica").count("no cluster in")
    assert copies == 1, stack.log("postgres-replica")
    stack.start_database("postgres-replica")
    stack.wait_healthy("postgres-replica")
    assert stack.log("postgres-replica").count("no cluster in") == copies
    assert passfile.exists()
    assert stack.sql("postgres-replica", "SELECT pg_is_in_recovery()") is True
    assert stack.sql("postgres", "SELECT count(*) FROM pg_replication_slots") == 1
