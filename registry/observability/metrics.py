"""Prometheus metrics of one registry process (docs/observability.md lists them all).

Each ``RegistryMetrics`` owns its own ``CollectorRegistry`` rather than the global one,
so tests and several servers in one process never collide over metric names. Counters
and histograms are updated as calls happen; projection positions and connection pools
are read only when Prometheus scrapes, from callables registered with
``watch_projections`` and ``watch_pool``, so an idle process does no metrics work. A
callable that fails at scrape time costs its own family only: the rest is still served
and ``registry_metrics_scrape_errors_total`` counts the failure.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import TypeVar
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    ProcessCollector,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import Engine

log = logging.getLogger("registry.metrics")

DURATION_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
"""Seconds, 1 ms .. 30 s: a balance query takes about a millisecond, a batch of
10,000 trades several seconds; anything slower lands in +Inf."""

SETTLEMENT_STATUSES = ("SETTLED", "ALREADY_SETTLED", "REFUSED", "REJECTED")
"""The per-trade outcomes of SettleTrades (``TradeOutcome`` values)."""

_T = TypeVar("_T")

ProjectionStatus = Callable[[], Iterable[tuple[str, int, int]]]
"""Returns (projection, position, head) per projection, e.g. from
``ProjectionRunner.status()``."""


class MetricsServer:
    """The ``/metrics`` HTTP endpoint on a daemon thread; ``port`` is the bound one."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def stop(self) -> None:
        """Stop serving and free the port (a scrape in progress finishes first)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _Watched:
    """The families read at scrape time: projections and connection pools.

    Registered before the scrape-error counter, so a failure counted during a scrape
    already shows in that scrape's own output."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._projections: ProjectionStatus | None = None
        self._pools: dict[str, Engine] = {}
        self.errors: Counter | None = None

    def watch_projections(self, status: ProjectionStatus) -> None:
        with self._lock:
            self._projections = status
        self._count_errors_of("projections")

    def watch_pool(self, name: str, engine: Engine) -> None:
        with self._lock:
            self._pools[name] = engine
        self._count_errors_of(f"pool:{name}")

    def _count_errors_of(self, source: str) -> None:
        """Export the source's error counter at 0 from the start: ``increase()`` then
        sees its first failure (a series born at 1 has no earlier sample to rise from)."""
        if self.errors is not None:
            self.errors.labels(source=source)

    def describe(self) -> Iterable[Metric]:
        """The names this collector owns, so the registry refuses clashes at once."""
        return [*_projection_families(), *_pool_families()]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            status, pools = self._projections, dict(self._pools)
        if status is not None:
            rows = self._guarded("projections", lambda: list(status()))
            if rows is not None:
                yield from _projections(rows)
        if pools:
            checked_out, size = _pool_families()
            for name, engine in pools.items():  # one family each, every pool's samples
                read = self._guarded(f"pool:{name}", partial(_pool_state, engine))
                for family, value in zip((checked_out, size), read or (None, None), strict=True):
                    if value is not None:
                        family.add_metric([name], value)
            yield checked_out
            yield size

    def _guarded(self, source: str, read: Callable[[], _T]) -> _T | None:
        """``read()``, or None if it fails: one broken source (the database down, say)
        must not take the whole endpoint, and what else it shows, with it."""
        try:
            return read()
        except Exception as error:
            log.warning("metrics: reading %s failed at scrape time: %s", source, error)
            if self.errors is not None:
                self.errors.labels(source=source).inc()
            return None


def _projection_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
    return (
        GaugeMetricFamily(
            "registry_projection_position",
            "Last event log position the projection has applied.",
            labels=["projection"],
        ),
        GaugeMetricFamily(
            "registry_projection_lag_events",
            "Events committed to the log that the projection has not "
            "applied yet (head minus position).",
            labels=["projection"],
        ),
        GaugeMetricFamily(
            "registry_log_head_position", "Highest position committed to the event log."
        ),
    )


def _projections(rows: Iterable[tuple[str, int, int]]) -> list[Metric]:
    position, lag, head = _projection_families()
    heads = []
    for name, at, log_head in rows:
        position.add_metric([name], at)
        lag.add_metric([name], max(0, log_head - at))
        heads.append(log_head)
    if not heads:  # no projection reported: the head is unknown, not zero
        return [position, lag]
    head.add_metric([], max(heads))
    return [position, lag, head]


def _pool_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    return (
        GaugeMetricFamily(
            "registry_db_pool_checked_out",
            "Database connections in use (checked out of the pool).",
            labels=["pool"],
        ),
        GaugeMetricFamily(
            "registry_db_pool_size",
            "Connections the pool keeps (its pool_size; overflow connections come on top).",
            labels=["pool"],
        ),
    )


def _pool_state(engine: Engine) -> tuple[float | None, float | None]:
    """(checked out, size) of a QueuePool; other pools (NullPool, StaticPool,
    SingletonThreadPool) lack one or both methods, and that value is left out."""
    pool = engine.pool  # read each time: dispose() replaces it
    values = []
    for method in ("checkedout", "size"):
        reader = getattr(pool, method, None)
        values.append(float(reader()) if callable(reader) else None)
    return values[0], values[1]


class _Verification:
    """The last ledger verification's outcome, shown only once there is one: a gauge
    at 0 from the start would read as "verification failed"."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: tuple[bool, int, float] | None = None

    def set(self, ok: bool, position: int) -> None:
        with self._lock:
            self._last = (ok, position, time.time())

    def describe(self) -> Iterable[Metric]:
        return _verify_families()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            last = self._last
        if last is None:
            return
        families = _verify_families()
        for family, value in zip(
            families, (1.0 if last[0] else 0.0, last[1], last[2]), strict=True
        ):
            family.add_metric([], value)
        yield from families


def _verify_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
    return (
        GaugeMetricFamily(
            "registry_ledger_verify_ok",
            "1 if the last ledger verification "
            "passed, 0 if it found a position that does not match.",
        ),
        GaugeMetricFamily(
            "registry_ledger_verify_position",
            "The last verification's "
            "position: the chain head it verified, or the first position "
            "that failed.",
        ),
        GaugeMetricFamily(
            "registry_ledger_verify_timestamp_seconds",
            "When the ledger was last verified (Unix time).",
        ),
    )


class RegistryMetrics:
    """Every metric one registry process exports, on a ``CollectorRegistry`` of its own."""

    def __init__(self, process_metrics: bool = True) -> None:
        self.registry = CollectorRegistry()
        self._watched = _Watched()
        self.registry.register(self._watched)
        r = self.registry
        self.scrape_errors = Counter(
            "registry_metrics_scrape_errors",
            "Scrape-time reads that failed and were "
            "left out of the scrape, by source (projections, pool:NAME).",
            ["source"],
            registry=r,
        )
        self._watched.errors = self.scrape_errors
        self.rpc_calls = Counter(
            "registry_rpc_calls",
            "gRPC calls finished, by full method and status code.",
            ["method", "code"],
            registry=r,
        )
        self.rpc_duration = Histogram(
            "registry_rpc_duration_seconds",
            "Time from a call's arrival to its status, denials and errors included.",
            ["method"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.rpc_errors = Counter(
            "registry_rpc_errors",
            "gRPC calls that did not end OK, by method, code and "
            "the registry's reason (empty when there is none).",
            ["method", "code", "reason"],
            registry=r,
        )
        self.settlements = Counter(
            "registry_settlements",
            "Trades in SettleTrades calls, by per-trade status.",
            ["status"],
            registry=r,
        )
        self.settlement_refusals = Counter(
            "registry_settlement_refusals",
            "Trades REFUSED for the ledger's state (and recorded), by reason.",
            ["reason"],
            registry=r,
        )
        self.settlement_rejections = Counter(
            "registry_settlement_rejections",
            "Trades REJECTED as malformed or as a taken trade id (nothing recorded), by reason.",
            ["reason"],
            registry=r,
        )
        self.hold_expiries = Counter(
            "registry_hold_expiries",
            "Exchange holds released because their timeout passed.",
            registry=r,
        )
        self._verification = _Verification()
        r.register(self._verification)
        for status in SETTLEMENT_STATUSES:  # zero from the start, so rate() sees the
            self.settlements.labels(status=status)  # first trades of each status
        if process_metrics:
            ProcessCollector(registry=r)
            GCCollector(registry=r)

    # -- events, as they happen -------------------------------------------------------

    def observe_call(self, method: str, code: str, reason: str, seconds: float) -> None:
        """One finished gRPC call: ``method`` is the full name (``/pkg.Service/Method``),
        ``code`` the status code's name (``OK``, ``NOT_FOUND``...), ``reason`` the
        registry's reason code or ``""``."""
        self.rpc_calls.labels(method=method, code=code).inc()
        self.rpc_duration.labels(method=method).observe(max(0.0, seconds))
        if code != "OK":
            self.rpc_errors.labels(method=method, code=code, reason=reason).inc()

    def observe_settlement(self, status: str, reason: str = "", count: int = 1) -> None:
        """``count`` trades that ended with ``status`` (SETTLED, ALREADY_SETTLED,
        REFUSED, REJECTED) and ``reason``; a batch's results can be tallied first and
        observed once per (status, reason)."""
        if count <= 0:
            return
        self.settlements.labels(status=status).inc(count)
        if status == "REFUSED":
            self.settlement_refusals.labels(reason=reason).inc(count)
        elif status == "REJECTED":
            self.settlement_rejections.labels(reason=reason).inc(count)

    def observe_hold_expiries(self, count: int) -> None:
        """Holds that ``Registry.expire_due_holds()`` expired in one sweep."""
        if count > 0:
            self.hold_expiries.inc(count)

    def set_verify_result(self, ok: bool, position: int) -> None:
        """The outcome of a periodic ``registry verify`` (``VerifyReport.ok``, and its
        ``chain_head`` when OK or its failure's position when not)."""
        self._verification.set(ok, position)

    # -- state, read at scrape time ---------------------------------------------------

    def watch_projections(self, status: ProjectionStatus) -> None:
        """Export each projection's position and lag and the log's head, by calling
        ``status()`` at each scrape (replaces a callable registered before)."""
        self._watched.watch_projections(status)

    def watch_pool(self, name: str, engine: Engine) -> None:
        """Export ``engine``'s connection pool as ``pool=name`` at each scrape."""
        self._watched.watch_pool(name, engine)

    # -- exposition -------------------------------------------------------------------

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric, as a scrape would get it."""
        return bytes(generate_latest(self.registry))

    def start_http(self, port: int, host: str = "0.0.0.0") -> MetricsServer:
        """Serve ``/metrics`` on ``host:port`` (port 0 picks a free one) until
        ``stop()``; the thread is a daemon, so it never holds the process up."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        return MetricsServer(server, thread)
