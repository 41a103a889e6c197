"""SettlementService over a real channel: batches, holds, trades, positions, retries."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import grpc
import pytest

from registry.domain.access import Role
from registry.domain.transactions import Principal
from registry.v1 import administration_service_pb2 as admin_pb
from registry.v1 import common_pb2 as common
from registry.v1 import settlement_service_pb2 as pb
from tests.e2e.conftest import Api, rpc_error, running_api
from tests.e2e.market import (
    ALLOCATIONS,
    CEA,
    TRADER,
    balance,
    seed_market,
    trade,
)

SETTLED = pb.TRADE_STATUS_SETTLED
ALREADY = pb.TRADE_STATUS_ALREADY_SETTLED
REFUSED = pb.TRADE_STATUS_REFUSED
REJECTED = pb.TRADE_STATUS_REJECTED
A, B = list(ALLOCATIONS)


def settle(api: Api, *trades: pb.Trade) -> list[pb.TradeResult]:
    return api.exchange.settle_trades(list(trades))


def test_a_mixed_batch_gets_exactly_the_expected_result_per_trade(api: Api) -> None:
    seed_market(api.regulator)
    first = settle(api, trade("T-1", A, TRADER, 1_000), trade("T-2", A, B, 500))
    assert [r.status for r in first] == [SETTLED, SETTLED]
    assert first[0].position > 0 and sum(b.quantity for b in first[0].blocks) == 1_000
    api.regulator.call(
        api.regulator.administration.FreezeAccount,
        admin_pb.FreezeAccountRequest(
            request_id="FRZ-1", account_id=B, reason="court order 2026-17"
        ),
    )
    malformed = trade("T-6", A, TRADER, 10)
    malformed.unit_type = common.UNIT_TYPE_UNSPECIFIED
    undated = trade("T-8", A, TRADER, 10)
    undated.trade_date.year, undated.trade_date.month, undated.trade_date.day = 2026, 2, 30
    results = settle(
        api,
        trade("T-1", A, TRADER, 1_000),  # duplicate of a settled trade
        trade("T-2", A, B, 999),  # same id, other content
        trade("T-3", A, TRADER, 200_000),  # more than A holds
        trade("T-4", B, TRADER, 10),  # B is frozen
        trade("T-5", A, TRADER, 0),  # malformed quantity
        malformed,  # no unit type
        trade("T-7", TRADER, A, 300),  # good
        trade("T-7", TRADER, A, 300),  # repeated within the batch
        undated,  # 30 February
    )
    assert [(r.trade_id, r.status, r.reason) for r in results] == [
        ("T-1", ALREADY, ""),
        ("T-2", REJECTED, "TRANSACTION_EXISTS_WITH_DIFFERENT_CONTENT"),
        ("T-3", REFUSED, "INSUFFICIENT_UNITS"),
        ("T-4", REFUSED, "ACCOUNT_FROZEN"),
        ("T-5", REJECTED, "QUANTITY_NOT_POSITIVE"),
        ("T-6", REJECTED, "MISSING_FIELD"),
        ("T-7", SETTLED, ""),
        ("T-7", ALREADY, ""),
        ("T-8", REJECTED, "INVALID_DATE"),
    ]
    position = results[6].position
    assert balance(api.operator, A, position) == 100_000 - 1_000 - 500 + 300
    assert balance(api.operator, B, position) == 50_000 + 500
    assert balance(api.operator, TRADER, position) == 1_000 - 300
    # refusals are recorded: a retry gets the same answer, and the id stays taken
    again = settle(api, trade("T-3", A, TRADER, 200_000), trade("T-4", B, TRADER, 10))
    assert [(r.status, r.reason) for r in again] == [
        (REFUSED, "INSUFFICIENT_UNITS"),
        (REFUSED, "ACCOUNT_FROZEN"),
    ]
    recorded = api.exchange.call(
        api.exchange.settlement.GetTrade, pb.GetTradeRequest(trade_id="T-3")
    )
    assert recorded.transaction.status == common.TRANSACTION_STATUS_REFUSED
    assert recorded.transaction.refusal_reason == "INSUFFICIENT_UNITS"


def test_trade_ids_are_scoped_by_exchange(api: Api) -> None:
    seed_market(api.regulator)
    other = api.clients["exchange2"]
    assert [r.status for r in settle(api, trade("T-1", A, TRADER, 10))] == [SETTLED]
    assert [r.status for r in other.settle_trades([trade("T-1", A, TRADER, 20)])] == [SETTLED]
    error = rpc_error(
        lambda: other.call(other.settlement.GetTrade, pb.GetTradeRequest(trade_id="T-9"))
    )
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_TRANSACTION")


def test_batch_limits(api: Api) -> None:
    seed_market(api.regulator)
    too_many = pb.SettleTradesRequest(trades=[trade(f"X-{i}", A, TRADER, 1) for i in range(10_001)])
    error = rpc_error(
        lambda: api.exchange.settlement.SettleTrades(
            too_many, metadata=api.exchange.metadata, timeout=30
        )
    )
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "BATCH_TOO_LARGE")
    assert error.metadata["limit"] == "10000" and error.violations[0][0] == "trades"
    error = rpc_error(
        lambda: api.exchange.call(api.exchange.settlement.SettleTrades, pb.SettleTradesRequest())
    )
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "EMPTY_BATCH")
    results = api.exchange.settle_trades(
        [trade(f"B-{i}", A, TRADER, 1) for i in range(5_000)], batch_size=5_000
    )
    assert len(results) == 5_000 and {r.status for r in results} == {SETTLED}
    api.read_models.wait_for(results[-1].position, timeout=120)  # 15,000 events to project
    assert balance(api.operator, TRADER, results[-1].position) == 5_000


def test_holds_reserve_units_and_settle_against_them(api: Api) -> None:
    seed_market(api.regulator)
    ex = api.exchange
    place = pb.PlaceHoldRequest(
        hold_id="H-1",
        account_id=A,
        unit_type=CEA,
        vintage=2025,
        quantity=40_000,
        timeout_seconds=3600,
    )
    placed = ex.call(ex.settlement.PlaceHold, place)
    assert placed.hold.status == common.HOLD_STATUS_ACTIVE and not placed.replayed
    assert ex.call(ex.settlement.PlaceHold, place).replayed
    other = pb.PlaceHoldRequest(
        hold_id="H-1", account_id=A, unit_type=CEA, quantity=1, timeout_seconds=60
    )
    error = rpc_error(lambda: ex.call(ex.settlement.PlaceHold, other))
    assert (error.code, error.reason) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "HOLD_EXISTS_WITH_DIFFERENT_CONTENT",
    )
    too_much = pb.PlaceHoldRequest(
        hold_id="H-2", account_id=A, unit_type=CEA, quantity=70_000, timeout_seconds=60
    )
    error = rpc_error(lambda: ex.call(ex.settlement.PlaceHold, too_much))
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_UNITS")
    # held units cannot be sold outside the hold
    [free] = settle(api, trade("T-1", A, TRADER, 70_000))
    assert (free.status, free.reason) == (REFUSED, "INSUFFICIENT_UNITS")
    [held] = settle(api, trade("T-2", A, TRADER, 25_000, hold_id="H-1"))
    assert held.status == SETTLED
    hold = ex.call(ex.settlement.GetHold, pb.GetHoldRequest(hold_id="H-1")).hold
    assert (hold.status, hold.settled_quantity) == (common.HOLD_STATUS_SETTLED, 25_000)
    [late] = settle(api, trade("T-3", A, TRADER, 1, hold_id="H-1"))
    assert (late.status, late.reason) == (REFUSED, "HOLD_NOT_ACTIVE")
    error = rpc_error(
        lambda: ex.call(ex.settlement.ReleaseHold, pb.ReleaseHoldRequest(hold_id="H-1"))
    )
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "HOLD_NOT_ACTIVE")
    ex.call(
        ex.settlement.PlaceHold,
        pb.PlaceHoldRequest(
            hold_id="H-3", account_id=B, unit_type=CEA, quantity=5, timeout_seconds=60
        ),
    )
    released = ex.call(
        ex.settlement.ReleaseHold, pb.ReleaseHoldRequest(hold_id="H-3", reason="order cancelled")
    )
    assert released.hold.status == common.HOLD_STATUS_RELEASED
    error = rpc_error(lambda: ex.call(ex.settlement.GetHold, pb.GetHoldRequest(hold_id="H-9")))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_HOLD")
    error = rpc_error(lambda: ex.call(ex.settlement.GetHold, pb.GetHoldRequest()))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MISSING_FIELD")
    assert error.violations == [("hold_id", "hold_id is required")]
    assert balance(api.operator, TRADER, held.position) == 25_000


def test_a_desk_sees_and_releases_only_holds_and_trades_on_its_accounts(api: Api) -> None:
    """Issue 15: a desk of an exchange whose grant names one account used to release
    and read the exchange's holds, and read its trades, on any account (the hold or
    trade id is scoped by party only). Now a hold or trade outside the desk's grants is
    answered exactly as an unknown id (so the desk learns nothing of it) and nothing is
    released; on its own account it works as before."""
    seed_market(api.regulator)
    ex = api.exchange  # shanghai-exchange/settlement, over every account
    desk_principal = Principal("shanghai-exchange", "desk-a")
    api.registry.access.grant_role(
        Principal("system", "tests"),
        "desk-a",
        desk_principal,
        Role.EXCHANGE.value,
        (A,),
        "desk over one account",
    )
    desk = api.client(
        api.registry.access.issue_token(
            Principal("system", "tests"), desk_principal, "desk token"
        ).token
    )
    for hold_id, account in (("H-OWN", A), ("H-OTHER", B)):
        ex.call(
            ex.settlement.PlaceHold,
            pb.PlaceHoldRequest(
                hold_id=hold_id, account_id=account, unit_type=CEA, quantity=10, timeout_seconds=600
            ),
        )
    settle(api, trade("T-OWN", A, TRADER, 5), trade("T-OTHER", B, TRADER, 5))

    def answer(call: Any, request: Any) -> tuple[Any, ...]:
        error = rpc_error(lambda: desk.call(call, request))
        return error.code, error.reason, error.message, error.metadata, error.violations

    for call, request, unknown in (
        (
            desk.settlement.GetHold,
            pb.GetHoldRequest(hold_id="H-OTHER"),
            pb.GetHoldRequest(hold_id="H-NONE"),
        ),
        (
            desk.settlement.ReleaseHold,
            pb.ReleaseHoldRequest(hold_id="H-OTHER"),
            pb.ReleaseHoldRequest(hold_id="H-NONE"),
        ),
        (
            desk.settlement.GetTrade,
            pb.GetTradeRequest(trade_id="T-OTHER"),
            pb.GetTradeRequest(trade_id="T-NONE"),
        ),
    ):
        refused = answer(call, request)
        assert refused[0] == grpc.StatusCode.NOT_FOUND
        # the same code, reason, message and metadata as for an id never used, but
        # for the id itself
        never = answer(call, unknown)
        assert refused == tuple(
            part.replace("NONE", "OTHER")
            if isinstance(part, str)
            else {k: v.replace("NONE", "OTHER") for k, v in part.items()}
            if isinstance(part, dict)
            else part
            for part in never
        )
    other = ex.call(ex.settlement.GetHold, pb.GetHoldRequest(hold_id="H-OTHER")).hold
    assert other.status == common.HOLD_STATUS_ACTIVE, "the desk released it"
    # on its own account the desk works as before (a trade on its account and one
    # outside it: it sees the trade, as it sees the movement on its account)
    own = desk.call(desk.settlement.GetHold, pb.GetHoldRequest(hold_id="H-OWN")).hold
    assert (own.account_id, own.status) == (A, common.HOLD_STATUS_ACTIVE)
    assert (
        desk.call(
            desk.settlement.GetTrade, pb.GetTradeRequest(trade_id="T-OWN")
        ).transaction.source_account
        == A
    )
    released = desk.call(
        desk.settlement.ReleaseHold,
        pb.ReleaseHoldRequest(hold_id="H-OWN", reason="order cancelled"),
    )
    assert released.hold.status == common.HOLD_STATUS_RELEASED
    # the exchange-wide principal still reaches both
    assert (
        ex.call(
            ex.settlement.GetTrade, pb.GetTradeRequest(trade_id="T-OTHER")
        ).transaction.source_account
        == B
    )


@pytest.mark.parametrize(
    ("method", "request_", "field"),
    [
        ("GetHold", pb.GetHoldRequest(hold_id="H 1"), "hold_id"),
        ("GetHold", pb.GetHoldRequest(hold_id="H" * 129), "hold_id"),
        ("ReleaseHold", pb.ReleaseHoldRequest(hold_id="H/1"), "hold_id"),
        ("GetTrade", pb.GetTradeRequest(trade_id="T\x001"), "trade_id"),
        ("GetTrade", pb.GetTradeRequest(trade_id="T\u00e91"), "trade_id"),
    ],
)
def test_malformed_hold_and_trade_ids_are_invalid_not_unknown(
    api: Api, method: str, request_: Any, field: str
) -> None:
    """Issue 15: a malformed id was looked up and answered NOT_FOUND; the API promises
    INVALID_ARGUMENT INVALID_ID naming the field."""
    ex = api.exchange
    error = rpc_error(lambda: ex.call(getattr(ex.settlement, method), request_))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ID")
    assert [f for f, _ in error.violations] == [field]


def test_positions_now_and_as_of_a_past_time(api: Api) -> None:
    position = seed_market(api.regulator)
    api.read_models.wait_for(position)
    before = api.exchange.call(
        api.exchange.settlement.ListPositions, pb.ListPositionsRequest(page_size=1000)
    )
    [done] = settle(api, trade("T-1", A, TRADER, 7))
    api.read_models.wait_for(done.position)
    cutoff = before.positions  # positions before the trade
    pages: list[pb.Position] = []
    token = ""
    while True:
        page = api.exchange.call(
            api.exchange.settlement.ListPositions,
            pb.ListPositionsRequest(page_size=2, page_token=token),
        )
        pages.extend(page.positions)
        token = page.next_page_token
        if not token:
            break
    now = {(p.account_id, p.unit_class.vintage): p.total for p in pages}
    assert now[(A, 2025)] == 100_000 - 7 and now[(TRADER, 2025)] == 7
    assert {(p.account_id, p.unit_class.vintage): p.total for p in cutoff}[(A, 2025)] == 100_000
    recorded = api.exchange.call(
        api.exchange.settlement.GetTrade, pb.GetTradeRequest(trade_id="T-1")
    ).transaction
    as_of = api.exchange.call(
        api.exchange.settlement.ListPositions,
        pb.ListPositionsRequest(as_of_time=recorded.record_time, account_ids=[A, TRADER]),
    )
    assert {p.account_id: p.total for p in as_of.positions} == {A: 100_000 - 7, TRADER: 7}
    error = rpc_error(
        lambda: api.exchange.call(
            api.exchange.settlement.ListPositions, pb.ListPositionsRequest(page_token="nonsense")
        )
    )
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")


class LoseFirstReply(grpc.ServerInterceptor):  # type: ignore[misc]
    """Transport fault: the server commits the first SettleTrades call, then the reply
    is lost (the client sees UNAVAILABLE), as when a connection drops mid-answer."""

    def __init__(self) -> None:
        self.lost = threading.Event()

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = continuation(details)
        if not details.method.endswith("/SettleTrades"):
            return handler

        def behaviour(request: Any, context: grpc.ServicerContext) -> Any:
            response = handler.unary_unary(request, context)
            if not self.lost.is_set():
                self.lost.set()
                context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")
            return response

        return grpc.unary_unary_rpc_method_handler(
            behaviour,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def test_a_retry_after_a_lost_reply_settles_once(tmp_path: Path) -> None:
    fault = LoseFirstReply()
    with running_api("sqlite", tmp_path, interceptors=[fault]) as api:
        seed_market(api.regulator)
        from registry.client import RegistryClient

        token = api.tokens["exchange"]
        with RegistryClient(api.address, token, attempts=3, backoff=0.01) as client:
            results = client.settle_trades([trade("T-1", A, TRADER, 1_000), trade("T-2", A, B, 10)])
        assert fault.lost.is_set()
        assert [r.status for r in results] == [ALREADY, ALREADY]
        txn = api.registry.get_transaction("shanghai-exchange", "T-1")
        assert txn.ok
        holdings = {h.unit_class.key: h.total for h in api.registry.get_holdings(TRADER)}
        assert holdings == {"CEA/2025": 1_000}


@pytest.mark.parametrize("backend", ["sqlite"])
def test_overload_is_refused_with_resource_exhausted(backend: str, tmp_path: Path) -> None:
    gate, entered = threading.Event(), threading.Event()

    class Stall(grpc.ServerInterceptor):  # type: ignore[misc]
        def intercept_service(self, continuation: Any, details: Any) -> Any:
            handler = continuation(details)
            if not details.method.endswith("/GetAccount"):
                return handler

            def behaviour(request: Any, context: grpc.ServicerContext) -> Any:
                entered.set()
                gate.wait(10)
                return handler.unary_unary(request, context)

            return grpc.unary_unary_rpc_method_handler(
                behaviour,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )

    from registry.v1 import account_service_pb2 as account_pb

    with running_api(
        backend, tmp_path, interceptors=[Stall()], max_workers=2, max_concurrent_rpcs=1
    ) as api:
        stalled = api.operator.accounts.GetAccount.future(
            account_pb.GetAccountRequest(account_id="CN-ISSUANCE"),
            metadata=api.operator.metadata,
            timeout=10,
        )
        assert entered.wait(10), "the first call never reached the server"
        try:
            error = rpc_error(
                lambda: api.regulator.accounts.GetAccount(
                    account_pb.GetAccountRequest(account_id="CN-ISSUANCE"),
                    metadata=api.regulator.metadata,
                    timeout=5,
                )
            )
            assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        finally:
            gate.set()
        assert stalled.result().account.account_id == "CN-ISSUANCE"
