"""The group commit thread's idle work: it runs when no request came for a while, a
failure of it is logged once and never stops the thread from answering."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import pytest

from registry.application.group_commit import GroupCommit


def echo(requests: Sequence[int]) -> list[int | BaseException]:
    return [r * 2 for r in requests]


def test_idle_work_runs_between_requests_and_not_before_the_first() -> None:
    """No thread until the first request; then, quiet, the idle work runs about every
    50 ms (at least 3 times in 0.4 s); requests are answered as before."""
    ran: list[float] = []
    group: GroupCommit[int, int] = GroupCommit(
        echo, limit=10, name="t", idle=lambda: ran.append(time.monotonic()), idle_seconds=0.05
    )
    try:
        time.sleep(0.2)
        assert ran == [], "the thread starts on the first request"
        assert group.submit(21) == 42
        time.sleep(0.4)
        assert len(ran) >= 3
        assert group.submit(5) == 10
    finally:
        group.close()


def test_a_failing_idle_work_is_logged_once_and_requests_are_still_answered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = [0]

    def failing() -> None:
        calls[0] += 1
        raise ConnectionError("database away")

    caplog.set_level(logging.WARNING, logger="registry.group_commit")
    group: GroupCommit[int, int] = GroupCommit(
        echo, limit=10, name="t", idle=failing, idle_seconds=0.02
    )
    try:
        assert group.submit(1) == 2
        time.sleep(0.3)
        assert calls[0] >= 3
        assert group.submit(2) == 4
        warnings = [r for r in caplog.records if "idle work failed" in r.getMessage()]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
    finally:
        group.close()


def test_without_idle_work_the_thread_only_waits() -> None:
    group: GroupCommit[int, int] = GroupCommit(echo, limit=10, name="t")
    try:
        assert group.submit(3) == 6
    finally:
        group.close()
