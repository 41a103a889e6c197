"""The event authenticator and its key file (registry/integrity/authentication.py)."""

from __future__ import annotations

import stat
from pathlib import Path
from uuid import UUID

import pytest

from registry.integrity.authentication import (
    EventKeyError,
    authentic,
    authenticator,
    boundary_seal,
    event_key_path,
    load_event_key,
    load_or_create_event_key,
)
from registry.integrity.chain import StoredLogEvent

KEY = bytes(range(32))
ORIGINATOR = UUID("5e4db784-b2ce-5bf7-82e4-922a78bbe5fc")


def test_every_field_is_covered_and_fields_cannot_shift_into_each_other() -> None:
    base = authenticator(KEY, ORIGINATOR, 3, "registry.Account.Credited", b"{}")
    assert len(base) == 32
    assert authenticator(KEY, ORIGINATOR.hex, 3, "registry.Account.Credited", b"{}") == base, (
        "SQLite's hex spelling of the id authenticates the same event"
    )
    variants = [
        authenticator(KEY, UUID(int=ORIGINATOR.int ^ 1), 3, "registry.Account.Credited", b"{}"),
        authenticator(KEY, ORIGINATOR, 4, "registry.Account.Credited", b"{}"),
        authenticator(KEY, ORIGINATOR, 3, "registry.Account.Debited", b"{}"),
        authenticator(KEY, ORIGINATOR, 3, "registry.Account.Credited", b"{ }"),
        authenticator(KEY, ORIGINATOR, 3, "registry.Account.Credited{", b"}"),
        authenticator(bytes(32), ORIGINATOR, 3, "registry.Account.Credited", b"{}"),
    ]
    assert base not in variants and len(set(variants)) == len(variants)
    assert boundary_seal(KEY, 3) != boundary_seal(KEY, 4) != base


def test_a_stored_event_is_authentic_only_with_the_keys_authenticator() -> None:
    tag = authenticator(KEY, ORIGINATOR, 1, "t", b"s")
    assert authentic(KEY, StoredLogEvent(9, ORIGINATOR, 1, "t", b"s", tag))
    assert not authentic(KEY, StoredLogEvent(9, ORIGINATOR, 1, "t", b"s", None))
    assert not authentic(KEY, StoredLogEvent(9, ORIGINATOR, 1, "t", b"S", tag))
    assert not authentic(bytes(32), StoredLogEvent(9, ORIGINATOR, 1, "t", b"s", tag))


def test_the_key_file_is_made_once_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = event_key_path({"REGISTRY_DATA_DIR": str(tmp_path / "data")})
    assert path == tmp_path / "data" / "event-key"
    key = load_or_create_event_key(path)
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_event_key(path) == key, "never replaced"
    assert event_key_path({"REGISTRY_EVENT_KEY": "/k"}) == Path("/k")


@pytest.mark.parametrize("content", ["", "not hex", "00" * 16])
def test_a_bad_key_file_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "event-key"
    path.write_text(content)
    with pytest.raises(EventKeyError):
        load_event_key(path)
    with pytest.raises(EventKeyError):
        load_event_key(tmp_path / "missing")


def test_a_key_that_cannot_be_created_is_a_configuration_error() -> None:
    """A data directory nobody can write (a container's read-only file system; /proc
    here, which not even root can write): a precise error naming the setting, not an
    OSError traceback."""
    with pytest.raises(EventKeyError, match="REGISTRY_EVENT_KEY"):
        load_or_create_event_key(Path("/proc/registry-data/event-key"))
