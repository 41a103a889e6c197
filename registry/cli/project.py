"""`registry project`: the projection worker process, its status and rebuilds."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from registry.cli.guards import require_store
from registry.cli.tables import Column, Table, add_output_option
from registry.observability.logs import configure as configure_logs
from registry.observability.progress import Progress
from registry.settings import Settings, log_format, verify_seconds

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from registry.observability.worker import WorkerHealth
    from registry.readmodels.runner import ProjectionRunner

log = logging.getLogger("registry.worker")


STATUS_COLUMNS = [
    Column("projection", 14),
    Column("position", 12, ">", numeric=True),
    Column("head", 12, ">", numeric=True),
    Column("lag", 10, ">", numeric=True),
]
"""``registry project --status``: each projection's position against the log's head."""


PROJECTION_NAMES = ("accounts", "holdings", "supply", "transactions", "history", "serials")
"""``registry.readmodels.runner``'s projection names and default batch, repeated here so
building the parser imports no SQLAlchemy (tests/unit/test_cli_imports.py checks they
agree)."""
DEFAULT_BATCH = 5000


def add_parser(sub: Any) -> None:
    project = sub.add_parser(
        "project", help="run the projections: catch up, then follow new events"
    )
    action = project.add_mutually_exclusive_group()
    action.add_argument(
        "--status", action="store_true", help="print each projection's position and lag, then exit"
    )
    add_output_option(project)  # of --status
    action.add_argument(
        "--rebuild",
        metavar="NAME",
        choices=PROJECTION_NAMES,
        help="rebuild one projection from zero and swap it in",
    )
    action.add_argument(
        "--once", action="store_true", help="catch up to the head of the log, then exit"
    )
    project.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH,
        help=f"events per transaction at most (default {DEFAULT_BATCH})",
    )
    project.set_defaults(run=run)


def events_progress(
    label: str, start: int = 0
) -> tuple[Progress, Callable[[int, int, float], None]]:
    """A progress line for a catch-up from position ``start`` or a rebuild (a terminal
    only, not in JSON-log mode), and the ``report(done, head, seconds)`` the runner
    calls it through: ``done`` counts this run's events, so the total is head - start."""
    meter = Progress(label, unit="events")

    def report(done: int, head: int, _: float) -> None:
        meter.update(done, total=max(head - start, done))

    return meter, report


def lowest_position(runner: ProjectionRunner) -> int:
    """Where a catch-up starts: the position of the projection furthest behind."""
    return min((line.position for line in runner.status()), default=0)


def summary(done: int, seconds: float) -> str:
    rate = f" ({done / seconds:,.0f}/s)" if seconds > 0 and done else ""
    return f"{done:,} events in {seconds:.1f}s{rate}"


PROGRESS_SECONDS = 0.5
"""How often a catch-up reports to its progress line (shown on a terminal only)."""

FAULT_PAUSES = (1.0, 2.0, 5.0, 10.0, 15.0)
"""Seconds between attempts to take the lease again after database faults in a row."""


def _apply_while_leased(
    runner: ProjectionRunner,
    engine: Engine,
    settings: Settings,
    stop: threading.Event,
    *,
    once: bool,
    health: WorkerHealth | None = None,
) -> int:
    """Win the projection lease, catch up, follow; stand by again if it is lost.

    A database fault (a restart or failover ends every session; a lock or statement
    timeout) is not the end of the worker: it lets the lease go, waits, and takes the
    lease again, as a standby would, so the read models resume without anyone
    restarting it. Anything else is a defect and stops it. ``--once`` (a script's
    catch-up) reports a fault instead (exit 3)."""
    from registry.observability.worker import CATCHING_UP, FAULT, FOLLOWING, STANDBY, WorkerHealth
    from registry.persistence.faults import database_fault, describe_fault
    from registry.persistence.lease import projection_lease
    from registry.persistence.write_lock import drop_dead_connections

    health = health or WorkerHealth()

    def waiting() -> None:
        health.tick(STANDBY)
        log.info("another worker holds the projection lease: standing by")

    faults = 0
    runner.on_tick = health.tick
    while not stop.is_set():
        try:
            with projection_lease(engine, stop, on_wait=waiting, on_attempt=health.tick) as release:
                if release is None:
                    break
                health.tick(CATCHING_UP)
                log.info("holding the projection lease; catching up on %s", settings.describe())
                started = time.monotonic()
                meter, report = events_progress("caught up on", lowest_position(runner))
                with meter:
                    done = runner.catch_up(report, every=PROGRESS_SECONDS)
                log.info("caught up: %s", summary(done, time.monotonic() - started))
                faults = 0
                if once:
                    return 0
                health.tick(FOLLOWING)
                log.info("following new events (Ctrl-C to stop)")
                runner.follow(release)
                if not stop.is_set():
                    log.warning("lost the projection lease (database connection); taking it again")
        except Exception as error:
            if once or database_fault(error) is None:
                raise
            health.tick(FAULT)
            pause = FAULT_PAUSES[min(faults, len(FAULT_PAUSES) - 1)]
            faults += 1
            log.warning(
                "database fault (%s): taking the projection lease again in %.0fs",
                describe_fault(error),
                pause,
            )
            drop_dead_connections(runner.registry.recorder)
            stop.wait(pause)
    return 0


def run(args: argparse.Namespace) -> int:
    from registry.bootstrap import check_settings

    check_settings(server=False)
    reads_only = bool(args.status or args.rebuild)
    if reads_only:  # a command's output, for a person or a script
        return _run(args, reads_only)
    listener = configure_logs(log_format())  # a worker's log, REGISTRY_LOG_FORMAT as the server's
    try:
        return _run(args, reads_only)
    finally:
        listener.stop()  # what is still queued is written first


def _run(args: argparse.Namespace, reads_only: bool) -> int:
    from registry.bootstrap import build_registry, build_worker
    from registry.integrity.sealer import LedgerSealer
    from registry.observability.metrics import RegistryMetrics
    from registry.observability.worker import WorkerHealth, WorkerMetrics
    from registry.observability.worker import serve as serve_probes
    from registry.persistence.engine import make_engine
    from registry.persistence.eventlog import EventLog
    from registry.persistence.lease import lease_holder

    settings = Settings.from_env()
    if reads_only:  # reads (or rebuilds) a store: never creates one
        require_store(
            settings, "registry project --status" if args.status else "registry project --rebuild"
        )
    registry = build_registry(settings)
    engine = make_engine(settings)
    metrics = RegistryMetrics()
    health = WorkerHealth()
    worker_metrics = WorkerMetrics(metrics.registry, health)
    sealer = None
    if not reads_only:
        sealer = LedgerSealer.from_env(engine, EventLog.of(registry.recorder))
        sealer.metrics = worker_metrics
    runner = build_worker(
        registry,
        engine,
        sealer=sealer,
        metrics=metrics,
        verify_seconds=None if reads_only else verify_seconds(),
        batch_size=args.batch_size,
    )
    if runner.housekeeping is not None:
        runner.housekeeping.worker_metrics = worker_metrics
    worker_metrics.watch_head(runner.head)
    metrics.watch_pool("writes", engine)
    port = os.environ.get("REGISTRY_METRICS_PORT", "").strip()
    # /metrics, /healthz and /readyz (registry.observability.worker)
    exporter = (
        serve_probes(health, metrics.registry, int(port)) if port and not reads_only else None
    )
    try:
        if args.status:
            with Table(STATUS_COLUMNS, args.output) as table:
                for line in runner.status():
                    table.row(line.projection, line.position, line.head, line.lag)
                holder = lease_holder(engine)
                if engine.dialect.name == "postgresql":
                    held = "held by database session " + str(holder) if holder else "free"
                    table.note(f"lease: {held}")
            return 0
        if args.rebuild:
            print(f"rebuilding {args.rebuild} from position zero", flush=True)
            meter, report = events_progress(f"rebuilt {args.rebuild} from")
            with meter:
                done = runner.rebuild(args.rebuild, report)
            print(f"{args.rebuild} rebuilt from {done:,} events and swapped in")
            return 0
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        return _apply_while_leased(runner, engine, settings, stop, once=args.once, health=health)
    finally:
        if exporter is not None:
            exporter.stop()
        registry.close()
