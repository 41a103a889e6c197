"""The bench's open loop (issue 20): calls are due at fixed times and a stall is counted
against every call it delays, as wrk2 counts them, not hidden by a caller that waits."""

from __future__ import annotations

import time
from typing import Any

from bench.suite.callers import Job, _intended, _thread_main


class Stalling:
    """Call 0 takes ``stall`` seconds, every other call answers at once."""

    def __init__(self, stall: float, calls: int) -> None:
        self.stall = stall
        self.calls: int | None = calls

    def prepare(self, n: int) -> tuple[str, Any]:
        return "call", n

    def send(self, request: Any) -> int:
        if request == 0:
            time.sleep(self.stall)
        return 1

    def close(self) -> None:
        pass


def test_calls_are_due_evenly_spaced_across_callers() -> None:
    """4 callers sharing 100 calls/s: caller 1's call 2 is call 2 x 4 + 1 = 9 of all,
    due 9 / 100 = 0.09 s after the start; closed loop has no due time."""
    job = Job("m:C", processes=2, threads=2, params={}, rate=100.0)
    assert _intended(job, 10.0, (1, 4), 2) == 10.0 + 0.09
    assert _intended(job, 10.0, (0, 4), 0) == 10.0
    assert _intended(Job("m:C", 1, 1, {}), 10.0, (0, 1), 5) is None


def test_a_stall_is_counted_against_the_calls_it_delays() -> None:
    """One caller offered 100 calls/s (one due every 10 ms); call 0 stalls 200 ms.
    Calls 1..5 were due at 10..50 ms but could only go at about 200 ms, so open loop
    counts them about 190, 180, 170, 160 and 150 ms late. Closed loop measures each
    from its own send: near 0 ms."""
    stall = 0.2
    open_out: dict[str, Any] = {}
    job = Job("m:C", 1, 1, {}, rate=100.0)
    _thread_main(Stalling(stall, 6), job, time.monotonic(), open_out, (0, 1))
    late = open_out["latencies"]["call"]
    assert len(late) == 6
    assert late[0] >= stall
    for n in range(1, 6):
        assert late[n] >= stall - 0.01 * n - 0.005, (n, late)

    closed_out: dict[str, Any] = {}
    _thread_main(Stalling(stall, 6), Job("m:C", 1, 1, {}), time.monotonic(), closed_out, (0, 1))
    assert max(closed_out["latencies"]["call"][1:]) < 0.05
