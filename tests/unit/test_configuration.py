"""One settings model: every REGISTRY_* variable known, an optional env-file the
environment overrides, unknown names refused with a hint, secrets masked."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from registry import settings
from registry.bootstrap import check_settings
from registry.settings import ConfigurationError

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_the_code_reads_is_known() -> None:
    read: set[str] = set()
    for source in [
        *ROOT.joinpath("registry").rglob("*.py"),
        *ROOT.joinpath("services").rglob("*.py"),
    ]:
        text = source.read_text()
        read |= set(re.findall(r'environ(?:\.get)?\(\s*"(REGISTRY_[A-Z_]+)"', text))
        read |= set(re.findall(r'(?:_int|whole_number)\(\s*environ,\s*"(REGISTRY_[A-Z_]+)"', text))
        read |= set(re.findall(r'(?:ENV|VARIABLE)\w* = "(REGISTRY_[A-Z_]+)"', text))
    assert read and read - set(settings.KNOWN) == set()


def test_a_file_supplies_settings_the_environment_does_not(tmp_path: Path) -> None:
    path = tmp_path / "registry.env"
    path.write_text(
        "# production\nREGISTRY_LISTEN=0.0.0.0:6000\n"
        "export REGISTRY_FOUR_EYES='required'\nREGISTRY_POOL_SIZE = 12\n"
    )
    environ = {"REGISTRY_CONFIG_FILE": str(path), "REGISTRY_POOL_SIZE": "20"}
    added = settings.load(environ)
    assert added == {"REGISTRY_LISTEN": "0.0.0.0:6000", "REGISTRY_FOUR_EYES": "required"}
    assert environ["REGISTRY_POOL_SIZE"] == "20"  # the environment wins
    shown = {name: (value, source) for name, value, source in settings.effective(environ, added)}
    assert shown["REGISTRY_LISTEN"] == ("0.0.0.0:6000", "file")
    assert shown["REGISTRY_POOL_SIZE"] == ("20", "environment")
    assert shown["REGISTRY_AUTH"] == ("token", "default")
    path.write_text("REGISTRY_LISTEN=1\nthis is not a setting\n")
    with pytest.raises(ConfigurationError, match=r"registry\.env:2: expected REGISTRY_NAME"):
        settings.load({"REGISTRY_CONFIG_FILE": str(path)})
    with pytest.raises(ConfigurationError, match="cannot read"):
        settings.load({"REGISTRY_CONFIG_FILE": str(tmp_path / "missing.env")})


def test_secrets_are_masked() -> None:
    environ = {
        "REGISTRY_DATABASE_URL": "postgresql://registry:s3cret@db:5432/registry",
        "REGISTRY_TOKEN": "0123456789abcdef.secret",
    }
    shown = {name: value for name, value, _ in settings.effective(environ)}
    assert shown["REGISTRY_DATABASE_URL"] == "postgresql://registry:***@db:5432/registry"
    assert shown["REGISTRY_TOKEN"] == "***"
    assert "s3cret" not in repr(settings.effective(environ))


def test_unknown_and_contradictory_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigurationError,
        match=r"REGISTRY_FOUR_EYE \(did you mean "
        r"REGISTRY_FOUR_EYES\?\)",
    ):
        check_settings({"REGISTRY_FOUR_EYE": "off"})
    store = {"REGISTRY_DATA_DIR": str(tmp_path)}
    with pytest.raises(ConfigurationError, match="needs client certificates"):
        check_settings({**store, "REGISTRY_AUTH": "mtls"})
    with pytest.raises(ConfigurationError, match="REGISTRY_MAX_WORKERS"):
        check_settings({**store, "REGISTRY_MAX_WORKERS": "many"})
    check_settings(store)  # the defaults start


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://reg:pa#ss@db:5432/registry", "postgresql://reg:***@db:5432/registry"),
        ("postgresql://reg:p@ss/w?rd@db/registry", "postgresql://reg:***@db/registry"),
        (
            "postgresql://reg@db/registry?password=s3cret&sslmode=require",
            "postgresql://reg@db/registry?password=***&sslmode=require",
        ),
        (
            "postgresql://reg@db/registry?sslmode=verify-full&sslpassword=s3cret",
            "postgresql://reg@db/registry?sslmode=verify-full&sslpassword=***",
        ),
        (
            "postgresql://reg:s3cret@/registry?host=/run/postgresql",
            "postgresql://reg:***@/registry?host=/run/postgresql",
        ),
        ("postgresql://db/registry", "postgresql://db/registry"),
    ],
)
def test_every_form_of_password_is_masked(url: str, shown: str) -> None:
    """Before: a password in the query, or one with a ``#`` (where ``urlsplit`` finds
    none), was printed in clear by ``registry config`` and the start-up log."""
    [masked] = [
        value
        for name, value, _ in settings.effective({"REGISTRY_DATABASE_URL": url})
        if name == "REGISTRY_DATABASE_URL"
    ]
    assert masked == shown
    from registry.settings import Settings

    assert Settings(url).describe() == shown  # the start-up log's and errors' form
