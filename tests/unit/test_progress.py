"""The progress line of long jobs (registry.observability.progress): drawn on a terminal
with rate and time left, silent off a terminal and in JSON-log mode (issue 16, command
line)."""

from __future__ import annotations

import io

from registry.observability.progress import Progress, duration, wanted


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as stderr does in a shell."""

    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_terminal_gets_rate_and_time_left_then_a_final_line() -> None:
    stream, clock = Terminal(), Clock()
    with Progress("sent", 10_000, unit="rows", stream=stream, clock=clock, environ={}) as meter:
        clock.now += 2
        meter.update(3_000)
        assert stream.getvalue() == "\rsent 3,000 of 10,000 rows (30%), 1,500 rows/s, 5s left"
        clock.now += 0.1
        meter.update(3_100)  # within the redraw interval: not drawn again
        assert stream.getvalue().count("\r") == 1
        clock.now += 4.9
        meter.update(10_000)
    lines = stream.getvalue().split("\r")
    assert lines[-1] == "sent 10,000 of 10,000 rows (100%), 1,429 rows/s, in 7s\n"


def test_a_shorter_line_wipes_the_longer_one_before_it() -> None:
    stream, clock = Terminal(), Clock()
    meter = Progress("caught up on", unit="events", stream=stream, clock=clock, environ={})
    clock.now += 1
    meter.update(1_000_000, total=2_000_000)
    first = stream.getvalue()
    clock.now += 1
    meter.update(4, total=4)
    second = stream.getvalue()[len(first) :]
    text = "caught up on 4 of 4 events (100%), 2 events/s, in 2s"
    assert second == "\r" + text + " " * (len(first) - 1 - len(text))


def test_quiet_off_a_terminal_and_in_json_log_mode() -> None:
    plain = io.StringIO()  # a pipe or a file: isatty() is False
    with Progress("sent", 10, stream=plain, clock=Clock(), environ={}) as meter:
        meter.update(5)
    assert plain.getvalue() == ""
    json_terminal = Terminal()
    with Progress(
        "sent", 10, stream=json_terminal, clock=Clock(), environ={"REGISTRY_LOG_FORMAT": "json"}
    ) as meter:
        meter.update(5)
    assert json_terminal.getvalue() == ""
    assert wanted(Terminal(), {"REGISTRY_LOG_FORMAT": "text"})
    assert not wanted(io.StringIO(), {})


def test_nothing_to_do_draws_nothing() -> None:
    stream = Terminal()
    with Progress("caught up on", stream=stream, clock=Clock(), environ={}) as meter:
        meter.update(0, total=0)
    assert stream.getvalue() == ""


def test_durations_read_short() -> None:
    assert [duration(s) for s in (0, 42.4, 185, 7620)] == ["0s", "42s", "3m05s", "2h07m"]


def test_closing_early_ends_the_line_once() -> None:
    """An error message printed after close() starts on a line of its own; leaving the
    ``with`` block afterwards writes nothing more."""
    stream, clock = Terminal(), Clock()
    with Progress("sent", 10, stream=stream, clock=clock, environ={}) as meter:
        clock.now += 1
        meter.update(4)
        meter.close()
        assert stream.getvalue().endswith("\n")
        closed = stream.getvalue()
        meter.update(5)
    assert stream.getvalue() == closed
