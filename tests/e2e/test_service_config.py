"""The published service config (``registry/client/service_config.json``): it names only
services and methods of ``registry.v1``, and a real channel carrying it retries."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from google.protobuf import descriptor_pool

import registry.v1.access_service_pb2
import registry.v1.account_service_pb2
import registry.v1.administration_service_pb2
import registry.v1.audit_service_pb2
import registry.v1.settlement_service_pb2  # noqa: F401  (registers the descriptors)
from registry.client import CHANNEL_OPTIONS, SERVICE_CONFIG, RegistryClient
from registry.v1 import access_service_pb2 as access_pb
from registry.v1 import access_service_pb2_grpc as access_grpc
from registry.v1 import settlement_service_pb2 as settlement_pb
from registry.v1 import settlement_service_pb2_grpc as settlement_grpc

SERVICES = {
    f"registry.v1.{name}"
    for name in (
        "AccessService",
        "AccountService",
        "AdministrationService",
        "AuditService",
        "SettlementService",
    )
}
# No client id in their requests: a repeat could issue a second token (conservatively,
# RegisterCertificate too). UNAVAILABLE only for them.
NOT_IDEMPOTENT = {
    ("registry.v1.AccessService", m) for m in ("IssueToken", "RotateToken", "RegisterCertificate")
}


def test_the_config_names_every_service_and_only_methods_that_exist() -> None:
    config = json.loads(SERVICE_CONFIG)
    pool = descriptor_pool.Default()
    named: set[str] = set()
    for method_config in config["methodConfig"]:
        policy = method_config["retryPolicy"]
        assert 2 <= policy["maxAttempts"] <= 5  # gRPC caps attempts at 5
        assert "UNAVAILABLE" in policy["retryableStatusCodes"]
        for name in method_config["name"]:
            service = pool.FindServiceByName(name["service"])  # KeyError if unknown
            named.add(service.full_name)
            if "method" in name:
                assert service.FindMethodByName(name["method"]) is not None, name
    assert named == SERVICES


def test_aborted_is_retried_only_where_a_repeat_is_safe() -> None:
    config = json.loads(SERVICE_CONFIG)

    def codes(service: str, method: str) -> list[str]:
        """gRPC's choice: the method's own entry, else its service's."""
        by_method = {
            (n["service"], n.get("method", "")): c["retryPolicy"]["retryableStatusCodes"]
            for c in config["methodConfig"]
            for n in c["name"]
        }
        return by_method.get((service, method)) or by_method[(service, "")]

    pool = descriptor_pool.Default()
    for service_name in SERVICES:
        for method in pool.FindServiceByName(service_name).methods:
            key = (service_name, method.name)
            assert ("ABORTED" in codes(*key)) is (key not in NOT_IDEMPOTENT), key


class FlakySettlement(settlement_grpc.SettlementServiceServicer):
    """Fails each method's first call UNAVAILABLE, then answers."""

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def GetTrade(
        self, request: settlement_pb.GetTradeRequest, context: grpc.ServicerContext
    ) -> settlement_pb.GetTradeResponse:
        with self.lock:
            self.calls += 1
            first = self.calls == 1
        if first:
            context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        return settlement_pb.GetTradeResponse()


class AbortingAccess(access_grpc.AccessServiceServicer):
    def __init__(self) -> None:
        self.calls = 0

    def IssueToken(
        self, request: access_pb.IssueTokenRequest, context: grpc.ServicerContext
    ) -> access_pb.IssueTokenResponse:
        self.calls += 1
        context.abort(grpc.StatusCode.ABORTED, "a race")


@pytest.fixture
def flaky() -> Iterator[tuple[str, FlakySettlement, AbortingAccess]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    settlement, access = FlakySettlement(), AbortingAccess()
    settlement_grpc.add_SettlementServiceServicer_to_server(settlement, server)
    access_grpc.add_AccessServiceServicer_to_server(access, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", settlement, access
    finally:
        server.stop(None)


def test_the_channel_retries_unavailable_by_itself(
    flaky: tuple[str, FlakySettlement, AbortingAccess],
) -> None:
    address, settlement, _ = flaky
    with RegistryClient(address, "token") as client:
        # The stub directly, not client.call: no retry loop of ours, only the channel's.
        client.settlement.GetTrade(settlement_pb.GetTradeRequest(trade_id="T-1"), timeout=10)
    assert settlement.calls == 2


def test_without_the_config_the_same_call_fails(
    flaky: tuple[str, FlakySettlement, AbortingAccess],
) -> None:
    address, settlement, _ = flaky
    options = [o for o in CHANNEL_OPTIONS if o[0] != "grpc.service_config"]
    with grpc.insecure_channel(address, options=options) as channel:
        stub = settlement_grpc.SettlementServiceStub(channel)
        with pytest.raises(grpc.RpcError) as failed:
            stub.GetTrade(settlement_pb.GetTradeRequest(trade_id="T-1"), timeout=10)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert settlement.calls == 1


def test_a_method_not_safe_to_repeat_is_not_retried_on_aborted(
    flaky: tuple[str, FlakySettlement, AbortingAccess],
) -> None:
    address, _, access = flaky
    with RegistryClient(address, "token") as client, pytest.raises(grpc.RpcError) as failed:
        client.access.IssueToken(access_pb.IssueTokenRequest(party="p", name="n"), timeout=10)
    assert failed.value.code() == grpc.StatusCode.ABORTED
    assert access.calls == 1
