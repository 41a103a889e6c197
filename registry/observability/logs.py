"""Structured logs: one JSON object per line, carrying the request a line belongs to.

The request context (request id, principal, method) lives in a ``ContextVar`` bound by
the interceptor around each call, so every line logged while serving it, at any depth,
can name its request without passing anything down. Because the server formats records
on a queue listener's thread (``configure``), the context is stamped onto each record
by a filter on the *emitting* thread; the formatter reads it from the record, falling
back to the current context for handlers that format where the record was made.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import queue
import re
import sys
import time
import uuid
from collections.abc import Iterable, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any, TextIO

REQUEST_ID_HEADER = "x-request-id"
"""The metadata key a client may send a request id in, and the trailing metadata key
the server returns it in."""

TEXT_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s %(message)s"
"""The plain format the server has always logged in."""

FORMATS = ("text", "json")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_CONTEXT_ATTR = "registry_request"
"""The record attribute the request context is stamped on (one name, unlikely to
clash with a caller's ``extra=`` keys)."""


@dataclass(frozen=True)
class RequestContext:
    request_id: str
    principal: str
    method: str


_current: ContextVar[RequestContext | None] = ContextVar("registry_request", default=None)


def bind_request(request_id: str, principal: str, method: str) -> Token[RequestContext | None]:
    """Make this request the current one (for this thread or task) until
    ``unbind_request(token)``; bind again, e.g. once the principal is known, and unbind
    in reverse order."""
    return _current.set(RequestContext(request_id, principal, method))


def unbind_request(token: Token[RequestContext | None]) -> None:
    _current.reset(token)


def current_request() -> RequestContext | None:
    return _current.get()


def current_request_id() -> str | None:
    """The request id of the call being served here, for recording on what it causes."""
    context = _current.get()
    return None if context is None else context.request_id


def new_request_id() -> str:
    return uuid.uuid4().hex


def valid_request_id(value: str) -> bool:
    """1 to 64 of ``[A-Za-z0-9._-]``: safe in a log line, a label and a database column."""
    return _REQUEST_ID.fullmatch(value) is not None


def request_id_from(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The client's ``x-request-id`` if it sent a valid one (so its own logs and ours
    join up), else a new id; an invalid one is replaced, never trusted into our logs."""
    for key, value in metadata or ():
        if key.lower() == REQUEST_ID_HEADER:
            if isinstance(value, str) and valid_request_id(value):
                return value
            break
    return new_request_id()


# -- formatting -----------------------------------------------------------------------

_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    _CONTEXT_ATTR,
}
"""Attributes every record has: the rest of a record's ``__dict__`` is ``extra=``."""

_FIELDS = (
    "time",
    "level",
    "logger",
    "message",
    "process",
    "thread",
    "request_id",
    "principal",
    "method",
    "error",
    "stack",
)


class RequestContextFilter(logging.Filter):
    """Stamps the current request onto each record, on the thread that logs it: attach
    it to the handler that runs there (the queue handler when records are queued)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, _CONTEXT_ATTR):
            setattr(record, _CONTEXT_ATTR, _current.get())
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (RFC 3339, UTC, milliseconds), ``level``,
    ``logger``, ``message``, ``process``, ``thread``, the bound ``request_id``,
    ``principal`` and ``method``, any ``extra=`` fields, and an exception's traceback as
    ``error``. It never raises: a value JSON cannot hold is written as its ``repr``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _rfc3339(record),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record),
            "process": record.process,
            "thread": record.threadName,
        }
        context = getattr(record, _CONTEXT_ATTR, _current.get())
        if isinstance(context, RequestContext):
            entry.update(
                request_id=context.request_id, principal=context.principal, method=context.method
            )
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS:
                entry[f"extra_{key}" if key in _FIELDS else key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["error"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return _dumps(entry)


def _rfc3339(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


def _message(record: logging.LogRecord) -> str:
    """The formatted message; a format string that does not fit its arguments still
    logs (both shown), as a log call must not fail the work it reports on."""
    try:
        return record.getMessage()
    except Exception:
        return f"{_repr(record.msg)} % {_repr(record.args)}"


def _dumps(entry: Mapping[str, Any]) -> str:
    try:
        return json.dumps(entry, default=_fallback, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError):  # NaN, circular, odd keys, ...
        safe = {}
        for key, value in entry.items():
            try:
                json.dumps(value, default=_fallback, allow_nan=False)
                safe[str(key)] = value
            except (TypeError, ValueError, RecursionError):
                safe[str(key)] = _repr(value)
        return json.dumps(safe, default=_fallback, ensure_ascii=False, allow_nan=False)


def _fallback(value: Any) -> Any:
    """What ``json`` cannot write itself: sets as lists, the rest as text."""
    if isinstance(value, set | frozenset):
        return sorted(value, key=_repr)
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    try:
        return str(value)
    except Exception:
        return _repr(value)


def _repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


# -- set-up ---------------------------------------------------------------------------


def formatter(format: str) -> logging.Formatter:
    """The formatter for ``format``: ``text`` (the server's plain lines) or ``json``."""
    if format == "text":
        return logging.Formatter(TEXT_FORMAT)
    if format == "json":
        return JsonFormatter()
    raise ValueError(f"log format must be text or json, got {format!r}")


class _DeferredQueueHandler(logging.handlers.QueueHandler):
    """Hands records over unformatted: the listener's thread formats and writes them."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


def configure(
    format: str, stream: TextIO | None = None, level: int = logging.INFO
) -> logging.handlers.QueueListener:
    """Route every log record to ``stream`` (stderr) in ``format``, written by one
    listener thread: written by the serving threads themselves, the handler's lock made
    them queue behind each other (a quarter of a balance query's cost at 32 callers).
    The request context is stamped on the way in. Returns the started listener:
    ``stop()`` it at exit, which writes what is still queued."""
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(formatter(format))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    inbound = _DeferredQueueHandler(records)
    inbound.addFilter(RequestContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [inbound]
    root.setLevel(level)
    listener = logging.handlers.QueueListener(records, handler)
    listener.start()
    return listener
