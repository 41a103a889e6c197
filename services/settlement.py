"""SettlementService: the exchange's holds, batched settlement and positions."""

from __future__ import annotations

from collections import Counter

import grpc

from registry.application.commands import Trade, check_batch
from registry.application.results import HoldResult, TradeOutcome, TradeResult
from registry.domain.errors import (
    InvalidCommand,
    UnknownHold,
    UnknownTransaction,
    error_for_reason,
)
from registry.v1 import settlement_service_pb2 as pb
from registry.v1 import settlement_service_pb2_grpc as pb_grpc
from services import convert
from services.auth import current_principal
from services.backend import Backend
from services.policy import found_in_scope

DEFAULT_PAGE = 100

TRADE_STATUS = {
    TradeOutcome.SETTLED: pb.TRADE_STATUS_SETTLED,
    TradeOutcome.ALREADY_SETTLED: pb.TRADE_STATUS_ALREADY_SETTLED,
    TradeOutcome.REFUSED: pb.TRADE_STATUS_REFUSED,
    TradeOutcome.REJECTED: pb.TRADE_STATUS_REJECTED,
}


class SettlementServicer(pb_grpc.SettlementServiceServicer):
    def __init__(self, backend: Backend) -> None:
        self.registry = backend.registry
        self.backend = backend

    def PlaceHold(
        self, request: pb.PlaceHoldRequest, context: grpc.ServicerContext
    ) -> pb.PlaceHoldResponse:
        result = self.registry.place_hold(
            current_principal(),
            convert.required(request.hold_id, "hold_id"),
            convert.required(request.account_id, "account_id"),
            convert.selector(request),
            request.quantity,
            request.timeout_seconds,
        )
        _raise_if_refused(result)
        return pb.PlaceHoldResponse(
            hold=convert.hold_to_proto(result),
            replayed=result.replayed,
            position=result.position or 0,
        )

    def ReleaseHold(
        self, request: pb.ReleaseHoldRequest, context: grpc.ServicerContext
    ) -> pb.ReleaseHoldResponse:
        principal = current_principal()
        hold_id = convert.client_id(request.hold_id, "hold_id")
        self._hold_in_scope(principal.party, hold_id)  # a hold's account never changes
        result = self.registry.release_hold(principal, hold_id, request.reason)
        return pb.ReleaseHoldResponse(
            hold=convert.hold_to_proto(result), position=result.position or 0
        )

    def GetHold(
        self, request: pb.GetHoldRequest, context: grpc.ServicerContext
    ) -> pb.GetHoldResponse:
        result = self._hold_in_scope(
            current_principal().party, convert.client_id(request.hold_id, "hold_id")
        )
        return pb.GetHoldResponse(hold=convert.hold_to_proto(result))

    def _hold_in_scope(self, party: str, hold_id: str) -> HoldResult:
        """The party's hold, if it is on an account of the caller's grants; else the very
        error an unknown hold id gets, so a desk cannot tell another desk's hold exists."""
        result = self.registry.get_hold(party, hold_id)
        if not found_in_scope([result.account_id]):
            raise UnknownHold(f"no hold {party}:{hold_id}", hold=f"{party}:{hold_id}")
        return result

    def SettleTrades(
        self, request: pb.SettleTradesRequest, context: grpc.ServicerContext
    ) -> pb.SettleTradesResponse:
        count = len(request.trades)
        check_batch(count, request.ByteSize(), "trades", "trades to settle")
        trades: list[Trade] = []
        rejected: dict[int, TradeResult] = {}
        for index, message in enumerate(request.trades):
            try:
                trades.append(convert.trade_from_proto(message, index))
            except InvalidCommand as error:
                rejected[index] = TradeResult.rejected(message.trade_id, error)
        settled = iter(self.registry.settle_trades(current_principal(), trades) if trades else [])
        results = [rejected[i] if i in rejected else next(settled) for i in range(count)]
        if self.backend.metrics is not None:
            for (outcome, reason), n in Counter(
                (r.outcome.value, r.reason) for r in results
            ).items():
                self.backend.metrics.observe_settlement(outcome, reason, n)
        return pb.SettleTradesResponse(results=[_trade_result(r) for r in results])

    def GetTrade(
        self, request: pb.GetTradeRequest, context: grpc.ServicerContext
    ) -> pb.GetTradeResponse:
        party = current_principal().party
        trade_id = convert.client_id(request.trade_id, "trade_id")
        result = self.registry.get_transaction(party, trade_id)
        if not found_in_scope([result.source, result.destination]):
            ref = f"{party}:{trade_id}"  # answered exactly as an unknown id
            raise UnknownTransaction(f"no transaction {ref}", transaction=ref)
        return pb.GetTradeResponse(transaction=convert.transaction_to_proto(result))

    def ListPositions(
        self, request: pb.ListPositionsRequest, context: grpc.ServicerContext
    ) -> pb.ListPositionsResponse:
        if request.page_token:  # the last position listed: account id, unit class
            convert.page_token(request.page_token, str, str)
        account_ids = convert.filter_values(request.account_ids, "account_ids")
        for index, account_id in enumerate(request.account_ids):
            convert.account_id(account_id, f"account_ids[{index}]")
        page = self.backend.read_models.positions(
            page_size=request.page_size or DEFAULT_PAGE,
            page_token=request.page_token,
            as_of=convert.optional_time(request, "as_of_time"),
            account_ids=account_ids,
        )
        return pb.ListPositionsResponse(
            positions=[
                pb.Position(
                    account_id=row["account_id"],
                    unit_class=convert.unit_class_to_proto(row["unit_class"]),
                    total=row["total"],
                    held=row["held"],
                )
                for row in page.rows
            ],
            next_page_token=page.next_token,
        )


def _trade_result(result: TradeResult) -> pb.TradeResult:
    txn = result.transaction
    blocks = [convert.block_to_proto(b) for b in txn.blocks] if txn and txn.ok else []
    return pb.TradeResult(
        trade_id=result.trade_id,
        status=TRADE_STATUS[result.outcome],
        reason=result.reason,
        message=result.message,
        position=result.position or 0,
        blocks=blocks,
    )


def _raise_if_refused(result: HoldResult) -> None:
    if not result.ok:
        raise error_for_reason(
            result.refusal_reason,
            result.refusal_message,
            hold=result.hold_id,
            account=result.account_id,
        )
