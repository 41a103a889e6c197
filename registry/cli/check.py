"""``registry check``: catch the read models up, then compare them with the event store
(the comparison itself is ``registry.readmodels.check``)."""

from __future__ import annotations

import argparse
from typing import Any

from registry.cli.guards import require_store
from registry.observability.progress import Progress
from registry.settings import Settings


def add_parser(sub: Any) -> None:
    command = sub.add_parser(
        "check", help="catch the read models up, then compare them with the event store"
    )
    command.set_defaults(run=run)


def run(_: argparse.Namespace) -> int:
    """Exit 0 when every read model equals the event store, 1 on any difference.

    The projections are caught up first (``check``): a comparison is only meaningful at
    the head of the log, and a check of lagging tables would report the lag, not bugs."""
    from registry.bootstrap import build_registry, build_worker
    from registry.persistence.engine import make_engine
    from registry.readmodels.check import check

    settings = Settings.from_env()
    require_store(settings, "registry check")
    registry = build_registry(settings)
    engine = make_engine(settings)
    try:
        # The long part first, with a progress line on a terminal; check() then finds
        # nothing left to catch up on.
        runner = build_worker(registry, engine)
        start = min((line.position for line in runner.status()), default=0)
        with Progress("caught up on", unit="events") as meter:
            runner.catch_up(lambda done, head, _: meter.update(done, total=head - start), every=0.5)
        report = check(runner)
    finally:
        registry.close()
        engine.dispose()
    for difference in report.differences:
        print(difference)
    if report.ok:
        print(f"OK: {report.checks} checks, read models equal the event store")
        return 0
    print(f"MISMATCH: {len(report.differences)} differences in {report.checks} checks")
    return 1
