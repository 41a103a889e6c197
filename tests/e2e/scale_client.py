"""A client process for the scale-out test: settles (or surrenders) one id after another
against a list of servers, moving to the next server whenever one stops answering, and
retrying the same id there, so that a killed server costs a retry, never a duplicate.
Every acknowledged id is appended to a file, one JSON line each.

    python -m tests.e2e.scale_client settle|surrender OUT TOKEN PREFIX COUNT ADDR [ADDR...]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import grpc

from registry.client import RegistryClient
from registry.v1 import account_service_pb2 as account_pb
from registry.v1 import common_pb2 as common
from registry.v1 import settlement_service_pb2 as settlement_pb

SELLER, BUYER, COMPANY = "PWR-SD-0001", "TRD-SH-0001", "PWR-SD-0002"
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def one(client: RegistryClient, kind: str, txn_id: str) -> str:
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
        return settlement_pb.TradeStatus.Name(result.status)
    reply = client.call(
        client.accounts.SurrenderUnits,
        account_pb.SurrenderUnitsRequest(
            transaction_id=txn_id,
            account_id=COMPANY,
            unit_type=common.UNIT_TYPE_CEA,
            quantity=1,
            compliance_year=2025,
            reason="scale-out test",
        ),
    )
    return "ALREADY" if reply.replayed else "DONE"


def main(argv: list[str]) -> int:
    kind, out, token, prefix, count, *servers = argv
    path = Path(out)
    turn = 0
    for n in range(int(count)):
        txn_id = f"{prefix}-{n}"
        deadline = time.monotonic() + 120
        while True:
            address = servers[turn % len(servers)]
            try:
                with RegistryClient(address, token, timeout=10, attempts=1) as client:
                    status = one(client, kind, txn_id)
                break
            except grpc.RpcError as error:
                if error.code() not in RETRYABLE or time.monotonic() > deadline:
                    raise
                turn += 1  # that server is gone or busy: the next one
                time.sleep(0.2)
        with path.open("a") as log:
            log.write(json.dumps({"id": txn_id, "status": status, "server": address}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
