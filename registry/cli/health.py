"""``registry health``: is a registry server SERVING, by the standard gRPC health check.

Container platforms need a command that answers "is this process fit for traffic?"
without a token: the image's HEALTHCHECK (and so compose's ``service_healthy``) runs
this; Kubernetes asks the same ``grpc.health.v1.Health`` service with its native gRPC
probe. The server reports SERVING once it listens and NOT_SERVING from the first moment
of a graceful shutdown, so a load balancer stops sending before calls are refused.

    registry health [--server ADDR] [--service NAME] [--timeout S] [--tls-ca PEM ...]

``registry health --worker [ready|live]`` asks the projection worker instead: its
``/readyz`` (or ``/healthz``) on ``REGISTRY_METRICS_PORT`` (default 9464) of this
machine, as compose's healthcheck of the worker does (docs/observability.md).

Exit status: 0 SERVING (a worker: 200); 1 answered but not SERVING (NOT_SERVING, or an unknown
``--service``); 2 no answer (nothing listening, refused TLS handshake, time-out) or a
bad option. Without ``--server`` it asks the local server of ``REGISTRY_LISTEN`` (a
wildcard host becomes loopback), else ``REGISTRY_SERVER``, else ``127.0.0.1:50051``:
in a server's container the check finds the server's own port with no argument.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from registry.cli.remote import add_tls_options, tls_files
from registry.client import CHANNEL_OPTIONS
from registry.domain.errors import RegistryError

SERVING = 0
NOT_SERVING = 1
UNREACHABLE = 2
_NO_ANSWER = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "[::]": "[::1]", "::": "[::1]"}


def add_parser(sub: Any) -> None:
    """Register ``registry health`` on the CLI's subcommands."""
    parser = sub.add_parser(
        "health",
        help="ask a server's gRPC health service whether it "
        "is SERVING (exit 0; 1 not serving; 2 unreachable)",
    )
    add_arguments(parser)
    parser.set_defaults(run=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        default=None,
        help="host:port (default: the local server of REGISTRY_LISTEN, "
        "else REGISTRY_SERVER, else 127.0.0.1:50051)",
    )
    parser.add_argument(
        "--service",
        default="",
        help="the service to ask about, e.g. registry.v1.SettlementService "
        "(default: the whole server)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        help="seconds to wait for the answer (default: %(default)s)",
    )
    parser.add_argument(
        "--worker",
        nargs="?",
        const="ready",
        choices=("ready", "live"),
        default=None,
        help="ask the local projection worker's /readyz (or /healthz: `live`) on "
        "REGISTRY_METRICS_PORT (default 9464) instead of a server",
    )
    add_tls_options(parser)
    parser.add_argument(
        "--tls-server-name",
        metavar="NAME",
        default="",
        help="the name the server's certificate must carry, when it is not "
        "the --server host (a check on 127.0.0.1 of a server whose "
        "certificate names its public DNS name)",
    )


def default_server(environ: Mapping[str, str] | None = None) -> str:
    """The address a health check means when none is given: this machine's server."""
    environ = os.environ if environ is None else environ
    listen = environ.get("REGISTRY_LISTEN", "").strip()
    if listen.startswith(("unix:", "unix-abstract:")):
        return listen
    if ":" in listen:
        host, port = listen.rsplit(":", 1)
        if port.isdigit() and port != "0":
            return f"{_WILDCARDS.get(host, host)}:{port}"
    return environ.get("REGISTRY_SERVER", "").strip() or "127.0.0.1:50051"


def check(
    target: str,
    service: str = "",
    timeout: float = 5.0,
    *,
    tls_ca: bytes | None = None,
    tls_cert: bytes | None = None,
    tls_key: bytes | None = None,
    server_name: str = "",
) -> tuple[int, str]:
    """Ask once; (exit status, what to print)."""
    options: list[tuple[str, Any]] = list(CHANNEL_OPTIONS)
    if tls_ca is None:
        channel = grpc.insecure_channel(target, options=options)
    else:
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        credentials = grpc.ssl_channel_credentials(
            root_certificates=tls_ca, private_key=tls_key, certificate_chain=tls_cert
        )
        channel = grpc.secure_channel(target, credentials, options=options)
    with channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)  # the stubs package omits Check
        try:
            reply: health_pb2.HealthCheckResponse = stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as error:
            call: Any = error  # a failed call is also a grpc.Call
            code: grpc.StatusCode = call.code()
            status = UNREACHABLE if code in _NO_ANSWER else NOT_SERVING
            return status, f"{target}: {code.name}: {call.details()}"
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
    return (SERVING if serving else NOT_SERVING), f"{target}: {name}"


def check_worker(probe: str, timeout: float = 5.0, port: int | None = None) -> tuple[int, str]:
    """Ask the local worker's ``/readyz`` (``ready``) or ``/healthz`` (``live``) once."""
    if port is None:
        port = int(os.environ.get("REGISTRY_METRICS_PORT", "").strip() or "9464")
    url = f"http://127.0.0.1:{port}/{'readyz' if probe == 'ready' else 'healthz'}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return SERVING, f"{url}: {answer.read().decode().strip()}"
    except urllib.error.HTTPError as error:
        return NOT_SERVING, f"{url}: {error.code}: {error.read().decode().strip()}"
    except OSError as error:
        return UNREACHABLE, f"{url}: {error}"


def run(args: argparse.Namespace) -> int:
    """The subcommand: one check, one line out, the exit status says the rest."""
    if args.worker:
        status, line = check_worker(args.worker, args.timeout)
        print(line, file=sys.stdout if status == SERVING else sys.stderr)
        return status
    tls_ca, tls_cert, tls_key = tls_files(args)  # a bad path is named, exit 2
    target = args.server or default_server()
    status, line = check(
        target,
        args.service,
        args.timeout,
        tls_ca=tls_ca,
        tls_cert=tls_cert,
        tls_key=tls_key,
        server_name=args.tls_server_name,
    )
    print(line, file=sys.stdout if status == SERVING else sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m registry.cli.health``: the same check without the full CLI."""
    parser = argparse.ArgumentParser(
        prog="registry health",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except RegistryError as error:
        print(f"registry health: {error}", file=sys.stderr)
        return UNREACHABLE


if __name__ == "__main__":
    raise SystemExit(main())
