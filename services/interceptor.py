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
from registry.readmodels.runner import ReadModelTimeout
from services.auth import (
    OPEN_SERVICES,
    Authenticator,
    bind_principal,
    current_principal,
    unbind_principal,
)
from services.errors import ApiError, to_status
from services.policy import authorize

log = logging.getLogger("registry.api")

EXPECTED = (RegistryError, ApiError, ReadModelTimeout)
ANONYMOUS = Principal("anonymous", "-")


class StreamSlots:
    """At most ``limit`` open server streams per principal: a stream holds a thread for
    as long as the client reads, so one caller must not take them all."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[Principal, int] = {}
        self._lock = threading.Lock()

    @contextmanager
    def slot(self, principal: Principal) -> Iterator[None]:
        with self._lock:
            if self._open.get(principal, 0) >= self.limit:
                raise ApiError(grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_STREAMS",
                               f"{principal} has {self.limit} streams open already: "
                               "finish one first", {"limit": str(self.limit)})
            self._open[principal] = self._open.get(principal, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._open[principal] -= 1
                if not self._open[principal]:
                    del self._open[principal]


class CallInterceptor(grpc.ServerInterceptor):
    def __init__(self, authenticator: Authenticator, max_streams_per_principal: int = 4,
                 metrics: RegistryMetrics | None = None) -> None:
        self.authenticator = authenticator
        self.streams = StreamSlots(max_streams_per_principal)
        self.metrics = metrics

    def intercept_service(self, continuation: Callable[[Any], Any],
                          details: grpc.HandlerCallDetails) -> Any:
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
                request_deserializer=None, response_serializer=handler.response_serializer)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, metadata, handler.unary_stream, parse),
                request_deserializer=None, response_serializer=handler.response_serializer)
        return handler  # this API has no client-streaming methods

    def _unary(self, method: str, metadata: Any,
               behaviour: Callable[[Any, grpc.ServicerContext], Any],
               parse: Callable[[bytes], Any]) -> Callable[[bytes, grpc.ServicerContext], Any]:
        def serve(raw: bytes, context: grpc.ServicerContext) -> Any:
            response = None
            with self._serving(method, metadata, context, raw, parse) as request:
                response = behaviour(request, context)
            return response

        return serve

    def _stream(self, method: str, metadata: Any,
                behaviour: Callable[[Any, grpc.ServicerContext], Iterator[Any]],
                parse: Callable[[bytes], Any]
                ) -> Callable[[bytes, grpc.ServicerContext], Iterator[Any]]:
        def serve(raw: bytes, context: grpc.ServicerContext) -> Iterator[Any]:
            with self._serving(method, metadata, context, raw, parse) as request, \
                    self.streams.slot(current_principal()):
                yield from behaviour(request, context)

        return serve

    @contextmanager
    def _serving(self, method: str, metadata: Any, context: grpc.ServicerContext,
                 raw: bytes, parse: Callable[[bytes], Any]) -> Iterator[Any]:
        """Around one call: resolve the principal, check the policy allows it (before
        any servicer code runs), bind it, turn errors into statuses (never leaking
        internals), log one line (denials included)."""
        started = time.perf_counter()
        principal = ANONYMOUS
        request_id = request_id_from(metadata)
        echo = ((REQUEST_ID_HEADER, request_id),)
        context.set_trailing_metadata(echo)   # the client can quote it to us
        bound = [bind_request(request_id, str(principal), method)]

        def done(outcome: BaseException | str | None) -> None:
            self._log(method, principal, outcome, started)

        try:
            with bound_request_id(request_id):   # stamped on the events this call causes
                principal, acl = self.authenticator.resolve(metadata, context)
                bound.append(bind_request(request_id, str(principal), method))
                request = parse(raw)
                authorize(method, request, principal, acl)
                token = bind_principal(principal)
                try:
                    yield request
                finally:
                    unbind_principal(token)
        except EXPECTED as error:
            done(error)
            context.abort_with_status(_with(to_status(error), echo))
        except GeneratorExit:  # the client went away mid-stream
            done("CANCELLED")
            raise
        except Exception as error:
            if _aborted(context):  # an inner handler already chose the status
                done(_code(context))
                raise
            log.exception("%s by %s failed", method, principal)
            done(error)
            context.abort_with_status(_with(to_status(error), echo))
        else:
            done(None)
        finally:
            for context_token in reversed(bound):
                unbind_request(context_token)

    def _log(self, method: str, principal: Principal, outcome: BaseException | str | None,
             started: float) -> None:
        """One line per call (method, principal, status and reason, duration), and the
        same into the metrics."""
        seconds = time.perf_counter() - started
        if outcome is None:
            code, reason = ("OK", "")
        elif isinstance(outcome, str):
            code, reason = outcome, ""
        else:
            code = to_status(outcome).code.name
            reason = getattr(outcome, "reason", "") or ("INTERNAL" if code == "INTERNAL"
                                                        else "")
        status = f"{code} {reason}" if reason else code
        log.info("%s principal=%s status=%s duration_ms=%.1f", method, principal, status,
                 seconds * 1000, extra={"status": code, "reason": reason,
                                         "duration_ms": round(seconds * 1000, 1)})
        if self.metrics is not None:
            self.metrics.observe_call(method.lstrip("/"), code, reason, seconds)


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
        except Exception:   # DecodeError, or a string field that is not UTF-8
            raise InvalidCommand("the request is not a valid protobuf message of this "
                                 "method's request type", reason="MALFORMED_REQUEST",
                                 field="request") from None
    return parse
