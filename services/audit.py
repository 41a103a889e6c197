"""AuditService: the event stream, account history, past balances, serial traces, supply."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc

from registry.application.audit_events import LoggedEvent, account_events, read_events
from registry.application.restrictions import RestrictionView
from registry.domain.accounts import AccountType
from registry.domain.conservation import conserved
from registry.domain.errors import InvalidCommand
from registry.integrity.ledger import latest_digest
from registry.integrity.signing import load_public_key, public_key_pem
from registry.readmodels.queries import check_page_size
from registry.v1 import account_service_pb2 as account_pb
from registry.v1 import audit_service_pb2 as pb
from registry.v1 import audit_service_pb2_grpc as pb_grpc
from registry.v1 import common_pb2 as common
from services import convert
from services.backend import Backend
from services.policy import found_in_scope

DEFAULT_PAGE = 100
DEFAULT_STREAM_PAGE = 5000


class AuditServicer(pb_grpc.AuditServiceServicer):
    def __init__(self, backend: Backend, ledger_key: Path | None = None) -> None:
        self.registry = backend.registry
        self.read_models = backend.read_models
        self.ledger_key = ledger_key
        """The signing key file, whose public half GetLedgerDigest hands out."""

    def StreamEvents(
        self, request: pb.StreamEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.StreamEventsResponse]:
        for field in ("after_position", "max_events"):
            if getattr(request, field) < 0:
                raise InvalidCommand(
                    f"{field} must not be negative", reason="INVALID_POSITION", field=field
                )
        page_size = request.page_size or DEFAULT_STREAM_PAGE
        topics = convert.filter_values(request.event_types, "event_types")
        for index, topic in enumerate(request.event_types):
            convert.filter_text(topic, f"event_types[{index}]")
        account = request.account_id or None
        after, sent = request.after_position, 0
        while context.is_active():
            limit = page_size
            if request.max_events:
                limit = min(limit, request.max_events - sent)
            page = read_events(self.registry, after, limit, topics, account)
            if not page.events and page.last_position == after:
                return  # at the head of the log
            response = pb.StreamEventsResponse(
                last_position=page.last_position, head_position=page.head_position
            )
            _add_events(response.events, page.events)
            yield response
            after, sent = page.last_position, sent + len(page.events)
            if request.max_events and sent >= request.max_events:
                return

    def GetAccountHistory(
        self, request: pb.GetAccountHistoryRequest, context: grpc.ServicerContext
    ) -> pb.GetAccountHistoryResponse:
        account_id = convert.required(request.account_id, "account_id")
        page_size = check_page_size(request.page_size or DEFAULT_PAGE)
        after_version = _version_token(request.page_token) if request.page_token else 0
        events, next_after = account_events(self.registry, account_id, after_version, page_size)
        token = (
            ""
            if next_after is None
            else base64.urlsafe_b64encode(json.dumps(["v", next_after]).encode()).decode()
        )
        response = pb.GetAccountHistoryResponse(next_page_token=token)
        _add_events(response.events, events)
        return response

    def GetBalancesAsOf(
        self, request: pb.GetBalancesAsOfRequest, context: grpc.ServicerContext
    ) -> pb.GetBalancesAsOfResponse:
        account_id = convert.account_id(request.account_id)
        if not request.HasField("as_of_time"):
            raise InvalidCommand(
                "as_of_time is required", reason="MISSING_FIELD", field="as_of_time"
            )
        as_of = convert.from_timestamp(request.as_of_time, "as_of_time")
        rows = self.read_models.balances_as_of(account_id, as_of)
        return pb.GetBalancesAsOfResponse(
            account_id=account_id,
            as_of_time=request.as_of_time,
            holdings=[convert.holding_row_to_proto(account_id, row) for row in rows],
        )

    def TraceSerial(
        self, request: pb.TraceSerialRequest, context: grpc.ServicerContext
    ) -> pb.TraceSerialResponse:
        unit_class = convert.unit_class_from_proto(request.unit_class).key
        if request.serial < 1:
            raise InvalidCommand("serial must be positive", reason="INVALID_SERIAL", field="serial")
        current = self.read_models.locate_serial(unit_class, request.serial)
        movements = self.read_models.trace_serial(unit_class, request.serial)
        return pb.TraceSerialResponse(
            current_account=current,
            movements=[
                pb.SerialMovement(
                    position=m["position"],
                    kind=convert.enum_to_proto(m["kind"], common.TransactionKind),
                    party=m["party"],
                    transaction_id=m["client_id"],
                    source_account=m["source"] or "",
                    destination_account=m["destination"],
                    first_serial=m["first"],
                    last_serial=m["last"],
                )
                for m in movements
            ],
        )

    def GetSupply(
        self, request: pb.GetSupplyRequest, context: grpc.ServicerContext
    ) -> pb.GetSupplyResponse:
        lines = []
        for unit_class, line in sorted(self.read_models.supply().items()):
            by_type = line["by_account_type"]
            held = sum(v["total"] for v in by_type.values())
            lines.append(
                pb.SupplyLine(
                    unit_class=convert.unit_class_to_proto(unit_class),
                    issued=line["issued"],
                    held_in_accounts=held,
                    balanced=conserved(line["issued"], held),
                    by_account_type=[
                        pb.AccountTypeTotal(
                            account_type=convert.enum_to_proto(AccountType(t), common.AccountType),
                            total=v["total"],
                            held=v["held"],
                        )
                        for t, v in sorted(by_type.items())
                    ],
                )
            )
        return pb.GetSupplyResponse(lines=lines)

    def GetComplianceReport(
        self, request: pb.GetComplianceReportRequest, context: grpc.ServicerContext
    ) -> pb.GetComplianceReportResponse:
        year = request.compliance_year
        lines = self.registry.compliance_report(year)
        return pb.GetComplianceReportResponse(
            compliance_year=year,
            closed=self.registry.get_compliance_rules(year).closed,
            lines=[
                pb.ComplianceReportLine(
                    sector=(
                        convert.enum_to_proto(line.sector, common.Sector)
                        if line.sector
                        else common.SECTOR_UNSPECIFIED
                    ),
                    province=line.province,
                    state=account_pb.ComplianceState.Value(f"COMPLIANCE_STATE_{line.state}"),
                    accounts=line.accounts,
                    verified_emissions=line.verified_emissions,
                    obligation=line.obligation,
                    surrendered_cea=line.surrendered_cea,
                    surrendered_ccer=line.surrendered_ccer,
                    shortfall=line.shortfall,
                )
                for line in lines
            ],
        )

    def GetLedgerDigest(
        self, request: pb.GetLedgerDigestRequest, context: grpc.ServicerContext
    ) -> pb.GetLedgerDigestResponse:
        head = latest_digest(self.read_models.engine)
        response = pb.GetLedgerDigestResponse(
            position=head.position,
            digest=head.digest.hex(),
            events_chained=head.seq,
            head_position=int(self.registry.recorder.max_notification_id() or 0),
            public_key_pem=self._public_key_pem(),
        )
        if head.checkpoint is not None:
            c = head.checkpoint
            response.latest_checkpoint.CopyFrom(
                pb.LedgerCheckpoint(
                    position=c.position,
                    digest=c.digest.hex(),
                    key_id=c.key_id,
                    signature=c.signature,
                    sign_time=convert.timestamp(c.signed_at),
                    previous_position=c.previous_position or 0,
                    previous_digest=(c.previous_digest or b"").hex(),
                )
            )
        return response

    def _public_key_pem(self) -> str:
        if self.ledger_key is None or not self.ledger_key.exists():
            return ""
        return public_key_pem(load_public_key(self.ledger_key)).decode("ascii")

    def ListRestrictions(
        self, request: pb.ListRestrictionsRequest, context: grpc.ServicerContext
    ) -> pb.ListRestrictionsResponse:
        """Account freezes (from the account directory), then block freezes, origin
        detentions and the market halt (from the write model); an operator sees those
        touching its accounts, and the market halt, which touches every account."""
        page_size = check_page_size(request.page_size or DEFAULT_PAGE)
        start = convert.page_token(request.page_token, int)[0] if request.page_token else 0
        frozen = [
            RestrictionView(
                kind="ACCOUNT_FREEZE",
                restriction_id=account,
                state="ACTIVE",
                accounts=(account,),
            )
            for account in self.read_models.frozen_accounts()
        ]
        views = [
            v
            for v in (
                *frozen,
                *self.registry.restrictions.list_restrictions(request.include_lifted),
            )
            if not v.accounts or found_in_scope(v.accounts)
        ]
        page = views[start : start + page_size]
        more = start + page_size < len(views)
        return pb.ListRestrictionsResponse(
            restrictions=[convert.restriction_to_proto(v) for v in page],
            next_page_token=convert.encode_page_token(start + page_size) if more else "",
        )


def _add_events(target: Any, events: Sequence[LoggedEvent]) -> None:
    """Append events to a repeated Event field in place: building each message apart
    and copying it in costs half again as much on the stream's hot path."""
    add = target.add
    for position, aggregate_id, version, topic, payload in events:
        add(
            position=position,
            aggregate_id=aggregate_id,
            aggregate_version=version,
            event_type=topic,
            payload_json=payload.decode(),
        )


def _version_token(token: str) -> int:
    tag, version = convert.page_token(token, str, int)
    if tag != "v":
        raise InvalidCommand(
            "page token is not one this registry issued",
            reason="INVALID_PAGE_TOKEN",
            field="page_token",
        )
    return int(version)
