"""TLS settings are checked at start-up, and plaintext is refused off loopback.

Certificates are made in a temp directory by tests.tls_material; no network.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from registry.cli.remote import add_connection_options, client_for
from registry.client import open_channel
from registry.domain.errors import InvalidCommand
from registry.settings import ConfigurationError
from services.tls import (
    TlsSettings,
    certificate_fingerprint,
    check_listen_address,
    is_loopback,
    plaintext_allowed,
    server_credentials,
)
from tests.tls_material import TlsMaterial, write_tls_material


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    return write_tls_material(tmp_path_factory.mktemp("tls"))


def env(tls: TlsMaterial, **overrides: str) -> dict[str, str]:
    base = {
        "REGISTRY_TLS_CERT": str(tls.server.cert),
        "REGISTRY_TLS_KEY": str(tls.server.key),
        "REGISTRY_TLS_CLIENT_CA": str(tls.ca_cert),
    }
    return {k: v for k, v in {**base, **overrides}.items() if v}


def test_no_tls_variables_means_no_tls() -> None:
    assert TlsSettings.from_env({}) is None
    assert TlsSettings.from_env({"REGISTRY_TLS_CERT": " ", "REGISTRY_TLS_KEY": ""}) is None


def test_valid_files_give_settings_and_mutual_tls_credentials(tls: TlsMaterial) -> None:
    settings = TlsSettings.from_env(env(tls))
    assert settings == TlsSettings(tls.server.cert, tls.server.key, tls.ca_cert)
    assert settings.requires_client_certificates
    assert isinstance(server_credentials(settings), grpc.ServerCredentials)
    server_only = TlsSettings.from_env(env(tls, REGISTRY_TLS_CLIENT_CA=""))
    assert server_only is not None and not server_only.requires_client_certificates
    assert isinstance(server_credentials(server_only), grpc.ServerCredentials)


def test_a_cert_without_a_key_or_the_reverse_names_the_missing_variable(tls: TlsMaterial) -> None:
    with pytest.raises(
        ConfigurationError, match="REGISTRY_TLS_CERT is set but REGISTRY_TLS_KEY is not"
    ):
        TlsSettings.from_env(env(tls, REGISTRY_TLS_KEY=""))
    with pytest.raises(
        ConfigurationError, match="REGISTRY_TLS_KEY is set but REGISTRY_TLS_CERT is not"
    ):
        TlsSettings.from_env(env(tls, REGISTRY_TLS_CERT=""))
    with pytest.raises(ConfigurationError, match="REGISTRY_TLS_CLIENT_CA is set but TLS is not"):
        TlsSettings.from_env({"REGISTRY_TLS_CLIENT_CA": str(tls.ca_cert)})


def test_a_missing_file_names_the_variable_and_the_path(tls: TlsMaterial, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    for variable in ("REGISTRY_TLS_CERT", "REGISTRY_TLS_KEY", "REGISTRY_TLS_CLIENT_CA"):
        with pytest.raises(ConfigurationError, match=f"{variable}: cannot read .*nope.pem"):
            TlsSettings.from_env(env(tls, **{variable: str(missing)}))


def test_files_that_are_not_pem_of_the_right_kind_are_refused(
    tls: TlsMaterial, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigurationError, match="REGISTRY_TLS_CERT must be a PEM file"):
        TlsSettings.from_env(env(tls, REGISTRY_TLS_CERT=str(junk)))
    with pytest.raises(ConfigurationError, match="REGISTRY_TLS_CLIENT_CA must be a PEM file"):
        TlsSettings.from_env(env(tls, REGISTRY_TLS_CLIENT_CA=str(junk)))
    with pytest.raises(ConfigurationError, match="REGISTRY_TLS_KEY must be a PEM file"):
        TlsSettings.from_env(env(tls, REGISTRY_TLS_KEY=str(junk)))
    # Swapped: a key where the certificate goes, and the reverse.
    with pytest.raises(ConfigurationError, match="REGISTRY_TLS_CERT must be a PEM file"):
        TlsSettings.from_env(
            env(tls, REGISTRY_TLS_CERT=str(tls.server.key), REGISTRY_TLS_KEY=str(tls.server.cert))
        )
    with pytest.raises(ConfigurationError, match="REGISTRY_TLS_KEY must be a PEM file"):
        TlsSettings.from_env(env(tls, REGISTRY_TLS_KEY=str(tls.server.cert)))


def test_a_key_that_is_not_the_certificates_is_refused(tls: TlsMaterial) -> None:
    with pytest.raises(
        ConfigurationError,
        match="is not the private key of the first certificate in REGISTRY_TLS_CERT",
    ):
        TlsSettings.from_env(env(tls, REGISTRY_TLS_KEY=str(tls.client.key)))


def test_an_encrypted_key_is_refused_with_how_to_decrypt_it(
    tls: TlsMaterial, tmp_path: Path
) -> None:
    key = serialization.load_pem_private_key(tls.server.key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted-key.pem"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(ConfigurationError, match=r"encrypted private key.*openssl pkey"):
        TlsSettings.from_env(env(tls, REGISTRY_TLS_KEY=str(encrypted)))


@pytest.mark.parametrize(
    "listen",
    [
        "127.0.0.1:50051",
        "127.3.2.1:0",
        "localhost:50051",
        "LOCALHOST:1",
        "[::1]:50051",
        "[::ffff:127.0.0.1]:50051",
        "unix:/run/registry.sock",
        "ipv4:127.0.0.1:50051",
    ],
)
def test_plaintext_is_allowed_on_loopback(listen: str) -> None:
    assert is_loopback(listen)
    check_listen_address(listen, None, allow_plaintext=False)


@pytest.mark.parametrize(
    "listen",
    [
        "0.0.0.0:50051",
        "[::]:50051",
        ":50051",
        "10.0.0.5:50051",
        "registry.example.cn:50051",
        "[2001:db8::1]:50051",
        "localhost.example.cn:50051",
    ],
)
def test_plaintext_is_refused_elsewhere_unless_allowed_or_tls(
    listen: str, tls: TlsMaterial
) -> None:
    assert not is_loopback(listen)
    with pytest.raises(
        ConfigurationError,
        match=r"not a loopback address.*REGISTRY_TLS_CERT "
        r"and REGISTRY_TLS_KEY.*REGISTRY_PLAINTEXT=allow",
    ):
        check_listen_address(listen, None, allow_plaintext=False)
    check_listen_address(
        listen, None, allow_plaintext=plaintext_allowed({"REGISTRY_PLAINTEXT": "allow"})
    )
    check_listen_address(listen, TlsSettings.from_env(env(tls)), allow_plaintext=False)


def test_registry_plaintext_takes_allow_or_nothing() -> None:
    assert plaintext_allowed({"REGISTRY_PLAINTEXT": "allow"})
    assert not plaintext_allowed({})
    assert not plaintext_allowed({"REGISTRY_PLAINTEXT": ""})
    with pytest.raises(ConfigurationError, match="REGISTRY_PLAINTEXT must be allow or unset"):
        plaintext_allowed({"REGISTRY_PLAINTEXT": "yes"})


def test_certificate_fingerprint_is_the_sha256_of_the_der_and_the_subject(tls: TlsMaterial) -> None:
    pem = tls.client.cert.read_bytes()
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    expected = (
        hashlib.sha256(der).hexdigest(),
        "O=Shanghai Environment and Energy Exchange,CN=exchange-sh",
    )
    assert certificate_fingerprint(pem) == expected
    assert certificate_fingerprint(pem.decode()) == expected
    # The expired and the foreign certificate share the subject, never the fingerprint.
    assert certificate_fingerprint(tls.expired_client.cert.read_bytes())[0] != expected[0]
    assert certificate_fingerprint(tls.foreign_client.cert.read_bytes())[0] != expected[0]


@pytest.mark.parametrize("content", ["junk", "", "key", "two"])
def test_a_non_certificate_is_an_invalid_certificate(content: str, tls: TlsMaterial) -> None:
    pem = {
        "junk": b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        "": b"",
        "key": tls.client.cert.read_bytes() + tls.client.key.read_bytes(),
        "two": tls.client.cert.read_bytes() + tls.ca_cert.read_bytes(),
    }[content]
    with pytest.raises(InvalidCommand) as raised:
        certificate_fingerprint(pem)
    assert raised.value.reason == "INVALID_CERTIFICATE"
    assert raised.value.metadata["field"] == "certificate_pem"


def test_the_client_channel_refuses_a_certificate_without_tls_or_key(tls: TlsMaterial) -> None:
    cert, key = tls.client.read()
    with pytest.raises(ValueError, match="needs TLS"):
        open_channel("127.0.0.1:1", tls_cert=cert, tls_key=key)
    with pytest.raises(ValueError, match="both tls_cert and tls_key"):
        open_channel("127.0.0.1:1", tls_ca=tls.ca_cert.read_bytes(), tls_cert=cert)
    open_channel("127.0.0.1:1").close()
    open_channel("127.0.0.1:1", tls_ca=tls.ca_cert.read_bytes(), tls_cert=cert, tls_key=key).close()


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_connection_options(parser)
    return parser.parse_args(["--token", "t", *argv])


def test_cli_tls_options_read_the_files_and_name_a_missing_one(
    tls: TlsMaterial, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REGISTRY_TLS_CA", raising=False)
    monkeypatch.delenv("REGISTRY_CLIENT_CERT", raising=False)
    monkeypatch.delenv("REGISTRY_CLIENT_KEY", raising=False)
    client_for(parse()).close()
    client_for(
        parse(
            "--tls-ca",
            str(tls.ca_cert),
            "--tls-cert",
            str(tls.client.cert),
            "--tls-key",
            str(tls.client.key),
        )
    ).close()
    with pytest.raises(
        ConfigurationError,
        match=r"--tls-ca \(REGISTRY_TLS_CA\): cannot read "
        ".*missing.pem",
    ):
        client_for(parse("--tls-ca", str(tmp_path / "missing.pem")))
    with pytest.raises(ConfigurationError, match="--tls-cert needs --tls-ca"):
        client_for(parse("--tls-cert", str(tls.client.cert), "--tls-key", str(tls.client.key)))
    with pytest.raises(ConfigurationError, match="needs both --tls-cert"):
        client_for(parse("--tls-ca", str(tls.ca_cert), "--tls-cert", str(tls.client.cert)))
    monkeypatch.setenv("REGISTRY_TLS_CA", str(tls.ca_cert))
    monkeypatch.setenv("REGISTRY_CLIENT_CERT", str(tls.client.cert))
    monkeypatch.setenv("REGISTRY_CLIENT_KEY", str(tls.client.key))
    args = parse()
    assert (args.tls_ca, args.tls_cert, args.tls_key) == (
        str(tls.ca_cert),
        str(tls.client.cert),
        str(tls.client.key),
    )


def test_a_missing_tls_file_exits_2_with_the_option_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from registry.cli import main

    assert (
        main(["balances", "TRD-0001", "--token", "t", "--tls-ca", str(tmp_path / "missing.pem")])
        == 2
    )
    assert "--tls-ca (REGISTRY_TLS_CA): cannot read" in capsys.readouterr().err
