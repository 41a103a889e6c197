"""`registry migrate`: upgrade the configured database to the latest schema."""

from __future__ import annotations

import argparse
from typing import Any

from registry.settings import Settings


def add_parser(sub: Any) -> None:
    sub.add_parser(
        "migrate",
        help="upgrade the configured database (REGISTRY_DATABASE_URL) to the latest schema",
    ).set_defaults(run=run)


def run(_: argparse.Namespace) -> int:
    from registry.persistence import migrate

    settings = Settings.from_env()
    steps = migrate.upgrade(settings)
    for step in steps:
        print(f"applied {step}")
    state = "migrated to" if steps else "already at"
    print(f"{settings.describe()}: {state} head {migrate.head_revision()}")
    return 0
