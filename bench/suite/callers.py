"""Callers in separate client processes, so the client's interpreter lock does not cap
the server: ``processes`` processes x ``threads`` threads, one channel (or one database
connection) per thread, all released at the same instant.

A caller class prepares a request (not timed) and sends it (timed). A failed call is
counted by status code and sent again with the same ids, which the registry answers
as a replay, so nothing is settled twice and nothing is lost. Each process reports its
latencies, its CPU time from the start signal on, and its own peak memory (VmHWM).
"""

from __future__ import annotations

import importlib
import os
import pickle
import random
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from bench.suite.procs import memory_kib

MAX_ATTEMPTS = 20


class Fatal(Exception):
    """A caller found a wrong answer (not a transient failure): stop, do not resend."""


@dataclass(frozen=True)
class Job:
    """What every caller of one scenario does. ``kind`` is ``module:Class``."""

    kind: str
    processes: int
    threads: int
    params: dict[str, Any]
    duration: float | None = None
    """Seconds to keep calling; None: each caller makes ``caller.calls`` calls."""
    rate: float | None = None
    """Open loop: calls offered per second by all callers together, each call sent at
    its intended time whatever the earlier answers did, and its latency counted from
    that time (as wrk2 does), so a stall delays every call behind it and shows in the
    percentiles. None: closed loop, each caller sends as soon as its last answer came."""
    seed: int = 1


@dataclass
class CallerContext:
    job: Job
    index: int
    """This caller's number, 0 .. processes x threads - 1."""
    callers: int
    rng: random.Random


class Caller(Protocol):
    calls: int | None
    """How many calls this caller makes (None: until the job's duration ends)."""

    def prepare(self, n: int) -> tuple[str, Any]:
        """(latency group, request) for call number ``n``; not timed."""

    def send(self, request: Any) -> int:
        """Make the call; returns the items it did (trades settled, events read)."""

    def close(self) -> None: ...


@dataclass
class Result:
    """All callers of a job, merged."""

    seconds: float
    calls: int
    items: int
    latencies: dict[str, list[float]]
    errors: dict[str, int]
    cpu_seconds: float
    peak_process_mib: float
    processes: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0

    def all_latencies(self) -> list[float]:
        return [x for values in self.latencies.values() for x in values]


def _load(kind: str) -> Callable[[CallerContext], Caller]:
    module, name = kind.split(":")
    factory: Callable[[CallerContext], Caller] = getattr(importlib.import_module(module), name)
    return factory


def _intended(job: Job, start_at: float, slot: tuple[int, int], n: int) -> float | None:
    """When call ``n`` of caller ``slot`` = (index, callers) is due, open loop: the
    callers take turns, so the calls of all of them are evenly spaced at ``job.rate``."""
    if job.rate is None:
        return None
    index, callers = slot
    return start_at + (n * callers + index) / job.rate


def _thread_main(
    caller: Caller, job: Job, start_at: float, out: dict[str, Any], slot: tuple[int, int]
) -> None:
    latencies: dict[str, list[float]] = {}
    errors: dict[str, int] = {}
    calls = items = 0
    deadline = None if job.duration is None else start_at + job.duration
    n = 0
    try:
        while (caller.calls is None or n < caller.calls) and (
            deadline is None or time.monotonic() < deadline
        ):
            group, request = caller.prepare(n)
            due = _intended(job, start_at, slot, n)
            if due is not None:
                if deadline is not None and due >= deadline:
                    break
                time.sleep(max(0.0, due - time.monotonic()))
                due = time.perf_counter() - (time.monotonic() - due)  # on perf_counter's clock
            for attempt in range(MAX_ATTEMPTS):
                began = time.perf_counter() if due is None else due
                try:
                    done = caller.send(request)
                except Fatal:
                    raise
                except Exception as error:  # counted; the same ids are sent again
                    key = _error_name(error)
                    errors[key] = errors.get(key, 0) + 1
                    if attempt == MAX_ATTEMPTS - 1:
                        raise
                    time.sleep(min(1.0, 0.01 * 2**attempt))
                    continue
                latencies.setdefault(group, []).append(time.perf_counter() - began)
                calls += 1
                items += done
                break
            n += 1
    except Exception as error:
        out["fatal"] = repr(error)
    finally:
        out.update(
            latencies=latencies,
            errors=errors,
            calls=calls,
            items=items,
            ended=time.monotonic(),
            extra=getattr(caller, "extra", {}),
        )
        caller.close()


def _error_name(error: Exception) -> str:
    code = getattr(error, "code", None)
    if callable(code):
        try:
            return str(code().name)
        except Exception:
            pass
    return type(error).__name__


def _send(stream: IO[bytes], message: Any) -> None:
    data = pickle.dumps(message)
    stream.write(struct.pack("!Q", len(data)) + data)
    stream.flush()


def _receive(stream: IO[bytes]) -> Any:
    header = stream.read(8)
    if len(header) < 8:
        raise EOFError("the other side closed the pipe")
    return pickle.loads(stream.read(struct.unpack("!Q", header)[0]))


def _child() -> None:
    """A client process: read the job, get ready, wait for the start time, call, report.
    Its stdout carries only the messages; anything printed goes to stderr."""
    inbox, outbox = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr
    parent = os.getppid()

    def orphaned() -> None:  # the suite was killed: do not keep calling the server
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=orphaned, daemon=True).start()
    job, process_index = _receive(inbox)
    factory = _load(job.kind)
    callers = []
    for t in range(job.threads):
        index = process_index * job.threads + t
        rng = random.Random(job.seed * 1_000_003 + index)
        callers.append(factory(CallerContext(job, index, job.processes * job.threads, rng)))
    _send(outbox, "ready")
    start_at = _receive(inbox)
    cpu0 = sum(os.times()[:2])
    outs: list[dict[str, Any]] = [{} for _ in callers]
    total = job.processes * job.threads
    threads = [
        threading.Thread(
            target=_thread_main,
            args=(c, job, start_at, o, (process_index * job.threads + t, total)),
        )
        for t, (c, o) in enumerate(zip(callers, outs, strict=True))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _send(
        outbox,
        {"outs": outs, "cpu": sum(os.times()[:2]) - cpu0, "peak_kib": memory_kib(os.getpid())[1]},
    )


def run(job: Job, timeout: float = 3600) -> Result:
    """Start the client processes, release them together, wait, and merge what they
    measured. Plain interpreters (``python -m bench.suite.callers``), so a client process
    holds only what its calls need, whatever command started the suite."""
    root = str(Path(__file__).resolve().parents[2])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.suite.callers"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for _ in range(job.processes)
    ]

    def kill_all() -> None:
        for child in children:
            child.kill()

    watchdog = threading.Timer(timeout, kill_all)
    watchdog.start()
    try:
        pipes = [(c.stdin, c.stdout) for c in children]
        for index, (inbox, _) in enumerate(pipes):
            assert inbox is not None
            _send(inbox, (job, index))
        for _, outbox in pipes:
            assert outbox is not None
            if _receive(outbox) != "ready":
                raise RuntimeError(f"a client process of {job.kind} did not get ready")
        start_at = time.monotonic()
        for inbox, _ in pipes:
            assert inbox is not None
            _send(inbox, start_at)
        reports = []
        for _, outbox in pipes:
            assert outbox is not None
            reports.append(_receive(outbox))
    except EOFError:
        raise RuntimeError(f"a client process of {job.kind} failed (its error is above)") from None
    finally:
        watchdog.cancel()
        for child in children:
            if child.stdin is not None:
                child.stdin.close()  # a child still waiting to start reads EOF and exits
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
    outs = [o for report in reports for o in report["outs"]]
    fatal = [o["fatal"] for o in outs if "fatal" in o]
    if fatal:
        raise RuntimeError(f"{len(fatal)} callers of {job.kind} gave up: {fatal[0]}")
    latencies: dict[str, list[float]] = {}
    errors: dict[str, int] = {}
    extra: dict[str, Any] = {}
    for out in outs:
        for group, values in out["latencies"].items():
            latencies.setdefault(group, []).extend(values)
        for key, count in out["errors"].items():
            errors[key] = errors.get(key, 0) + count
        for key, value in out["extra"].items():
            extra.setdefault(key, []).append(value)
    return Result(
        seconds=max(o["ended"] for o in outs) - start_at,
        calls=sum(o["calls"] for o in outs),
        items=sum(o["items"] for o in outs),
        latencies=latencies,
        errors=errors,
        cpu_seconds=round(sum(r["cpu"] for r in reports), 2),
        peak_process_mib=round(max(r["peak_kib"] for r in reports) / 1024, 1),
        processes=len(children),
        extra=extra,
    )


if __name__ == "__main__":
    _child()
