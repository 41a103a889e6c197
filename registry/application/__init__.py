"""Use cases over the event-sourced domain: one method per use case."""

from registry.application.commands import AllocationRow, EmissionsRow, Movement, Trade
from registry.application.registry import SYSTEM, Registry
from registry.application.results import (
    AccountResult,
    AccountView,
    ComplianceState,
    ComplianceView,
    EmissionsRecorded,
    EmissionsRowResult,
    EmissionsRowStatus,
    HoldingView,
    HoldResult,
    RowOutcome,
    RowResult,
    SupplyLine,
    TradeOutcome,
    TradeResult,
    TransactionResult,
)

__all__ = [
    "SYSTEM",
    "AccountResult",
    "AccountView",
    "AllocationRow",
    "ComplianceState",
    "ComplianceView",
    "EmissionsRecorded",
    "EmissionsRow",
    "EmissionsRowResult",
    "EmissionsRowStatus",
    "HoldResult",
    "HoldingView",
    "Movement",
    "Registry",
    "RowOutcome",
    "RowResult",
    "SupplyLine",
    "Trade",
    "TradeOutcome",
    "TradeResult",
    "TransactionResult",
]
