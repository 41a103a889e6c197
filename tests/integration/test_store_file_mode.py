"""Issue 15, item 11: the embedded SQLite store is created readable by its owner only
(0600, like the credentials and signing key beside it); it was 0644, so any local user
could read every event and the token hashes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from registry.bootstrap import build_registry
from registry.domain.access import Role
from registry.domain.transactions import Principal
from registry.settings import Settings


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_embedded_store_and_its_journal_files_are_private(tmp_path: Path) -> None:
    previous = os.umask(0o022)  # the usual umask, which made the file 0644
    try:
        path = tmp_path / "data" / "registry.sqlite"
        registry = build_registry(Settings(f"sqlite:///{path}"))
        try:
            registry.access.genesis([(Principal("mee", "admin"), Role.ADMIN)], "a write")
            files = [p for p in path.parent.iterdir() if p.name.startswith(path.name)]
            assert path in files and len(files) >= 2, files  # the store and its WAL
            assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}
        finally:
            registry.close()
    finally:
        os.umask(previous)


def test_an_existing_store_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite"
    build_registry(Settings(f"sqlite:///{path}")).close()
    path.chmod(0o640)  # an operator's choice (say, a backup group)
    build_registry(Settings(f"sqlite:///{path}")).close()
    assert _mode(path) == 0o640
