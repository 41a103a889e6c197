"""Settings: one URL picks the store. No I/O beyond a temp directory."""

from pathlib import Path

import pytest

from registry.settings import ConfigurationError, Settings


def test_default_is_an_sqlite_file_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings.from_env({"REGISTRY_DATA_DIR": str(tmp_path / "data")})
    env = settings.eventsourcing_env()
    assert settings.backend == "sqlite"
    assert env["PERSISTENCE_MODULE"] == "eventsourcing.sqlite"
    assert env["SQLITE_DBNAME"] == str(tmp_path / "data" / "registry.sqlite")
    assert (tmp_path / "data").is_dir()


def test_postgres_url_is_translated_and_password_masked() -> None:
    settings = Settings("postgresql://reg:s3cret@db.local:6543/registry")
    env = settings.eventsourcing_env()
    assert env["PERSISTENCE_MODULE"] == "registry.persistence.pgstore"
    assert (
        env["POSTGRES_HOST"],
        env["POSTGRES_PORT"],
        env["POSTGRES_DBNAME"],
        env["POSTGRES_USER"],
        env["POSTGRES_PASSWORD"],
    ) == ("db.local", "6543", "registry", "reg", "s3cret")
    assert "s3cret" not in settings.describe()


def test_bad_settings_say_what_to_fix() -> None:
    with pytest.raises(ConfigurationError, match="unsupported database URL"):
        Settings("mysql://x/y").eventsourcing_env()
    with pytest.raises(ConfigurationError, match="no database name"):
        Settings("postgresql://u@h:5432/").eventsourcing_env()
    with pytest.raises(ConfigurationError, match="REGISTRY_CACHE_SIZE"):
        Settings.from_env({"REGISTRY_CACHE_SIZE": "lots"})


def test_four_eyes_are_required_unless_turned_off_and_a_typo_is_refused(tmp_path: Path) -> None:
    from services.server import ServerSettings

    store = Settings(f"sqlite:///{tmp_path / 'r.sqlite'}")
    assert ServerSettings.from_env(store, {}).four_eyes
    assert ServerSettings.from_env(store, {"REGISTRY_FOUR_EYES": "required"}).four_eyes
    assert not ServerSettings.from_env(store, {"REGISTRY_FOUR_EYES": "off"}).four_eyes
    with pytest.raises(ConfigurationError, match="REGISTRY_FOUR_EYES must be off or required"):
        ServerSettings.from_env(store, {"REGISTRY_FOUR_EYES": "yes"})


def test_the_ledger_signing_interval_is_checked() -> None:
    from registry.integrity.sealer import sign_seconds

    assert sign_seconds({}) == 60.0
    assert sign_seconds({"REGISTRY_LEDGER_SIGN_SECONDS": "0.5"}) == 0.5
    for bad in ("0", "-1", "soon", "100000"):
        with pytest.raises(ConfigurationError, match="REGISTRY_LEDGER_SIGN_SECONDS"):
            sign_seconds({"REGISTRY_LEDGER_SIGN_SECONDS": bad})


def test_authentication_and_transport_settings_are_checked(tmp_path: Path) -> None:
    from services.auth import AuthMode
    from services.server import ServerSettings

    store = Settings(f"sqlite:///{tmp_path / 'r.sqlite'}")
    assert ServerSettings.from_env(store, {}).auth is AuthMode.TOKEN
    with pytest.raises(ConfigurationError, match="REGISTRY_AUTH must be token, mtls"):
        ServerSettings.from_env(store, {"REGISTRY_AUTH": "password"})
    with pytest.raises(ConfigurationError, match="needs client certificates"):
        ServerSettings.from_env(store, {"REGISTRY_AUTH": "mtls"})
    # plaintext only on loopback, unless the network is declared trusted
    with pytest.raises(ConfigurationError, match="REGISTRY_PLAINTEXT=allow"):
        ServerSettings.from_env(store, {"REGISTRY_LISTEN": "0.0.0.0:50051"})
    allowed = ServerSettings.from_env(
        store, {"REGISTRY_LISTEN": "0.0.0.0:50051", "REGISTRY_PLAINTEXT": "allow"}
    )
    assert allowed.tls is None and allowed.listen == "0.0.0.0:50051"
