"""The processes the suite starts, and what each of them costs.

Figures come from ``/proc`` (Linux): resident memory (``VmRSS``, and ``VmHWM`` for a
process's own peak) and CPU time (utime + stime). A server may be a supervisor with
child processes (``REGISTRY_SERVER_PROCESSES``), so a watched process counts with its
descendants. PostgreSQL's CPU is every ``postgres`` process plus what the postmaster
has reaped from exited backends, so connections that close during a scenario still
count.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SAMPLE_SECONDS = 0.2


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (which may hold spaces)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """User + system CPU of ``pid`` (plus of its waited-for children if asked)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # fields[0] is field 3 (state): utime=14, stime=15, cutime=16, cstime=17.
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK_TICKS


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in KiB; (0, 0) once it is gone."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def _all_processes() -> Iterator[tuple[int, int, str]]:
    """(pid, parent pid, command name) of every process."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        yield int(entry.name), int(text[text.rindex(")") + 2 :].split()[1]), name


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for pid, parent, _ in _all_processes():
        children.setdefault(parent, []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def machine_busy_seconds() -> float:
    """CPU time the whole machine has spent busy (all cores, every process), from
    /proc/stat: what the suite's processes did not use of it, others did."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS


def postgres_cpu() -> float:
    """CPU of the local PostgreSQL server: live processes plus reaped backends."""
    pids = {pid: parent for pid, parent, name in _all_processes() if name == "postgres"}
    total = 0.0
    for pid, parent in pids.items():
        is_postmaster = parent not in pids
        total += cpu_seconds(pid, reaped_children=is_postmaster)
    return total


@dataclass
class Started:
    """A command the suite runs as a process (server, projection worker, one-off)."""

    label: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    started: float = field(default_factory=time.monotonic)
    exit_cpu: float | None = None
    exit_peak_kib: int | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM (graceful), then wait; SIGKILL if it does not go in time."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for exit (SIGKILL after ``timeout``), keeping the child's CPU and peak
        memory from wait4()."""
        if not self.wait_until(None if timeout is None else time.monotonic() + timeout):
            self.process.kill()
            self.wait_until(None)
        assert self.process.returncode is not None
        return self.process.returncode

    def wait_until(self, deadline: float | None) -> bool:
        """Wait for exit until ``deadline`` (monotonic); False if it is still running."""
        while self.process.returncode is None:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.process.returncode = os.waitstatus_to_exitcode(status)
                self.exit_cpu = usage.ru_utime + usage.ru_stime
                self.exit_peak_kib = usage.ru_maxrss
                break
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        self.log.flush()
        return True


def start(label: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path) -> Started:
    log = log_path.open("ab")
    process = subprocess.Popen(list(argv), env=dict(env), stdout=log, stderr=subprocess.STDOUT)
    return Started(label, process, log)


@dataclass
class Usage:
    """What the watched processes used during one window of the run."""

    seconds: float
    peak_rss_mib: dict[str, float]
    """Per label: the highest resident memory of the label's processes taken together."""
    peak_process_mib: dict[str, float]
    """Per label: the highest resident memory of any one of its processes."""
    cpu_seconds: dict[str, float]
    """Per label, 'postgres', and 'machine' (all cores busy, whoever used them)."""


@dataclass
class _Window:
    started: float
    cpu_start: dict[str, float]
    peak: dict[str, int] = field(default_factory=dict)
    peak_one: dict[str, int] = field(default_factory=dict)


class Watch:
    """Samples the resident memory of watched processes every 0.2 s in a thread.

    ``window()`` measures one scenario (peak memory, CPU); ``timeline`` keeps one
    sample per second of each label's total, for the server-memory check."""

    def __init__(self) -> None:
        self.roots: dict[str, int] = {}
        self.timeline: list[tuple[float, str, float]] = []
        self._windows: list[_Window] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._last_timeline = 0.0
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="bench-watch", daemon=True)
        self._thread.start()

    def add(self, label: str, pid: int) -> None:
        with self._lock:
            self.roots[label] = pid

    def remove(self, label: str) -> None:
        self.sample()
        with self._lock:
            self.roots.pop(label, None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def rss_mib(self, label: str) -> float:
        """The label's resident memory now (its process tree)."""
        pid = self.roots.get(label)
        if pid is None:
            return 0.0
        return sum(memory_kib(p)[0] for p in process_tree(pid)) / 1024

    def _cpu(self) -> dict[str, float]:
        with self._lock:
            roots = dict(self.roots)
        cpu = {
            label: sum(cpu_seconds(p) for p in process_tree(pid)) for label, pid in roots.items()
        }
        cpu["postgres"] = postgres_cpu()
        cpu["machine"] = machine_busy_seconds()
        return cpu

    def sample(self) -> None:
        with self._lock:
            roots = dict(self.roots)
        now = time.monotonic()
        totals: dict[str, int] = {}
        largest: dict[str, int] = {}
        for label, pid in roots.items():
            sizes = [memory_kib(p)[0] for p in process_tree(pid)]
            totals[label] = sum(sizes)
            largest[label] = max(sizes, default=0)
        with self._lock:
            for window in self._windows:
                for label, kib in totals.items():
                    window.peak[label] = max(window.peak.get(label, 0), kib)
                    window.peak_one[label] = max(window.peak_one.get(label, 0), largest[label])
            if now - self._last_timeline >= 1.0:
                self._last_timeline = now
                self.timeline.extend(
                    (round(now - self._t0, 1), label, round(kib / 1024, 1))
                    for label, kib in totals.items()
                )

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.sample()

    @contextmanager
    def window(self) -> Iterator[list[Usage]]:
        """Measure a block: the yielded list holds one Usage once the block ends."""
        window = _Window(time.monotonic(), self._cpu())
        with self._lock:
            self._windows.append(window)
        out: list[Usage] = []
        try:
            self.sample()
            yield out
        finally:
            self.sample()
            with self._lock:
                self._windows.remove(window)
            cpu_end = self._cpu()
            out.append(
                Usage(
                    seconds=time.monotonic() - window.started,
                    peak_rss_mib={k: round(v / 1024, 1) for k, v in window.peak.items()},
                    peak_process_mib={k: round(v / 1024, 1) for k, v in window.peak_one.items()},
                    cpu_seconds={
                        k: round(max(0.0, cpu_end.get(k, 0.0) - v), 2)
                        for k, v in window.cpu_start.items()
                    },
                )
            )
