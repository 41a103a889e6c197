"""`registry supply`: units issued against the sum of holdings, per unit class."""

from __future__ import annotations

import argparse
from typing import Any

from registry.cli.guards import require_store
from registry.settings import Settings


def add_parser(sub: Any) -> None:
    sub.add_parser(
        "supply", help="check units issued == sum of holdings, per unit class"
    ).set_defaults(run=run)


def run(_: argparse.Namespace) -> int:
    from registry.bootstrap import build_registry

    settings = Settings.from_env()
    require_store(settings, "registry supply")
    registry = build_registry(settings)
    print(f"store: {settings.describe()}")
    ok = True
    for line in registry.supply():
        ok &= line.balanced
        print(
            f"{line.unit_class.key:<28} issued {line.issued:>15,}  "
            f"held {line.held_in_accounts:>15,}  {'OK' if line.balanced else 'MISMATCH'}"
        )
    registry.close()
    return 0 if ok else 1
