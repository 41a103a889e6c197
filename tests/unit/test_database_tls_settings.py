"""The database URL's TLS parameters reach the event store's settings, checked."""

from pathlib import Path

import pytest

from registry.persistence.pgstore import tls_connect_kwargs
from registry.settings import ConfigurationError, Settings, check


def test_tls_parameters_become_event_store_settings(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-")
    url = f"postgresql://reg@db/registry?sslmode=verify-full&sslrootcert={ca}&sslpassword=x"
    env = Settings(url).eventsourcing_env()
    assert env["PERSISTENCE_MODULE"] == "registry.persistence.pgstore"
    assert tls_connect_kwargs(env) == {
        "sslmode": "verify-full",
        "sslrootcert": str(ca),
        "sslpassword": "x",
    }


def test_no_tls_parameters_leave_libpq_defaults() -> None:
    assert tls_connect_kwargs(Settings("postgresql://reg@db/registry").eventsourcing_env()) == {}


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("sslmode=verify-full&sslcompression=1", "sslcompression"),
        ("sslmod=require", "sslmod"),
        ("sslmode=verify", "sslmode='verify'"),
        ("sslmode=verify-full&sslrootcert=/nonexistent/ca.pem", "no such file"),
        ("sslmode=require&sslcert=/nonexistent/c.pem&sslkey=/nonexistent/k.pem", "no such file"),
    ],
)
def test_unsupported_tls_parameters_are_refused(query: str, says: str) -> None:
    url = f"postgresql://reg@db/registry?{query}"
    with pytest.raises(ConfigurationError, match=says):
        Settings(url).eventsourcing_env()
    with pytest.raises(ConfigurationError, match=says):
        check({"REGISTRY_DATABASE_URL": url})


def test_system_trust_store_is_accepted() -> None:
    url = "postgresql://reg@db/registry?sslmode=verify-full&sslrootcert=system"
    assert Settings(url).tls_parameters()["sslrootcert"] == "system"
