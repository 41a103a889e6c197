"""End-to-end fixtures: a real gRPC server on a free port over SQLite or PostgreSQL,
and clients for each kind of caller."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from registry.application import Registry
from registry.bootstrap import build_registry, build_server
from registry.client import ErrorDetails, RegistryClient, error_details
from registry.domain.access import Role
from registry.domain.transactions import Principal
from registry.persistence.engine import make_engine, make_read_engine
from registry.readmodels.queries import ReadModels
from registry.settings import Settings
from services.backend import Backend
from services.server import RegistryServer, ServerSettings
from tests.support import fresh_pg_database

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
EXISTS = grpc.StatusCode.ALREADY_EXISTS

OPERATED = (
    "PWR-SD-0001",
    "PWR-SD-0002",
    "PWR-GD-0001",
    "STL-SD-0001",
    "STL-SD-0002",
    "CEM-SD-0001",
    "CEM-HB-0001",
    "PRJ-YN-0001",
    "TRD-SH-0001",
    "TRD-SH-0002",
    "TRD-BJ-0001",
    "TRD-BJ-0002",
)
"""The accounts the test operator runs: the companies the API tests create."""

PRINCIPALS: dict[str, tuple[Principal, tuple[tuple[Role, tuple[str, ...]], ...]]] = {
    "regulator": (Principal("mee", "regulator-li"), ((Role.REGULATOR, ()),)),
    "regulator2": (Principal("mee", "regulator-wang"), ((Role.REGULATOR, ()),)),
    "exchange": (Principal("shanghai-exchange", "settlement"), ((Role.EXCHANGE, ("*",)),)),
    "exchange2": (Principal("beijing-exchange", "settlement"), ((Role.EXCHANGE, ("*",)),)),
    # runs the test companies; reads like an auditor, so read tests need not care whose
    # account they read (tests/e2e/test_authorization.py checks the roles one by one)
    "operator": (
        Principal("huaneng", "operator-wang"),
        ((Role.OPERATOR, OPERATED), (Role.AUDITOR, ())),
    ),
    "auditor": (Principal("nao", "auditor-zhao"), ((Role.AUDITOR, ()),)),
    "admin": (Principal("mee", "admin"), ((Role.ADMIN, ()),)),
    # four eyes on access: a second administrator approves the first one's grants
    "admin2": (Principal("mee", "admin-2"), ((Role.ADMIN, ()),)),
}
"""The callers every API test has: who, and the roles (with accounts) they hold."""


def grant_principals(registry: Registry) -> dict[str, str]:
    """Grant ``PRINCIPALS`` their roles and issue each a token: name -> token."""
    system = Principal("system", "tests")
    tokens = {}
    for name, (principal, grants) in PRINCIPALS.items():
        for role, accounts in grants:
            registry.access.grant_role(
                system, f"{name}-{role}", principal, role.value, accounts, "test principal"
            )
        tokens[name] = registry.access.issue_token(system, principal, "test token").token
    return tokens


@dataclass
class Api:
    server: RegistryServer
    registry: Registry
    read_models: ReadModels
    clients: dict[str, RegistryClient]
    tokens: dict[str, str]

    @property
    def address(self) -> str:
        return self.server.address

    @property
    def regulator(self) -> RegistryClient:
        return self.clients["regulator"]

    @property
    def exchange(self) -> RegistryClient:
        return self.clients["exchange"]

    @property
    def operator(self) -> RegistryClient:
        return self.clients["operator"]

    @property
    def auditor(self) -> RegistryClient:
        return self.clients["auditor"]

    @property
    def admin(self) -> RegistryClient:
        return self.clients["admin"]

    @property
    def admin2(self) -> RegistryClient:
        return self.clients["admin2"]

    def client(self, token: str) -> RegistryClient:
        client = RegistryClient(self.address, token, timeout=30, attempts=1)
        self.clients[f"extra-{len(self.clients)}"] = client
        return client


@contextmanager
def running_api(
    backend: str,
    tmp_path: Path,
    interceptors: Sequence[grpc.ServerInterceptor] = (),
    **server_options: Any,
) -> Iterator[Api]:
    with ExitStack() as stack:
        if backend == "postgres":
            url = stack.enter_context(fresh_pg_database())
        else:
            url = f"sqlite:///{tmp_path / 'api.sqlite'}"
        settings = Settings(url)
        registry = build_registry(settings)
        stack.callback(registry.close)
        engine = make_engine(settings)
        stack.callback(engine.dispose)
        reads = make_read_engine(settings, 8)
        stack.callback(reads.dispose)
        read_models = ReadModels(engine, reads)
        tokens = grant_principals(registry)
        # four eyes off unless asked for: most scenarios seed the ledger with one
        # regulator's direct calls
        options = {
            "listen": "127.0.0.1:0",
            "max_workers": 8,
            "max_concurrent_rpcs": 32,
            "projections_in_process": True,
            "grace_seconds": 5.0,
            "four_eyes": False,
            "ledger_key": tmp_path / "ledger-signing-key.pem",
            **server_options,
        }
        server = build_server(
            Backend(registry, read_models), ServerSettings(**options), interceptors
        )
        server.start()
        stack.callback(server.stop, 1.0)
        clients = {
            name: RegistryClient(server.address, token, timeout=30, attempts=1)
            for name, token in tokens.items()
        }
        for client in clients.values():
            stack.callback(client.close)
        yield Api(server, registry, read_models, clients, tokens)


@pytest.fixture(params=["sqlite", "postgres"])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Api]:
    """A running server; every test using it runs on SQLite and on PostgreSQL."""
    if request.param == "postgres":
        request.applymarker(pytest.mark.postgres)
    with running_api(request.param, tmp_path) as api:
        yield api


def rpc_error(call: Callable[[], object]) -> ErrorDetails:
    """Make the call, expect it to fail, and return what its status said."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return error_details(caught.value)
