"""Mutual TLS through the registry server: a registered client certificate is its
principal; an expired one, another CA's and none never get past the handshake; an
unregistered or revoked one is refused; with token+mtls both must name one principal.
Certificates are made at test time (tests/tls_material.py)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from registry.client import RegistryClient
from registry.domain.transactions import Principal
from registry.v1 import audit_service_pb2 as audit_pb
from services.auth import AuthMode
from services.tls import TlsSettings, certificate_fingerprint
from tests.e2e.conftest import rpc_error, running_api
from tests.tls_material import KeyPair, TlsMaterial, write_tls_material

EXCHANGE = Principal("shanghai-exchange", "settlement")  # holds an exchange grant over *
SYSTEM = Principal("system", "tests")


def probe(client: RegistryClient) -> int:
    """A call any role but admin may make, with no data needed: the log's head."""
    return client.call(
        client.audit.GetLedgerDigest, audit_pb.GetLedgerDigestRequest()
    ).head_position


def tls_client(
    address: str, material: TlsMaterial, pair: KeyPair | None, token: str = ""
) -> RegistryClient:
    cert, key = pair.read() if pair is not None else (None, None)
    return RegistryClient(
        address,
        token,
        attempts=1,
        timeout=10,
        tls_ca=material.ca_cert.read_bytes(),
        tls_cert=cert,
        tls_key=key,
    )


@pytest.fixture
def material(tmp_path: Path) -> TlsMaterial:
    return write_tls_material(tmp_path / "tls")


def test_only_a_registered_certificate_from_the_registrys_ca_gets_in(
    tmp_path: Path, material: TlsMaterial
) -> None:
    tls = TlsSettings(material.server.cert, material.server.key, material.ca_cert)
    with running_api("sqlite", tmp_path, tls=tls, auth=AuthMode.MTLS) as api:
        fingerprint, subject = certificate_fingerprint(material.client.cert.read_bytes())
        change = api.registry.access.register_certificate(
            SYSTEM, EXCHANGE, fingerprint, subject, "the exchange's settlement gateway"
        )

        with tls_client(api.address, material, material.client) as exchange:
            assert probe(exchange) > 0
        for refused in (material.expired_client, material.foreign_client, None):
            with tls_client(api.address, material, refused) as stranger:
                error = rpc_error(lambda c=stranger: probe(c))
                assert error.code is grpc.StatusCode.UNAVAILABLE  # the handshake failed

        api.registry.access.revoke_credential(SYSTEM, change.id, "gateway replaced")
        with tls_client(api.address, material, material.client) as exchange:
            error = rpc_error(lambda: probe(exchange))
            assert (error.code, error.reason) == (
                grpc.StatusCode.UNAUTHENTICATED,
                "UNKNOWN_CERTIFICATE",
            )
            assert error.metadata["fingerprint"] == fingerprint


def test_token_and_certificate_must_name_the_same_principal(
    tmp_path: Path, material: TlsMaterial
) -> None:
    tls = TlsSettings(material.server.cert, material.server.key, material.ca_cert)
    with running_api("sqlite", tmp_path, tls=tls, auth=AuthMode.BOTH) as api:
        fingerprint, subject = certificate_fingerprint(material.client.cert.read_bytes())
        api.registry.access.register_certificate(SYSTEM, EXCHANGE, fingerprint, subject, "gateway")
        with tls_client(api.address, material, material.client, api.tokens["exchange"]) as both:
            assert probe(both) > 0
        with tls_client(api.address, material, material.client, api.tokens["regulator"]) as mixed:
            error = rpc_error(lambda: probe(mixed))
            assert (error.code, error.reason) == (
                grpc.StatusCode.UNAUTHENTICATED,
                "CREDENTIALS_MISMATCH",
            )
        # No token: the client sends no authorization header (issue 16), not "Bearer ".
        with tls_client(api.address, material, material.client) as no_token:
            error = rpc_error(lambda: probe(no_token))
            assert (error.code, error.reason) == (
                grpc.StatusCode.UNAUTHENTICATED,
                "MISSING_CREDENTIALS",
            )
