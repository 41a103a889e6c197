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

MAX_MESSAGE_BYTES = 512
MAX_DETAIL_BYTES = 256
"""An error echoes what it refuses (an id, a value) into its message, metadata and
field violations, and the API sends them back in the call's trailers, where a client
accepts about 8 KiB in all (gRPC's default metadata limit; past 16 KiB the call fails
with RESOURCE_EXHAUSTED and the error is lost). So each is clipped, in UTF-8 bytes."""


def clip(text: str, limit: int = MAX_DETAIL_BYTES) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes (on a character boundary), marked
    with an ellipsis when cut."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode("utf-8", "ignore") + "\u2026"


@dataclass(frozen=True)
class Violation:
    """One bad field of a request, named so a client can point at it (``rows[3].account_id``)."""

    field: str
    reason: str
    description: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "field", clip(self.field))
        object.__setattr__(self, "description", clip(self.description))


class RegistryError(Exception):
    reason: ClassVar[str] = "REGISTRY_ERROR"
    retryable: ClassVar[bool] = False
    violations: tuple[Violation, ...] = ()
    """Every bad field, when the request had several (read on any error by the API)."""

    def __init__(self, message: str, *, reason: str | None = None, **metadata: object) -> None:
        message = clip(message, MAX_MESSAGE_BYTES)
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason  # type: ignore[misc]
        self.metadata: dict[str, str] = {k: clip(str(v)) for k, v in metadata.items()}

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


class InvalidCommand(RegistryError):
    reason = "INVALID_ARGUMENT"


class RowsInvalid(InvalidCommand):
    """A batch that is stored whole or not at all had bad rows: all of them are named."""

    reason = "INVALID_ROWS"

    def __init__(
        self,
        message: str,
        *,
        violations: Sequence[Violation] = (),
        reason: str | None = None,
        **metadata: object,
    ) -> None:
        super().__init__(message, reason=reason, **metadata)
        self.violations = tuple(violations)


class InvalidFile(RowsInvalid):
    """An uploaded file could not be read as rows at all (encoding, header, CSV syntax)."""

    reason = "INVALID_FILE"


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


class UnknownProposal(NotFound):
    reason = "UNKNOWN_PROPOSAL"


class UnknownFreeze(NotFound):
    reason = "UNKNOWN_FREEZE"


class UnknownProject(NotFound):
    reason = "UNKNOWN_PROJECT"


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


class SelfApprovalForbidden(Refused):
    """Four eyes: the regulator who proposed an action cannot also approve it."""

    reason = "SELF_APPROVAL_FORBIDDEN"


class ProposalNotPending(Refused):
    """The proposal was already approved, rejected or expired."""

    reason = "PROPOSAL_NOT_PENDING"


class ProposalExpired(Refused):
    reason = "PROPOSAL_EXPIRED"


class ProposalNotExpired(Refused):
    reason = "PROPOSAL_NOT_EXPIRED"


class ProposalNotApproved(Refused):
    """An outcome is recorded only for an approved proposal that has none yet."""

    reason = "PROPOSAL_NOT_APPROVED"


class HoldMismatch(Refused):
    """The hold is on another account, other units, or fewer units than asked."""

    reason = "HOLD_MISMATCH"


class SerialsFrozen(Refused):
    """A judicial block freeze covers serials the movement would take out of the account."""

    reason = "SERIALS_FROZEN"


class OriginDetained(Refused):
    """The units come from a CCER project whose units are detained wherever they are."""

    reason = "ORIGIN_DETAINED"


class MarketHalted(Refused):
    """An emergency market halt: exchange settlement is refused until it is lifted."""

    reason = "MARKET_HALTED"


class FreezeNotActive(Refused):
    reason = "FREEZE_NOT_ACTIVE"


class OriginAlreadyDetained(Refused):
    reason = "ORIGIN_ALREADY_DETAINED"


class DetentionNotActive(Refused):
    reason = "DETENTION_NOT_ACTIVE"


class MarketAlreadyHalted(Refused):
    reason = "MARKET_ALREADY_HALTED"


class MarketNotHalted(Refused):
    reason = "MARKET_NOT_HALTED"


class CorrectionDeadlinePassed(Refused):
    """A late surrender after the correction deadline of the shortfall notice (Decree
    775, Art. 24): the shortfall is no longer corrected by surrender but deducted."""

    reason = "CORRECTION_DEADLINE_PASSED"


class ComplianceYearOpen(Refused):
    """Enforcement (a fine, a deduction) of a year that has not been closed yet."""

    reason = "COMPLIANCE_YEAR_OPEN"


class NoShortfall(Refused):
    """A fine for an obligation that had no shortfall when its year closed."""

    reason = "NO_SHORTFALL"


class FineAlreadyRecorded(Refused):
    """One fine per obligation: another one (other multiple or price) is refused."""

    reason = "FINE_ALREADY_RECORDED"


class ProposalRequired(Refused):
    """Four eyes are required: this action takes effect only through an approved
    proposal."""

    reason = "PROPOSAL_REQUIRED"


class ComplianceYearClosed(Refused):
    """The year's deadline processing is done: no surrender, rule change or emissions
    figure for it any more."""

    reason = "COMPLIANCE_YEAR_CLOSED"


class IneligibleVintage(Refused):
    """Allowances of a vintage the compliance year's rules do not accept."""

    reason = "INELIGIBLE_VINTAGE"


class CcerCapExceeded(Refused):
    """More offsets than the year's CCER cap (a share of the obligation, or of verified
    emissions for rules written before the base was explicit) allows."""

    reason = "CCER_CAP_EXCEEDED"


class AdvanceUseNotAllowed(Refused):
    """Next year's allowances, where the rules allow no advance use."""

    reason = "ADVANCE_USE_NOT_ALLOWED"


class AdvanceUseLimitExceeded(Refused):
    reason = "ADVANCE_USE_LIMIT_EXCEEDED"


class AdvanceUseNotEligible(Refused):
    """Next year's allowances from a company whose gap rate is below the year's
    threshold for borrowing."""

    reason = "ADVANCE_USE_NOT_ELIGIBLE"


class CarryOverLimitExceeded(Refused):
    """More allowances of carried (banked) vintages than the company's carry-over limit."""

    reason = "CARRY_OVER_LIMIT_EXCEEDED"


class EmissionsNotVerified(Refused):
    """Offsets and advance use are capped by verified emissions: none recorded yet."""

    reason = "EMISSIONS_NOT_VERIFIED"


class DifferentHolder(Refused):
    """A holder transfer names accounts that do not record one holder identity (the
    same unified social credit code on both)."""

    reason = "DIFFERENT_HOLDER"


class ProjectNotRegistered(Refused):
    """CCER issuance names a project that has no registration record."""

    reason = "PROJECT_NOT_REGISTERED"


class ProjectSuspended(Refused):
    """The project is suspended: no new issuance until it is reinstated."""

    reason = "PROJECT_SUSPENDED"


class ProjectDeregistered(Refused):
    """The project is deregistered for good: no issuance, no change."""

    reason = "PROJECT_DEREGISTERED"


class ProjectNotSuspended(Refused):
    reason = "PROJECT_NOT_SUSPENDED"


class ProjectOwnerNotProjectAccount(Refused):
    """A project's owner account (where its issuance lands) must be a PROJECT account."""

    reason = "PROJECT_OWNER_NOT_PROJECT_ACCOUNT"


class VintageOutsideCreditingPeriod(Refused):
    """CCER of a vintage outside the project's crediting period."""

    reason = "VINTAGE_OUTSIDE_CREDITING_PERIOD"


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


class FreezeExistsWithDifferentContent(Conflict):
    reason = "FREEZE_EXISTS_WITH_DIFFERENT_CONTENT"


class ProposalExistsWithDifferentContent(Conflict):
    reason = "PROPOSAL_EXISTS_WITH_DIFFERENT_CONTENT"


class ProjectExistsWithDifferentContent(Conflict):
    reason = "PROJECT_EXISTS_WITH_DIFFERENT_CONTENT"


class ConcurrencyConflict(RegistryError):
    reason = "CONCURRENT_MODIFICATION"
    retryable = True


# -- origin detention with rebuttal (docs/origins.md) ------------------------------------


class UnknownDetention(NotFound):
    """No detention was ever recorded for that origin."""

    reason = "UNKNOWN_DETENTION"


class HolderNotNotified(Refused):
    """The account was not notified of the detention: it held no detained units of the
    origin when the detention was imposed, so it has nothing to rebut or clear."""

    reason = "HOLDER_NOT_NOTIFIED"


class RebuttalDeadlinePassed(Refused):
    """The holder's rebuttal period (from its notification) has ended: its units stay
    detained until the detention is cleared or confirmed."""

    reason = "REBUTTAL_DEADLINE_PASSED"


class RebuttalAlreadySubmitted(Refused):
    """The holder already submitted a (different) rebuttal for this detention."""

    reason = "REBUTTAL_ALREADY_SUBMITTED"


class RebuttalNotSubmitted(Refused):
    """A holder is cleared on the rebuttal it submitted: it has submitted none."""

    reason = "REBUTTAL_NOT_SUBMITTED"


class RebuttalPeriodOpen(Refused):
    """A detention cannot be confirmed while a notified holder may still rebut."""

    reason = "REBUTTAL_PERIOD_OPEN"


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
