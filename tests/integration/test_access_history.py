"""Access events written before separation of duties still load: a version-1
``RoleGranted`` (no approver, no time) is upcast, and the rules built on the new fields
treat it as granted when it was recorded, by one administrator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eventsourcing.persistence import StoredEvent

from registry.application.registry import Registry
from registry.bootstrap import build_registry
from registry.domain.access import AccessControl, Role
from registry.domain.transactions import Principal
from registry.settings import Settings

SYSTEM = Principal("system", "tests")
OLD = Principal("mee", "regulator-old")


def stored_v1_grant(registry: Registry, version: int, timestamp: Any) -> StoredEvent:
    """A RoleGranted exactly as the previous version stored it: no ``class_version``,
    no ``approved_by``, ``proposal`` or ``at``."""
    state = {
        "timestamp": timestamp,
        "grant_id": "old-reg",
        "party": OLD.party,
        "name": OLD.name,
        "role": "regulator",
        "accounts": ["*"],
        "by": "mee/admin",
        "reason": "granted before four eyes",
    }
    return StoredEvent(
        originator_id=AccessControl.id_for(),
        originator_version=version,
        topic=AccessControl.RoleGranted.TOPIC,
        state=registry.mapper.transcoder.encode(state),
    )


def test_a_version_1_grant_loads_with_no_approver_and_its_recorded_time(tmp_path: Path) -> None:
    settings = Settings(f"sqlite:///{tmp_path / 'old.sqlite'}")
    registry = build_registry(settings)
    try:
        registry.access.genesis([(Principal("mee", "admin"), Role.ADMIN)], "founding")
        head = registry.access.current()
        when = head.all_grants()[0].at
        assert when is not None
        registry.recorder.insert_events([stored_v1_grant(registry, head.version + 1, when)])
    finally:
        registry.close()

    reopened = build_registry(settings)  # a fresh process: replayed from the store
    try:
        acl = reopened.access.current()
        [old] = acl.grants_of(OLD)
        assert (old.role, old.granted_by, old.approved_by, old.at) == (
            Role.REGULATOR,
            "mee/admin",
            "",
            when,
        )
        # the rules read it: it predates a proposal made now, and was not made by li
        acl.check_approver(OLD, Role.REGULATOR, "mee/regulator-li", reopened.clock())
        # and the aggregate goes on from it
        reopened.access.grant_role(
            SYSTEM, "auditor-1", Principal("nao", "zhao"), "auditor", (), "after the upgrade"
        )
        assert [g.grant_id for g in reopened.access.current().all_grants()] == [
            "auditor-1",
            "bootstrap-mee-admin-admin",
            "old-reg",
        ]
    finally:
        reopened.close()
