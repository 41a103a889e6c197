"""Callers that talk to the registry through its gRPC API, one channel each.

Each caller owns its channel (a local subchannel pool, so 32 callers are 32 HTTP/2
connections, as 32 independent clients would be). Every write carries the caller's
own ids, derived from the job's tag, the caller's number and the call number, so a
resend after a failure is a replay.
"""

from __future__ import annotations

from typing import Any

import grpc

from bench.suite.callers import CallerContext, Fatal
from registry.v1 import account_service_pb2 as account_pb
from registry.v1 import account_service_pb2_grpc as account_grpc
from registry.v1 import administration_service_pb2 as admin_pb
from registry.v1 import administration_service_pb2_grpc as admin_grpc
from registry.v1 import audit_service_pb2 as audit_pb
from registry.v1 import audit_service_pb2_grpc as audit_grpc
from registry.v1 import common_pb2 as common
from registry.v1 import settlement_service_pb2 as settlement_pb
from registry.v1 import settlement_service_pb2_grpc as settlement_grpc

CEA = common.UNIT_TYPE_CEA
VINTAGE = 2025
TRADE_DATE = common.Date(year=2026, month=6, day=15)
CALL_TIMEOUT = 120.0
OK_TRADE = (settlement_pb.TRADE_STATUS_SETTLED, settlement_pb.TRADE_STATUS_ALREADY_SETTLED)
OK_ROW = (common.ROW_STATUS_COMPLETED, common.ROW_STATUS_ALREADY_COMPLETED)
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)


def channel(address: str) -> grpc.Channel:
    """A channel of its own (not shared with other channels of the process), connected."""
    chan = grpc.insecure_channel(
        address,
        options=[
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ],
    )
    grpc.channel_ready_future(chan).result(timeout=30)
    return chan


def trade(trade_id: str, seller: str, buyer: str, quantity: int) -> settlement_pb.Trade:
    return settlement_pb.Trade(
        trade_id=trade_id,
        seller_account=seller,
        buyer_account=buyer,
        unit_type=CEA,
        vintage=VINTAGE,
        quantity=quantity,
        trade_date=TRADE_DATE,
    )


def check_trades(response: settlement_pb.SettleTradesResponse) -> int:
    """The number of trades settled; a refusal or rejection is a wrong answer here."""
    for result in response.results:
        if result.status not in OK_TRADE:
            raise Fatal(
                f"trade {result.trade_id}: "
                f"{settlement_pb.TradeStatus.Name(result.status)} {result.reason} "
                f"{result.message}"
            )
    return len(response.results)


class GrpcCaller:
    """A channel, the stubs, and the bearer token."""

    calls: int | None = None

    def __init__(self, ctx: CallerContext) -> None:
        self.ctx = ctx
        self.params = ctx.job.params
        self.channel = channel(self.params["address"])
        self.metadata = (("authorization", f"Bearer {self.params['token']}"),)
        self.settlement = settlement_grpc.SettlementServiceStub(self.channel)
        self.accounts = account_grpc.AccountServiceStub(self.channel)
        self.administration = admin_grpc.AdministrationServiceStub(self.channel)
        self.audit = audit_grpc.AuditServiceStub(self.channel)
        self.tag = f"{self.params['tag']}-{ctx.index}"

    def rpc(self, method: Any, request: Any, timeout: float = CALL_TIMEOUT) -> Any:
        """One call; a transient failure propagates (the caller loop resends it), any
        other error is a wrong answer."""
        try:
            return method(request, metadata=self.metadata, timeout=timeout)
        except grpc.RpcError as error:
            if error.code() in RETRYABLE:
                raise
            raise Fatal(
                f"{type(request).__name__}: {error.code().name} {error.details()}"
            ) from None

    def settle(self, request: settlement_pb.SettleTradesRequest) -> int:
        return check_trades(self.rpc(self.settlement.SettleTrades, request))

    def close(self) -> None:
        self.channel.close()


class SettleSingle(GrpcCaller):
    """One trade per SettleTrades call, between this caller's own pair of accounts
    (direction alternating), so concurrent callers do not race for the same account."""

    def __init__(self, ctx: CallerContext) -> None:
        super().__init__(ctx)
        pairs = self.params["pairs"]
        self.pair = pairs[ctx.index % len(pairs)]
        self.calls = self.params.get("calls")

    def prepare(self, n: int) -> tuple[str, Any]:
        seller, buyer = self.pair if n % 2 == 0 else self.pair[::-1]
        return "call", settlement_pb.SettleTradesRequest(
            trades=[trade(f"{self.tag}-{n}", seller, buyer, 1 + n % 7)]
        )

    def send(self, request: Any) -> int:
        return self.settle(request)


class SettleBatch(GrpcCaller):
    """SettleTrades batches of ``batch`` trades between random accounts of the pool."""

    def __init__(self, ctx: CallerContext) -> None:
        super().__init__(ctx)
        self.pool: list[str] = self.params["accounts"]
        self.batch = self.params["batch"]
        self.calls = self.params["calls"]

    def prepare(self, n: int) -> tuple[str, Any]:
        rng, accounts = self.ctx.rng, self.pool
        trades = []
        for i in range(self.batch):
            seller, buyer = rng.sample(accounts, 2)
            trades.append(trade(f"{self.tag}-{n}-{i}", seller, buyer, 1 + i % 7))
        return "call", settlement_pb.SettleTradesRequest(trades=trades)

    def send(self, request: Any) -> int:
        return self.settle(request)


class SettleGiven(GrpcCaller):
    """SettleTrades batches planned by the scenario: (trade id, seller, buyer, quantity)
    rows, split between the callers batch by batch."""

    def __init__(self, ctx: CallerContext) -> None:
        super().__init__(ctx)
        self.batches = self.params["batches"][ctx.index :: ctx.callers]
        self.calls = len(self.batches)

    def prepare(self, n: int) -> tuple[str, Any]:
        return "call", settlement_pb.SettleTradesRequest(
            trades=[trade(*row) for row in self.batches[n]]
        )

    def send(self, request: Any) -> int:
        return self.settle(request)


class Balances(GrpcCaller):
    """GetBalances of random accounts of the pool (each holds units)."""

    def __init__(self, ctx: CallerContext) -> None:
        super().__init__(ctx)
        self.pool = self.params["accounts"]

    def prepare(self, n: int) -> tuple[str, Any]:
        return "call", account_pb.GetBalancesRequest(account_id=self.ctx.rng.choice(self.pool))

    def send(self, request: Any) -> int:
        reply = self.rpc(self.accounts.GetBalances, request, timeout=30)
        if not reply.holdings:
            raise Fatal(f"{request.account_id} holds nothing: the read model is missing rows")
        return 1


class History(GrpcCaller):
    """The same command, a one-unit trade to a sink, from accounts with a short history
    and from one with a long history. The first calls touch each account once ('cold':
    the server loads it from the store, snapshot and replay); then the two sizes
    alternate ('warm': the aggregate is in the server's cache)."""

    def __init__(self, ctx: CallerContext) -> None:
        super().__init__(ctx)
        self.short: list[str] = self.params["short_accounts"]
        self.first = [("short", a) for a in self.short] + [("long", self.params["long_account"])]
        self.calls = len(self.first) + self.params["calls"]

    def prepare(self, n: int) -> tuple[str, Any]:
        if n < len(self.first):
            size, account = self.first[n]
            group = f"{size}-cold"
        else:
            n -= len(self.first)
            size = "short" if n % 2 == 0 else "long"
            account = (
                self.short[(n // 2) % len(self.short)]
                if size == "short"
                else self.params["long_account"]
            )
            group = f"{size}-warm"
        return group, settlement_pb.SettleTradesRequest(
            trades=[trade(f"{self.tag}-{n}-{group}", account, self.params[f"{size}_sink"], 1)]
        )

    def send(self, request: Any) -> int:
        return self.settle(request)


class Stream(GrpcCaller):
    """AuditService.StreamEvents over the log from position 0; the time between pages
    is kept in ``extra['page_seconds']``."""

    calls = 1

    def __init__(self, ctx: CallerContext) -> None:
        super().__init__(ctx)
        self.extra: dict[str, Any] = {"page_seconds": []}

    def prepare(self, n: int) -> tuple[str, Any]:
        return "stream", audit_pb.StreamEventsRequest(
            after_position=0,
            max_events=self.params["max_events"],
            page_size=self.params["page_size"],
        )

    def send(self, request: Any) -> int:
        import time

        count, pages = 0, self.extra["page_seconds"]
        pages.clear()
        last = time.perf_counter()
        for page in self.audit.StreamEvents(
            request, metadata=self.metadata, timeout=self.params.get("timeout", 3600)
        ):
            count += len(page.events)
            now = time.perf_counter()
            pages.append(now - last)
            last = now
        if count < request.max_events:
            raise Fatal(f"the stream ended after {count:,} of {request.max_events:,} events")
        return count


class OpenAccounts(GrpcCaller):
    """OpenAccount for this caller's share of the rows (account id, sector, province,
    credit code)."""

    def __init__(self, ctx: CallerContext) -> None:
        super().__init__(ctx)
        self.rows = self.params["rows"][ctx.index :: ctx.callers]
        self.calls = len(self.rows)

    def prepare(self, n: int) -> tuple[str, Any]:
        account_id, sector, province, credit_code = self.rows[n]
        return "call", admin_pb.OpenAccountRequest(
            account_id=account_id,
            account_type=common.ACCOUNT_TYPE_COMPLIANCE,
            holder=common.Holder(
                name=f"{account_id} Co., Ltd.",
                credit_code=credit_code,
                sector=common.Sector.Value(f"SECTOR_{sector}"),
                province=province,
            ),
        )

    def send(self, request: Any) -> int:
        self.rpc(self.administration.OpenAccount, request)
        return 1


class Surrender(GrpcCaller):
    """SurrenderUnits for this caller's share of (transaction id, account, quantity)."""

    def __init__(self, ctx: CallerContext) -> None:
        super().__init__(ctx)
        self.rows = self.params["rows"][ctx.index :: ctx.callers]
        self.calls = len(self.rows)

    def prepare(self, n: int) -> tuple[str, Any]:
        transaction_id, account_id, quantity = self.rows[n]
        return "call", account_pb.SurrenderUnitsRequest(
            transaction_id=transaction_id,
            account_id=account_id,
            unit_type=CEA,
            vintage=VINTAGE,
            quantity=quantity,
            compliance_year=self.params["year"],
            reason=f"{self.params['year']} compliance",
        )

    def send(self, request: Any) -> int:
        reply = self.rpc(self.accounts.SurrenderUnits, request)
        if reply.transaction.status != common.TRANSACTION_STATUS_COMPLETED:
            raise Fatal(f"surrender {request.transaction_id}: {reply.transaction.refusal_reason}")
        return 1
