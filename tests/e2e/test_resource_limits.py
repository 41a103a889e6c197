"""Issue 15, item 5: low-privilege callers must not take every server thread.

Each test reproduces an attack against a real server over real channels, with few
worker threads (``max_workers=4``) so exhaustion shows at once, and checks that an
honest caller of another principal is still served promptly while the attacker is
refused with a reason. Before the limits, each of these honest calls timed out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from registry.client import RegistryClient, error_details
from registry.settings import ConfigurationError, Settings
from registry.v1 import account_service_pb2 as account_pb
from registry.v1 import audit_service_pb2 as audit_pb
from registry.v1 import audit_service_pb2_grpc as audit_grpc
from services.server import ServerSettings
from tests.e2e.conftest import Api, running_api
from tests.e2e.market import ALLOCATIONS, TRADER, caught_up, head_position, seed_market, trade

A = next(iter(ALLOCATIONS))
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
PROMPT = 2.0
"""Seconds an honest call may take while the attack goes on (the machine is shared)."""


def honest_call(api: Api) -> float:
    """The exchange reads an account, as it does all day; returns how long it took."""
    exchange = api.exchange
    started = time.monotonic()
    exchange.accounts.GetAccount(
        account_pb.GetAccountRequest(account_id="CN-ISSUANCE"),
        metadata=exchange.metadata,
        timeout=PROMPT + 3,
    )
    return time.monotonic() - started


def hammer(
    call: Callable[[], object], stop: threading.Event, outcomes: list[tuple[grpc.StatusCode, str]]
) -> threading.Thread:
    """A thread making ``call`` again and again until ``stop``, noting each refusal."""

    def loop() -> None:
        while not stop.is_set():
            try:
                call()
                outcomes.append((grpc.StatusCode.OK, ""))
            except grpc.RpcError as error:
                details = error_details(error)
                outcomes.append((details.code, details.reason))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def attack(
    api: Api, call: Callable[[], object], threads: int, seconds: float
) -> tuple[list[float], list[tuple[grpc.StatusCode, str]]]:
    """``threads`` attackers loop ``call`` while the honest caller calls every 0.2 s;
    returns the honest calls' durations and the attackers' outcomes."""
    stop, outcomes = threading.Event(), []
    attackers = [hammer(call, stop, outcomes) for _ in range(threads)]
    time.sleep(0.5)  # the attackers are in
    honest = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            try:
                honest.append(honest_call(api))
            except grpc.RpcError as error:
                honest.append(float("inf"))
                assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error
            time.sleep(0.2)
    finally:
        stop.set()
        for thread in attackers:
            thread.join(30)
    return honest, outcomes


def test_an_operator_looping_min_position_far_ahead_cannot_take_the_threads(tmp_path: Path) -> None:
    """GetBalances with min_position=2**62 parked a thread for 5 s per call: eight
    looping callers held all four threads and the exchange's calls timed out. Now the
    position is refused at once (INVALID_ARGUMENT: beyond the log's head)."""
    with running_api("sqlite", tmp_path, max_workers=4) as api:
        caught_up(api.operator)
        operator = api.operator
        request = account_pb.GetBalancesRequest(account_id="CN-ISSUANCE", min_position=2**62)
        honest, outcomes = attack(
            api,
            lambda: operator.accounts.GetBalances(request, metadata=operator.metadata, timeout=30),
            threads=8,
            seconds=4,
        )
        assert max(honest) < PROMPT, honest
        assert outcomes and set(outcomes) <= {
            (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_POSITION"),
            (EXHAUSTED, "TOO_MANY_CALLS"),
        }, set(outcomes)


def test_one_caller_holds_at_most_its_share_of_the_threads(tmp_path: Path) -> None:
    """A slow call (here: read-your-writes while no projection runs, 5 s each) from
    one caller looping on eight threads held every thread. Now a caller may hold at
    most max_workers less a quarter (3 of 4): the rest are refused at once with
    TOO_MANY_CALLS, and the exchange is served."""
    with running_api("sqlite", tmp_path, max_workers=4, projections_in_process=False) as api:
        operator = api.operator
        head = head_position(operator)
        request = account_pb.GetBalancesRequest(account_id="CN-ISSUANCE", min_position=head)
        honest, outcomes = attack(
            api,
            lambda: operator.accounts.GetBalances(request, metadata=operator.metadata, timeout=30),
            threads=8,
            seconds=6,
        )
        assert max(honest) < PROMPT, honest
        assert (EXHAUSTED, "TOO_MANY_CALLS") in outcomes
        assert (grpc.StatusCode.UNAVAILABLE, "READ_MODELS_BEHIND") in outcomes
        # the attacker's share is given back as its calls end
        assert (
            operator.call(
                operator.accounts.GetAccount, account_pb.GetAccountRequest(account_id="CN-ISSUANCE")
            ).account.account_id
            == "CN-ISSUANCE"
        )


def busy_log(api: Api, trades: int = 500) -> None:
    """Enough events that an unread stream fills the client's flow-control window
    (64 KiB without BDP probing) and the server's write blocks."""
    seed_market(api.regulator)
    for start in range(0, trades, 250):
        api.exchange.settle_trades(
            [
                trade(f"X-{i}", A if i % 2 == 0 else TRADER, TRADER if i % 2 == 0 else A, 1)
                for i in range(start, min(trades, start + 250))
            ]
        )


@pytest.fixture
def slow_reader() -> Iterator[Callable[[Api, str], Any]]:
    """Stubs on a channel of their own that never widens its receive window, the
    cheapest way to make a server stream block: what a reader that stops reading does."""
    channels: list[grpc.Channel] = []

    def stub(api: Api, token: str) -> Any:
        channel = grpc.insecure_channel(
            api.address,
            options=[("grpc.http2.bdp_probe", 0), ("grpc.use_local_subchannel_pool", 1)],
        )
        channels.append(channel)
        audit = audit_grpc.AuditServiceStub(channel)
        metadata = (("authorization", f"Bearer {token}"),)

        def open_stream() -> Any:
            return audit.StreamEvents(
                audit_pb.StreamEventsRequest(page_size=100), metadata=metadata, timeout=120
            )

        return open_stream

    yield stub
    for channel in channels:
        channel.close()


def test_unread_streams_cannot_hold_every_thread(tmp_path: Path, slow_reader: Any) -> None:
    """Two readers each opening two StreamEvents and not reading held all four threads
    (the per-caller stream limit is 4): the exchange's calls timed out. Now streams in
    a process stay below the worker threads (half of them by default): the third and
    fourth are refused with STREAMS_AT_CAPACITY, and the exchange is served."""
    with running_api("sqlite", tmp_path, max_workers=4) as api:
        busy_log(api)
        opened, refused = [], []
        for reader in ("regulator", "auditor"):
            open_stream = slow_reader(api, api.tokens[reader])
            for _ in range(2):
                stream = open_stream()
                try:
                    assert next(stream).events  # one page read, then no more
                    opened.append(stream)
                except grpc.RpcError as error:
                    refused.append(error_details(error))
        assert len(opened) == 2
        assert [(e.code, e.reason) for e in refused] == [(EXHAUSTED, "STREAMS_AT_CAPACITY")] * 2
        assert refused[0].metadata["limit"] == "2"
        time.sleep(0.5)
        assert honest_call(api) < PROMPT
        for stream in opened:
            stream.cancel()


def test_a_stream_whose_reader_stops_reading_is_cancelled(
    tmp_path: Path, slow_reader: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A stream whose client takes no message for REGISTRY_STREAM_STALL_SECONDS is
    cancelled and its thread freed (before, it was held for as long as the client kept
    the connection): the reader that comes back finds the stream CANCELLED, and the
    capacity is free for new streams."""
    with (
        running_api("sqlite", tmp_path, max_workers=4, stream_stall_seconds=1) as api,
        caplog.at_level(logging.INFO, logger="registry.api"),
    ):
        busy_log(api)
        open_stream = slow_reader(api, api.tokens["regulator"])
        stalled = [open_stream() for _ in range(2)]
        for stream in stalled:
            assert next(stream).events
        time.sleep(3)  # the stall budget passes; the watchdog checks 4 times a second
        for stream in stalled:
            with pytest.raises(grpc.RpcError) as ended:
                for _ in stream:  # what was buffered, then the cancellation
                    pass
            assert ended.value.code() == grpc.StatusCode.CANCELLED
        lines = [r.getMessage() for r in caplog.records if "StreamEvents" in r.getMessage()]
        assert sum("CANCELLED STREAM_STALLED" in line for line in lines) == 2, lines
        # both streams' places are free again (two at once: the process limit is 2)
        again = [open_stream() for _ in range(2)]
        assert all(next(stream).events for stream in again)
        for stream in again:
            stream.cancel()


def test_a_stream_ends_at_its_time_budget_and_resumes(tmp_path: Path, slow_reader: Any) -> None:
    """A reader that reads, but slowly, held its thread for as long as it liked; now a
    stream ends after REGISTRY_STREAM_MAX_SECONDS with RESOURCE_EXHAUSTED
    STREAM_TIME_LIMIT, and the reader resumes from the last position it received,
    missing nothing."""
    with running_api("sqlite", tmp_path, stream_max_seconds=1) as api:
        busy_log(api)
        reg = api.regulator
        head = head_position(reg)
        received: list[int] = []
        stream = slow_reader(api, api.tokens["regulator"])()
        with pytest.raises(grpc.RpcError) as ended:
            for page in stream:
                received.extend(e.position for e in page.events)
                time.sleep(0.25)
        error = error_details(ended.value)
        assert (error.code, error.reason) == (EXHAUSTED, "STREAM_TIME_LIMIT")
        assert error.metadata["limit"] == "1"
        assert 100 <= len(received) < head
        rest = [
            e.position
            for page in reg.audit.StreamEvents(
                audit_pb.StreamEventsRequest(after_position=received[-1]),
                metadata=reg.metadata,
                timeout=30,
            )
            for e in page.events
        ]
        assert received + rest == list(range(1, head + 1))


def _states(channel: grpc.Channel) -> list[grpc.ChannelConnectivity]:
    seen: list[grpc.ChannelConnectivity] = []
    channel.subscribe(seen.append, try_to_connect=False)
    return seen


def test_idle_and_old_connections_are_closed_by_the_server(tmp_path: Path) -> None:
    """Connection lifetimes are the server's (REGISTRY_CONNECTION_IDLE_SECONDS and
    REGISTRY_CONNECTION_AGE_SECONDS): an idle connection is closed, and a busy one
    is asked to reconnect when old, without failing a call. Before, a connection
    lived as long as its client liked."""
    with running_api(
        "sqlite", tmp_path, connection_idle_seconds=1, connection_age_seconds=2
    ) as api:
        idle = RegistryClient(api.address, api.tokens["auditor"], timeout=10, attempts=1)
        busy = RegistryClient(api.address, api.tokens["auditor"], timeout=10, attempts=1)
        try:
            caught_up(idle)  # the national accounts are projected before the reads below
            idle_states = _states(idle.channel)
            busy_states = _states(busy.channel)
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline:
                busy.balances("CN-ISSUANCE")  # never fails
                time.sleep(0.1)
            assert grpc.ChannelConnectivity.IDLE in idle_states, idle_states
            assert busy_states.count(grpc.ChannelConnectivity.READY) >= 2, busy_states
        finally:
            idle.close()
            busy.close()


def test_stream_limits_must_leave_threads_for_calls() -> None:
    """REGISTRY_MAX_STREAMS at or above REGISTRY_MAX_WORKERS would let streams take
    every thread again: such a configuration does not start."""
    with pytest.raises(ConfigurationError, match="REGISTRY_MAX_STREAMS"):
        ServerSettings(max_workers=8, max_streams=8)
    with pytest.raises(ConfigurationError, match="REGISTRY_MAX_WORKERS"):
        ServerSettings(max_workers=1)
    with pytest.raises(ConfigurationError, match="REGISTRY_MAX_STREAMS"):
        ServerSettings.from_env(
            Settings("sqlite:///registry.sqlite"),
            {"REGISTRY_MAX_WORKERS": "4", "REGISTRY_MAX_STREAMS": "4"},
        )
    chosen = ServerSettings.from_env(
        Settings("sqlite:///registry.sqlite"),
        {"REGISTRY_MAX_CALLS_PER_PRINCIPAL": "5", "REGISTRY_STREAM_STALL_SECONDS": "7"},
    )
    assert (chosen.limits.calls_per_principal, chosen.limits.stall_seconds) == (5, 7)
    limits = ServerSettings(max_workers=16).limits
    assert (limits.streams, limits.calls_per_principal, limits.streams_per_principal) == (8, 12, 4)
