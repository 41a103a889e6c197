"""Enforcement of a shortfall, in the order China's law gives it.

Interim Regulations on the Administration of Carbon Emissions Trading (State Council
Decree No. 775, in force 1 May 2024), Art. 24: a company that has not surrendered its
allowances in full is ordered to correct (a notice with a correction deadline) and
fined 5 to 10 times the average market price of the month before the surrender
deadline, times the unsurrendered quantity; only if it does not correct is the
unsurrendered quantity deducted from its next year's allowances.

So closing a year notifies each shortfall with a correction deadline; a late surrender
is accepted until then; a fine is recorded (not collected: the registry holds units,
not money); after the deadline, what is still short becomes a debt deducted from the
next year's allocation. The steps are events on the obligation
(``registry.domain.obligations``); this module holds the values they carry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum

from registry.domain.errors import InvalidCommand

DEFAULT_CORRECTION_DAYS = 30
"""Days from closing to the correction deadline when the close command gives none. Art.
24 says "ordered to correct" (责令改正) without a period: this default is the registry's,
not the law's, and every closing may give its own."""
MAX_CORRECTION_DAYS = 365

FINE_MULTIPLE_MIN = Decimal(5)
FINE_MULTIPLE_MAX = Decimal(10)
CENT = Decimal("0.01")


class EnforcementStep(StrEnum):
    """Where the enforcement of one obligation's shortfall stands."""

    NONE = "NONE"
    """No shortfall (or the year is not closed)."""
    ORDERED_TO_CORRECT = "ORDERED_TO_CORRECT"
    """Closed short: a notice with a correction deadline; late surrender accepted."""
    CORRECTION_OVERDUE = "CORRECTION_OVERDUE"
    """The deadline has passed uncorrected; the deduction step has not run yet."""
    CORRECTED = "CORRECTED"
    """Late surrender covered the shortfall by the deadline: nothing is deducted."""
    DEBT_CARRIED = "DEBT_CARRIED"
    """What was still short is a debt deducted from the next year's allocation (also
    every shortfall closed by the previous version, which deducted at once)."""


def check_correction_days(days: int | None) -> int:
    """The correction period in days (1..365); None: the default."""
    if days is None:
        return DEFAULT_CORRECTION_DAYS
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_CORRECTION_DAYS:
        raise InvalidCommand(
            f"correction_days must be 1..{MAX_CORRECTION_DAYS}, got {days!r}",
            reason="INVALID_CORRECTION_DAYS",
            field="correction_days",
        )
    return days


def correction_deadline(closed_on: date, days: int) -> date:
    """The last day a late surrender corrects the shortfall."""
    return closed_on + timedelta(days=days)


_PLAIN_DECIMAL = re.compile(r"[0-9]{1,12}(\.[0-9]{1,2})?")


def _decimal(value: str, field: str, reason: str) -> Decimal:
    """A plain decimal of ASCII digits with at most two places (yuan and fen): no
    sign, exponent, separators or float ever."""
    if not isinstance(value, str) or not _PLAIN_DECIMAL.fullmatch(value):
        raise InvalidCommand(
            f"{field} must be a decimal number with at most 2 places, got {value!r}",
            reason=reason,
            field=field,
        )
    return Decimal(value)


@dataclass(frozen=True)
class Fine:
    """A fine as the regulator decides it (Art. 24): ``multiple`` (5..10) x
    ``reference_price`` (the average market price, CNY per tonne, of the month before
    the surrender deadline) x ``quantity`` (the tonnes unsurrendered at the deadline).
    Recorded, not collected."""

    multiple: Decimal
    reference_price: Decimal
    quantity: int

    @classmethod
    def of(cls, multiple: str, reference_price: str, quantity: int) -> Fine:
        """Validated from the regulator's decimal strings; every bad field named."""
        m = _decimal(multiple, "multiple", "INVALID_FINE_MULTIPLE")
        if not FINE_MULTIPLE_MIN <= m <= FINE_MULTIPLE_MAX:
            raise InvalidCommand(
                f"the fine multiple must be {FINE_MULTIPLE_MIN}..{FINE_MULTIPLE_MAX} "
                f"(Decree 775, Art. 24), got {multiple}",
                reason="INVALID_FINE_MULTIPLE",
                field="multiple",
            )
        price = _decimal(reference_price, "reference_price", "INVALID_REFERENCE_PRICE")
        if price <= 0:
            raise InvalidCommand(
                f"the reference price must be > 0 CNY per tonne, got {reference_price}",
                reason="INVALID_REFERENCE_PRICE",
                field="reference_price",
            )
        return cls(m, price, quantity)

    @property
    def amount(self) -> Decimal:
        """CNY to the fen, half a fen rounded up (the product of two 2-place inputs
        has up to four)."""
        return (self.multiple * self.reference_price * self.quantity).quantize(
            CENT, rounding=ROUND_HALF_UP
        )

    def as_dict(self) -> dict[str, str | int]:
        return {
            "multiple": str(self.multiple),
            "reference_price": str(self.reference_price),
            "quantity": self.quantity,
            "amount": str(self.amount),
        }
