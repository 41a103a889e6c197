"""`registry config`: the effective settings (secrets masked), or a check of them as
`registry serve` runs it."""

from __future__ import annotations

import argparse
from typing import Any

from registry import settings


def add_parser(sub: Any) -> None:
    config = sub.add_parser(
        "config",
        help="the effective settings (secrets masked), or check them as `registry serve` would",
    )
    config.add_argument(
        "--show",
        action="store_true",
        help="print every setting, its value and where it came from (the default)",
    )
    config.add_argument(
        "--check",
        action="store_true",
        help="exit 0 if a server would start with these settings, else 2",
    )
    config.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from registry.bootstrap import check_settings

    if args.check:
        check_settings(server=True)
        print("settings OK")
        return 0
    rows = settings.effective(from_file=args.from_file)
    width = max(len(name) for name, _, _ in rows)
    for name, value, source in rows:
        print(f"{name:<{width}}  {value or '-':<44}  {source}")
    return 0
