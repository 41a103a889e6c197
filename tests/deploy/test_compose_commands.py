"""deploy/compose/compose.yaml, run without Docker: each registry service's own command
(its entrypoint, registry-run.sh, and its command) with its own environment, as local
processes on the real PostgreSQL (a fresh database). Only what a container would see
differently is translated: the database host and user, listen ports (free ones), the
secrets' paths (files made by make-secrets.sh) and the configs' paths.

The jobs migrate and create the first administrator (a second run succeeds doing
nothing); two servers and the worker start; the image's HEALTHCHECK command says when
the servers are SERVING; calls go through each server's address and what one wrote is
read back through the other once the worker has projected it; the ledger verifies with
the deployment's public key; nginx serves both over TLS on one address (skipped
without nginx, but failed under CI=true); SIGTERM stops everything cleanly."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from registry.client import RegistryClient
from registry.v1 import access_service_pb2 as access_pb
from registry.v1 import account_service_pb2 as account_pb
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
from tests.support import fresh_pg_database

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

BIN = Path(sys.executable).parent
SERVERS = ("registry-1", "registry-2")
ACCOUNT = "PWR-SD-0001"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    """The compose services as processes, and what the test needs to reach them."""

    directory: Path
    database_url: str
    secrets: Path
    environments: dict[str, dict[str, str]] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    jobs: dict[str, list[subprocess.CompletedProcess[str]]] = field(default_factory=dict)
    admin_token: str = ""
    second_admin_token: str = ""

    def address(self, service: str) -> str:
        return self.environments[service]["REGISTRY_LISTEN"]

    def log(self, service: str) -> str:
        return "".join(
            path.read_text(errors="replace")
            for path in sorted(self.directory.glob(f"{service}.*.log"))
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

    def healthy(self, service: str) -> subprocess.CompletedProcess[str]:
        """The image's HEALTHCHECK, run as the container runs it: in its environment."""
        return subprocess.run(
            healthcheck_command(),
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
            process = self.processes[service]
            if process.poll() is not None:
                pytest.fail(f"{service} exited {process.returncode}:\n{self.log(service)}")
            last = self.healthy(service)
            if last.returncode == 0:
                return
            time.sleep(0.3)
        pytest.fail(f"{service} not healthy in {timeout}s: {last}\n{self.log(service)}")


def environment(
    service_name: str, service: dict[str, Any], database_url: str, secrets: Path, data_dir: Path
) -> dict[str, str]:
    """The container's environment, as this machine can honour it."""
    database = urlsplit(database_url)
    secret_files = {
        name: secrets / spec["file"].removeprefix("./secrets/")
        for name, spec in compose()["secrets"].items()
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    given = {k: unescape(str(v)) for k, v in service.get("environment", {}).items()}
    env.update(image_environment() if built_here(service) else {})
    env.update(given)
    translated = {
        "DB_HOST": database.hostname or "127.0.0.1",
        "DB_PORT": str(database.port or 5432),
        "DB_NAME": database.path.lstrip("/"),
        "DB_USER": database.username or "postgres",
        "REGISTRY_DATA_DIR": str(data_dir / service_name),
    }
    for key, value in translated.items():
        if key in env:
            env[key] = value
    listen = env.get("REGISTRY_LISTEN", "")
    assert listen in ("", "0.0.0.0:50051"), listen
    if listen:
        env["REGISTRY_LISTEN"] = f"127.0.0.1:{free_port()}"
    if env.get("REGISTRY_METRICS_PORT"):  # 9464 in each container; one host here
        env["REGISTRY_METRICS_PORT"] = str(free_port())
    for key, value in list(env.items()):
        if value.startswith("/run/secrets/"):
            name = value.removeprefix("/run/secrets/")
            assert name in service.get("secrets", []), f"{service_name}: {key} not mounted"
            env[key] = str(secret_files[name])
    return env


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
        url = cleanup.enter_context(fresh_pg_database(migrated=False))
        secrets = directory / "secrets"
        made = subprocess.run(
            ["sh", str(COMPOSE_DIR / "make-secrets.sh"), str(secrets)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert made.returncode == 0, made.stderr
        running = Stack(directory, url, secrets)
        for name, service in services().items():
            if built_here(service):
                running.environments[name] = environment(
                    name, service, url, secrets, directory / "data"
                )
        cleanup.callback(stop_all, running)

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


def client(stack: Stack, service: str, token: str) -> RegistryClient:
    return RegistryClient(stack.address(service), token, timeout=15)


def test_jobs_migrate_then_initialise_once(stack: Stack) -> None:
    (migrated,) = stack.jobs["migrate"]
    assert "migrated to head" in migrated.stdout, migrated.stdout
    first, second = stack.jobs["access-init"]
    assert "mee/admin (admin): token (shown once):" in first.stdout
    assert re.fullmatch(r"[0-9a-f]{16}\.\S+", stack.admin_token), first.stdout
    assert "principals exist already" in second.stdout
    assert "nothing to do" in second.stdout


def test_calls_through_each_server_read_back_through_the_other(stack: Stack) -> None:
    with client(stack, "registry-1", stack.admin_token) as admin:
        tokens = {}
        for grant_id, party, name, role, accounts in (
            ("li-regulator", "mee", "regulator-li", access_pb.ROLE_REGULATOR, []),
            ("sh-exchange", "shanghai-exchange", "settlement", access_pb.ROLE_EXCHANGE, ["*"]),
        ):
            request = access_pb.GrantRoleRequest(
                grant_id=grant_id,
                party=party,
                name=name,
                role=role,
                account_ids=accounts,
                reason="compose deployment test",
            )
            assert admin.call(admin.access.GrantRole, request).pending
            with client(stack, "registry-2", stack.second_admin_token) as second:
                # four eyes: the second administrator approves, through the other server
                assert not second.call(second.access.GrantRole, request).pending
            tokens[role] = admin.call(
                admin.access.IssueToken,
                access_pb.IssueTokenRequest(
                    party=party, name=name, reason="compose deployment test"
                ),
            ).token
    regulator, exchange = tokens[access_pb.ROLE_REGULATOR], tokens[access_pb.ROLE_EXCHANGE]

    with client(stack, "registry-2", regulator) as on_two:
        opened = open_company(on_two, ACCOUNT)
    assert opened.position > 0 and not opened.replayed

    with client(stack, "registry-1", regulator) as on_one:
        # the aggregate: the same store behind both servers
        account = on_one.call(
            on_one.accounts.GetAccount, account_pb.GetAccountRequest(account_id=ACCOUNT)
        ).account
        assert account.account_id == ACCOUNT
    with client(stack, "registry-1", exchange) as on_one:
        # the read models: the worker projected the opening
        assert on_one.balances(ACCOUNT, min_position=opened.position) == []
        listed = on_one.call(on_one.accounts.ListAccounts, account_pb.ListAccountsRequest())
        assert ACCOUNT in {a.account_id for a in listed.accounts}

    public_key = (stack.secrets / "ledger-public-key.pem").read_text()
    with client(stack, "registry-2", regulator) as on_two:
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
