"""The request id of the call being served, recorded on every event the call causes.

The API binds it (the client's ``x-request-id``, or a new one) for the call's thread.
A unit of work stamps it on the events it saves; the group commits, which save many
callers' work from one thread, capture each caller's id with its job and stamp that
caller's events as they are made. The stamp is one more field of the stored event,
``api_request_id``, so a log line and the events of the same call are found together.

One kind of event can hold several calls' work: an account's ``MovementsPosted`` of a
group commit. It carries the saving call's id, and names the transactions it posts,
each of whose records carries its own call's id.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

FIELD = "api_request_id"
_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def current_request_id() -> str | None:
    return _current.get()


@contextmanager
def bound_request_id(request_id: str | None) -> Iterator[None]:
    token = _current.set(request_id)
    try:
        yield
    finally:
        _current.reset(token)


def stamp(events: Iterable[Any], request_id: str | None) -> None:
    """Record ``request_id`` on events not stamped yet (a caller's own id, given first,
    is never overwritten by the id of the thread that saves them)."""
    if not request_id:
        return
    for event in events:
        if FIELD not in event.__dict__:
            object.__setattr__(event, FIELD, request_id)
