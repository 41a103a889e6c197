"""``REGISTRY_X_FILE``: any setting read from a file, so a Secret is mounted as a file
(the database URL with its password, a token) and never written into a pod's
environment (deploy/k8s)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from registry import settings
from registry.settings import ConfigurationError


def test_a_setting_is_read_from_the_file_its_file_form_names(tmp_path: Path) -> None:
    url = tmp_path / "database-url"
    url.write_text("postgresql://registry:s3cret@db:5432/registry\n")
    token = tmp_path / "token"
    token.write_text("abc.def")
    environ = {
        "REGISTRY_DATABASE_URL_FILE": str(url),
        "REGISTRY_TOKEN_FILE": str(token),
        "REGISTRY_CACHE_SIZE": "10",
    }
    assert settings.load(environ) == {}
    assert environ["REGISTRY_DATABASE_URL"] == "postgresql://registry:s3cret@db:5432/registry"
    assert environ["REGISTRY_TOKEN"] == "abc.def"
    store = settings.check(environ)  # the _FILE names are known settings
    assert store.database_url.endswith("@db:5432/registry") and store.cache_size == 10
    assert "s3cret" not in store.describe()


def test_the_file_form_exists_only_for_known_settings() -> None:
    assert settings.file_setting("REGISTRY_DATABASE_URL_FILE") == "REGISTRY_DATABASE_URL"
    assert settings.file_setting("REGISTRY_DATABASE_URL") is None
    assert settings.file_setting("REGISTRY_NO_SUCH_THING_FILE") is None
    # a setting that names a file already has no _FILE form
    assert settings.file_setting("REGISTRY_CONFIG_FILE_FILE") is None
    assert settings.is_known("REGISTRY_CONFIG_FILE") and settings.is_known("REGISTRY_TOKEN_FILE")
    with pytest.raises(ConfigurationError, match="REGISTRY_DATABSE_URL_FILE"):
        settings.check({"REGISTRY_DATABSE_URL_FILE": "/x"})


def test_a_missing_empty_or_contradicted_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="REGISTRY_DATABASE_URL_FILE: cannot read"):
        settings.load({"REGISTRY_DATABASE_URL_FILE": str(tmp_path / "absent")})
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigurationError, match="is empty"):
        settings.load({"REGISTRY_DATABASE_URL_FILE": str(empty)})
    url = tmp_path / "url"
    url.write_text("postgresql://a@h/db\n")
    with pytest.raises(ConfigurationError, match="both set"):
        settings.load(
            {"REGISTRY_DATABASE_URL_FILE": str(url), "REGISTRY_DATABASE_URL": "postgresql://b@h/db"}
        )
    # the same value twice is fine: a server's child processes inherit both
    environ = {
        "REGISTRY_DATABASE_URL_FILE": str(url),
        "REGISTRY_DATABASE_URL": "postgresql://a@h/db",
    }
    settings.load(environ)
    assert environ["REGISTRY_DATABASE_URL"] == "postgresql://a@h/db"


def test_a_file_form_in_the_config_file_is_read_too(tmp_path: Path) -> None:
    url = tmp_path / "url"
    url.write_text("memory:")
    config = tmp_path / "registry.env"
    config.write_text(f"REGISTRY_DATABASE_URL_FILE={url}\n")
    environ = {"REGISTRY_CONFIG_FILE": str(config)}
    settings.load(environ)
    assert environ["REGISTRY_DATABASE_URL"] == "memory:"


def test_the_cli_reads_the_file_form(tmp_path: Path) -> None:
    """Through ``registry config --show``: the URL from the file, its password masked."""
    url = tmp_path / "url"
    url.write_text("postgresql://registry:s3cret@db.example:5432/registry\n")
    shown = subprocess.run(
        [sys.executable, "-m", "registry.cli", "config", "--show"],
        env={"REGISTRY_DATABASE_URL_FILE": str(url), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert "db.example:5432/registry" in shown.stdout
    assert "s3cret" not in shown.stdout + shown.stderr
