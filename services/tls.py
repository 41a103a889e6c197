"""TLS and mutual TLS for the gRPC server: settings, credentials, and peer certificates.

Bearer tokens travel in plain text without TLS, so the server refuses to listen in
plaintext anywhere but on a loopback address unless an operator says the network is
trusted (``REGISTRY_PLAINTEXT=allow``, e.g. behind a TLS-terminating proxy or a mesh).

Settings (environment):
- ``REGISTRY_TLS_CERT``: the server's certificate chain (PEM, leaf first);
- ``REGISTRY_TLS_KEY``: the server's private key (PEM, unencrypted: gRPC takes no password);
- ``REGISTRY_TLS_CLIENT_CA``: CA certificates (PEM); when set, every client must present a
  certificate signed by one of them (mutual TLS), or the handshake fails;
- ``REGISTRY_PLAINTEXT``: ``allow`` to listen without TLS on a non-loopback address.

Files are read and checked at start-up, so a wrong path or a swapped cert and key is a
configuration error naming the variable, not an obscure failure at the first handshake.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
    PublicKeyTypes,
)

from registry.domain.errors import InvalidCommand
from registry.settings import ConfigurationError

CERT_ENV = "REGISTRY_TLS_CERT"
KEY_ENV = "REGISTRY_TLS_KEY"
CLIENT_CA_ENV = "REGISTRY_TLS_CLIENT_CA"
PLAINTEXT_ENV = "REGISTRY_PLAINTEXT"
PEER_CERT_KEY = "x509_pem_cert"
"""The auth-context property where grpcio puts the verified client's leaf certificate."""


@dataclass(frozen=True)
class TlsSettings:
    """Where the server's TLS material is; ``client_ca`` set means mutual TLS."""

    cert_chain: Path
    private_key: Path
    client_ca: Path | None = None

    @property
    def requires_client_certificates(self) -> bool:
        return self.client_ca is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TlsSettings | None:
        """The TLS settings, checked; None when neither certificate nor key is set."""
        environ = os.environ if environ is None else environ
        cert = environ.get(CERT_ENV, "").strip()
        key = environ.get(KEY_ENV, "").strip()
        client_ca = environ.get(CLIENT_CA_ENV, "").strip()
        if not cert and not key:
            if client_ca:
                raise ConfigurationError(
                    f"{CLIENT_CA_ENV} is set but TLS is not: set {CERT_ENV} and {KEY_ENV} "
                    "to the server's certificate chain and private key too"
                )
            return None
        if not cert or not key:
            given, missing = (CERT_ENV, KEY_ENV) if cert else (KEY_ENV, CERT_ENV)
            raise ConfigurationError(
                f"{given} is set but {missing} is not: TLS needs both the server's "
                f"certificate chain ({CERT_ENV}) and its private key ({KEY_ENV}), as PEM files"
            )
        settings = cls(Path(cert), Path(key), Path(client_ca) if client_ca else None)
        settings.load()  # fail now, naming the variable, rather than at bind time
        return settings

    def load(self) -> tuple[bytes, bytes, bytes | None]:
        """(certificate chain, private key, client CA bundle) PEM bytes, each checked to
        be PEM of the right kind, and the key checked to belong to the certificate."""
        chain = _read(self.cert_chain, CERT_ENV)
        certificates = _certificates(chain, CERT_ENV, "the server's certificate chain")
        key_pem = _read(self.private_key, KEY_ENV)
        key = _private_key(key_pem)
        if _public_bytes(certificates[0].public_key()) != _public_bytes(key.public_key()):
            raise ConfigurationError(
                f"{KEY_ENV} ({self.private_key}) is not the private key of the first "
                f"certificate in {CERT_ENV} ({self.cert_chain}): the chain must start with "
                "the server's own certificate, and the key must be that certificate's"
            )
        ca = None
        if self.client_ca is not None:
            ca = _read(self.client_ca, CLIENT_CA_ENV)
            _certificates(ca, CLIENT_CA_ENV, "the CA certificates that sign client certificates")
        return chain, key_pem, ca


def server_credentials(tls: TlsSettings) -> grpc.ServerCredentials:
    """Credentials for ``server.add_secure_port``; with a client CA, clients without a
    certificate signed by it fail the handshake before any call reaches a handler."""
    chain, key, ca = tls.load()
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=ca, require_client_auth=ca is not None
    )


def plaintext_allowed(environ: Mapping[str, str] | None = None) -> bool:
    """``REGISTRY_PLAINTEXT=allow``: an operator's explicit word that the network is
    trusted; any other non-empty value is refused so a typo does not pass silently."""
    environ = os.environ if environ is None else environ
    value = environ.get(PLAINTEXT_ENV, "").strip()
    if value not in ("", "allow"):
        raise ConfigurationError(f"{PLAINTEXT_ENV} must be allow or unset, got {value!r}")
    return value == "allow"


def check_listen_address(listen: str, tls: TlsSettings | None, allow_plaintext: bool) -> None:
    """Refuse plaintext on anything but loopback: tokens and ledger data would cross the
    network readable by anyone on the path. ``0.0.0.0`` and ``[::]`` are every interface."""
    if tls is not None or allow_plaintext or is_loopback(listen):
        return
    raise ConfigurationError(
        f"REGISTRY_LISTEN={listen} is not a loopback address and TLS is not configured: "
        f"set {CERT_ENV} and {KEY_ENV} (and {CLIENT_CA_ENV} to require client "
        f"certificates), or set {PLAINTEXT_ENV}=allow if the network is trusted "
        "(e.g. behind a TLS-terminating proxy)"
    )


def is_loopback(listen: str) -> bool:
    """Whether a gRPC listen address (``host:port``, ``[v6]:port``, ``unix:path``) can
    only be reached from this machine."""
    if listen.startswith(("unix:", "unix-abstract:")):
        return True
    host = _host(listen).lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a DNS name other than localhost, or empty (every interface)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _host(listen: str) -> str:
    for scheme in ("dns:", "ipv4:", "ipv6:"):
        listen = listen.removeprefix(scheme)
    if listen.startswith("["):
        return listen[1:].split("]", 1)[0]
    if listen.count(":") == 1:
        return listen.split(":", 1)[0]
    return listen  # no port, or a bare IPv6 address


def peer_certificate_fingerprint(context: grpc.ServicerContext) -> tuple[str, str] | None:
    """(sha256 hex of the DER, RFC 4514 subject) of the caller's verified client
    certificate; None on a plaintext or server-only TLS connection."""
    # grpcio gives a list of bytes per property (the type stubs say bytes).
    values = cast(Sequence[bytes], context.auth_context().get(PEER_CERT_KEY) or ())
    if not values:
        return None
    return certificate_fingerprint(values[0])


def certificate_fingerprint(pem: bytes | str) -> tuple[str, str]:
    """(sha256 hex of the DER, RFC 4514 subject) of one PEM certificate: what an
    administrator registers, matched later against ``peer_certificate_fingerprint``."""
    data = pem.encode() if isinstance(pem, str) else pem
    if b"PRIVATE KEY-----" in data:
        raise InvalidCommand(
            "certificate_pem contains a private key: send the client's certificate only, "
            "and keep its key secret (consider the key exposed and issue a new one)",
            reason="INVALID_CERTIFICATE",
            field="certificate_pem",
        )
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise InvalidCommand(
            "certificate_pem is not a PEM X.509 certificate (-----BEGIN CERTIFICATE-----)",
            reason="INVALID_CERTIFICATE",
            field="certificate_pem",
        ) from None
    if len(certificates) != 1:
        raise InvalidCommand(
            f"certificate_pem holds {len(certificates)} certificates: send the client's "
            "own certificate only, not its chain",
            reason="INVALID_CERTIFICATE",
            field="certificate_pem",
        )
    certificate = certificates[0]
    der = certificate.public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest(), certificate.subject.rfc4514_string()


def _read(path: Path, variable: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ConfigurationError(
            f"{variable}: cannot read {path} ({error.strerror}): point it at a readable PEM file"
        ) from None


def _certificates(data: bytes, variable: str, what: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigurationError(
            f"{variable} must be a PEM file of {what} (-----BEGIN CERTIFICATE-----); "
            "the file given holds no readable certificate"
        ) from None


def _private_key(data: bytes) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigurationError(
            f"{KEY_ENV} is an encrypted private key: gRPC cannot take a password; decrypt "
            "it (e.g. openssl pkey -in KEY -out KEY.plain) and keep the file readable by "
            "the server only"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigurationError(
            f"{KEY_ENV} must be a PEM file of the server's private key "
            "(-----BEGIN PRIVATE KEY-----); the file given holds no readable key"
        ) from None


def _public_bytes(key: CertificatePublicKeyTypes | PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
