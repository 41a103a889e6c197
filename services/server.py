"""The gRPC server: its services, capacity limits and graceful shutdown.

A sync ``grpc.server`` with a bounded thread pool suits the blocking event store (the
findings note measured it as fast as asyncio, for less CPU). ``maximum_concurrent_rpcs``
bounds the queue so overload is answered ``RESOURCE_EXHAUSTED`` at once. On SIGTERM the
health service goes NOT_SERVING, new calls are refused, in-flight calls finish (each
command is one atomic save, so nothing is half-written) and the process exits.

Settings (environment):
- ``REGISTRY_LISTEN``: address to listen on (default ``127.0.0.1:50051``; port 0 picks one);
- ``REGISTRY_AUTH``: ``token`` (default), ``mtls`` or ``token+mtls`` (``services.auth``);
- ``REGISTRY_CREDENTIALS_FILE``: where the embedded first start writes its first tokens
  (default ``$REGISTRY_DATA_DIR/credentials``; the registry itself keeps only hashes);
- ``REGISTRY_MAX_WORKERS`` (16), ``REGISTRY_MAX_CONCURRENT_RPCS`` (64);
- resource limits, so no caller (or few) can take every thread: ``REGISTRY_MAX_STREAMS``
  (half the workers), ``REGISTRY_MAX_STREAMS_PER_PRINCIPAL`` (4),
  ``REGISTRY_MAX_CALLS_PER_PRINCIPAL`` (the workers less a quarter),
  ``REGISTRY_STREAM_MAX_SECONDS`` (600), ``REGISTRY_STREAM_STALL_SECONDS`` (30), and the
  connections' ``REGISTRY_KEEPALIVE_SECONDS`` (60), ``REGISTRY_CONNECTION_IDLE_SECONDS``
  (900), ``REGISTRY_CONNECTION_AGE_SECONDS`` (3600);
- ``REGISTRY_PROJECTIONS``: ``in-process`` (default on SQLite) or ``external`` (default on
  PostgreSQL, where ``registry project`` workers keep the read models current).

``registry.bootstrap.build_server`` assembles one; ``registry serve`` (``registry.cli.serve``)
runs it.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from registry.application import Registry
from registry.domain.access import AccessControl, Role
from registry.domain.transactions import Principal
from registry.integrity.sealer import DEFAULT_HEAD_EVERY_SECONDS, sign_seconds
from registry.integrity.signing import DEFAULT_KEY_FILE, private_key_path
from registry.persistence.eventlog import EventLog
from registry.readmodels.queries import fetch_rows
from registry.readmodels.runner import ProjectionRunner
from registry.settings import DEFAULT_DATA_DIR, ConfigurationError, Settings, whole_number
from registry.v1 import (
    access_service_pb2,
    access_service_pb2_grpc,
    account_service_pb2,
    account_service_pb2_grpc,
    administration_service_pb2,
    administration_service_pb2_grpc,
    audit_service_pb2,
    settlement_service_pb2,
    settlement_service_pb2_grpc,
)
from services.access import AccessServicer
from services.accounts import AccountServicer
from services.administration import AdministrationServicer
from services.audit import AuditServicer
from services.audit import add_to_server as add_audit_service
from services.auth import Authenticator, AuthMode, RegistryJurisdiction
from services.backend import Backend
from services.interceptor import CallInterceptor, CallLimits
from services.settlement import SettlementServicer
from services.tls import (
    TlsSettings,
    check_listen_address,
    plaintext_allowed,
    server_credentials,
)

log = logging.getLogger("registry.server")

SERVICE_NAMES = tuple(
    module.DESCRIPTOR.services_by_name[name].full_name
    for module, name in (
        (settlement_service_pb2, "SettlementService"),
        (account_service_pb2, "AccountService"),
        (administration_service_pb2, "AdministrationService"),
        (audit_service_pb2, "AuditService"),
        (access_service_pb2, "AccessService"),
    )
)
MAX_RECEIVE_BYTES = 32 * 1024 * 1024
"""10,000 trades are about 1.5 MB; anything near this limit is a mistake or an attack."""
MAX_SEND_BYTES = 64 * 1024 * 1024
KEEPALIVE_TIMEOUT_MS = 20_000
"""A keepalive ping unanswered this long closes the connection (a peer gone silent)."""
MIN_CLIENT_PING_INTERVAL_MS = 10_000
"""Clients may ping (keepalive) this often; more often is answered GOAWAY."""
AGE_GRACE_SECONDS = 30.0
"""After a connection's maximum age, calls in flight get the stream budget and this
long to finish before the connection is closed."""


@dataclass(frozen=True)
class ServerSettings:
    listen: str = "127.0.0.1:50051"
    credentials_file: Path = Path(DEFAULT_DATA_DIR) / "credentials"
    """Where the embedded first start writes the first tokens (for the local CLI)."""
    auth: AuthMode = AuthMode.TOKEN
    metrics_port: int | None = None
    """REGISTRY_METRICS_PORT: serve Prometheus /metrics there (several server processes
    take this port and the next ones)."""
    max_streams_per_principal: int = 4
    """REGISTRY_MAX_STREAMS_PER_PRINCIPAL: open server streams (StreamEvents) per caller."""
    max_streams: int | None = None
    """REGISTRY_MAX_STREAMS: open server streams in the process, all callers together;
    below max_workers, so calls always find a thread (default: half of them)."""
    max_calls_per_principal: int | None = None
    """REGISTRY_MAX_CALLS_PER_PRINCIPAL: threads one caller may hold at once, calls and
    streams together (default: max_workers less a quarter, at least one left over)."""
    stream_max_seconds: float = 600.0
    """REGISTRY_STREAM_MAX_SECONDS: a stream's time budget (RESOURCE_EXHAUSTED
    STREAM_TIME_LIMIT past it; the client resumes from the last position it got)."""
    stream_stall_seconds: float = 30.0
    """REGISTRY_STREAM_STALL_SECONDS: a stream whose client takes no message for this
    long is cancelled, and its thread freed."""
    keepalive_seconds: float = 60.0
    """REGISTRY_KEEPALIVE_SECONDS: the server pings each connection this often, and
    closes one that does not answer (a client gone without a word)."""
    connection_idle_seconds: float = 900.0
    """REGISTRY_CONNECTION_IDLE_SECONDS: a connection with no call this long is closed."""
    connection_age_seconds: float = 3600.0
    """REGISTRY_CONNECTION_AGE_SECONDS: a connection is told to go away after this long
    (clients reconnect at once; calls in flight finish), so none lives for ever and new
    connections spread over the server processes."""
    tls: TlsSettings | None = None
    """REGISTRY_TLS_CERT/KEY (and REGISTRY_TLS_CLIENT_CA for mutual TLS); without them
    the server listens in plaintext, on a loopback address only unless
    REGISTRY_PLAINTEXT=allow."""
    max_workers: int = 16
    max_concurrent_rpcs: int = 64
    projections_in_process: bool = True
    grace_seconds: float = 10.0
    processes: int = 1
    """Server processes sharing the port (SO_REUSEPORT): one Python process is held to
    one core by its interpreter lock; the servers are stateless, so N can share."""
    reuse_port: bool = False
    ledger_key: Path = Path(DEFAULT_DATA_DIR) / DEFAULT_KEY_FILE
    """REGISTRY_LEDGER_KEY: the Ed25519 key that signs the log's checkpoints (made on
    first use), when this process runs the projections."""
    ledger_sign_seconds: float = DEFAULT_HEAD_EVERY_SECONDS
    """REGISTRY_LEDGER_SIGN_SECONDS: how often an idle registry signs its head."""
    four_eyes: bool = True
    """Issuance, allocation, reversal, freezes and rule changes only through approved
    proposals (the direct calls are refused); REGISTRY_FOUR_EYES=off lets the direct
    calls act at once, for a single-regulator test or demo set-up."""

    def __post_init__(self) -> None:
        if self.max_workers < 2:
            raise ConfigurationError(
                "REGISTRY_MAX_WORKERS must be at least 2: streams may "
                "hold only some of the threads, calls need the others"
            )
        if self.max_streams is not None and self.max_streams >= self.max_workers:
            raise ConfigurationError(
                f"REGISTRY_MAX_STREAMS ({self.max_streams}) must be below "
                f"REGISTRY_MAX_WORKERS ({self.max_workers}): each open stream holds a "
                "thread, and calls need some left"
            )

    @property
    def limits(self) -> CallLimits:
        """What one caller, and all streams together, may hold of the worker threads."""
        workers = self.max_workers
        return CallLimits(
            calls_per_principal=self.max_calls_per_principal or workers - max(1, workers // 4),
            streams=self.max_streams or max(1, workers // 2),
            streams_per_principal=self.max_streams_per_principal,
            stream_seconds=self.stream_max_seconds,
            stall_seconds=self.stream_stall_seconds,
        )

    def grpc_options(self) -> list[tuple[str, int]]:
        """The server's channel arguments: message sizes, port sharing, and the
        connection lifetimes (keepalive, idle, age)."""

        def ms(seconds: float) -> int:
            return int(seconds * 1000)

        return [
            ("grpc.so_reuseport", int(self.reuse_port)),
            ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
            ("grpc.max_send_message_length", MAX_SEND_BYTES),
            ("grpc.keepalive_time_ms", ms(self.keepalive_seconds)),
            ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
            ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
            ("grpc.max_connection_idle_ms", ms(self.connection_idle_seconds)),
            ("grpc.max_connection_age_ms", ms(self.connection_age_seconds)),
            ("grpc.max_connection_age_grace_ms", ms(self.stream_max_seconds + AGE_GRACE_SECONDS)),
        ]

    @classmethod
    def from_env(cls, store: Settings, environ: Mapping[str, str] | None = None) -> ServerSettings:
        environ = os.environ if environ is None else environ
        data_dir = Path(environ.get("REGISTRY_DATA_DIR", DEFAULT_DATA_DIR))
        mode = environ.get("REGISTRY_PROJECTIONS", "").strip() or (
            "external" if store.backend in ("postgresql", "postgres") else "in-process"
        )
        if mode not in ("in-process", "external"):
            raise ConfigurationError(
                f"REGISTRY_PROJECTIONS must be in-process or external, got {mode!r}"
            )
        if store.backend == "memory":
            raise ConfigurationError(
                "the server needs read models in SQLite or PostgreSQL, not memory:"
            )
        listen = environ.get("REGISTRY_LISTEN", "").strip() or cls.listen
        tls = TlsSettings.from_env(environ)
        check_listen_address(listen, tls, plaintext_allowed(environ))
        auth = _auth_mode(environ.get("REGISTRY_AUTH", "").strip())
        if auth.needs_certificate and (tls is None or not tls.requires_client_certificates):
            raise ConfigurationError(
                f"REGISTRY_AUTH={auth} needs client certificates: set REGISTRY_TLS_CERT, "
                "REGISTRY_TLS_KEY and REGISTRY_TLS_CLIENT_CA"
            )
        return cls(
            listen=listen,
            tls=tls,
            credentials_file=Path(
                environ.get("REGISTRY_CREDENTIALS_FILE", "").strip() or data_dir / "credentials"
            ),
            auth=auth,
            max_workers=whole_number(environ, "REGISTRY_MAX_WORKERS", cls.max_workers),
            max_streams_per_principal=whole_number(
                environ, "REGISTRY_MAX_STREAMS_PER_PRINCIPAL", cls.max_streams_per_principal
            ),
            max_streams=_optional_int(environ, "REGISTRY_MAX_STREAMS"),
            max_calls_per_principal=_optional_int(environ, "REGISTRY_MAX_CALLS_PER_PRINCIPAL"),
            stream_max_seconds=whole_number(
                environ, "REGISTRY_STREAM_MAX_SECONDS", int(cls.stream_max_seconds)
            ),
            stream_stall_seconds=whole_number(
                environ, "REGISTRY_STREAM_STALL_SECONDS", int(cls.stream_stall_seconds)
            ),
            keepalive_seconds=whole_number(
                environ, "REGISTRY_KEEPALIVE_SECONDS", int(cls.keepalive_seconds)
            ),
            connection_idle_seconds=whole_number(
                environ, "REGISTRY_CONNECTION_IDLE_SECONDS", int(cls.connection_idle_seconds)
            ),
            connection_age_seconds=whole_number(
                environ, "REGISTRY_CONNECTION_AGE_SECONDS", int(cls.connection_age_seconds)
            ),
            metrics_port=(
                whole_number(environ, "REGISTRY_METRICS_PORT", 0)
                if environ.get("REGISTRY_METRICS_PORT", "").strip()
                else None
            ),
            max_concurrent_rpcs=whole_number(
                environ, "REGISTRY_MAX_CONCURRENT_RPCS", cls.max_concurrent_rpcs
            ),
            projections_in_process=mode == "in-process",
            processes=whole_number(environ, "REGISTRY_SERVER_PROCESSES", cls.processes),
            reuse_port=environ.get("REGISTRY_REUSE_PORT", "") == "1",
            four_eyes=_four_eyes(environ.get("REGISTRY_FOUR_EYES", "").strip()),
            ledger_key=private_key_path(environ),
            ledger_sign_seconds=sign_seconds(environ),
        )


def _optional_int(environ: Mapping[str, str], key: str) -> int | None:
    """A whole number of at least 1, or None when unset (the default is derived)."""
    return whole_number(environ, key, 1) if environ.get(key, "").strip() else None


def _auth_mode(value: str) -> AuthMode:
    try:
        return AuthMode(value or AuthMode.TOKEN.value)
    except ValueError:
        raise ConfigurationError(
            f"REGISTRY_AUTH must be token, mtls or token+mtls, got {value!r}"
        ) from None


def _four_eyes(value: str) -> bool:
    if value not in ("", "off", "required"):
        raise ConfigurationError(f"REGISTRY_FOUR_EYES must be off or required, got {value!r}")
    return value != "off"


class RegistryServer:
    """The four registry services plus health and reflection on one port."""

    def __init__(
        self,
        backend: Backend,
        settings: ServerSettings,
        interceptors: Sequence[grpc.ServerInterceptor] = (),
        projections: Callable[[], ProjectionRunner] | None = None,
    ) -> None:
        """``projections``: builds the worker that keeps the read models current in this
        process (``registry.bootstrap.build_worker``), in the follower thread; None when
        ``registry project`` workers do (REGISTRY_PROJECTIONS=external)."""
        self.backend = backend
        self._projections = projections
        self.settings = settings
        self.health = health.HealthServicer()
        self.interceptor = CallInterceptor(
            Authenticator(
                backend.registry.access,
                settings.auth,
                access_version(backend),
                RegistryJurisdiction(backend.registry),
            ),
            settings.limits,
            backend.metrics,
        )
        self.server = grpc.server(
            ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix="registry-rpc"),
            interceptors=[self.interceptor, *interceptors],
            options=settings.grpc_options(),
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        )
        settlement_service_pb2_grpc.add_SettlementServiceServicer_to_server(
            SettlementServicer(backend), self.server
        )
        account_service_pb2_grpc.add_AccountServiceServicer_to_server(
            AccountServicer(backend), self.server
        )
        administration_service_pb2_grpc.add_AdministrationServiceServicer_to_server(
            AdministrationServicer(backend, four_eyes=settings.four_eyes), self.server
        )
        add_audit_service(AuditServicer(backend, settings.ledger_key), self.server)
        access_service_pb2_grpc.add_AccessServiceServicer_to_server(
            AccessServicer(backend), self.server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        try:
            self.port = (
                self.server.add_insecure_port(settings.listen)
                if settings.tls is None
                else self.server.add_secure_port(settings.listen, server_credentials(settings.tls))
            )
        except RuntimeError:  # grpcio raises on a taken port or an unresolvable host
            self.port = 0
        if self.port == 0:
            raise ConfigurationError(
                f"cannot listen on {settings.listen}: the port is taken or the address is "
                "not this machine's (REGISTRY_LISTEN)"
            )
        self._follower: threading.Thread | None = None
        self._stop_following = threading.Event()

    @property
    def address(self) -> str:
        host = self.settings.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    def start(self) -> None:
        if self._projections is not None:
            self._follower = threading.Thread(
                target=self._follow, name="registry-projections", daemon=True
            )
            self._follower.start()
        self.server.start()
        for name in ("", *SERVICE_NAMES):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def _follow(self) -> None:
        """Keep the read models current; a failed batch (e.g. the store busy) rolls back
        whole, is logged, and is retried after a pause."""
        assert self._projections is not None
        runner = self._projections()
        while not self._stop_following.is_set():
            try:
                runner.follow(self._stop_following)
            except Exception:
                log.exception("projection batch failed; retrying in 1 s")
                self._stop_following.wait(1.0)

    def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING first (load balancers stop sending), then let calls finish."""
        self.health.enter_graceful_shutdown()
        self.server.stop(self.settings.grace_seconds if grace is None else grace).wait()
        self.interceptor.close()
        self._stop_following.set()
        if self._follower is not None:
            self._follower.join(timeout=30)

    def wait(self) -> None:
        self.server.wait_for_termination()


def access_version(backend: Backend) -> Callable[[], int]:
    """The access aggregate's stored version, over the read models' pool (concurrent
    reads; the store's own reads take its lock): what each call compares first. On
    PostgreSQL through the driver (``fetch_rows``: a third of the CPU of the same probe
    through SQLAlchemy's execution layer, on every call)."""
    log = EventLog.of(backend.registry.recorder)
    engine = backend.read_models.reads
    aggregate_id = AccessControl.id_for()

    if engine.dialect.name == "postgresql":
        sql = f"SELECT MAX(originator_version) FROM {log.table} WHERE originator_id = %s"
        params = (aggregate_id,)

        def probe() -> int:
            [(found,)] = fetch_rows(engine, sql, params)
            return int(found or 0)

        return probe

    def version() -> int:
        with engine.connect() as conn:
            return log.latest_version(conn, aggregate_id)

    return version


def ensure_first_principals(registry: Registry, settings: ServerSettings, store: Settings) -> None:
    """A registry nobody was granted anything in: the embedded store makes a first
    administrator and a first regulator, writes their tokens to the credentials file
    (the CLI's default) and prints them once; a database server needs ``registry
    access init`` first (who administers a national registry is not a default)."""
    if registry.access.current().grants:
        return
    if store.backend != "sqlite":
        raise ConfigurationError(
            "nobody may call this registry yet: create its first administrator with "
            "'registry access init --party PARTY --name NAME'"
        )
    lines = first_principals(registry)
    path = settings.credentials_file
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(
            "".join(
                f"{token} {principal.party} {principal.name}\n" for token, principal, _ in lines
            )
        )
    shown = "".join(f"\n  {principal} ({role}): {token}" for token, principal, role in lines)
    print(f"first start: tokens written to {path} (shown once):{shown}", file=sys.stderr)


def first_principals(registry: Registry) -> list[tuple[str, Principal, Role]]:
    """mee/regulator (regulator), mee/admin and mee/admin-2 (admin), each with a token,
    founded in one recorded step (``Access.genesis``): two administrators, because a
    regulator, exchange or operator grant takes two."""
    made = registry.access.genesis(
        [
            (Principal("mee", "regulator"), Role.REGULATOR),
            (Principal("mee", "admin"), Role.ADMIN),
            (Principal("mee", "admin-2"), Role.ADMIN),
        ],
        "first start of the registry",
    )
    if made is None:
        raise ConfigurationError("the registry was initialised meanwhile; start again")
    return [(first.token.token, first.principal, first.role) for first in made]
