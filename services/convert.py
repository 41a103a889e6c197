"""Protobuf <-> registry values. Nothing here decides anything about the ledger.

Enum values map by name: the proto value ``UNIT_TYPE_CEA`` is the domain's ``CEA``; an
``*_UNSPECIFIED`` value where one is required is an ``INVALID_ARGUMENT`` naming the field.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any, Literal, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from registry.application.commands import Trade
from registry.application.restrictions import RestrictionView
from registry.application.results import AccountView, HoldResult, TransactionResult
from registry.domain.accounts import Holder, Sector, check_account_id
from registry.domain.errors import InvalidCommand, RegistryError, RowsInvalid, Violation
from registry.domain.ids import check_client_id, has_control_characters
from registry.domain.origin_detentions import DetainedHolder
from registry.domain.rules import (
    AdvanceUseBase,
    CarryOver,
    CcerCapBase,
    ComplianceRules,
    UnitLine,
)
from registry.domain.units import SerialBlock, UnitClass, UnitSelector, UnitType
from registry.v1 import administration_service_pb2 as admin_pb
from registry.v1 import common_pb2 as pb
from registry.v1 import settlement_service_pb2 as settlement_pb

E = TypeVar("E", bound=StrEnum)
T = TypeVar("T")

PROTO_ENUMS: dict[str, Any] = {
    "UnitType": pb.UnitType,
    "AccountType": pb.AccountType,
    "AccountState": pb.AccountState,
    "Sector": pb.Sector,
    "TransactionKind": pb.TransactionKind,
    "TransactionStatus": pb.TransactionStatus,
    "HoldStatus": pb.HoldStatus,
}


def _prefix(enum_name: str) -> str:
    return "".join(f"_{c}" if c.isupper() else c.upper() for c in enum_name).lstrip("_")


def enum_to_proto(value: StrEnum | str, proto_enum: Any) -> Any:
    """Domain enum (or its text) -> proto enum number (typed Any: each proto enum has
    its own value type)."""
    return proto_enum.Value(f"{_prefix(proto_enum.DESCRIPTOR.name)}_{value}")


def enum_from_proto(
    number: int, proto_enum: Any, domain: type[E], field: str, *, required: bool = True
) -> E | None:
    """Proto enum number -> domain enum; UNSPECIFIED is None, or an error when required."""
    prefix = _prefix(proto_enum.DESCRIPTOR.name) + "_"
    try:
        name = proto_enum.Name(number)
    except ValueError:
        raise InvalidCommand(
            f"{field}: unknown value {number}", reason="INVALID_ENUM_VALUE", field=field
        ) from None
    if name.endswith("_UNSPECIFIED"):
        if required:
            raise InvalidCommand(f"{field} is required", reason="MISSING_FIELD", field=field)
        return None
    return domain(name.removeprefix(prefix))


MAX_VIOLATION_BYTES = 4096
"""The field violations one error returns: a client accepts about 8 KiB of trailers in
all (gRPC's default), and 10,000 bad rows would be a megabyte."""


def reportable(error: RowsInvalid) -> RowsInvalid:
    """``error`` with as many of its violations, first first, as fit in the trailers;
    when some are left out, the message says how many, and metadata has
    ``violations_total`` and ``violations_listed``. Nothing is stored either way."""
    kept: list[Violation] = []
    size = 0
    for violation in error.violations:
        size += sum(
            len(part.encode()) + 4
            for part in (violation.field, violation.reason, violation.description)
        )
        if kept and size > MAX_VIOLATION_BYTES:
            break
        kept.append(violation)
    if len(kept) == len(error.violations):
        return error
    total = len(error.violations)
    metadata = {**error.metadata, "violations_total": total, "violations_listed": len(kept)}
    return type(error)(
        f"{error.message} ({len(kept)} of the {total} problems are listed)",
        violations=kept,
        reason=error.reason,
        **metadata,
    )


def required(value: str, field: str) -> str:
    if not value:
        raise InvalidCommand(f"{field} is required", reason="MISSING_FIELD", field=field)
    return value


def client_id(value: str, field: str) -> str:
    """A required client id (hold, trade, proposal): 1-128 of letters, digits and
    ``._:-``, refused as INVALID_ID before any lookup (not a NOT_FOUND)."""
    return check_client_id(required(value, field), field)


def account_id(value: str, field: str = "account_id") -> str:
    """A required account id, well-formed before any query sees it (PostgreSQL refuses
    a NUL in a query parameter outright)."""
    try:
        return check_account_id(required(value, field))
    except InvalidCommand as error:
        error.metadata["field"] = field
        raise


MAX_FILTER_VALUES = 1_000
"""Values one filter may list (account_ids, event_types, kinds): a query has at most
65,535 parameters on PostgreSQL, and no listing needs more."""


def filter_values(values: Sequence[T], field: str) -> list[T]:
    """A repeated filter's values, each once, in order, at most MAX_FILTER_VALUES."""
    distinct = list(dict.fromkeys(values))
    if len(distinct) > MAX_FILTER_VALUES:
        raise InvalidCommand(
            f"{field} lists {len(distinct)} values, at most {MAX_FILTER_VALUES}",
            reason="TOO_MANY_FILTER_VALUES",
            field=field,
            limit=MAX_FILTER_VALUES,
        )
    return distinct


def filter_text(value: str, field: str, limit: int = 255) -> str:
    """A free-text filter value (a province, an event type): what the read models could
    hold, so no control character (PostgreSQL refuses a NUL in a query) and bounded."""
    if len(value) > limit or has_control_characters(value):
        raise InvalidCommand(
            f"{field} must be at most {limit} characters without control characters",
            reason="INVALID_FILTER",
            field=field,
        )
    return value


# -- time -----------------------------------------------------------------------------


def timestamp(moment: datetime | None) -> Timestamp | None:
    if moment is None:
        return None
    if moment.tzinfo is None:  # SQLite hands timezone-aware columns back naive, in UTC
        moment = moment.replace(tzinfo=UTC)
    stamp = Timestamp()
    stamp.FromDatetime(moment.astimezone(UTC))
    return stamp


MIN_TIMESTAMP_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z
MAX_TIMESTAMP_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
"""The range of google.protobuf.Timestamp (and of a datetime)."""


def from_timestamp(stamp: Timestamp, field: str) -> datetime:
    """A request's timestamp; one outside the Timestamp range (seconds beyond years
    1..9999, nanos outside 0..999,999,999) is an INVALID_ARGUMENT naming the field."""
    if not (
        MIN_TIMESTAMP_SECONDS <= stamp.seconds <= MAX_TIMESTAMP_SECONDS
        and 0 <= stamp.nanos <= 999_999_999
    ):
        raise InvalidCommand(
            f"{field} must be within 0001-01-01T00:00:00Z..9999-12-31T23:59:59.999999999Z "
            f"(seconds {stamp.seconds}, nanos {stamp.nanos})",
            reason="INVALID_TIMESTAMP",
            field=field,
        )
    return stamp.ToDatetime(tzinfo=UTC)


def optional_time(message: Any, field: str) -> datetime | None:
    return from_timestamp(getattr(message, field), field) if message.HasField(field) else None


# -- paging ---------------------------------------------------------------------------


def page_token(token: str, *shape: type) -> list[Any]:
    """The parts of a page token this registry issued (base64 JSON list of ``shape``:
    ``str`` or ``int``, a non-negative int64). Anything else, garbage or a token of
    another listing, is INVALID_PAGE_TOKEN, not a query error."""
    try:
        parts = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, UnicodeError):  # binascii.Error and JSONDecodeError included
        parts = None
    if not (
        isinstance(parts, list)
        and len(parts) == len(shape)
        and all(_token_part(part, kind) for part, kind in zip(parts, shape, strict=True))
    ):
        raise InvalidCommand(
            "page token is not one this registry issued",
            reason="INVALID_PAGE_TOKEN",
            field="page_token",
        )
    return parts


def encode_page_token(*parts: str | int) -> str:
    """A page token ``page_token`` reads back (base64 JSON list)."""
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode()


def _token_part(part: object, kind: type) -> bool:
    if kind is int:
        return type(part) is int and 0 <= part < 2**63
    return isinstance(part, str) and "\x00" not in part


def trade_date(message: pb.Date, field: str) -> date | None:
    if not (message.year or message.month or message.day):
        return None
    try:
        return date(message.year, message.month, message.day)
    except ValueError:
        raise InvalidCommand(
            f"{field} is not a calendar date", reason="INVALID_DATE", field=field
        ) from None


# -- units ----------------------------------------------------------------------------


def unit_class_to_proto(unit_class: UnitClass | str) -> pb.UnitClass:
    if isinstance(unit_class, str):
        return _unit_class_message(unit_class)
    return pb.UnitClass(
        unit_type=enum_to_proto(unit_class.unit_type, pb.UnitType),
        vintage=unit_class.vintage,
        project=unit_class.project,
    )


@lru_cache(maxsize=4096)
def _unit_class_message(key: str) -> pb.UnitClass:
    """A unit class key's message, parsed once: a balance shows the same few classes on
    every call. Shared, so never mutated: a message field set from it is a copy."""
    return unit_class_to_proto(UnitClass.from_key(key))


def unit_class_from_proto(message: pb.UnitClass, field: str = "unit_class") -> UnitClass:
    unit_type = enum_from_proto(message.unit_type, pb.UnitType, UnitType, f"{field}.unit_type")
    assert unit_type is not None
    try:
        return UnitClass(unit_type, message.vintage, message.project)
    except InvalidCommand as error:  # name the nested field: unit_class.vintage, ...
        part = "vintage" if error.reason == "INVALID_VINTAGE" else "project"
        error.metadata.setdefault("field", f"{field}.{part}")
        raise


def selector(message: Any, field: str = "unit_type") -> UnitSelector:
    """A request's unit_type + optional vintage (+ optional project) as a selector."""
    unit_type = enum_from_proto(message.unit_type, pb.UnitType, UnitType, field)
    assert unit_type is not None
    vintage = message.vintage if message.HasField("vintage") else None
    project = None
    if "project" in type(message).DESCRIPTOR.fields_by_name and message.HasField("project"):
        project = message.project
    return UnitSelector(unit_type, vintage, project)


def block_to_proto(block: SerialBlock) -> pb.SerialBlock:
    return pb.SerialBlock(
        unit_class=unit_class_to_proto(block.unit_class),
        first_serial=block.first,
        last_serial=block.last,
        quantity=block.quantity,
    )


def blocks_from_json(text: str) -> list[pb.SerialBlock]:
    """Blocks as the read models store them: ``[[unit class key, first, last], ...]``."""
    return [
        pb.SerialBlock(
            unit_class=unit_class_to_proto(key),
            first_serial=first,
            last_serial=last,
            quantity=last - first + 1,
        )
        for key, first, last in json.loads(text)
    ]


# -- accounts -------------------------------------------------------------------------


def holder_to_proto(holder: Mapping[str, str]) -> pb.Holder:
    sector = holder.get("sector", "")
    return pb.Holder(
        name=holder.get("name", ""),
        credit_code=holder.get("credit_code", ""),
        sector=enum_to_proto(sector, pb.Sector) if sector else pb.SECTOR_UNSPECIFIED,
        province=holder.get("province", ""),
    )


def holder_from_proto(message: pb.Holder, field: str = "holder") -> Holder:
    sector = enum_from_proto(message.sector, pb.Sector, Sector, f"{field}.sector", required=False)
    return Holder(
        message.name, message.credit_code, sector.value if sector else "", message.province
    )


def account_view_to_proto(view: AccountView) -> pb.Account:
    return pb.Account(
        account_id=view.account_id,
        account_type=enum_to_proto(view.account_type, pb.AccountType),
        state=enum_to_proto(view.state, pb.AccountState),
        holder=holder_to_proto(view.holder),
        open_time=timestamp(view.opened_at),
    )


def account_row_to_proto(row: Mapping[str, Any]) -> pb.Account:
    holder = {
        "name": row["holder_name"],
        "credit_code": row["credit_code"],
        "sector": row["sector"],
        "province": row["province"],
    }
    return pb.Account(
        account_id=row["account_id"],
        account_type=enum_to_proto(row["account_type"], pb.AccountType),
        state=enum_to_proto(row["state"], pb.AccountState),
        holder=holder_to_proto(holder),
        open_time=timestamp(row["opened_at"]),
    )


def holding_row_to_proto(
    account_id: str, row: Mapping[str, Any], restricted: tuple[int, int] = (0, 0)
) -> pb.Holding:
    """``restricted``: (detained, frozen) units of the holding's class."""
    detained, frozen = restricted
    return pb.Holding(
        account_id=account_id,
        unit_class=unit_class_to_proto(row["unit_class"]),
        total=row["total"],
        held=row.get("held", 0),
        available=row.get("available", row["total"] - row.get("held", 0)),
        detained=min(detained, row["total"]),
        frozen=min(frozen, row["total"]),
    )


# -- restrictions -------------------------------------------------------------------

RESTRICTION_STATES = {
    "ACTIVE": pb.RESTRICTION_STATE_ACTIVE,
    "DETAINED": pb.RESTRICTION_STATE_ACTIVE,
    "LIFTED": pb.RESTRICTION_STATE_LIFTED,
    "CLEARED": pb.RESTRICTION_STATE_LIFTED,
    "CONFIRMED": pb.RESTRICTION_STATE_CONFIRMED,
}


def detained_holder_to_proto(holder: DetainedHolder) -> pb.DetainedHolder:
    return pb.DetainedHolder(
        account_id=holder.account_id,
        state=enum_to_proto(holder.status, pb.HolderState),
        quantity=holder.quantity,
        deadline_time=timestamp(holder.deadline),
        rebuttal_id=holder.rebuttal_id,
        statement=holder.statement,
        evidence_sha256=list(holder.evidence),
        submit_time=timestamp(holder.submitted_at),
        decide_time=timestamp(holder.decided_at),
    )


def restriction_to_proto(view: RestrictionView) -> pb.Restriction:
    return pb.Restriction(
        kind=enum_to_proto(view.kind, pb.RestrictionKind),
        restriction_id=view.restriction_id,
        state=RESTRICTION_STATES[view.state],
        account_ids=list(view.accounts),
        reference=view.reference,
        reason=view.reason,
        principal=view.principal,
        start_time=timestamp(view.since),
        blocks=[block_to_proto(b) for b in view.blocks],
        quantity=view.quantity,
        holders=[detained_holder_to_proto(h) for h in view.holders],
    )


# -- transactions and holds -----------------------------------------------------------


def transaction_to_proto(result: TransactionResult) -> pb.Transaction:
    return pb.Transaction(
        party=result.party,
        transaction_id=result.transaction_id,
        kind=enum_to_proto(result.kind, pb.TransactionKind),
        status=enum_to_proto(result.status, pb.TransactionStatus),
        source_account=result.source or "",
        destination_account=result.destination or "",
        quantity=result.quantity,
        blocks=[block_to_proto(b) for b in result.blocks],
        reason=result.reason,
        principal=result.principal,
        refusal_reason=result.refusal_reason,
        refusal_message=result.refusal_message,
        reversed=result.reversed,
        record_time=timestamp(result.recorded_at),
        position=result.position or 0,
        details_json=json.dumps(result.details, sort_keys=True, default=str),
        reference=result.reference,
    )


def transaction_row_to_proto(row: Mapping[str, Any]) -> pb.Transaction:
    return pb.Transaction(
        party=row["party"],
        transaction_id=row["client_id"],
        kind=enum_to_proto(row["kind"], pb.TransactionKind),
        status=enum_to_proto(row["status"], pb.TransactionStatus),
        source_account=row["source"] or "",
        destination_account=row["destination"] or "",
        quantity=row["quantity"],
        blocks=blocks_from_json(row["blocks"]),
        reason=row["reason"],
        principal=row["principal"],
        refusal_reason=row["refusal_reason"],
        refusal_message=row["refusal_message"],
        reversed=bool(row["reversed_by"]),
        record_time=timestamp(row["recorded_at"]),
        position=row["position"],
        details_json=row["details"],
        reference=str(json.loads(row["details"] or "{}").get("reference", "")),
    )


def completed(result: TransactionResult) -> pb.Transaction:
    """A single movement refused for the ledger's state is an error for the caller (the
    refusal is recorded; a retry with the same id gets the same error)."""
    error: RegistryError | None = result.error()
    if error is not None:
        error.metadata.setdefault("transaction", f"{result.party}:{result.transaction_id}")
        raise error
    return transaction_to_proto(result)


def hold_to_proto(result: HoldResult) -> pb.Hold:
    return pb.Hold(
        party=result.party,
        hold_id=result.hold_id,
        account_id=result.account_id,
        status=enum_to_proto(result.status, pb.HoldStatus),
        quantity=result.quantity,
        settled_quantity=result.settled_quantity,
        blocks=[block_to_proto(b) for b in result.blocks],
        expire_time=timestamp(result.expires_at),
        refusal_reason=result.refusal_reason,
        refusal_message=result.refusal_message,
    )


def trade_from_proto(message: settlement_pb.Trade, index: int) -> Trade:
    """A trade as the application takes it. Raises InvalidCommand for what only the
    protobuf form can get wrong (no unit type, an impossible date); the application
    validates the rest per trade, so one malformed trade never fails the batch."""
    field = f"trades[{index}]"
    unit_type = enum_from_proto(message.unit_type, pb.UnitType, UnitType, f"{field}.unit_type")
    assert unit_type is not None
    return Trade(
        trade_id=message.trade_id,
        seller=message.seller_account,
        buyer=message.buyer_account,
        unit_type=unit_type.value,
        quantity=message.quantity,
        vintage=message.vintage if message.HasField("vintage") else None,
        hold_id=message.hold_id if message.HasField("hold_id") else None,
        trade_date=trade_date(message.trade_date, f"{field}.trade_date"),
        project=message.project if message.HasField("project") else None,
    )


def rules_from_proto(message: admin_pb.ComplianceRules) -> ComplianceRules:
    def optional(
        name: Literal["cea_min_vintage", "obligation_cap_bps", "carry_over_max_vintage"],
    ) -> int | None:
        return int(getattr(message, name)) if message.HasField(name) else None

    return ComplianceRules(
        ccer_cap_bps=message.ccer_cap_bps,
        cea_min_vintage=optional("cea_min_vintage"),
        advance_use_bps=message.advance_use_bps,
        surrender_deadline=message.surrender_deadline,
        obligation_cap_bps=optional("obligation_cap_bps"),
        ccer_cap_base=_enum_name(
            message.ccer_cap_base, admin_pb.CcerCapBase, "CCER_CAP_BASE_", CcerCapBase.OBLIGATION
        ),
        advance_use_base=_enum_name(
            message.advance_use_base,
            admin_pb.AdvanceUseBase,
            "ADVANCE_USE_BASE_",
            AdvanceUseBase.GAP,
        ),
        advance_use_min_gap_bps=message.advance_use_min_gap_bps,
        carry_over=_enum_name(
            message.carry_over, admin_pb.CarryOver, "CARRY_OVER_", CarryOver.UNLIMITED
        ),
        carry_over_max_vintage=optional("carry_over_max_vintage"),
        carry_over_net_sales_bps=message.carry_over_net_sales_bps,
        carry_over_base_tonnes=message.carry_over_base_tonnes,
        carry_over_sales_from=message.carry_over_sales_from,
        carry_over_sales_to=message.carry_over_sales_to,
        unit_obligation_cap_bps=dict(message.unit_obligation_cap_bps),
    )


def unit_lines(
    messages: Iterable[admin_pb.VerifiedEmissionsUnitLine],
) -> tuple[UnitLine, ...]:
    """A row's unit lines as registry values (checked with the row, all bad ones named)."""
    return tuple(
        UnitLine(m.unit_category, m.unit_id, m.verified_emissions, m.allocated) for m in messages
    )


def _enum_name(number: int, enum: Any, prefix: str, default: StrEnum) -> str:
    """A proto enum's value as the domain's name; unspecified: the default. An unknown
    number gives a name the rules' validation refuses, precisely."""
    if not number:
        return default.value
    try:
        return str(enum.Name(number)).removeprefix(prefix)
    except ValueError:
        return f"UNKNOWN_{number}"


def rules_to_proto(rules: ComplianceRules) -> admin_pb.ComplianceRules:
    return admin_pb.ComplianceRules(
        ccer_cap_bps=rules.ccer_cap_bps,
        cea_min_vintage=rules.cea_min_vintage,
        advance_use_bps=rules.advance_use_bps,
        surrender_deadline=rules.surrender_deadline,
        obligation_cap_bps=rules.obligation_cap_bps,
        ccer_cap_base=admin_pb.CcerCapBase.Value(f"CCER_CAP_BASE_{rules.ccer_cap_base}"),
        advance_use_base=admin_pb.AdvanceUseBase.Value(
            f"ADVANCE_USE_BASE_{rules.advance_use_base}"
        ),
        advance_use_min_gap_bps=rules.advance_use_min_gap_bps,
        carry_over=admin_pb.CarryOver.Value(f"CARRY_OVER_{rules.carry_over}"),
        carry_over_max_vintage=rules.carry_over_max_vintage,
        carry_over_net_sales_bps=rules.carry_over_net_sales_bps,
        carry_over_base_tonnes=rules.carry_over_base_tonnes,
        carry_over_sales_from=rules.carry_over_sales_from,
        carry_over_sales_to=rules.carry_over_sales_to,
        unit_obligation_cap_bps=rules.unit_obligation_cap_bps,
    )
