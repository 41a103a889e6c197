"""A client process for the connection-loss test: one kind of write, one id after
another, against a list of servers, as an exchange would: a retryable status is retried
with the same id (on the next server), anything else stops the client with exit 1.
Every answer is appended to OUT as a JSON line: ``{"id", "server", "replayed"}`` for an
acknowledgement, ``{"id", "server", "code", "reason"}`` for each failed attempt.

    python -m tests.e2e.fault_client settle|hold|cancel OUT TOKEN PREFIX COUNT ADDR...
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from registry.client import RegistryClient
from registry.v1 import account_service_pb2 as account_pb
from registry.v1 import common_pb2 as common
from registry.v1 import settlement_service_pb2 as settlement_pb

SELLER, BUYER, HOLDER = "PWR-SD-0001", "TRD-SH-0001", "PWR-SD-0002"
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def one(client: RegistryClient, kind: str, txn_id: str) -> bool:
    """Send one write; whether it was a replay of one already recorded."""
    if kind == "settle":
        [result] = client.settle_trades(
            [
                settlement_pb.Trade(
                    trade_id=txn_id,
                    seller_account=SELLER,
                    buyer_account=BUYER,
                    unit_type=common.UNIT_TYPE_CEA,
                    quantity=1,
                )
            ]
        )
        name = settlement_pb.TradeStatus.Name(result.status)
        assert name in ("TRADE_STATUS_SETTLED", "TRADE_STATUS_ALREADY_SETTLED"), name
        return name == "TRADE_STATUS_ALREADY_SETTLED"
    if kind == "hold":
        hold = client.call(
            client.settlement.PlaceHold,
            settlement_pb.PlaceHoldRequest(
                hold_id=txn_id,
                account_id=HOLDER,
                unit_type=common.UNIT_TYPE_CEA,
                quantity=1,
                timeout_seconds=86_400,
            ),
        )
        return bool(hold.replayed)
    cancelled = client.call(
        client.accounts.CancelUnits,
        account_pb.CancelUnitsRequest(
            transaction_id=txn_id,
            account_id=SELLER,
            unit_type=common.UNIT_TYPE_CEA,
            quantity=1,
            reason="connection-loss test",
        ),
    )
    return bool(cancelled.replayed)


def reason_of(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return "-"


def main(argv: list[str]) -> int:
    kind, out, token, prefix, count, *servers = argv
    path = Path(out)
    turn = 0
    for n in range(int(count)):
        txn_id = f"{prefix}-{n}"
        deadline = time.monotonic() + 180
        while True:
            address = servers[turn % len(servers)]
            try:
                with RegistryClient(address, token, timeout=60, attempts=1) as client:
                    replayed = one(client, kind, txn_id)
                break
            except grpc.RpcError as error:
                with path.open("a") as log:
                    log.write(
                        json.dumps(
                            {
                                "id": txn_id,
                                "server": address,
                                "code": error.code().name,
                                "reason": reason_of(error),
                            }
                        )
                        + "\n"
                    )
                if error.code() not in RETRYABLE or time.monotonic() > deadline:
                    return 1
                turn += 1
                time.sleep(0.2)
        with path.open("a") as log:
            log.write(json.dumps({"id": txn_id, "server": address, "replayed": replayed}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
