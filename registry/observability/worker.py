"""The projection worker's own health and metrics: liveness and readiness probes and
the ``registry_worker_*`` families, served with ``/metrics`` on its metrics port.

Probes (docs/observability.md, "The worker's probes"):

- ``/healthz`` (live): 200 while the worker's main loop has ticked within
  ``LIVE_SECONDS``. The loop ticks after every batch it applies, every round it follows
  the log (at least every 0.2 s when idle), every attempt to take the projection lease
  as a standby (every second) and before every pause after a database fault (at most
  15 s): a loop stuck anywhere (a hung query, a deadlock) stops ticking, and the
  orchestrator restarts the process.
- ``/readyz`` (ready): 200 when the worker does its job: it either holds the projection
  lease and has caught up with the log (the head it saw when it took the lease), or it
  stands by for a lease another worker holds, asking the database every second; and it
  is live. 503 while it starts, catches up, or recovers from a database fault (the
  lease let go until it is taken and caught up again).

Each answers a one-line text body naming the state, for a person with curl.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, make_wsgi_app

from registry.observability.metrics import MetricsServer

LIVE_SECONDS = 60.0
"""A loop that has not ticked for this long is hung: /healthz answers 503."""

STARTING, CATCHING_UP, FOLLOWING, STANDBY, FAULT = (
    "starting",
    "catching-up",
    "following",
    "standby",
    "database-fault",
)
READY_STATES = frozenset({FOLLOWING, STANDBY})
LEASED_STATES = frozenset({CATCHING_UP, FOLLOWING})

HOUSEKEEPING_DUTIES = ("holds", "proposals")


class WorkerHealth:
    """What the probes answer: the loop's last tick and its state (set by the loop)."""

    def __init__(
        self, live_seconds: float = LIVE_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.live_seconds = live_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._ticked = clock()
        self._state = STARTING

    def tick(self, state: str | None = None) -> None:
        """The loop is alive (and, if given, now in ``state``)."""
        with self._lock:
            self._ticked = self.clock()
            if state is not None:
                self._state = state

    @property
    def state(self) -> str:
        with self._lock:
            return self._state

    def since_tick(self) -> float:
        with self._lock:
            return self.clock() - self._ticked

    def live(self) -> tuple[bool, str]:
        idle = self.since_tick()
        if idle > self.live_seconds:
            return False, f"stalled: no loop tick for {idle:.0f}s (bound {self.live_seconds:.0f}s)"
        return True, f"live: loop ticked {idle:.1f}s ago"

    def ready(self) -> tuple[bool, str]:
        live, why = self.live()
        if not live:
            return False, why
        state = self.state
        return state in READY_STATES, state


class WorkerMetrics:
    """The worker's counters and gauges, on the process's ``CollectorRegistry`` (so one
    ``/metrics`` serves them with the projection and pool families)."""

    def __init__(self, registry: CollectorRegistry, health: WorkerHealth | None = None) -> None:
        r = registry
        self._position = 0
        self.events_chained = Counter(
            "registry_worker_chain_events",
            "Events the worker appended to the ledger's digest chain.",
            registry=r,
        )
        self.chain_position = Gauge(
            "registry_worker_chain_position",
            "Last event log position the digest chain covers (as this worker saw it).",
            registry=r,
        )
        self.chain_lag = Gauge(
            "registry_worker_chain_lag_events",
            "Events committed to the log that the digest chain does not cover yet "
            "(the log's head, read at scrape time, minus the chain position).",
            registry=r,
        )
        self.checkpoints_signed = Counter(
            "registry_worker_checkpoints_signed",
            "Checkpoints of the chain the worker signed (and published).",
            registry=r,
        )
        self.signed_position = Gauge(
            "registry_worker_signed_position",
            "Position of the last checkpoint the worker signed (0 before the first).",
            registry=r,
        )
        self.last_signed = Gauge(
            "registry_worker_last_signed_timestamp_seconds",
            "When the worker last signed a checkpoint (Unix time; 0 before the first).",
            registry=r,
        )
        self.seal_failures = Counter(
            "registry_worker_seal_failures",
            "Rounds of chaining and signing that failed, by reason: "
            "tampered (LEDGER_TAMPERED refusal) or error (an exception).",
            ["reason"],
            registry=r,
        )
        self.housekeeping_runs = Counter(
            "registry_worker_housekeeping_runs",
            "Expiry sweeps run, by duty (holds, proposals).",
            ["duty"],
            registry=r,
        )
        self.expired = Counter(
            "registry_worker_expired",
            "Holds and proposals the expiry sweeps expired, by duty.",
            ["duty"],
            registry=r,
        )
        self.housekeeping_failures = Counter(
            "registry_worker_housekeeping_failures",
            "Expiry sweeps that failed (tried again next round), by duty.",
            ["duty"],
            registry=r,
        )
        self.loop_tick = Gauge(
            "registry_worker_loop_tick_seconds_ago",
            "Seconds since the worker's main loop last ticked (liveness).",
            registry=r,
        )
        self.lease_held = Gauge(
            "registry_worker_lease_held",
            "1 while the worker holds the projection lease (projects, chains, signs).",
            registry=r,
        )
        self.ready = Gauge(
            "registry_worker_ready",
            "1 when the worker is ready (holds the lease and caught up, or stands by).",
            registry=r,
        )
        for reason in ("tampered", "error"):  # zero from the start: increase() sees the first
            self.seal_failures.labels(reason=reason)
        for duty in HOUSEKEEPING_DUTIES:
            self.housekeeping_runs.labels(duty=duty)
            self.expired.labels(duty=duty)
            self.housekeeping_failures.labels(duty=duty)
        self.last_signed.set(0)
        if health is not None:
            self.loop_tick.set_function(health.since_tick)
            self.ready.set_function(lambda: 1.0 if health.ready()[0] else 0.0)
            self.lease_held.set_function(lambda: 1.0 if health.state in LEASED_STATES else 0.0)

    def watch_head(self, head: Callable[[], int]) -> None:
        """Export the chain lag against ``head()`` (the log's head), read at scrape time;
        NaN when it cannot be read (the database down), never a failed scrape."""

        def lag() -> float:
            try:
                return float(max(0, head() - self._position))
            except Exception:
                return float("nan")

        self.chain_lag.set_function(lag)

    # -- hooks: the sealer and the housekeeping call these ----------------------------

    def chained(self, events: int, head: int, signed: list[int]) -> None:
        """One round of ``LedgerSealer.after_step``: ``events`` chained up to ``head``,
        checkpoints signed at the positions ``signed``."""
        if events > 0:
            self.events_chained.inc(events)
        if head > 0:
            self._position = head
            self.chain_position.set(head)
        if signed:
            self.checkpoints_signed.inc(len(signed))
            self.signed_position.set(max(signed))
            self.last_signed.set(time.time())

    def seal_failed(self, reason: str) -> None:
        self.seal_failures.labels(reason=reason).inc()

    def swept(self, duty: str, expired: int) -> None:
        self.housekeeping_runs.labels(duty=duty).inc()
        if expired > 0:
            self.expired.labels(duty=duty).inc(expired)

    def sweep_failed(self, duty: str) -> None:
        self.housekeeping_failures.labels(duty=duty).inc()


class _Threading(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes come every few seconds: no access log line each."""


def probe_app(health: WorkerHealth, registry: CollectorRegistry) -> Callable[..., Iterable[bytes]]:
    """A WSGI app: ``/healthz``, ``/readyz``, and everything else as ``/metrics``."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in ("/healthz", "/readyz"):
            ok, why = health.live() if path == "/healthz" else health.ready()
            status = "200 OK" if ok else "503 Service Unavailable"
            body = (why + "\n").encode()
            start_response(
                status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
            )
            yield body
            return
        yield from metrics(environ, start_response)

    return app


def serve(
    health: WorkerHealth, registry: CollectorRegistry, port: int, host: str = "0.0.0.0"
) -> MetricsServer:
    """Serve the probes and ``/metrics`` on ``host:port`` on a daemon thread."""
    server = make_server(host, port, probe_app(health, registry), _Threading, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="worker-probes")
    thread.start()
    return MetricsServer(server, thread)
