"""One error tree for the whole registry.

Every error carries a stable, machine-readable ``reason`` (UPPER_SNAKE) and metadata;
the API maps the branches below to transport statuses in one place:

- ``InvalidCommand``  the request itself is malformed; nothing is stored.
- ``NotFound``        a queried thing does not exist.
- ``Refused``         the ledger's state does not allow the movement; a transaction
                      refused this way is recorded (its id stays burned, the refusal is
                      auditable, a retry gets the same refusal).
- ``Conflict``        an id is already taken by different content.
- ``ConcurrencyConflict``  lost an optimistic-concurrency race too many times; retry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class Violation:
    """One bad field of a request, named so a client can point at it (``rows[3].account_id``)."""

    field: str
    reason: str
    description: str


class RegistryError(Exception):
    reason: ClassVar[str] = "REGISTRY_ERROR"
    retryable: ClassVar[bool] = False
    violations: tuple[Violation, ...] = ()
    """Every bad field, when the request had several (read on any error by the API)."""

    def __init__(self, message: str, *, reason: str | None = None, **metadata: object) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason  # type: ignore[misc]
        self.metadata: dict[str, str] = {k: str(v) for k, v in metadata.items()}

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


class InvalidCommand(RegistryError):
    reason = "INVALID_ARGUMENT"


class RowsInvalid(InvalidCommand):
    """A batch that is stored whole or not at all had bad rows: all of them are named."""

    reason = "INVALID_ROWS"

    def __init__(self, message: str, *, violations: Sequence[Violation] = (),
                 reason: str | None = None, **metadata: object) -> None:
        super().__init__(message, reason=reason, **metadata)
        self.violations = tuple(violations)


class NotFound(RegistryError):
    reason = "NOT_FOUND"


class UnknownAccount(NotFound):
    reason = "UNKNOWN_ACCOUNT"


class UnknownTransaction(NotFound):
    reason = "UNKNOWN_TRANSACTION"


class UnknownHold(NotFound):
    reason = "UNKNOWN_HOLD"


class UnknownSerial(NotFound):
    reason = "UNKNOWN_SERIAL"


class Refused(RegistryError):
    reason = "REFUSED"


class InsufficientUnits(Refused):
    reason = "INSUFFICIENT_UNITS"


class UnitsNotHeld(Refused):
    reason = "UNITS_NOT_HELD"


class AccountFrozen(Refused):
    reason = "ACCOUNT_FROZEN"


class AccountClosed(Refused):
    reason = "ACCOUNT_CLOSED"


class AccountNotEmpty(Refused):
    reason = "ACCOUNT_NOT_EMPTY"


class AccountStateUnchanged(Refused):
    reason = "ACCOUNT_STATE_UNCHANGED"


class NationalAccountProtected(Refused):
    reason = "NATIONAL_ACCOUNT_PROTECTED"


class MovementNotAllowed(Refused):
    """The transaction kind may not move units between these account types."""

    reason = "MOVEMENT_NOT_ALLOWED"


class UnitsRetired(Refused):
    """Units in SURRENDER or CANCELLATION move only through a reversal."""

    reason = "UNITS_RETIRED"


class NotReversible(Refused):
    reason = "TRANSACTION_NOT_REVERSIBLE"


class AlreadyReversed(Refused):
    reason = "TRANSACTION_ALREADY_REVERSED"


class HoldNotActive(Refused):
    reason = "HOLD_NOT_ACTIVE"


class HoldExpired(Refused):
    reason = "HOLD_EXPIRED"


class HoldNotExpired(Refused):
    reason = "HOLD_NOT_EXPIRED"


class HoldMismatch(Refused):
    """The hold is on another account, other units, or fewer units than asked."""

    reason = "HOLD_MISMATCH"


class Conflict(RegistryError):
    reason = "CONFLICT"


class TransactionExistsWithDifferentContent(Conflict):
    reason = "TRANSACTION_EXISTS_WITH_DIFFERENT_CONTENT"


class HoldExistsWithDifferentContent(Conflict):
    reason = "HOLD_EXISTS_WITH_DIFFERENT_CONTENT"


class AccountExistsWithDifferentContent(Conflict):
    reason = "ACCOUNT_EXISTS_WITH_DIFFERENT_CONTENT"


class RequestExistsWithDifferentContent(Conflict):
    reason = "REQUEST_EXISTS_WITH_DIFFERENT_CONTENT"


class ConcurrencyConflict(RegistryError):
    reason = "CONCURRENT_MODIFICATION"
    retryable = True


REFUSAL_TYPES: dict[str, type[RegistryError]] = {}


def _index(cls: type[RegistryError]) -> None:
    for sub in cls.__subclasses__():
        REFUSAL_TYPES.setdefault(sub.reason, sub)
        _index(sub)


_index(RegistryError)


def error_for_reason(reason: str, message: str, **metadata: object) -> RegistryError:
    """Rebuild the error a recorded refusal stood for (a retry gets the same error)."""
    cls = REFUSAL_TYPES.get(reason, Refused)
    return cls(message, reason=reason, **metadata)
