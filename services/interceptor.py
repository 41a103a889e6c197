"""The one interceptor every call passes through: authenticate, authorise, run, map
errors, log.

It wraps whichever handler field is set (unary or server-streaming) so streaming
methods keep working, and binds the principal on the worker thread that runs the
handler, where servicers read it with ``current_principal()``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc

from registry.application.request_ids import bound_request_id
from registry.domain.errors import InvalidCommand, RegistryError
from registry.domain.transactions import Principal
from registry.observability.logs import (
    REQUEST_ID_HEADER,
    bind_request,
    request_id_from,
    unbind_request,
)
from registry.observability.metrics import RegistryMetrics
from registry.persistence.faults import database_fault, describe_fault
from registry.readmodels.runner import ReadModelTimeout
from services.auth import (
    OPEN_SERVICES,
    Authenticator,
    bind_principal,
    unbind_principal,
)
from services.errors import ApiError, classify, to_status
from services.policy import authorize, bind_scope, unbind_scope

log = logging.getLogger("registry.api")

EXPECTED = (RegistryError, ApiError, ReadModelTimeout)
ANONYMOUS = Principal("anonymous", "-")


@dataclass(frozen=True)
class CallLimits:
    """What one caller, and all streams together, may hold of a process's threads.

    A sync gRPC server runs each call on a worker thread, and a server stream holds its
    thread for as long as the client takes to read it. Without limits one low-privilege
    caller (or a few) could park every thread and the registry would stop answering."""

    calls_per_principal: int = 12
    """Threads one principal may hold at once, its calls and streams together: the rest
    stay for everyone else."""
    streams: int = 8
    """Open server streams in the process, all callers together: kept below the worker
    threads so unary calls always find some."""
    streams_per_principal: int = 4
    stream_seconds: float = 600.0
    """A stream's budget: past it the stream ends with RESOURCE_EXHAUSTED
    STREAM_TIME_LIMIT and the client resumes from the last position it received."""
    stall_seconds: float = 30.0
    """A message the client does not take within this long (it stopped reading) gets
    the stream cancelled, and its thread back."""


def _exhausted(reason: str, message: str, limit: int | float) -> ApiError:
    return ApiError(grpc.StatusCode.RESOURCE_EXHAUSTED, reason, message, {"limit": str(limit)})


class Capacity:
    """Counts the threads each principal holds and the streams open, and refuses a call
    that would go past ``CallLimits`` at once (RESOURCE_EXHAUSTED with the reason):
    refusing costs the thread for a moment, waiting would hold it."""

    def __init__(self, limits: CallLimits) -> None:
        self.limits = limits
        self._held: dict[Principal, int] = {}
        self._streams: dict[Principal, int] = {}
        self._streams_open = 0
        self._lock = threading.Lock()

    @contextmanager
    def hold(self, principal: Principal, stream: bool) -> Iterator[None]:
        limits = self.limits
        with self._lock:
            if stream and self._streams.get(principal, 0) >= limits.streams_per_principal:
                raise _exhausted(
                    "TOO_MANY_STREAMS",
                    f"{principal} has {limits.streams_per_principal} streams "
                    "open already: finish one first",
                    limits.streams_per_principal,
                )
            if stream and self._streams_open >= limits.streams:
                raise _exhausted(
                    "STREAMS_AT_CAPACITY",
                    f"this server has {limits.streams} streams open, its limit: retry with backoff",
                    limits.streams,
                )
            if self._held.get(principal, 0) >= limits.calls_per_principal:
                raise _exhausted(
                    "TOO_MANY_CALLS",
                    f"{principal} has {limits.calls_per_principal} calls in "
                    "progress on this server already: retry with backoff",
                    limits.calls_per_principal,
                )
            self._held[principal] = self._held.get(principal, 0) + 1
            if stream:
                self._streams[principal] = self._streams.get(principal, 0) + 1
                self._streams_open += 1
        try:
            yield
        finally:
            with self._lock:
                _decrement(self._held, principal)
                if stream:
                    _decrement(self._streams, principal)
                    self._streams_open -= 1


def _decrement(counts: dict[Principal, int], principal: Principal) -> None:
    counts[principal] -= 1
    if not counts[principal]:
        del counts[principal]


@dataclass(eq=False)
class StreamWatch:
    """One open stream, as the watchdog sees it."""

    context: grpc.ServicerContext
    started: float
    sending_since: float | None = None
    """When the message being written was handed to gRPC (None between messages)."""
    stalled: bool = False


class StreamWatchdog:
    """Cancels streams whose client stopped reading.

    gRPC writes a stream's message on the worker thread and blocks it until the client's
    flow-control window takes the message: a client that never reads holds the thread
    for ever, and nothing in the handler runs to notice. One thread checks every open
    stream and cancels (``context.cancel()``, which wakes the blocked write) one whose
    message waited longer than ``stall_seconds``."""

    def __init__(self, stall_seconds: float) -> None:
        self.stall_seconds = stall_seconds
        self._open: set[StreamWatch] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @contextmanager
    def watch(self, context: grpc.ServicerContext) -> Iterator[StreamWatch]:
        watch = StreamWatch(context, time.monotonic())
        with self._lock:
            self._open.add(watch)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, daemon=True, name="registry-stream-watchdog"
                )
                self._thread.start()
        try:
            yield watch
        finally:
            with self._lock:
                self._open.discard(watch)

    def _run(self) -> None:
        interval = min(1.0, self.stall_seconds / 4)
        while not self._stop.wait(interval):
            now = time.monotonic()
            with self._lock:
                stalled = [
                    w
                    for w in self._open
                    if w.sending_since is not None
                    and not w.stalled
                    and now - w.sending_since > self.stall_seconds
                ]
                for watch in stalled:
                    watch.stalled = True
            for watch in stalled:
                watch.context.cancel()

    def close(self) -> None:
        self._stop.set()


class CallInterceptor(grpc.ServerInterceptor):
    def __init__(
        self,
        authenticator: Authenticator,
        limits: CallLimits | None = None,
        metrics: RegistryMetrics | None = None,
    ) -> None:
        self.authenticator = authenticator
        self.limits = limits or CallLimits()
        self.capacity = Capacity(self.limits)
        self.watchdog = StreamWatchdog(self.limits.stall_seconds)
        self.metrics = metrics

    def close(self) -> None:
        self.watchdog.close()

    def intercept_service(
        self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method: str = details.method
        service = method.lstrip("/").split("/", 1)[0]
        if service in OPEN_SERVICES:
            return handler
        metadata = details.invocation_metadata
        # The request arrives as bytes and is parsed inside the call's own handling, so
        # bytes that are not the request message get INVALID_ARGUMENT like any bad
        # input, not grpcio's bare INTERNAL before any of our code runs.
        parse = _parser(handler.request_deserializer)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, metadata, handler.unary_unary, parse),
                request_deserializer=None,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, metadata, handler.unary_stream, parse),
                request_deserializer=None,
                response_serializer=handler.response_serializer,
            )
        return handler  # this API has no client-streaming methods

    def _unary(
        self,
        method: str,
        metadata: Any,
        behaviour: Callable[[Any, grpc.ServicerContext], Any],
        parse: Callable[[bytes], Any],
    ) -> Callable[[bytes, grpc.ServicerContext], Any]:
        def serve(raw: bytes, context: grpc.ServicerContext) -> Any:
            with self._serving(method, metadata, context, raw, parse) as request:
                return behaviour(request, context)

        return serve

    def _stream(
        self,
        method: str,
        metadata: Any,
        behaviour: Callable[[Any, grpc.ServicerContext], Iterator[Any]],
        parse: Callable[[bytes], Any],
    ) -> Callable[[bytes, grpc.ServicerContext], Iterator[Any]]:
        budget = self.limits.stream_seconds

        def serve(raw: bytes, context: grpc.ServicerContext) -> Iterator[Any]:
            with (
                self.watchdog.watch(context) as watch,
                self._serving(method, metadata, context, raw, parse, watch) as request,
            ):
                messages = iter(behaviour(request, context))
                try:
                    while True:
                        if time.monotonic() - watch.started > budget:
                            raise _exhausted(
                                "STREAM_TIME_LIMIT",
                                f"this stream ran for its {budget:g} s: "
                                "call again from the last position received",
                                budget,
                            )
                        try:
                            message = next(messages)
                        except StopIteration:
                            return
                        watch.sending_since = time.monotonic()
                        yield message  # returns once gRPC has written it
                        watch.sending_since = None
                finally:
                    close = getattr(messages, "close", None)
                    if close is not None:
                        close()

        return serve

    @contextmanager
    def _serving(
        self,
        method: str,
        metadata: Any,
        context: grpc.ServicerContext,
        raw: bytes,
        parse: Callable[[bytes], Any],
        stream: StreamWatch | None = None,
    ) -> Iterator[Any]:
        """Around one call: resolve the principal, check the policy allows it (before
        any servicer code runs) and that the caller is within its share of the threads,
        bind it, turn errors into statuses (never leaking internals), log one line
        (denials and refusals included)."""
        started = time.perf_counter()
        principal = ANONYMOUS
        request_id = request_id_from(metadata)
        echo = ((REQUEST_ID_HEADER, request_id),)
        context.set_trailing_metadata(echo)  # the client can quote it to us
        bound = [bind_request(request_id, str(principal), method)]

        def done(outcome: BaseException | str | None) -> None:
            self._log(method, principal, outcome, started)

        try:
            with bound_request_id(request_id):  # stamped on the events this call causes
                principal, acl = self.authenticator.resolve(metadata, context)
                bound.append(bind_request(request_id, str(principal), method))
                request = parse(raw)
                scope = authorize(method, request, principal, acl, self.authenticator.jurisdiction)
                with self.capacity.hold(principal, stream is not None):
                    token, scope_token = bind_principal(principal), bind_scope(scope)
                    try:
                        yield request
                    finally:
                        unbind_scope(scope_token)
                        unbind_principal(token)
        except EXPECTED as error:
            done(error)
            context.abort_with_status(_with(to_status(error), echo))
        except GeneratorExit:  # the client went away mid-stream, or stopped reading
            done(
                "CANCELLED STREAM_STALLED" if stream is not None and stream.stalled else "CANCELLED"
            )
            raise
        except Exception as error:
            if _aborted(context):  # an inner handler already chose the status
                done(_code(context))
                raise
            if database_fault(error) is None:
                log.exception("%s by %s failed", method, principal)
            else:  # a failover is many of these at once: one line each, no traceback
                log.warning(
                    "%s by %s met a database fault, answered as retryable: %s",
                    method,
                    principal,
                    describe_fault(error),
                )
            done(error)
            context.abort_with_status(_with(to_status(error), echo))
        else:
            done(None)
        finally:
            for context_token in reversed(bound):
                unbind_request(context_token)

    def _log(
        self, method: str, principal: Principal, outcome: BaseException | str | None, started: float
    ) -> None:
        """One line per call (method, principal, status and reason, duration), and the
        same into the metrics."""
        seconds = time.perf_counter() - started
        if outcome is None:
            code, reason = ("OK", "")
        elif isinstance(outcome, str):
            code, _, reason = outcome.partition(" ")
        else:
            status_code, reason, _, _ = classify(outcome)
            code = status_code.name
        status = f"{code} {reason}" if reason else code
        log.info(
            "%s principal=%s status=%s duration_ms=%.1f",
            method,
            principal,
            status,
            seconds * 1000,
            extra={"status": code, "reason": reason, "duration_ms": round(seconds * 1000, 1)},
        )
        if self.metrics is not None:
            self.metrics.observe_call(method, code, reason, seconds)


def _code(context: grpc.ServicerContext) -> str:
    """The status an inner handler set by aborting (grpcio >= 1.38; not in the stubs)."""
    code = getattr(context, "code", None)
    status = code() if code is not None else None
    return status.name if isinstance(status, grpc.StatusCode) else "OK"


def _aborted(context: grpc.ServicerContext) -> bool:
    return _code(context) != "OK"


def _with(status: grpc.Status, trailing: tuple[tuple[str, str], ...]) -> grpc.Status:
    """The status with the request id added: aborting replaces trailing metadata."""
    given = tuple(getattr(status, "trailing_metadata", None) or ())
    return status._replace(trailing_metadata=(*given, *trailing))  # type: ignore[attr-defined, no-any-return]


def _parser(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    """The request message from its bytes; bytes that are not one are INVALID_ARGUMENT."""

    def parse(raw: bytes) -> Any:
        if deserialize is None:
            return raw
        try:
            return deserialize(raw)
        except Exception:  # DecodeError, or a string field that is not UTF-8
            raise InvalidCommand(
                "the request is not a valid protobuf message of this method's request type",
                reason="MALFORMED_REQUEST",
                field="request",
            ) from None

    return parse
