"""Group commit: concurrent single commands of one process share one save.

Every save holds the event table's lock over a few round trips, and the Python that
decides a movement runs one thread at a time anyway, so 32 callers each saving alone
queue on the lock and on each other's conflicts (32 surrenders all credit the national
surrender account: 31 of them lose the race and retry). One committer thread instead
takes whatever has queued up since its last save, decides it in order on one unit of
work and saves it at once; each caller waits only for its own answer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from queue import Empty, SimpleQueue
from typing import Generic, TypeVar

Request = TypeVar("Request")
Answer = TypeVar("Answer")

log = logging.getLogger("registry.group_commit")

MAX_GROUP = 2000
"""Requests (movements: a batch weighs its rows) after which a group stops taking more
callers' requests."""


class GroupCommit(Generic[Request, Answer]):
    """Queue requests; one thread runs them in groups, taking queued requests until
    their total ``weight`` reaches ``limit`` (always at least one).

    ``run`` gets a group's requests in arrival order and returns one outcome per
    request: its answer, or the exception that request's caller gets. An exception
    escaping ``run`` is given to every caller of the group.

    ``idle``, if given, runs on the thread whenever no request came for
    ``idle_seconds``: the movements keep their cached accounts current with what other
    processes write, so the first caller after a quiet spell does not wait while its
    group catches up on all of it (or, past 20,000 events, reloads every account).
    """

    def __init__(
        self,
        run: Callable[[Sequence[Request]], Sequence[Answer | BaseException]],
        limit: int,
        name: str,
        weight: Callable[[Request], int] = lambda _: 1,
        idle: Callable[[], None] | None = None,
        idle_seconds: float = 1.0,
    ) -> None:
        self._run = run
        self._idle = idle
        self._idle_seconds = idle_seconds if idle is not None else None
        self._idle_failing = False
        self._limit = limit
        self._weight = weight
        self._name = name
        self._queue: SimpleQueue[tuple[Request, Future[Answer]] | None] = SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        self._group: list[tuple[Request, Future[Answer]]] = []
        """The group being formed or run (on the group's thread only)."""
        self._load = 0
        self._stopping = False
        """``close`` was asked for: stop after the group being run."""

    def submit(self, request: Request) -> Answer:
        """Run ``request`` in the next group and return its answer (or raise)."""
        if threading.current_thread() is self._thread:
            # A request made while deciding a group (a hook calling back in) runs on
            # its own at once: queued, it would wait for the thread that waits for it.
            running, self._group = self._group, []  # take_more: nothing to join it
            try:
                outcome = self._run([request])[0]
            finally:
                self._group = running
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome
        future: Future[Answer] = Future()
        self._ensure_started()
        self._queue.put((request, future))
        return future.result()

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        with self._start_lock:
            self._closed = True
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()

    def _ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._closed:
                raise RuntimeError(f"{self._name} is closed")
            if self._thread is None:
                # Started on first use, not at construction: a process forked from
                # one that built the application gets its own thread.
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self._idle_seconds)
            except Empty:
                self._run_idle()
                continue
            if first is None:
                return
            self._group, self._load = [first], self._weight(first[0])
            self._fill()
            group, self._group = self._group, []
            self._answer(group)
            if self._stopping:
                return

    def take_more(self) -> list[Request]:
        """Requests queued since the group being run was formed (up to the limit),
        joined to it: ``run`` calls this on the group's thread once it holds what it
        waited for, and answers them too, in order after the others.

        A group waits for the writer lock while another process holds it (every
        surrender credits CN-SURRENDER): the callers answered meanwhile queue again,
        and without this they made a group of their own, waiting for the lock again
        (the national year's surrender groups averaged 3.5 requests without it and
        5.9 with it, most then at the bench's 8 serving threads: fewer saves; the
        phase's time did not change beyond the machine's spread)."""
        if threading.current_thread() is not self._thread or not self._group:
            return []
        before = len(self._group)
        self._fill()
        return [request for request, _ in self._group[before:]]

    def _fill(self) -> None:
        """Add queued requests to the group until its weight reaches the limit."""
        while self._load < self._limit and not self._stopping:
            try:
                queued = self._queue.get_nowait()
            except Empty:
                return
            if queued is None:
                self._stopping = True
                return
            self._group.append(queued)
            self._load += self._weight(queued[0])

    def _run_idle(self) -> None:
        """The idle work; a failure (the database away) is logged and tried again at
        the next quiet spell, and never stops the thread."""
        assert self._idle is not None
        try:
            self._idle()
        except Exception as error:
            if not self._idle_failing:  # once per spell of failures, not every second
                log.warning("%s: idle work failed, trying again later: %s", self._name, error)
            self._idle_failing = True
        else:
            self._idle_failing = False

    def _answer(self, group: list[tuple[Request, Future[Answer]]]) -> None:
        """Run the group (which ``take_more`` may lengthen while it runs) and settle
        each caller's future."""
        self._group = group
        try:
            outcomes = self._run([request for request, _ in group])
            if len(outcomes) != len(group):
                raise RuntimeError(f"{len(outcomes)} outcomes for {len(group)} requests")
        except BaseException as error:
            for _, future in group:
                future.set_exception(error)
            return
        finally:
            self._group = []
        for (_, future), outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
