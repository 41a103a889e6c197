"""Mutual TLS on a real gRPC server: only certificates from the registry's CA get in.

A ``grpc.server`` with ``server_credentials`` requiring client certificates serves the
standard health service on 127.0.0.1; an interceptor records every call that reaches the
server with ``peer_certificate_fingerprint``. A valid client is SERVING and is seen by its
certificate's fingerprint; an expired certificate, another CA's certificate and no
certificate all fail the handshake (UNAVAILABLE) without a call reaching the server.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from registry.client import RegistryClient
from services.tls import (
    TlsSettings,
    certificate_fingerprint,
    peer_certificate_fingerprint,
    server_credentials,
)
from tests.tls_material import KeyPair, TlsMaterial, write_tls_material

CHECK = health_pb2.HealthCheckRequest(service="")


class RecordingInterceptor(grpc.ServerInterceptor):
    """Records (method, peer certificate fingerprint) for every call the server accepts,
    read on the worker thread from the call's own context."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[str, str] | None]] = []
        self.lock = threading.Lock()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler  # the test calls unary Check only
        method = handler_call_details.method
        behaviour = handler.unary_unary

        def recording(request: Any, context: grpc.ServicerContext) -> Any:
            with self.lock:
                self.calls.append((method, peer_certificate_fingerprint(context)))
            return behaviour(request, context)

        return handler._replace(unary_unary=recording)


@dataclass
class Server:
    address: str
    recorder: RecordingInterceptor
    tls: TlsMaterial


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    return write_tls_material(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def server(tls: TlsMaterial) -> Iterator[Server]:
    recorder = RecordingInterceptor()
    grpc_server = grpc.server(
        ThreadPoolExecutor(max_workers=4),
        interceptors=[recorder],
        options=[("grpc.so_reuseport", 0)],
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, grpc_server)
    settings = TlsSettings(tls.server.cert, tls.server.key, tls.ca_cert)
    port = grpc_server.add_secure_port("127.0.0.1:0", server_credentials(settings))
    assert port
    grpc_server.start()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    try:
        yield Server(f"127.0.0.1:{port}", recorder, tls)
    finally:
        grpc_server.stop(None).wait()


def check(address: str, ca: Path, client: KeyPair | None) -> health_pb2.HealthCheckResponse:
    """One health check over a fresh TLS channel (a fresh handshake)."""
    cert, key = client.read() if client else (None, None)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(), private_key=key, certificate_chain=cert
    )
    with grpc.secure_channel(address, credentials) as channel:
        reply: health_pb2.HealthCheckResponse = health_pb2_grpc.HealthStub(channel).Check(
            CHECK, timeout=10
        )
        return reply


def test_a_client_with_a_valid_certificate_is_served_and_identified(server: Server) -> None:
    reply = check(server.address, server.tls.ca_cert, server.tls.client)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    expected = certificate_fingerprint(server.tls.client.cert.read_bytes())
    assert server.recorder.calls == [("/grpc.health.v1.Health/Check", expected)]
    assert expected[1] == "O=Shanghai Environment and Energy Exchange,CN=exchange-sh"


def test_the_server_certificate_matches_localhost_as_well(server: Server) -> None:
    port = server.address.rsplit(":", 1)[1]
    reply = check(f"localhost:{port}", server.tls.ca_cert, server.tls.client)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_registry_client_opens_a_mutual_tls_channel(server: Server) -> None:
    cert, key = server.tls.client.read()
    with RegistryClient(
        server.address, "unused", tls_ca=server.tls.ca_cert.read_bytes(), tls_cert=cert, tls_key=key
    ) as client:
        reply = health_pb2_grpc.HealthStub(client.channel).Check(CHECK, timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert [fingerprint for _, fingerprint in server.recorder.calls] == [
        certificate_fingerprint(cert)
    ]


@pytest.mark.parametrize("who", ["expired", "other CA", "no certificate"])
def test_a_client_without_a_valid_certificate_fails_the_handshake(server: Server, who: str) -> None:
    client = {
        "expired": server.tls.expired_client,
        "other CA": server.tls.foreign_client,
        "no certificate": None,
    }[who]
    with pytest.raises(grpc.RpcError) as raised:
        check(server.address, server.tls.ca_cert, client)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE, raised.value
    assert server.recorder.calls == []
    # The server is still up and serves a valid client afterwards.
    check(server.address, server.tls.ca_cert, server.tls.client)
    assert len(server.recorder.calls) == 1


def test_a_client_refuses_a_server_its_ca_did_not_sign(server: Server) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        check(server.address, server.tls.other_ca_cert, server.tls.client)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert server.recorder.calls == []


def test_a_plaintext_client_gets_nothing(server: Server) -> None:
    with grpc.insecure_channel(server.address) as channel, pytest.raises(grpc.RpcError) as raised:
        health_pb2_grpc.HealthStub(channel).Check(CHECK, timeout=10)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert server.recorder.calls == []
