"""Use cases over the event-sourced domain: one method per use case."""

from registry.application.audit_events import EventPage, LoggedEvent, account_events, read_events
from registry.application.commands import AllocationRow, EmissionsRow, Movement, Trade
from registry.application.registry import Registry
from registry.application.results import (
    AccountResult,
    AccountView,
    ComplianceReportLine,
    ComplianceRulesView,
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
    YearClosing,
)
from registry.domain.transactions import SYSTEM

__all__ = [
    "SYSTEM",
    "AccountResult",
    "AccountView",
    "AllocationRow",
    "ComplianceReportLine",
    "ComplianceRulesView",
    "ComplianceState",
    "ComplianceView",
    "EmissionsRecorded",
    "EmissionsRow",
    "EmissionsRowResult",
    "EmissionsRowStatus",
    "EventPage",
    "HoldResult",
    "HoldingView",
    "LoggedEvent",
    "Movement",
    "Registry",
    "RowOutcome",
    "RowResult",
    "SupplyLine",
    "Trade",
    "TradeOutcome",
    "TradeResult",
    "TransactionResult",
    "YearClosing",
    "account_events",
    "read_events",
]
