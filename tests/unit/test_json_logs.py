"""Structured logs: one JSON object per line with the bound request and the extras,
exceptions, values JSON cannot hold, the queued set-up, request ids, and the text
format unchanged."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from registry.observability import logs

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
SETTLE = "/registry.v1.SettlementService/SettleTrades"


class Capture:
    """A logger writing JSON lines to a string, formatted where the record is made."""

    def __init__(self, name: str) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(logs.JsonFormatter())
        self.logger = logging.getLogger(name)
        self.logger.addHandler(self.handler)
        self.logger.setLevel(logging.DEBUG)
        self.logger.propagate = False

    def lines(self) -> list[dict[str, Any]]:
        text = self.stream.getvalue()
        assert text.endswith("\n")
        return [json.loads(line) for line in text.splitlines()]

    def close(self) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.propagate = True


@pytest.fixture
def capture(request: pytest.FixtureRequest) -> Iterator[Capture]:
    captured = Capture(f"test.json_logs.{request.node.name}")
    yield captured
    captured.close()


@pytest.fixture
def root_logging() -> Iterator[None]:
    """``configure`` replaces the root logger's handlers: put them back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_one_json_object_per_line_with_the_standard_fields(capture: Capture) -> None:
    before = datetime.now(UTC)
    capture.logger.info("settled %d trades", 3)
    capture.logger.warning("two\nlines in one message")
    first, second = capture.lines()
    assert first["message"] == "settled 3 trades"
    assert first["level"] == "INFO"
    assert first["logger"] == capture.logger.name
    assert first["process"] == os.getpid()
    assert first["thread"] == threading.current_thread().name
    assert TIME.match(first["time"]), first["time"]
    made = datetime.strptime(first["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs((made - before).total_seconds()) < 5
    assert second["message"] == "two\nlines in one message"
    assert second["level"] == "WARNING"
    assert "request_id" not in first and "error" not in first


def test_the_bound_request_is_on_every_line_while_it_is_bound(capture: Capture) -> None:
    assert logs.current_request_id() is None
    token = logs.bind_request("req-1", "sse/settlement", SETTLE)
    try:
        assert logs.current_request_id() == "req-1"
        capture.logger.info("inside")
    finally:
        logs.unbind_request(token)
    capture.logger.info("outside")
    inside, outside = capture.lines()
    assert (inside["request_id"], inside["principal"], inside["method"]) == (
        "req-1",
        "sse/settlement",
        SETTLE,
    )
    assert not {"request_id", "principal", "method"} & set(outside)
    assert logs.current_request_id() is None


def test_a_rebinding_once_the_principal_is_known_unwinds_in_order() -> None:
    outer = logs.bind_request("req-2", "anonymous/-", SETTLE)
    inner = logs.bind_request("req-2", "sse/settlement", SETTLE)
    assert logs.current_request() == logs.RequestContext("req-2", "sse/settlement", SETTLE)
    logs.unbind_request(inner)
    assert logs.current_request() == logs.RequestContext("req-2", "anonymous/-", SETTLE)
    logs.unbind_request(outer)
    assert logs.current_request() is None


def test_a_request_bound_in_one_thread_is_not_seen_in_another() -> None:
    seen: list[str | None] = []
    token = logs.bind_request("req-3", "mee/admin", SETTLE)
    try:
        worker = threading.Thread(target=lambda: seen.append(logs.current_request_id()))
        worker.start()
        worker.join()
    finally:
        logs.unbind_request(token)
    assert seen == [None]


def test_extras_are_fields_and_never_replace_the_standard_ones(capture: Capture) -> None:
    token = logs.bind_request("req-4", "sse/settlement", SETTLE)
    try:
        capture.logger.info(
            "call",
            extra={
                "status": "OK",
                "duration_ms": 41.7,
                "trades": [1, 2],
                "method": "not this",
                "level": "nor this",
            },
        )
    finally:
        logs.unbind_request(token)
    [line] = capture.lines()
    assert line["status"] == "OK"
    assert line["duration_ms"] == 41.7
    assert line["trades"] == [1, 2]
    assert line["method"] == SETTLE and line["extra_method"] == "not this"
    assert line["level"] == "INFO" and line["extra_level"] == "nor this"


def test_an_exception_is_the_error_field_on_the_same_line(capture: Capture) -> None:
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        capture.logger.exception("settlement batch failed")
    [line] = capture.lines()
    assert line["level"] == "ERROR"
    assert line["message"] == "settlement batch failed"
    assert line["error"].startswith("Traceback (most recent call last):")
    assert "ZeroDivisionError: division by zero" in line["error"]
    assert "test_an_exception_is_the_error_field_on_the_same_line" in line["error"]


def test_values_json_cannot_hold_never_fail_the_log_call(capture: Capture) -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no")

        def __repr__(self) -> str:
            raise RuntimeError("no either")

    circular: list[Any] = []
    circular.append(circular)
    capture.logger.info(
        "odd values",
        extra={
            "thing": object(),
            "nan": math.nan,
            "units": {3, 1},
            "raw": b"\xff\x00ok",
            "circular": circular,
            "unprintable": Unprintable(),
            "when": datetime(2026, 6, 15),
            "keys": {(1, 2): "tuple key"},
        },
    )
    [odd] = capture.lines()
    assert odd["message"] == "odd values"
    assert odd["thing"].startswith("<object object")
    assert odd["nan"] == "nan"
    assert odd["units"] == [1, 3]
    assert odd["raw"] == "\\xff\x00ok"
    assert odd["when"] == "2026-06-15 00:00:00"
    assert isinstance(odd["circular"], str)
    assert odd["unprintable"] == "<unprintable Unprintable>"
    assert "tuple key" in odd["keys"]


def test_a_message_that_does_not_fit_its_arguments_still_logs() -> None:
    # Formatted directly: pytest's own capture handler would fail on this record.
    record = logging.LogRecord(
        "registry.api", logging.INFO, __file__, 1, "bad format %d", ("not a number",), None
    )
    line = json.loads(logs.JsonFormatter().format(record))
    assert "bad format %d" in line["message"] and "not a number" in line["message"]


def test_queued_records_keep_the_request_of_the_thread_that_logged_them(root_logging: None) -> None:
    stream = io.StringIO()
    listener = logs.configure("json", stream)
    log = logging.getLogger("registry.api")

    def serve(request_id: str) -> None:
        token = logs.bind_request(request_id, "sse/settlement", SETTLE)
        try:
            log.info("served %s", request_id)
        finally:
            logs.unbind_request(token)

    try:
        workers = [threading.Thread(target=serve, args=(f"req-{n}",)) for n in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        log.info("no request here")
    finally:
        listener.stop()  # writes what is still queued
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 9
    served = {line["message"]: line.get("request_id") for line in lines}
    assert served == {**{f"served req-{n}": f"req-{n}" for n in range(8)}, "no request here": None}


def test_the_text_format_is_unchanged(root_logging: None) -> None:
    assert logs.TEXT_FORMAT == "%(asctime)s %(process)d %(levelname)s %(name)s %(message)s"
    stream = io.StringIO()
    listener = logs.configure("text", stream)
    token = logs.bind_request("req-5", "sse/settlement", SETTLE)
    try:
        logging.getLogger("registry.api").info(
            "%s principal=%s status=OK", SETTLE, "sse/settlement", extra={"status": "OK"}
        )
    finally:
        logs.unbind_request(token)
        listener.stop()
    line = stream.getvalue()
    assert re.fullmatch(
        rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}} {os.getpid()} INFO registry.api "
        rf"{re.escape(SETTLE)} principal=sse/settlement status=OK\n",
        line,
    ), line


def test_only_text_and_json_are_formats() -> None:
    assert isinstance(logs.formatter("json"), logs.JsonFormatter)
    assert type(logs.formatter("text")) is logging.Formatter
    with pytest.raises(ValueError, match="text or json"):
        logs.formatter("xml")


# -- request ids --------------------------------------------------------------------------


def test_new_request_ids_are_uuid4_hex_and_unique() -> None:
    ids = {logs.new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) and i[12] == "4" for i in ids)


@pytest.mark.parametrize("sent", ["abc", "SSE-20260615.batch_001", "x" * 64, "7", "a.b-c_D"])
def test_a_valid_client_request_id_is_kept(sent: str) -> None:
    assert logs.request_id_from([("authorization", "Bearer t"), ("x-request-id", sent)]) == sent
    assert logs.request_id_from([("X-Request-Id", sent)]) == sent


@pytest.mark.parametrize(
    "sent", ["", "x" * 65, "has space", "new\nline", "ünïcode", "semi;colon", 'quote"', b"bytes"]
)
def test_an_invalid_client_request_id_is_replaced(sent: str | bytes) -> None:
    chosen = logs.request_id_from([("x-request-id", sent)])
    assert chosen != sent
    assert re.fullmatch(r"[0-9a-f]{32}", chosen)


def test_without_a_client_request_id_a_new_one_is_made() -> None:
    assert re.fullmatch(r"[0-9a-f]{32}", logs.request_id_from(None))
    assert re.fullmatch(r"[0-9a-f]{32}", logs.request_id_from([("user-agent", "grpc")]))
    assert logs.request_id_from([("x-request-id", "first"), ("x-request-id", "second")]) == "first"
