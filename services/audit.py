"""AuditService: the event stream, account history, past balances, serial traces, supply."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from registry.application import Registry
from registry.application.audit_events import (
    MAX_EVENTS_PAGE,
    LoggedEvent,
    account_events,
    read_events,
)
from registry.application.restrictions import RestrictionView
from registry.domain.accounts import AccountType
from registry.domain.conservation import conserved
from registry.domain.errors import InvalidCommand
from registry.integrity.ledger import latest_digest
from registry.integrity.signing import load_public_key, public_key_pem
from registry.persistence.eventlog import EventLog, Row, store_cursor
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
        """The pages as messages (for callers in this process); gRPC sends
        ``stream_pages``' instead (see ``add_to_server``)."""
        for page in self.stream_pages(request, context):
            yield pb.StreamEventsResponse.FromString(page) if isinstance(page, bytes) else page

    def stream_pages(
        self, request: pb.StreamEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[bytes | pb.StreamEventsResponse]:
        """StreamEvents' pages, each a message or, on PostgreSQL's whole-log path, the
        message already in protobuf's wire format (``_page_wire``), which the method's
        serialiser (``_page_bytes``) sends as it is."""
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
        log = EventLog.find(self.registry.recorder)
        direct = log is not None and log.postgres and account is None
        if direct and not 0 < page_size <= MAX_EVENTS_PAGE:
            read_events(self.registry, after, page_size)  # refused as read_events refuses
        while context.is_active():
            limit = page_size
            if request.max_events:
                limit = min(limit, request.max_events - sent)
            response: bytes | pb.StreamEventsResponse
            if direct:
                assert log is not None
                response, count, last = _stream_page(self.registry, log, after, limit, topics)
            else:
                page = read_events(self.registry, after, limit, topics, account)
                response = pb.StreamEventsResponse(
                    last_position=page.last_position, head_position=page.head_position
                )
                _add_events(response.events, page.events)
                count, last = len(page.events), page.last_position
            if not count and last == after:
                return  # at the head of the log
            yield response
            after, sent = last, sent + count
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


def _stream_page(
    registry: Registry, log: EventLog, after: int, limit: int, topics: Sequence[str]
) -> tuple[bytes, int, int]:
    """A page of the whole log (no account filter) on PostgreSQL, its event count and
    last position: ``read_events``' page (same rows, same last and head positions),
    read in one statement and written as the StreamEventsResponse's wire format
    without an object per event (see ``_page_wire``)."""
    with store_cursor(registry.recorder, index_order=True) as cursor:
        rows, head = log.stream_page(cursor, after, limit, topics)
    if not rows:
        last = max(after, head)
        return _page_wire((), last, head), 0, last
    last = rows[-1][0] if len(rows) == limit else head
    return _page_wire(rows, last, head), len(rows), last


def _page_wire(rows: Sequence[Row], last: int, head: int) -> bytes:
    """A whole StreamEventsResponse in protobuf's wire format, as gRPC sends it: the
    events (``_events_wire``), then ``last_position`` and ``head_position`` (left out
    at zero, as proto3 leaves them). Parsing it into a message only for gRPC to write
    it out again cost about 1 µs an event. A payload that is not UTF-8 is refused as
    the parse refused it (``DecodeError``): each is checked with ``isascii`` (no
    copy), and decoded when a page has one that is not plain ASCII. (Joining the
    payloads to check them at once made a second copy of the page, and allocating
    two of about a megabyte cost more than the check.)"""
    parts = _events_parts(rows)
    payloads = parts[1::2]
    if not all(map(bytes.isascii, payloads)):  # the usual page: no copy, no loop here
        for payload in payloads:
            try:
                payload.decode()
            except UnicodeDecodeError as error:
                raise DecodeError(f"an event's payload is not UTF-8: {error}") from error
    if last:
        parts.append(b"\x10" + _varint(last))
    if head:
        parts.append(b"\x18" + _varint(head))
    return b"".join(parts)  # one copy of the page: appending to it would copy it again


def _page_bytes(page: bytes | pb.StreamEventsResponse) -> bytes:
    """StreamEvents' response serialiser: a page already in the wire format goes as it
    is, a message is serialised."""
    return page if isinstance(page, bytes) else page.SerializeToString()


SERVICE = "registry.v1.AuditService"


def add_to_server(servicer: AuditServicer, server: grpc.Server) -> None:
    """AuditService on ``server`` as ``add_AuditServiceServicer_to_server`` adds it,
    but StreamEvents serves ``stream_pages`` with ``_page_bytes`` as its serialiser.
    Both ways a call finds its handler are covered: grpcio asks generic handlers in the
    order they were added (this one goes first), and a registered method's handler is
    the last one registered (this one goes last). Interceptors wrap it as any other
    (they keep the handler's serialiser)."""
    stream = {
        "StreamEvents": grpc.unary_stream_rpc_method_handler(
            servicer.stream_pages,
            request_deserializer=pb.StreamEventsRequest.FromString,
            response_serializer=_page_bytes,
        )
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, stream),))
    pb_grpc.add_AuditServiceServicer_to_server(servicer, server)
    server.add_registered_method_handlers(SERVICE, stream)


_VARINTS = [bytes((n,)) if n < 0x80 else bytes(((n & 0x7F) | 0x80, n >> 7)) for n in range(1 << 14)]
"""The varint of every number below 2**14 (lengths, versions): a list index each."""


def _varint(n: int) -> bytes:
    """Protobuf's base-128 varint of an int64 (negative: as its 64-bit two's complement)."""
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_TOPICS: dict[str, bytes] = {}
"""Per topic: the ``event_type`` field as encoded (tag, length, UTF-8)."""


def _events_wire(rows: Sequence[Row]) -> bytes:
    """The ``events`` field of a StreamEventsResponse in protobuf's wire format (see
    ``_events_parts``)."""
    return b"".join(_events_parts(rows))


def _events_parts(rows: Sequence[Row]) -> list[bytes]:
    """The ``events`` field of a StreamEventsResponse, in protobuf's wire format,
    straight from the log's rows (position, aggregate id, version, topic, payload,
    anything): the payload bytes are copied as stored, never decoded and re-encoded.
    Writing it costs less than adding a message per event from Python. In pieces, an
    event's fields then its payload (every other piece, from the second), to be
    joined once."""
    varints, topics, varint = _VARINTS, _TOPICS, _varint
    parts: list[bytes] = []
    add = parts.append
    for position, aggregate_id, version, topic, payload, _ in rows:
        encoded = topics.get(topic)
        if encoded is None:
            name = topic.encode()
            encoded = topics[topic] = b"\x22" + varint(len(name)) + name
        if 0 <= position < 0x4000:
            at = varints[position]
        elif 0x4000 <= position < 0x200000:
            at = bytes(((position & 0x7F) | 0x80, ((position >> 7) & 0x7F) | 0x80, position >> 14))
        else:
            at = varint(position)
        key = aggregate_id.encode()
        keyed = varints[len(key)] if len(key) < 0x4000 else varint(len(key))
        ver = varints[version] if 0 <= version < 0x4000 else varint(version)
        size = len(payload)
        sized = varints[size] if size < 0x4000 else varint(size)
        # the event's length: its fields, their four tags (event_type's is in encoded)
        size += len(at) + len(keyed) + len(key) + len(ver) + len(encoded) + len(sized) + 4
        add(
            b"\x0a%b\x08%b\x12%b%b\x18%b%b\x2a%b"
            % (
                varints[size] if size < 0x4000 else varint(size),
                at,
                keyed,
                key,
                ver,
                encoded,
                sized,
            )
        )
        add(payload)  # copied once, by the join
    return parts


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
