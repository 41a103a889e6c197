"""Guards the read-only commands share (``registry check``, ``supply``, ``project --status``)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from registry.settings import ConfigurationError, Settings


def require_store(settings: Settings, command: str) -> None:
    """A read-only command's guard: the embedded SQLite store must exist already.

    ``build_registry`` creates and migrates a missing SQLite file (the embedded server's
    first start); a command that only reads would then report an empty store as OK, so
    it names where it looked instead (a ConfigurationError: exit 2, as for every
    setting that points nowhere). A database server's store needs no guard: a missing
    database cannot be reached (exit 3) and an un-migrated one is refused."""
    if settings.backend != "sqlite":
        return
    # As Settings.eventsourcing_env reads it, without its mkdir of the parent folder.
    url_path = urlsplit(settings.database_url).path
    path = Path(unquote(url_path.removeprefix("/"))).absolute()
    if not path.is_file():
        raise ConfigurationError(
            f"{command}: no registry store at {path} (from REGISTRY_DATABASE_URL, else "
            "$REGISTRY_DATA_DIR/registry.sqlite): run it where the store is, or set "
            "REGISTRY_DATA_DIR or REGISTRY_DATABASE_URL; nothing was created"
        )
