"""`registry health` (registry/cli/health.py) against a bare gRPC health service, in
plaintext and over TLS with the certificate deploy/compose/make-secrets.sh makes: the
exit status is what a container health check needs (0 SERVING, 1 not, 2 no answer)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from registry.cli import health as health_cli
from tests.deploy.files import COMPOSE_DIR


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("health") / "secrets"
    made = subprocess.run(
        ["sh", str(COMPOSE_DIR / "make-secrets.sh"), str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "REGISTRY_TLS_NAMES": "registry.internal"},
    )
    assert made.returncode == 0, made.stderr
    return directory


def serve(tls: tuple[bytes, bytes] | None = None) -> tuple[grpc.Server, health.HealthServicer, str]:
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    if tls is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        key, chain = tls
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, chain)]))
    server.start()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return server, servicer, f"127.0.0.1:{port}"


@pytest.fixture
def plaintext() -> Iterator[tuple[health.HealthServicer, str]]:
    server, servicer, address = serve()
    yield servicer, address
    server.stop(None)


@pytest.fixture
def tls(secrets: Path) -> Iterator[str]:
    pair = (
        (secrets / "tls" / "server.key").read_bytes(),
        (secrets / "tls" / "server.pem").read_bytes(),
    )
    server, _, address = serve(pair)
    yield address
    server.stop(None)


def free_address() -> str:
    server = grpc.server(ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.stop(None)
    return f"127.0.0.1:{port}"


def test_serving_not_serving_unknown_and_unreachable(
    plaintext: tuple[health.HealthServicer, str], capsys: pytest.CaptureFixture[str]
) -> None:
    servicer, address = plaintext
    assert health_cli.main(["--server", address]) == 0
    assert capsys.readouterr().out.strip() == f"{address}: SERVING"
    servicer.set("registry.v1.SettlementService", health_pb2.HealthCheckResponse.SERVING)
    assert health_cli.main(["--server", address, "--service", "registry.v1.SettlementService"]) == 0
    assert health_cli.main(["--server", address, "--service", "no.Such"]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err
    servicer.enter_graceful_shutdown()  # what the server does first on SIGTERM
    assert health_cli.main(["--server", address]) == 1
    assert "NOT_SERVING" in capsys.readouterr().err
    assert health_cli.main(["--server", free_address(), "--timeout", "2"]) == 2
    assert re.search(r"UNAVAILABLE|DEADLINE_EXCEEDED", capsys.readouterr().err)


def test_tls_with_the_deployment_ca(
    tls: str, secrets: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = str(secrets / "tls" / "ca.pem")
    assert health_cli.main(["--server", tls, "--tls-ca", ca]) == 0
    # the certificate's other name, checked on a loopback address
    assert (
        health_cli.main(["--server", tls, "--tls-ca", ca, "--tls-server-name", "registry.internal"])
        == 0
    )
    assert (
        health_cli.main(
            [
                "--server",
                tls,
                "--tls-ca",
                ca,
                "--timeout",
                "2",
                "--tls-server-name",
                "elsewhere.example",
            ]
        )
        == 2
    )
    assert health_cli.main(["--server", tls, "--timeout", "2"]) == 2  # plaintext to TLS
    capsys.readouterr()
    assert health_cli.main(["--server", tls, "--tls-ca", str(secrets / "missing.pem")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_default_address_is_the_local_server() -> None:
    default = health_cli.default_server
    assert default({"REGISTRY_LISTEN": "0.0.0.0:50051"}) == "127.0.0.1:50051"
    assert default({"REGISTRY_LISTEN": "[::]:7000"}) == "[::1]:7000"
    assert (
        default({"REGISTRY_LISTEN": "10.0.0.5:7000", "REGISTRY_SERVER": "elsewhere:1"})
        == "10.0.0.5:7000"
    )
    assert (
        default({"REGISTRY_LISTEN": "127.0.0.1:0", "REGISTRY_SERVER": "elsewhere:1"})
        == "elsewhere:1"
    )
    assert default({"REGISTRY_LISTEN": "unix:/run/registry.sock"}) == "unix:/run/registry.sock"
    assert default({}) == "127.0.0.1:50051"
