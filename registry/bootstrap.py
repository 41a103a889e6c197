"""The composition root: the application, the projection worker and the gRPC server,
each built here, in one way, from one ``Settings``.

Commands (``registry.cli``), tests and benchmarks build through this module; nothing
below it (``services``, ``readmodels``, ``application``) imports it, so the layers stay
acyclic: settings <- persistence, application, read models, services <- bootstrap <- cli.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

import grpc
from sqlalchemy import Engine

from registry import settings as registry_settings
from registry.application import Registry
from registry.application.housekeeping import Housekeeping
from registry.integrity.sealer import LedgerSealer
from registry.integrity.signing import load_public_key, private_key_path
from registry.integrity.verify import last_verified, record_verified, verify_ledger
from registry.observability.metrics import RegistryMetrics
from registry.persistence import migrate
from registry.persistence.engine import make_engine, make_read_engine, make_replica_engine
from registry.persistence.eventlog import EventLog
from registry.persistence.startup_lock import startup_lock
from registry.readmodels.queries import ReadModels
from registry.readmodels.runner import DEFAULT_BATCH, ProjectionRunner
from registry.settings import Settings, verify_full_seconds
from services.backend import Backend
from services.server import RegistryServer, ServerSettings

log = logging.getLogger("registry.worker")


def build_registry(
    settings: Settings | None = None, clock: Callable[[], datetime] | None = None
) -> Registry:
    """A Registry on the configured store, national accounts open.

    The schema must be at head first. PostgreSQL is migrated by an operator, so an
    un-migrated database is refused with the command to run; the embedded SQLite store
    (one user, no operator) migrates itself; memory has no schema."""
    settings = settings or Settings.from_env()
    env = settings.eventsourcing_env()
    with startup_lock(env):
        if settings.backend == "sqlite":
            migrate.upgrade(settings)
        elif settings.backend != "memory":
            migrate.ensure_migrated(settings)
        registry = Registry(env=env, clock=clock)
        registry.ensure_national_accounts()
    return registry


def check_settings(environ: Mapping[str, str] | None = None, *, server: bool = True) -> None:
    """What ``registry serve``, ``registry project`` and ``registry config --check`` run
    before anything starts: unknown names and the store's settings
    (``registry.settings.check``), then, for a server, its own (``ServerSettings``)."""
    environ = os.environ if environ is None else environ
    store = registry_settings.check(environ)
    if server and store.backend != "memory":
        ServerSettings.from_env(store, environ)


def build_worker(
    registry: Registry,
    engine: Engine,
    *,
    sealer: LedgerSealer | None = None,
    metrics: RegistryMetrics | None = None,
    verify_seconds: float | None = None,
    batch_size: int = DEFAULT_BATCH,
) -> ProjectionRunner:
    """The projection runner: the only way one is built.

    With a ``sealer`` it keeps the log chained and signed and does the housekeeping
    (expiring holds and proposals) while it follows: the ``registry project`` worker and
    the server's in-process projections. Without one it only applies events: a status,
    a rebuild, ``registry check``'s catch-up. ``verify_seconds``: also re-verify the
    whole ledger this often (the worker holding the lease)."""
    housekeeping = None
    if sealer is not None:
        housekeeping = Housekeeping(
            registry,
            metrics=metrics,
            verify=(
                None
                if verify_seconds is None or metrics is None
                else ledger_check(engine, registry, metrics)
            ),
            verify_seconds=verify_seconds or 0,
        )
    runner = ProjectionRunner(
        registry, engine, batch_size=batch_size, sealer=sealer, housekeeping=housekeeping
    )
    if metrics is not None:
        metrics.watch_projections(
            lambda: [(p.projection, p.position, p.head) for p in runner.status()]
        )
    return runner


def ledger_check(
    engine: Engine, registry: Registry, metrics: RegistryMetrics
) -> Callable[[], None]:
    """Verify the ledger against the signing key's public half, and every event's
    authenticator with the key this process writes with; the result goes to the
    ``registry_ledger_verify_ok`` gauge (and the log when it fails). Incremental from
    where the last good run ended (kept in ``ledger_verified``), full once
    REGISTRY_VERIFY_FULL_SECONDS have passed since the last full one."""
    full_every = verify_full_seconds()

    def run() -> None:
        path = private_key_path()
        if not path.exists():
            return  # nothing signed yet
        now = datetime.now(UTC)
        since = last_verified(engine)
        full = (
            since is None
            or since.full_at is None
            or (now - since.full_at).total_seconds() >= full_every
        )
        report = verify_ledger(
            engine,
            [load_public_key(path)],
            log=EventLog.of(registry.recorder),
            event_key=getattr(registry.recorder, "event_key", None),
            since=None if full else since,
        )
        record_verified(engine, report, now=now)
        position = report.failure.position if report.failure else report.chain_head
        metrics.set_verify_result(report.ok, position)
        if not report.ok:
            log.error("ledger verification: %s", report.summary())

    return run


def build_backend(store: Settings, settings: ServerSettings) -> Backend:
    """What a server process serves from: the registry, a write engine and a pool of
    read connections (one per call thread), with their metrics; with
    REGISTRY_READ_DATABASE_URL, a pool on the replica too, for the read-model queries."""
    registry = build_registry(store)
    engine = make_engine(store)
    reads = make_read_engine(store, settings.max_workers)
    replica = make_replica_engine(store, settings.max_workers)
    metrics = RegistryMetrics()
    metrics.watch_pool("writes", engine)
    metrics.watch_pool("reads", reads)
    if replica is not None:
        metrics.watch_pool("replica", replica)
    return Backend(registry, ReadModels(engine, reads, replica), metrics)


def close_backend(backend: Backend) -> None:
    backend.registry.close()
    backend.read_models.engine.dispose()
    backend.read_models.reads.dispose()
    backend.read_models.queries.dispose()


def build_server(
    backend: Backend,
    settings: ServerSettings,
    interceptors: Sequence[grpc.ServerInterceptor] = (),
) -> RegistryServer:
    """The gRPC server on ``backend``, bound to ``settings.listen`` (``.port`` is the
    port it got); with in-process projections, its follower thread builds the worker
    here (``build_worker``) and keeps the read models current."""

    def projections() -> ProjectionRunner:
        engine = backend.read_models.engine
        sealer = LedgerSealer.with_key_file(
            engine,
            settings.ledger_key,
            EventLog.of(backend.registry.recorder),
            settings.ledger_sign_seconds,
        )
        return build_worker(backend.registry, engine, sealer=sealer, metrics=backend.metrics)

    return RegistryServer(
        backend,
        settings,
        interceptors,
        projections=projections if settings.projections_in_process else None,
    )
