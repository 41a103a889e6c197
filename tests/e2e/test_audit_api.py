"""AuditService over a real channel (the event stream and its resumption, account
history, past balances, serial traces, supply), and authentication of every service."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from registry.application.audit_events import read_events
from registry.client import RegistryClient
from registry.domain.accounts import Account
from registry.v1 import account_service_pb2 as account_pb
from registry.v1 import audit_service_pb2 as pb
from registry.v1 import common_pb2 as common
from registry.v1 import settlement_service_pb2 as settlement_pb
from services.audit import _add_events
from services.server import SERVICE_NAMES
from tests.e2e.conftest import INVALID, NOT_FOUND, Api, rpc_error, running_api
from tests.e2e.market import (
    ALLOCATIONS,
    CCER,
    CEA,
    CEA_2025,
    ISSUED,
    TRADER,
    cancel,
    caught_up,
    emissions,
    freeze,
    head_position,
    issue,
    record_emissions,
    register_project,
    reverse,
    seed_market,
    surrender,
    trade,
    transaction,
    unfreeze,
)

A, B = list(ALLOCATIONS)
EXCHANGE_PARTY = "shanghai-exchange"
CCER_2024 = common.UnitClass(unit_type=CCER, vintage=2024, project="CCER-2024-0117")


def stream(client: RegistryClient, **fields: object) -> list[pb.StreamEventsResponse]:
    return list(
        client.audit.StreamEvents(
            pb.StreamEventsRequest(**fields), metadata=client.metadata, timeout=30
        )
    )


def events_of(pages: list[pb.StreamEventsResponse]) -> list[pb.Event]:
    return [event for page in pages for event in page.events]


def the_log(api: Api, topics: list[str] | None = None) -> list[tuple[int, str, int, str, str]]:
    """(position, aggregate id, version, topic, payload) of every stored event, as the
    event store's recorder has them."""
    notes = api.registry.recorder.select_notifications(
        start=1, limit=1_000_000, topics=topics or []
    )
    return [
        (n.id, str(n.originator_id), n.originator_version, n.topic, n.state.decode()) for n in notes
    ]


def as_rows(events: list[pb.Event]) -> list[tuple[int, str, int, str, str]]:
    return [
        (e.position, e.aggregate_id, e.aggregate_version, e.event_type, e.payload_json)
        for e in events
    ]


def busy_market(api: Api) -> int:
    """The seeded market plus trades, a freeze, a surrender and a cancellation; returns
    the last write's position."""
    reg, exchange, operator = api.regulator, api.exchange, api.operator
    seed_market(reg)
    exchange.settle_trades([trade("T-1", A, TRADER, 1_000), trade("T-2", TRADER, B, 300)])
    freeze(reg, "FRZ-1", B)
    unfreeze(reg, "UNF-1", B)
    record_emissions(reg, emissions(A, 20_000))
    operator.call(operator.accounts.SurrenderUnits, surrender("S-1", A, 500))
    return operator.call(operator.accounts.CancelUnits, cancel("C-1", B, 200)).transaction.position


# -- StreamEvents -----------------------------------------------------------------------


def test_stream_events_returns_the_log_as_stored(api: Api) -> None:
    reg = api.regulator
    busy_market(api)
    log = the_log(api)
    head = log[-1][0]
    assert len(log) >= 30

    pages = stream(reg)  # default page size: one page here
    assert [(p.last_position, p.head_position) for p in pages] == [(head, head)]
    everything = events_of(pages)
    assert as_rows(everything) == log
    positions = [e.position for e in everything]
    assert all(a < b for a, b in itertools.pairwise(positions))

    small = stream(reg, page_size=7)
    assert [len(p.events) for p in small] == [7] * (len(log) // 7) + (
        [len(log) % 7] if len(log) % 7 else []
    )
    assert [p.last_position for p in small] == [p.events[-1].position for p in small]
    assert {p.head_position for p in small} == {head}
    assert events_of(small) == everything

    after = log[9][0]
    assert as_rows(events_of(stream(reg, after_position=after))) == log[10:]
    assert stream(reg, after_position=head) == []
    assert stream(reg, after_position=head + 100) == []

    limited = stream(reg, max_events=12, page_size=5)
    assert [len(p.events) for p in limited] == [5, 5, 2]
    assert events_of(limited) == everything[:12]
    assert limited[-1].last_position == everything[11].position

    topics = [
        "registry.Account.Frozen",
        "registry.Transaction.Refused",
        "registry.ComplianceObligation.UnitsSurrendered",
    ]
    filtered = stream(reg, event_types=topics, page_size=2)
    assert as_rows(events_of(filtered)) == the_log(api, topics)
    assert [e.event_type for e in events_of(filtered)] == [
        "registry.Account.Frozen",
        "registry.ComplianceObligation.UnitsSurrendered",
    ]
    assert filtered[-1].last_position == head  # filtered-out events are covered too
    assert stream(reg, event_types=["registry.Nothing.Happened"]) == [
        pb.StreamEventsResponse(last_position=head, head_position=head)
    ]

    account_uuid = str(Account.id_for(B))
    by_account = events_of(stream(reg, account_id=B, page_size=3))
    assert as_rows(by_account) == [row for row in log if row[1] == account_uuid]
    assert [e.event_type.rsplit(".", 1)[1] for e in by_account] == [
        "Opened",
        "Credited",
        "Credited",
        "Frozen",
        "Unfrozen",
        "Debited",
    ]
    debits = events_of(stream(reg, account_id=B, event_types=["registry.Account.Debited"]))
    assert [e.aggregate_version for e in debits] == [6]
    # GetAccountHistory has the same events (by aggregate version)
    history = reg.call(
        reg.audit.GetAccountHistory, pb.GetAccountHistoryRequest(account_id=B)
    ).events
    assert [
        (e.aggregate_id, e.aggregate_version, e.event_type, e.payload_json) for e in history
    ] == [row[1:] for row in as_rows(by_account)]

    error = rpc_error(lambda: stream(reg, after_position=-1))
    assert (error.code, error.reason) == (INVALID, "INVALID_POSITION")
    assert error.violations[0][0] == "after_position"
    error = rpc_error(lambda: stream(reg, page_size=10_001))
    assert (error.code, error.reason) == (INVALID, "INVALID_PAGE_SIZE")
    error = rpc_error(lambda: stream(reg, account_id="NOPE-0001"))
    assert (error.code, error.reason, error.metadata) == (
        NOT_FOUND,
        "UNKNOWN_ACCOUNT",
        {"account": "NOPE-0001"},
    )


def test_stream_pages_on_the_wire_equal_read_events(api: Api) -> None:
    """On PostgreSQL the pages go out as bytes written straight from the rows (the
    method's serialiser passes them through): what a client parses equals the pages
    ``read_events`` gives, through the stub (a registered method) and through a call
    by name (grpcio's generic handlers), each checked by the interceptors as before."""
    reg = api.regulator
    busy_market(api)
    by_name = reg.channel.unary_stream(
        "/registry.v1.AuditService/StreamEvents",
        request_serializer=pb.StreamEventsRequest.SerializeToString,
        response_deserializer=pb.StreamEventsResponse.FromString,
    )
    head = the_log(api)[-1][0]
    topics = ["registry.Account.Credited", "registry.Transaction.Completed"]
    for fields in (
        {},
        {"page_size": 4},
        {"page_size": 5, "max_events": 12},
        {"after_position": head // 2, "page_size": 3},
        {"event_types": topics, "page_size": 2},
        {"event_types": ["registry.Nothing.Happened"]},
    ):
        want = stream_pages_expected(api, **fields)
        assert want
        assert stream(reg, **fields) == want, fields
        call = by_name(pb.StreamEventsRequest(**fields), metadata=reg.metadata, timeout=30)
        assert list(call) == want, fields
    error = rpc_error(lambda: list(by_name(pb.StreamEventsRequest(after_position=-1), timeout=30)))
    assert error.code is grpc.StatusCode.UNAUTHENTICATED  # no token: refused as any call


def stream_pages_expected(api: Api, **fields: Any) -> list[pb.StreamEventsResponse]:
    """The pages as StreamEvents built them before it sent bytes: ``read_events`` and
    a message per event."""
    pages: list[pb.StreamEventsResponse] = []
    after, sent = fields.get("after_position", 0), 0
    page, most = fields.get("page_size", 5000), fields.get("max_events", 0)
    while True:
        found = read_events(
            api.registry,
            after,
            min(page, most - sent) if most else page,
            fields.get("event_types", []),
        )
        if not found.events and found.last_position == after:
            return pages
        response = pb.StreamEventsResponse(
            last_position=found.last_position, head_position=found.head_position
        )
        _add_events(response.events, found.events)
        pages.append(response)
        after, sent = found.last_position, sent + len(found.events)
        if most and sent >= most:
            return pages


def test_a_stream_resumes_on_a_new_connection_without_gap_or_duplicate(api: Api) -> None:
    busy_market(api)
    full = events_of(stream(api.regulator))
    token = api.tokens["regulator"]

    first = RegistryClient(api.address, token, attempts=1)
    pages = first.audit.StreamEvents(
        pb.StreamEventsRequest(page_size=5), metadata=first.metadata, timeout=30
    )
    received = [next(pages), next(pages)]
    assert [len(p.events) for p in received] == [5, 5]
    assert received[-1].last_position < received[-1].head_position  # more to come
    first.close()  # drop the connection mid-stream

    with RegistryClient(api.address, token, attempts=1) as second:
        rest = list(
            second.audit.StreamEvents(
                pb.StreamEventsRequest(after_position=received[-1].last_position, page_size=5),
                metadata=second.metadata,
                timeout=30,
            )
        )
        resumed = events_of(received) + events_of(rest)
        assert resumed == full
        assert len({e.position for e in resumed}) == len(full)
        # the client's helper resumes by itself and reads the same
        assert list(second.stream_events(page_size=4)) == full
        assert list(second.stream_events(received[-1].last_position, account_id=A)) == [
            e for e in full[10:] if e.aggregate_id == str(Account.id_for(A))
        ]
    # the server is fine after the dropped stream
    assert events_of(stream(api.operator)) == full


# -- GetAccountHistory ------------------------------------------------------------------


def test_account_history_pages_by_token(api: Api) -> None:
    reg = api.regulator
    busy_market(api)
    history = reg.call(
        reg.audit.GetAccountHistory, pb.GetAccountHistoryRequest(account_id=A, page_size=1000)
    )
    assert history.next_page_token == ""
    kinds = [e.event_type.rsplit(".", 1)[1] for e in history.events]
    assert kinds == ["Opened", "Credited", "Debited", "Debited"]  # allocated, sold, surrendered
    assert [e.aggregate_version for e in history.events] == [1, 2, 3, 4]
    assert {e.aggregate_id for e in history.events} == {str(Account.id_for(A))}
    assert '"principal":"mee/regulator-li"' in history.events[0].payload_json

    paged: list[pb.Event] = []
    token, pages = "", 0
    while True:
        page = reg.call(
            reg.audit.GetAccountHistory,
            pb.GetAccountHistoryRequest(account_id=A, page_size=3, page_token=token),
        )
        paged.extend(page.events)
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert (paged, pages) == (list(history.events), 2)
    # default page size 100
    assert (
        reg.call(reg.audit.GetAccountHistory, pb.GetAccountHistoryRequest(account_id=A)).events
        == history.events
    )

    error = rpc_error(
        lambda: reg.call(
            reg.audit.GetAccountHistory, pb.GetAccountHistoryRequest(account_id="NOPE-0001")
        )
    )
    assert (error.code, error.reason, error.metadata) == (
        NOT_FOUND,
        "UNKNOWN_ACCOUNT",
        {"account": "NOPE-0001"},
    )
    for bad in ("garbage", "WyJ4IiwgMl0=", "WyJ2IiwgLTFd"):  # junk, ["x", 2], ["v", -1]
        error = rpc_error(
            lambda t=bad: reg.call(
                reg.audit.GetAccountHistory, pb.GetAccountHistoryRequest(account_id=A, page_token=t)
            )
        )
        assert (error.code, error.reason) == (INVALID, "INVALID_PAGE_TOKEN")
        assert error.violations[0][0] == "page_token"
    error = rpc_error(
        lambda: reg.call(
            reg.audit.GetAccountHistory, pb.GetAccountHistoryRequest(account_id=A, page_size=5000)
        )
    )
    assert (error.code, error.reason) == (INVALID, "INVALID_PAGE_SIZE")


def test_account_history_events_carry_their_log_positions(api: Api) -> None:
    busy_market(api)
    reg = api.regulator
    for account_id in (A, B, "CN-ISSUANCE"):
        history = []
        token = ""
        while True:  # across pages too
            page = reg.call(
                reg.audit.GetAccountHistory,
                pb.GetAccountHistoryRequest(account_id=account_id, page_size=2, page_token=token),
            )
            history.extend(page.events)
            token = page.next_page_token
            if not token:
                break
        streamed = events_of(stream(reg, account_id=account_id))
        assert as_rows(history) == as_rows(streamed)
        assert all(e.position > 0 for e in history)


# -- GetBalancesAsOf --------------------------------------------------------------------


def test_balances_as_of_before_and_after_a_trade(api: Api) -> None:
    reg, exchange = api.regulator, api.exchange
    seed_market(reg)
    [sold] = exchange.settle_trades([trade("T-1", A, TRADER, 7)])
    reg.balances(A, min_position=sold.position)
    at = transaction(exchange, "T-1").record_time
    just_before = Timestamp()
    just_before.FromDatetime(at.ToDatetime() - timedelta(microseconds=1))

    def as_of(
        account_id: str, moment: Timestamp
    ) -> list[tuple[str, common.UnitClass, int, int, int]]:
        response = reg.call(
            reg.audit.GetBalancesAsOf,
            pb.GetBalancesAsOfRequest(account_id=account_id, as_of_time=moment),
        )
        assert (response.account_id, response.as_of_time) == (account_id, moment)
        return [
            (h.account_id, h.unit_class, h.total, h.held, h.available) for h in response.holdings
        ]

    assert as_of(A, at) == [(A, CEA_2025, 99_993, 0, 99_993)]
    assert as_of(TRADER, at) == [(TRADER, CEA_2025, 7, 0, 7)]
    assert as_of(A, just_before) == [(A, CEA_2025, 100_000, 0, 100_000)]
    assert as_of(TRADER, just_before) == []
    assert as_of(A, Timestamp(seconds=86_400)) == []
    # a later movement does not change the past
    [later] = exchange.settle_trades([trade("T-2", A, TRADER, 3)])
    reg.balances(A, min_position=later.position)
    assert as_of(A, at) == [(A, CEA_2025, 99_993, 0, 99_993)]

    error = rpc_error(
        lambda: reg.call(reg.audit.GetBalancesAsOf, pb.GetBalancesAsOfRequest(account_id=A))
    )
    assert (error.code, error.reason) == (INVALID, "MISSING_FIELD")
    assert error.violations == [("as_of_time", "as_of_time is required")]
    error = rpc_error(lambda: as_of("NOPE-0001", at))
    assert (error.code, error.reason) == (NOT_FOUND, "UNKNOWN_ACCOUNT")


# -- TraceSerial ------------------------------------------------------------------------


def test_trace_serial_follows_it_through_every_holder(api: Api) -> None:
    reg, exchange = api.regulator, api.exchange
    seed_market(reg)
    exchange.settle_trades([trade("T-1", A, TRADER, 1_000), trade("T-2", TRADER, B, 300)])
    undone = reg.call(
        reg.administration.ReverseTransaction, reverse("REV-1", EXCHANGE_PARTY, "T-2", "annulled")
    ).transaction
    reg.balances(A, min_position=undone.position)

    def trace(
        serial: int, unit_class: common.UnitClass = CEA_2025
    ) -> tuple[str, list[tuple[int, str, str, str, str, int, int]]]:
        found = reg.trace_serial(unit_class, serial)
        positions = [m.position for m in found.movements]
        assert positions == sorted(set(positions)) and all(p > 0 for p in positions)
        return found.current_account, [
            (
                m.kind,
                m.party,
                m.transaction_id,
                m.source_account,
                m.destination_account,
                m.first_serial,
                m.last_serial,
            )
            for m in found.movements
        ]

    K = common
    issuance = (K.TRANSACTION_KIND_ISSUANCE, "mee", "ISS-CEA-2025", "", "CN-ISSUANCE", 1, ISSUED)
    to_a = (K.TRANSACTION_KIND_ALLOCATION, "mee", f"ALLOC-2025-{A}", "CN-ISSUANCE", A, 1, 100_000)
    to_trader = (K.TRANSACTION_KIND_SETTLEMENT, EXCHANGE_PARTY, "T-1", A, TRADER, 1, 1_000)
    to_b = (K.TRANSACTION_KIND_SETTLEMENT, EXCHANGE_PARTY, "T-2", TRADER, B, 1, 300)
    back = (K.TRANSACTION_KIND_REVERSAL, "mee", "REV-1", B, TRADER, 1, 300)
    assert trace(1) == (TRADER, [issuance, to_a, to_trader, to_b, back])
    assert trace(300) == (TRADER, [issuance, to_a, to_trader, to_b, back])
    assert trace(301) == (TRADER, [issuance, to_a, to_trader])
    assert trace(2_000) == (A, [issuance, to_a])
    assert trace(120_000)[0] == B
    assert trace(ISSUED) == ("CN-ISSUANCE", [issuance])

    for unit_class, serial in (
        (CEA_2025, ISSUED + 1),
        (common.UnitClass(unit_type=CEA, vintage=2030), 1),
    ):
        error = rpc_error(lambda u=unit_class, s=serial: reg.trace_serial(u, s))
        assert (error.code, error.reason) == (NOT_FOUND, "UNKNOWN_SERIAL")
    error = rpc_error(lambda: reg.trace_serial(CEA_2025, 0))
    assert (error.code, error.reason) == (INVALID, "INVALID_SERIAL")
    assert error.violations == [("serial", "serial must be positive")]
    error = rpc_error(lambda: reg.trace_serial(common.UnitClass(vintage=2025), 1))
    assert (error.code, error.reason) == (INVALID, "MISSING_FIELD")


# -- GetSupply --------------------------------------------------------------------------


def test_supply_is_balanced_per_unit_class(api: Api) -> None:
    reg, exchange, operator = api.regulator, api.exchange, api.operator
    seed_market(reg)
    exchange.call(
        exchange.settlement.PlaceHold,
        settlement_pb.PlaceHoldRequest(
            hold_id="H-1",
            account_id=A,
            unit_type=CEA,
            vintage=2025,
            quantity=40_000,
            timeout_seconds=3600,
        ),
    )
    exchange.settle_trades([trade("T-1", A, TRADER, 1_000)])
    operator.call(operator.accounts.SurrenderUnits, surrender("S-1", A, 500))
    operator.call(operator.accounts.CancelUnits, cancel("C-1", B, 200))
    register_project(reg, "CCER-2024-0117")
    last = issue(reg, "ISS-CCER", 300, CCER_2024).transaction
    reg.balances(A, min_position=last.position)

    def supply() -> dict[str, tuple[int, int, bool, dict[int, tuple[int, int]]]]:
        lines = reg.call(reg.audit.GetSupply, pb.GetSupplyRequest()).lines
        result = {}
        for line in lines:
            by_type = {t.account_type: (t.total, t.held) for t in line.by_account_type}
            assert line.issued == sum(total for total, _ in by_type.values())
            assert line.held_in_accounts == line.issued and line.balanced
            key = f"{common.UnitType.Name(line.unit_class.unit_type)}/{line.unit_class.vintage}"
            result[key] = (line.issued, line.held_in_accounts, line.balanced, by_type)
        return result

    T = common
    assert supply() == {
        "UNIT_TYPE_CCER/2024": (300, 300, True, {T.ACCOUNT_TYPE_PROJECT: (300, 0)}),
        "UNIT_TYPE_CEA/2025": (
            ISSUED,
            ISSUED,
            True,
            {
                T.ACCOUNT_TYPE_ISSUANCE: (ISSUED - 150_000, 0),
                T.ACCOUNT_TYPE_COMPLIANCE: (150_000 - 1_000 - 500 - 200, 40_000),
                T.ACCOUNT_TYPE_TRADING: (1_000, 0),
                T.ACCOUNT_TYPE_SURRENDER: (500, 0),
                T.ACCOUNT_TYPE_CANCELLATION: (200, 0),
            },
        ),
    }
    lines = reg.call(reg.audit.GetSupply, pb.GetSupplyRequest()).lines
    assert [line.unit_class for line in lines] == [CCER_2024, CEA_2025]
    # a reversal moves units back; supply stays balanced
    undone = reg.call(
        reg.administration.ReverseTransaction, reverse("REV-1", "huaneng", "S-1")
    ).transaction
    reg.balances(A, min_position=undone.position)
    assert supply()["UNIT_TYPE_CEA/2025"][3][T.ACCOUNT_TYPE_SURRENDER] == (0, 0)


# -- authentication ---------------------------------------------------------------------

BAD_CREDENTIALS = [
    ((), "MISSING_CREDENTIALS"),
    ((("authorization", "Bearer tok-not-a-known-token-000"),), "INVALID_CREDENTIALS"),
    (
        (("authorization", "0123456789abcdef.not-a-real-secret-but-long-enough"),),
        "INVALID_CREDENTIALS",
    ),  # no scheme
    (
        (("authorization", "Basic 0123456789abcdef.not-a-real-secret-but-long-enough"),),
        "INVALID_CREDENTIALS",
    ),
    ((("authorization", "Bearer "),), "INVALID_CREDENTIALS"),
]


def every_method() -> Iterator[tuple[str, bool, type]]:
    """(full method name, server streaming, request class) of every registry RPC."""
    from google.protobuf import descriptor_pool

    pool = descriptor_pool.Default()
    for service_name in SERVICE_NAMES:
        service = pool.FindServiceByName(service_name)
        for method in service.methods:
            yield (
                f"/{service_name}/{method.name}",
                method.server_streaming,
                message_factory.GetMessageClass(method.input_type),
            )


def test_every_method_of_every_service_needs_a_valid_token(api: Api) -> None:
    reg = api.regulator
    seed_market(reg)
    head = head_position(reg)
    methods = list(every_method())
    assert {name.split("/")[1] for name, _, _ in methods} == {
        "registry.v1.SettlementService",
        "registry.v1.AccountService",
        "registry.v1.AdministrationService",
        "registry.v1.AuditService",
        "registry.v1.AccessService",
    }
    assert len(methods) == 6 + 8 + 26 + 9 + 7
    writes = {
        "OpenAccount": {
            "account_id": "TRD-XX-0001",
            "account_type": 6,
            "holder": common.Holder(name="Sneaky"),
        },
        "IssueUnits": {"transaction_id": "ISS-X", "unit_class": CEA_2025, "quantity": 5},
        "FreezeAccount": {"request_id": "F-X", "account_id": A},
        "TransferUnits": {
            "transaction_id": "TR-X",
            "source_account_id": A,
            "destination_account_id": "PWR-SD-0002",
            "unit_type": 1,
            "quantity": 5,
            "reason": "sneaky",
        },
    }
    with grpc.insecure_channel(api.address) as channel:
        for name, streaming, request_class in methods:
            request = request_class(**writes.get(name.rsplit("/", 1)[1], {}))
            call = (channel.unary_stream if streaming else channel.unary_unary)(
                name,
                request_serializer=request_class.SerializeToString,
                response_deserializer=lambda data: data,
            )
            for metadata, reason in BAD_CREDENTIALS:

                def invoke(
                    c: Callable[..., object] = call,
                    r: object = request,
                    m: tuple[tuple[str, str], ...] = metadata,
                    s: bool = streaming,
                ) -> object:
                    response = c(r, metadata=m, timeout=10)
                    return list(response) if s else response  # type: ignore[call-overload]

                error = rpc_error(invoke)
                assert (error.code, error.reason, error.domain) == (
                    grpc.StatusCode.UNAUTHENTICATED,
                    reason,
                    "carbon-registry.v1",
                ), name
    # nothing was written or opened by the refused calls
    assert head_position(reg) == head
    error = rpc_error(
        lambda: reg.call(
            reg.accounts.GetAccount, account_pb.GetAccountRequest(account_id="TRD-XX-0001")
        )
    )
    assert error.code == NOT_FOUND
    # and a valid token still authenticates every kind of caller (an administrator is
    # then refused by the policy: reading accounts is not its role)
    for name, client in api.clients.items():

        def read(c: RegistryClient = client) -> str:
            return c.call(
                c.accounts.GetAccount, account_pb.GetAccountRequest(account_id=A)
            ).account.account_id

        if name in ("admin", "admin2"):
            assert rpc_error(read).reason == "ROLE_NOT_GRANTED"
        else:
            assert read() == A


def test_health_and_reflection_need_no_token(api: Api) -> None:
    with grpc.insecure_channel(api.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", *SERVICE_NAMES):
            response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert response.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.RpcError) as unknown:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
        assert unknown.value.code() == NOT_FOUND

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="registry.v1.AuditService"
            ),
        ]
        listed, described = list(reflection.ServerReflectionInfo(iter(requests), timeout=10))
        assert {s.name for s in listed.list_services_response.service} == {
            *SERVICE_NAMES,
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        }
        assert described.file_descriptor_response.file_descriptor_proto
        assert not described.HasField("error_response")


# -- BadRequest names the offending field -----------------------------------------------


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def seeded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    with running_api(request.param, tmp_path_factory.mktemp("audit")) as api:
        seed_market(api.regulator)
        caught_up(api.regulator)
        yield api


def _trace(unit_class: common.UnitClass, serial: int) -> Callable[[RegistryClient], object]:
    return lambda c: c.trace_serial(unit_class, serial)


def _history(**fields: object) -> Callable[[RegistryClient], object]:
    return lambda c: c.call(c.audit.GetAccountHistory, pb.GetAccountHistoryRequest(**fields))


AUDIT_CASES = [
    pytest.param(
        lambda c: stream(c, after_position=-5),
        "INVALID_POSITION",
        ["after_position"],
        id="stream-negative-after-position",
    ),
    pytest.param(
        lambda c: stream(c, max_events=-1),
        "INVALID_POSITION",
        ["max_events"],
        id="stream-negative-max-events",
    ),
    pytest.param(
        lambda c: stream(c, page_size=20_000),
        "INVALID_PAGE_SIZE",
        ["page_size"],
        id="stream-page-size",
    ),
    pytest.param(
        lambda c: stream(c, account_id="x"),
        "INVALID_ACCOUNT_ID",
        ["account_id"],
        id="stream-bad-account-id",
    ),
    pytest.param(_history(), "MISSING_FIELD", ["account_id"], id="history-no-account"),
    pytest.param(
        _history(account_id=A, page_token="garbage"),
        "INVALID_PAGE_TOKEN",
        ["page_token"],
        id="history-page-token",
    ),
    pytest.param(
        _history(account_id=A, page_size=1001),
        "INVALID_PAGE_SIZE",
        ["page_size"],
        id="history-page-size",
    ),
    pytest.param(
        lambda c: c.call(c.audit.GetBalancesAsOf, pb.GetBalancesAsOfRequest(account_id=A)),
        "MISSING_FIELD",
        ["as_of_time"],
        id="as-of-no-time",
    ),
    pytest.param(_trace(CEA_2025, -3), "INVALID_SERIAL", ["serial"], id="trace-serial"),
    pytest.param(
        _trace(common.UnitClass(vintage=2025), 1),
        "MISSING_FIELD",
        ["unit_class.unit_type"],
        id="trace-no-unit-type",
    ),
    pytest.param(
        _trace(common.UnitClass(unit_type=CEA, vintage=2025, project="P-1"), 1),
        "UNEXPECTED_PROJECT",
        ["unit_class.project"],
        id="trace-cea-with-project",
    ),
    pytest.param(
        _trace(common.UnitClass(unit_type=CEA, vintage=1990), 1),
        "INVALID_VINTAGE",
        ["unit_class.vintage"],
        id="trace-bad-vintage",
    ),
]


@pytest.mark.parametrize(("call", "reason", "fields"), AUDIT_CASES)
def test_invalid_input_names_the_field(
    seeded: Api, call: Callable[[RegistryClient], object], reason: str, fields: list[str]
) -> None:
    error = rpc_error(lambda: call(seeded.regulator))
    assert (error.code, error.reason) == (INVALID, reason)
    assert [field for field, _ in error.violations] == fields


def test_a_caller_may_hold_only_so_many_streams_open(tmp_path: Path) -> None:
    with running_api("sqlite", tmp_path, max_streams_per_principal=2) as api:
        busy_market(api)
        reg = api.regulator
        request = pb.StreamEventsRequest(page_size=1)
        first, second = (
            reg.audit.StreamEvents(request, metadata=reg.metadata, timeout=30) for _ in range(2)
        )
        assert next(first).events and next(second).events  # both open, mid-stream
        error = rpc_error(
            lambda: next(reg.audit.StreamEvents(request, metadata=reg.metadata, timeout=30))
        )
        assert (error.code, error.reason) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "TOO_MANY_STREAMS",
        )
        assert next(
            api.auditor.audit.StreamEvents(  # another caller is not affected
                request, metadata=api.auditor.metadata, timeout=30
            )
        ).events
        first.cancel()
        deadline = time.monotonic() + 10
        while True:  # the cancelled stream's slot is given back
            try:
                assert next(
                    reg.audit.StreamEvents(request, metadata=reg.metadata, timeout=30)
                ).events
                break
            except grpc.RpcError as refused:
                assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert time.monotonic() < deadline
                time.sleep(0.1)
        second.cancel()
