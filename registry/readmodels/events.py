"""The event log as the projections read it: raw rows, decoded only where one is needed.

Catch-up speed is mostly decoding. The library's ``mapper.to_domain_event`` builds a
full domain event per notification, running a Python hook on every JSON object (each
timestamp, id and serial block); the projections need a few fields of a few topics. So
the runner reads raw rows (``registry.persistence.eventlog``) in the projection's own
transaction, with the state only of the topics some projection reads, and parses it
as plain JSON (msgspec, or ``json.loads`` where msgspec refuses: the same values):
values stay in their stored form (``{"_type_": "block", "_data_": [class, first,
last]}``) and the helpers below read the few the projections use.

That shortcut is taken only when it is exact: the mapper's transcoder is one whose
stored form we know (the library's JSON transcoder, or our ``MsgspecTranscoder`` which
writes the same), exactly that class, with our transcodings under their names, and the
event class has no upcasting (``class_version``). Anything else (another transcoder, a
subclass, an upcast event) goes through the mapper and is re-encoded into the same
stored form, slower but identical.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import datetime
from json.encoder import encode_basestring_ascii
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    StoredEvent,
    UUIDAsHex,
)
from sqlalchemy import Connection

from registry.application import Registry
from registry.application.transcodings import SerialBlockTranscoding
from registry.domain.accounts import Account
from registry.domain.transactions import Transaction
from registry.domain.units import SerialBlock
from registry.persistence.eventlog import EventLog, Row, notification_rows
from registry.persistence.transcoder import MsgspecTranscoder, loads

OPENED = Account.Opened.TOPIC
FROZEN = Account.Frozen.TOPIC
UNFROZEN = Account.Unfrozen.TOPIC
CLOSED = Account.Closed.TOPIC
CREDITED = Account.Credited.TOPIC
DEBITED = Account.Debited.TOPIC
MOVEMENTS_POSTED = Account.MovementsPosted.TOPIC
UNITS_HELD = Account.UnitsHeld.TOPIC
HOLD_RELEASED = Account.HoldReleased.TOPIC
HELD_UNITS_DEBITED = Account.HeldUnitsDebited.TOPIC
COMPLETED = Transaction.Completed.TOPIC
REFUSED = Transaction.Refused.TOPIC
REVERSED = Transaction.Reversed.TOPIC

EVENT_CLASSES: dict[str, type[Any]] = {
    cls.TOPIC: cls
    for cls in (
        Account.Opened,
        Account.Frozen,
        Account.Unfrozen,
        Account.Closed,
        Account.Credited,
        Account.Debited,
        Account.MovementsPosted,
        Account.UnitsHeld,
        Account.HoldReleased,
        Account.HeldUnitsDebited,
        Transaction.Completed,
        Transaction.Refused,
        Transaction.Reversed,
    )
}
"""Every topic a projection reads, with its event class."""

Block = tuple[str, int, int]
"""A serial block as stored: [unit class key, first, last] (a JSON list at run time)."""


class Event:
    """One logged event: its log position, topic, originator (as the store spells it:
    hex on SQLite, dashed on PostgreSQL; ``uuid()`` for the value) and stored state.
    What several projections derive from it (blocks, their JSON) is derived once."""

    __slots__ = ("_blocks", "_blocks_json", "originator", "position", "state", "topic")

    def __init__(self, position: int, topic: str, originator: str, state: dict[str, Any]) -> None:
        self.position = position
        self.topic = topic
        self.originator = originator
        self.state = state
        self._blocks: list[Block] | None = None
        self._blocks_json: str | None = None

    def uuid(self) -> UUID:
        return UUID(self.originator)

    def timestamp(self) -> datetime:
        return datetime.fromisoformat(self.state["timestamp"]["_data_"])

    def blocks(self) -> list[Block]:
        """The serial blocks of its ``blocks`` field as (class key, first, last)."""
        if self._blocks is None:
            self._blocks = [block["_data_"] for block in self.state.get("blocks", ())]
        return self._blocks

    def blocks_json(self) -> str:
        """``blocks_json(self.blocks())``."""
        if self._blocks_json is None:
            self._blocks_json = blocks_json(self.blocks())
        return self._blocks_json

    def id_field(self, name: str) -> UUID:
        return UUID(self.state[name]["_data_"])

    def __repr__(self) -> str:
        return f"Event({self.position}, {self.topic!r}, {self.originator!r})"


class EventReader:
    """Reads batches of the log over the projection's connection, decoding the state
    of the wanted topics only."""

    def __init__(self, registry: Registry) -> None:
        self.recorder = registry.recorder
        self.log = EventLog.find(self.recorder)
        self.decode = StateDecoder(registry.mapper)

    def read(
        self, conn: Connection, start: int, limit: int, topics: Collection[str]
    ) -> tuple[list[Event], int, int]:
        """(events of ``topics``, notifications read, last position read) from ``start``
        on; the last position is 0 when there is nothing new."""
        rows: Iterable[Row]
        log = self.log
        if log is not None and conn.dialect.name == log.dialect:
            rows = log.rows(conn, start - 1, limit, states_of=sorted(topics), text_ids=True)
        else:  # another store: its own reader, on its own connection
            rows = notification_rows(self.recorder, start - 1, limit, states_of=topics)
        events = []
        count = last = 0
        decode = self.decode
        for position, originator, version, topic, state in rows:
            count += 1
            last = position
            if state is not None:
                events.append(
                    Event(position, topic, originator, decode(topic, originator, version, state))
                )
        return events, count, last


STORED_FORM: tuple[type[JSONTranscoder], ...] = (JSONTranscoder, MsgspecTranscoder)
"""Transcoders whose stored form the fast path reads (by exact class: a subclass may
write something else)."""


class StateDecoder:
    """Stored state -> the dict of stored JSON values (see the module docstring)."""

    def __init__(self, mapper: Mapper[Any]) -> None:
        self.mapper = mapper
        transcoder = mapper.transcoder
        self.fast = (
            type(transcoder) in STORED_FORM
            and isinstance(transcoder, JSONTranscoder)
            and _named(transcoder, SerialBlock, "block", SerialBlockTranscoding)
            and _named(transcoder, datetime, "datetime_iso", DatetimeAsISO)
            and _named(transcoder, UUID, "uuid_hex", UUIDAsHex)
        )
        self.upcast = {
            topic for topic, cls in EVENT_CLASSES.items() if getattr(cls, "class_version", 1) != 1
        }
        self.encoder = JSONTranscoder()
        """Re-encodes what the mapper decoded: into the stored form the helpers read,
        whatever the store's transcoder (other types as the mapper's JSON would be)."""
        if isinstance(transcoder, JSONTranscoder):
            for transcoding in transcoder.types.values():
                self.encoder.register(transcoding)
        for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO(), SerialBlockTranscoding()):
            self.encoder.register(transcoding)

    def __call__(
        self, topic: str, originator: str, version: int, state: bytes | memoryview
    ) -> dict[str, Any]:
        state = bytes(state)
        if self.fast and topic not in self.upcast:
            mapper = self.mapper
            if mapper.cipher:
                state = mapper.cipher.decrypt(state)
            if mapper.compressor:
                state = mapper.compressor.decompress(state)
            decoded = loads(state)
            if type(decoded) is not dict:
                decoded = json.loads(state.decode())  # the error, or what json.loads makes
            return decoded  # type: ignore[no-any-return]
        event = self.mapper.to_domain_event(
            StoredEvent(
                originator_id=UUID(originator), originator_version=version, topic=topic, state=state
            )
        )
        fields = {
            name: value
            for name, value in vars(event).items()
            if name not in ("originator_id", "originator_version")
        }
        reencoded: dict[str, Any] = json.loads(self.encoder.encode(fields))
        return reencoded


def _named(transcoder: JSONTranscoder, kind: type, name: str, cls: type) -> bool:
    """Whether ``kind`` is stored under ``name`` by a transcoding of class ``cls``."""
    registered = transcoder.types.get(kind)
    return (
        registered is not None
        and registered.name == name
        and isinstance(transcoder.names.get(name), cls)
    )


def quantity(blocks: Sequence[Block]) -> int:
    return sum(last - first + 1 for _, first, last in blocks)


def blocks_json(blocks: Sequence[Block]) -> str:
    """``[["CEA/2025", 1, 5], ...]``, as the tables store blocks: exactly the text of
    ``json.dumps(blocks)``, built without the encoder's per-call set-up."""
    return (
        "["
        + ", ".join([f"[{_json_string(key)}, {first}, {last}]" for key, first, last in blocks])
        + "]"
    )


_json_string: Callable[[str], str] = encode_basestring_ascii  # what json.dumps uses
