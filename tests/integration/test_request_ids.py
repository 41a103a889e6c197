"""The request id of a call is recorded on every event it causes, even when another
caller's thread saves it in a group commit; the read models ignore it."""

from __future__ import annotations

import json
import threading

from registry.application import Registry, Trade
from registry.application.request_ids import FIELD, bound_request_id
from registry.domain.units import UnitClass, UnitSelector, UnitType
from tests.support import EXCHANGE, REGULATOR, open_company, open_trader

CEA = UnitSelector(UnitType.CEA)


def stamps(registry: Registry) -> dict[str, set[str | None]]:
    """Topic -> the request ids stamped on its stored events."""
    found: dict[str, set[str | None]] = {}
    for n in registry.recorder.select_notifications(start=1, limit=100_000):
        found.setdefault(n.topic, set()).add(json.loads(n.state).get(FIELD))
    return found


def test_each_call_s_events_carry_its_own_request_id(registry: Registry) -> None:
    with bound_request_id("req-setup"):
        open_company(registry, "PWR-0001")
        open_trader(registry, "TRD-0001")
        registry.issue_units(REGULATOR, "ISS-1", UnitClass(UnitType.CEA, 2025), 1_000, "")
        registry.transfer(REGULATOR, "T-0", "CN-ISSUANCE", "PWR-0001", CEA, 1_000, "")
    barrier = threading.Barrier(8)

    def settle(n: int) -> None:
        with bound_request_id(f"req-{n}"):
            barrier.wait()  # together, so that the group commit saves several at once
            assert registry.settle_trade(
                EXCHANGE, Trade(f"T-{n}", "PWR-0001", "TRD-0001", "CEA", 10)
            ).ok

    threads = [threading.Thread(target=settle, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    by_trade = {}
    for n in registry.recorder.select_notifications(
        start=1, limit=100_000, topics=["registry.Transaction.Completed"]
    ):
        state = json.loads(n.state)
        by_trade[state["client_id"]] = state.get(FIELD)
    assert {f"T-{n}": f"req-{n}" for n in range(8)}.items() <= by_trade.items()
    assert by_trade["ISS-1"] == "req-setup"
    seen = stamps(registry)
    assert seen["registry.Account.Opened"] >= {"req-setup"}
    # an account event of a group commit holds several calls' movements: it is stamped
    # by the saving call, and names the transactions, each stamped with its own call
    assert seen["registry.Transaction.Completed"] >= {f"req-{n}" for n in range(8)}
    # and what is read back is unchanged by the stamp
    assert registry.get_holdings("TRD-0001")[0].total == 80
