"""StreamEvents' own page path (PostgreSQL: one statement a page, the reply built from
the rows' wire format) answers exactly what ``read_events`` pages give: the same events,
byte for byte, the same last and head positions, on every backend, filtered or not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import DecodeError
from sqlalchemy import create_engine

from registry.application import Registry
from registry.application.audit_events import read_events
from registry.cli.demo import run_demo
from registry.readmodels.queries import ReadModels
from registry.v1 import audit_service_pb2 as pb
from services.audit import AuditServicer, _add_events, _events_wire, _page_bytes, _page_wire
from services.backend import Backend


class Context:
    def is_active(self) -> bool:
        return True


def expected(
    registry: Registry, after: int, page: int, topics: list[str], max_events: int = 0
) -> list[pb.StreamEventsResponse]:
    """The pages as the stream built them before: ``read_events`` + a message per event."""
    pages, sent = [], 0
    while True:
        limit = page if not max_events else min(page, max_events - sent)
        found = read_events(registry, after, limit, topics)
        if not found.events and found.last_position == after:
            return pages
        response = pb.StreamEventsResponse(
            last_position=found.last_position, head_position=found.head_position
        )
        _add_events(response.events, found.events)
        pages.append(response)
        after, sent = found.last_position, sent + len(found.events)
        if max_events and sent >= max_events:
            return pages


def test_stream_pages_equal_read_events(registry: Registry, tmp_path: Path) -> None:
    assert run_demo(registry, out=lambda _: None)
    servicer = AuditServicer(
        Backend(registry, ReadModels(create_engine(f"sqlite:///{tmp_path}/rm.sqlite")))
    )
    head = int(registry.recorder.max_notification_id() or 0)
    assert head > 30
    topics_seen = sorted({n.topic for n in registry.recorder.select_notifications(1, head)})
    cases: list[dict[str, Any]] = [
        {},
        {"page_size": 1},
        {"page_size": 7},
        {"page_size": 7, "max_events": 10},
        {"after_position": head // 2, "page_size": 5},
        {"after_position": head},
        {"after_position": head + 5},
        {"event_types": [topics_seen[0]], "page_size": 3},
        {"event_types": topics_seen[:2], "page_size": 4},
        {"event_types": ["registry.Nothing.Happened"]},
    ]
    for fields in cases:
        got = list(servicer.StreamEvents(pb.StreamEventsRequest(**fields), Context()))  # type: ignore[arg-type]
        want = expected(
            registry,
            fields.get("after_position", 0),
            fields.get("page_size", 5000),
            fields.get("event_types", []),
            fields.get("max_events", 0),
        )
        assert got == want, fields
        # what goes on the wire is the same bytes
        assert [p.SerializeToString() for p in got] == [p.SerializeToString() for p in want]


@pytest.mark.parametrize(
    "position, version, payload",
    [
        (1, 1, b"{}"),
        (127, 127, b'{"a":1}'),
        (128, 128, b'{"\xc3\xa9":"\xe4\xb8\xad"}'),
        (16383, 16383, b"x" * 16383),
        (16384, 16384, b"x" * 16384),
        (2**21 - 1, 2**21, b"y" * 70_000),
        (2**21, 2**31, b""),
        (2**62, 2**63 - 1, b"{}"),
    ],
)
def test_wire_encoding_equals_the_message(position: int, version: int, payload: bytes) -> None:
    rows = [
        (
            position,
            "0b1c3c4e-8e2a-4b7e-9a57-2d4c1d3f0a11",
            version,
            "registry.Account.Opened",
            payload,
            0,
        ),
        (position + 1, "x", 1, "registry.Trañsaction.Completed", b'{"b":2}', 0),
    ]
    built = pb.StreamEventsResponse()
    for row in rows:
        built.events.add(
            position=row[0],
            aggregate_id=row[1],
            aggregate_version=row[2],
            event_type=row[3],
            payload_json=row[4].decode(),
        )
    parsed = pb.StreamEventsResponse.FromString(_events_wire(rows))
    assert parsed == built
    assert parsed.SerializeToString() == built.SerializeToString()  # what gRPC sends


def test_a_payload_that_is_not_utf8_is_refused_as_before() -> None:
    rows = [(1, "id", 1, "t", b"\xff\xfe", 0)]
    with pytest.raises(UnicodeDecodeError):
        pb.StreamEventsResponse().events.add(payload_json=rows[0][4])
    with pytest.raises(DecodeError):
        pb.StreamEventsResponse.FromString(_events_wire(rows))


def test_a_page_is_the_message_in_wire_format() -> None:
    """``_page_wire`` is the whole reply gRPC sends (events, then the two positions,
    left out at zero as proto3 does); ``_page_bytes`` sends it as it is."""
    rows = [
        (7, "a", 1, "registry.Account.Opened", b'{"x":"\xc3\xa9"}', 0),
        (300, "b", 2, "registry.Account.Credited", b"{}", 0),
    ]
    built = pb.StreamEventsResponse(last_position=300, head_position=2**40)
    _add_events(built.events, [row[:5] for row in rows])
    page = _page_wire(rows, 300, 2**40)
    assert pb.StreamEventsResponse.FromString(page) == built
    assert page == built.SerializeToString()
    assert _page_bytes(page) is page
    assert _page_bytes(built) == page
    empty = pb.StreamEventsResponse(last_position=5)
    assert _page_wire((), 5, 0) == empty.SerializeToString()
    assert _page_wire((), 0, 0) == b""


@pytest.mark.parametrize(
    "payloads",
    [
        [b"\xff\xfe"],
        [b"{}", b'{"a":"\xe4\xb8'],  # a character cut short at the end of the page
        [b'{"a":"\xe4\xb8', b'\xad"}'],  # ... and its end in the next payload
        [b"\x80{}"],
        [b'{"s":"\xed\xa0\x80"}'],  # a surrogate: not UTF-8 either
    ],
)
def test_a_page_with_a_payload_that_is_not_utf8_is_refused(payloads: list[bytes]) -> None:
    """As the parse of the page refused it before (a ``DecodeError``, INTERNAL to the
    caller): the bytes never go out."""
    rows = [(n + 1, "id", 1, "t", payload, 0) for n, payload in enumerate(payloads)]
    with pytest.raises(DecodeError):
        pb.StreamEventsResponse.FromString(_events_wire(rows))  # the old way
    with pytest.raises(DecodeError):
        _page_wire(rows, len(rows), len(rows))
