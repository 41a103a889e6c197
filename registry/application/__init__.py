"""Use cases over the event-sourced domain: one method per use case."""

from registry.application.commands import Movement, Trade
from registry.application.registry import SYSTEM, Registry
from registry.application.results import (
    AccountResult,
    AccountView,
    HoldingView,
    HoldResult,
    SupplyLine,
    TradeOutcome,
    TradeResult,
    TransactionResult,
)

__all__ = [
    "SYSTEM",
    "AccountResult",
    "AccountView",
    "HoldResult",
    "HoldingView",
    "Movement",
    "Registry",
    "SupplyLine",
    "Trade",
    "TradeOutcome",
    "TradeResult",
    "TransactionResult",
]
