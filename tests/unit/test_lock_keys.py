"""The advisory lock keys: one table, distinct keys, values that never change."""

from __future__ import annotations

from registry.persistence import locks


def test_every_purpose_has_its_own_key() -> None:
    keys = list(locks.LOCK_KEYS.values())
    assert len(set(keys)) == len(keys)


def test_the_table_lists_every_key_of_the_module() -> None:
    defined = {name: value for name, value in vars(locks).items() if name.endswith("_LOCK_KEY")}
    assert set(defined.values()) == set(locks.LOCK_KEYS.values())
    assert locks.MIGRATION_LOCK_KEY == locks.STARTUP_LOCK_KEY  # a start never meets a migration


def test_the_keys_are_the_ones_running_registries_hold() -> None:
    assert locks.LOCK_KEYS == {
        "startup and migration": 0x7265_6769_7374_7279,
        "group commit writers": 0x5245_4749_5354_5259,
        "projection lease": 0x7265_6769_0000_0001,
        "ledger chain": 0x6C65_6467_6572_0001,
    }
    assert all(-(2**63) <= key < 2**63 for key in locks.LOCK_KEYS.values())  # a bigint
