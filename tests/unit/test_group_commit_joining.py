"""A group that waited (for the writer lock, in the registry) takes in the requests
queued meanwhile: they are decided with it and answered by it, up to the limit,
instead of forming a group of their own that waits again."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from registry.application.group_commit import GroupCommit


def test_requests_queued_while_a_group_waits_join_it_up_to_the_limit() -> None:
    """Worked through: request 1 starts a group, which waits (as for a lock) until
    requests 2 to 5 have queued; it then takes in 2, 3 and 4 (the limit is 4) and
    answers all four; 5 runs in the next group, alone. Every caller gets its own
    answer (n * 10)."""
    groups: list[list[int]] = []
    first_waits = threading.Event()
    queued = threading.Event()
    group: GroupCommit[int, int]

    def run(requests: Sequence[int]) -> list[int | BaseException]:
        taken = list(requests)
        if not groups:
            first_waits.set()
            assert queued.wait(5)
            taken += group.take_more()
        groups.append(taken)
        return [n * 10 for n in taken]

    group = GroupCommit(run, limit=4, name="t")
    try:
        with ThreadPoolExecutor(5) as pool:
            first = pool.submit(group.submit, 1)
            assert first_waits.wait(5)
            rest = [pool.submit(group.submit, n) for n in (2, 3, 4, 5)]
            while group._queue.qsize() < 4:  # all four queued behind the waiting group
                threading.Event().wait(0.01)
            queued.set()
            answers = [f.result(5) for f in (first, *rest)]
        assert answers == [10, 20, 30, 40, 50]
        assert groups == [[1, 2, 3, 4], [5]]
    finally:
        group.close()


def test_nothing_joins_outside_a_group_or_a_request_made_from_within_one() -> None:
    """``take_more`` from another thread takes nothing; a request made while a group
    runs (a hook calling back in) runs alone, and a ``take_more`` inside it takes
    nothing, even with a request queued (3): that one is the next group's."""
    inner: list[list[int]] = []
    group: GroupCommit[int, int]
    later: list[int] = []

    def run(requests: Sequence[int]) -> list[int | BaseException]:
        if requests == [1]:
            waiting = threading.Thread(target=lambda: later.append(group.submit(3)))
            waiting.start()
            while group._queue.qsize() < 1:  # 3 queued behind this group
                threading.Event().wait(0.01)
            assert group.submit(2) == 20  # nested: runs at once, on this thread
        else:
            inner.append([*requests, *group.take_more()])
        return [n * 10 for n in requests]

    group = GroupCommit(run, limit=10, name="t")
    try:
        assert group.take_more() == []
        assert group.submit(1) == 10
        while not later:
            threading.Event().wait(0.01)
        assert later == [30]
        assert inner == [[2], [3]]
    finally:
        group.close()
