"""`registry serve`: the gRPC server process (or several sharing one port), run until
SIGTERM or SIGINT and then stopped gracefully."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from types import FrameType
from typing import TYPE_CHECKING, Any

from registry.observability.logs import configure as configure_logs
from registry.settings import ConfigurationError, Settings, log_format

if TYPE_CHECKING:
    from services.server import ServerSettings

log = logging.getLogger("registry.server")


def add_parser(sub: Any) -> None:
    sub.add_parser(
        "serve", help="run the gRPC server (REGISTRY_LISTEN, default 127.0.0.1:50051)"
    ).set_defaults(run=run)


def run(_: argparse.Namespace) -> int:
    from registry.bootstrap import check_settings

    check_settings(server=True)
    return serve()


def serve(store: Settings | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    from registry.bootstrap import build_registry
    from services.server import ServerSettings, ensure_first_principals

    listener = configure_logs(log_format(environ))
    try:
        store = store or Settings.from_env(environ)
        settings = ServerSettings.from_env(store, environ)
        registry = build_registry(store)
        try:  # before any server process starts, so only one ever bootstraps
            ensure_first_principals(registry, settings, store)
        finally:
            registry.close()
        if settings.processes > 1:
            return _supervise(settings, environ)
        return _serve(store, settings)
    finally:
        listener.stop()  # what is still queued is written first


def _serve(store: Settings, settings: ServerSettings) -> int:
    from registry.bootstrap import build_backend, build_server, close_backend

    backend = build_backend(store, settings)
    metrics = backend.metrics
    assert metrics is not None
    exporter = (
        metrics.start_http(settings.metrics_port) if settings.metrics_port is not None else None
    )
    server = build_server(backend, settings)
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> Any:
        log.info("signal %s: shutting down gracefully", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    mode = "in-process" if settings.projections_in_process else "external"
    log.info(
        "serving on %s, store %s, projections %s%s",
        server.address,
        store.describe(),
        mode,
        f", metrics on :{exporter.port}/metrics" if exporter else "",
    )
    print(f"registry serving on {server.address}", flush=True)
    stopping.wait()
    server.stop()
    if exporter is not None:
        exporter.stop()
    close_backend(backend)
    log.info("stopped")
    return 0


def _supervise(settings: ServerSettings, environ: Mapping[str, str] | None) -> int:
    """Run ``settings.processes`` servers on one port and stop them together. If one
    exits, stop the others and exit with its status: the process supervisor (systemd,
    Kubernetes) restarts the whole set."""
    if settings.listen.rsplit(":", 1)[-1] == "0":
        raise ConfigurationError(
            "several server processes need a fixed port in REGISTRY_LISTEN, not port 0"
        )
    base = dict(os.environ if environ is None else environ)
    children = []
    for index in range(settings.processes):
        env = {**base, "REGISTRY_SERVER_PROCESSES": "1", "REGISTRY_REUSE_PORT": "1"}
        if settings.metrics_port:  # each process its own: a scrape must see one process
            env["REGISTRY_METRICS_PORT"] = str(settings.metrics_port + index)
        if index > 0 or not settings.projections_in_process:
            env["REGISTRY_PROJECTIONS"] = "external"  # one process projects, if any
        children.append(subprocess.Popen([sys.executable, "-m", "registry.cli", "serve"], env=env))
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> Any:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"registry serving on {settings.listen} ({settings.processes} processes)", flush=True)
    status = 0
    while not stopping.wait(0.5):
        exited = [child for child in children if child.poll() is not None]
        if exited:
            status = exited[0].returncode or 1
            log.error(
                "server process %s exited with %s; stopping the others",
                exited[0].pid,
                exited[0].returncode,
            )
            break
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        child.wait(timeout=settings.grace_seconds + 20)
    return status
