"""TLS test material made at test time, so no private key is ever committed.

``write_tls_material(directory)`` writes a CA, a server certificate for ``localhost`` and
``127.0.0.1`` signed by it, and three client certificates: a valid one, an expired one
from the same CA, and one from another CA (with the same subject, so only the signature
tells them apart). EC P-256 keys: quick to make, and accepted by gRPC's TLS stack.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CLIENT_CN = "exchange-sh"
CLIENT_ORG = "Shanghai Environment and Energy Exchange"


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path

    def read(self) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM), as RegistryClient's tls_cert and tls_key take them."""
        return self.cert.read_bytes(), self.key.read_bytes()


@dataclass(frozen=True)
class TlsMaterial:
    """Paths of everything ``write_tls_material`` wrote."""

    ca_cert: Path
    """The registry's CA: signs the server's and the valid clients' certificates."""
    server: KeyPair
    client: KeyPair
    """Valid, CN ``exchange-sh``."""
    expired_client: KeyPair
    """Same CA, same subject, expired yesterday."""
    other_ca_cert: Path
    foreign_client: KeyPair
    """Same subject, signed by the other CA."""


def write_tls_material(directory: Path) -> TlsMaterial:
    """Write a fresh CA, server and client certificates into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    ca_key, ca_cert = _ca("Registry Test CA", now)
    other_key, other_cert = _ca("Some Other CA", now)
    server = _leaf(
        directory,
        "server",
        _name("localhost"),
        ca_key,
        ca_cert,
        now - timedelta(hours=1),
        now + timedelta(days=30),
        server=True,
    )
    client_name = _name(CLIENT_CN, CLIENT_ORG)
    client = _leaf(
        directory,
        "client",
        client_name,
        ca_key,
        ca_cert,
        now - timedelta(hours=1),
        now + timedelta(days=30),
    )
    expired = _leaf(
        directory,
        "expired-client",
        client_name,
        ca_key,
        ca_cert,
        now - timedelta(days=30),
        now - timedelta(days=1),
    )
    foreign = _leaf(
        directory,
        "foreign-client",
        client_name,
        other_key,
        other_cert,
        now - timedelta(hours=1),
        now + timedelta(days=30),
    )
    return TlsMaterial(
        ca_cert=_write(directory / "ca.pem", _cert_pem(ca_cert)),
        server=server,
        client=client,
        expired_client=expired,
        other_ca_cert=_write(directory / "other-ca.pem", _cert_pem(other_cert)),
        foreign_client=foreign,
    )


def _name(common_name: str, organization: str = "") -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _ca(common_name: str, now: datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=60))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    directory: Path,
    stem: str,
    subject: x509.Name,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    not_before: datetime,
    not_after: datetime,
    *,
    server: bool = False,
) -> KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key_path = _write(directory / f"{stem}-key.pem", key_pem)
    key_path.chmod(0o600)
    return KeyPair(_write(directory / f"{stem}.pem", _cert_pem(cert)), key_path)


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
