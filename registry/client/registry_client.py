"""A small Python client for the registry's gRPC API (what an exchange or operator needs).

Retries are safe because every mutating request carries the client's id: a batch whose
reply was lost is sent again as is, and the trades the first attempt settled come back
``TRADE_STATUS_ALREADY_SETTLED`` instead of settling twice.

    with RegistryClient("127.0.0.1:50051", token) as client:
        results = client.settle_trades([Trade(trade_id="T-1", ...)])
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, TypeVar, cast

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from registry.v1 import access_service_pb2_grpc as access_grpc
from registry.v1 import account_service_pb2 as account_pb
from registry.v1 import account_service_pb2_grpc as account_grpc
from registry.v1 import administration_service_pb2 as admin_pb
from registry.v1 import administration_service_pb2_grpc as admin_grpc
from registry.v1 import audit_service_pb2 as audit_pb
from registry.v1 import audit_service_pb2_grpc as audit_grpc
from registry.v1 import common_pb2 as common_pb
from registry.v1 import settlement_service_pb2 as settlement_pb
from registry.v1 import settlement_service_pb2_grpc as settlement_grpc

Response = TypeVar("Response")

RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,  # connection lost, server restarting
        grpc.StatusCode.ABORTED,  # lost optimistic-concurrency races
        grpc.StatusCode.RESOURCE_EXHAUSTED,  # server at capacity
        grpc.StatusCode.DEADLINE_EXCEEDED,  # the reply may have been lost: ids make it safe
    }
)
DEFAULT_BATCH = 1000


@dataclass(frozen=True)
class UnitsSpec:
    """Which units and how many: a unit type, optionally a vintage and a CCER project."""

    unit_type: str
    quantity: int
    vintage: int | None = None
    project: str | None = None


@dataclass(frozen=True)
class ErrorDetails:
    """What a failed call said, read from its ``google.rpc.Status``."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    violations: list[tuple[str, str]] = field(default_factory=list)
    """(field, description) pairs from a BadRequest."""


def error_details(error: grpc.RpcError) -> ErrorDetails:
    call = cast(grpc.Call, error)  # a failed call's RpcError is also its Call
    status = rpc_status.from_call(call)
    code = call.code()
    details = ErrorDetails(code, call.details() or "")
    if status is None:
        return details
    for packed in status.details:
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            details = ErrorDetails(
                code,
                status.message,
                info.reason,
                info.domain,
                dict(info.metadata),
                details.violations,
            )
        elif packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            packed.Unpack(bad)
            details.violations.extend((v.field, v.description) for v in bad.field_violations)
    return details


SERVICE_CONFIG: str = (resources.files("registry.client") / "service_config.json").read_text(
    "utf-8"
)
"""gRPC's service config for ``registry.v1`` (``registry/client/service_config.json``):
the channel itself retries UNAVAILABLE on every method and ABORTED on those safe to
repeat (all but AccessService's IssueToken, RotateToken, RegisterCertificate), so
clients in any language that load the same file retry the same way."""

CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.service_config", SERVICE_CONFIG),
)


NO_RETRIES: tuple[tuple[str, Any], ...] = (
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.enable_retries", 0),
)
"""A channel that never retries: each call is tried once, so its caller sees the
first failure (``RegistryClient(attempts=1)``)."""


def open_channel(
    target: str,
    *,
    tls_ca: bytes | None = None,
    tls_cert: bytes | None = None,
    tls_key: bytes | None = None,
    retries: bool = True,
) -> grpc.Channel:
    """A TLS channel when ``tls_ca`` is given, else plaintext. A client certificate
    without a CA is refused rather than silently sent nowhere over plaintext. With
    ``retries`` the channel retries per ``SERVICE_CONFIG``; without, never."""
    options = CHANNEL_OPTIONS if retries else NO_RETRIES
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("a client certificate needs both tls_cert and tls_key (PEM)")
    if tls_ca is None:
        if tls_cert is not None:
            raise ValueError(
                "a client certificate needs TLS: give tls_ca, the CA "
                "certificates that sign the server's certificate"
            )
        return grpc.insecure_channel(target, options=options)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls_ca, private_key=tls_key, certificate_chain=tls_cert
    )
    return grpc.secure_channel(target, credentials, options=options)


class RegistryClient:
    """Stubs for the four services over one channel, with safe retries."""

    def __init__(
        self,
        target: str,
        token: str,
        *,
        timeout: float = 30.0,
        attempts: int = 6,
        backoff: float = 0.1,
        tls_ca: bytes | None = None,
        tls_cert: bytes | None = None,
        tls_key: bytes | None = None,
    ) -> None:
        """``tls_ca`` (PEM CA certificates that sign the server's certificate) turns TLS
        on; ``tls_cert`` and ``tls_key`` (PEM) add a client certificate for mutual TLS."""
        # attempts=1 means one try: the channel's own retries (SERVICE_CONFIG) are off too,
        # so a caller that handles failures itself sees the first one, at once.
        self.channel = open_channel(
            target, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key, retries=attempts > 1
        )
        # No token (a client certificate authenticates instead): no authorization header,
        # rather than an empty "Bearer " the server could only refuse as malformed.
        self.metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff
        self.settlement = settlement_grpc.SettlementServiceStub(self.channel)
        self.accounts = account_grpc.AccountServiceStub(self.channel)
        self.administration = admin_grpc.AdministrationServiceStub(self.channel)
        self.audit = audit_grpc.AuditServiceStub(self.channel)
        self.access = access_grpc.AccessServiceStub(self.channel)

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def call(
        self, method: Callable[..., Response], request: Any, *, timeout: float | None = None
    ) -> Response:
        """One call, retried on transient failures with jittered backoff. Only for
        requests that are safe to repeat: reads, and writes that carry a client id.

        Two layers: the channel first retries per ``SERVICE_CONFIG`` (UNAVAILABLE,
        ABORTED, within the call's deadline, as any language's client would); this
        loop is the outer one, for what the channel does not retry (RESOURCE_EXHAUSTED,
        DEADLINE_EXCEEDED: ids make a repeat safe) and for an outage longer than the
        channel's attempts, ``attempts`` times at most. ``attempts=1``: one try, no
        retry by either layer."""
        for attempt in range(1, self.attempts + 1):
            try:
                return method(request, timeout=timeout or self.timeout, metadata=self.metadata)
            except grpc.RpcError as error:
                code = error.code()
                if code not in RETRYABLE or attempt == self.attempts:
                    raise
                time.sleep(self.backoff * 2 ** (attempt - 1) * random.uniform(0.5, 1.5))
        raise AssertionError("unreachable")

    # -- the exchange -------------------------------------------------------------------

    def settle_trades(
        self, trades: Sequence[settlement_pb.Trade], *, batch_size: int = DEFAULT_BATCH
    ) -> list[settlement_pb.TradeResult]:
        """Settle trades in batches; one result per trade, in order."""
        results: list[settlement_pb.TradeResult] = []
        for start in range(0, len(trades), batch_size):
            request = settlement_pb.SettleTradesRequest(trades=trades[start : start + batch_size])
            results.extend(self.call(self.settlement.SettleTrades, request).results)
        return results

    # -- operators and auditors ---------------------------------------------------------

    def balances(self, account_id: str, min_position: int = 0) -> list[common_pb.Holding]:
        request = account_pb.GetBalancesRequest(account_id=account_id, min_position=min_position)
        return list(self.call(self.accounts.GetBalances, request).holdings)

    def transactions(
        self, account_id: str, page_size: int = 500
    ) -> Iterator[account_pb.AccountMovement]:
        token = ""
        while True:
            page = self.call(
                self.accounts.ListTransactions,
                account_pb.ListTransactionsRequest(
                    account_id=account_id, page_size=page_size, page_token=token
                ),
            )
            yield from page.movements
            token = page.next_page_token
            if not token:
                return

    def transfer_units(
        self,
        transaction_id: str,
        source: str,
        destination: str,
        units: UnitsSpec,
        reason: str,
        reference: str = "",
    ) -> account_pb.TransferUnitsResponse:
        """An operator's transfer between two accounts of one holder; the same
        ``transaction_id`` again is a safe retry (``replayed``)."""
        return self.call(
            self.accounts.TransferUnits,
            account_pb.TransferUnitsRequest(
                transaction_id=transaction_id,
                source_account_id=source,
                destination_account_id=destination,
                unit_type=common_pb.UnitType.Value(f"UNIT_TYPE_{units.unit_type}"),
                vintage=units.vintage,
                project=units.project,
                quantity=units.quantity,
                reason=reason,
                reference=reference,
            ),
        )

    # -- regulators -------------------------------------------------------------------

    def propose_transfer(
        self,
        kind: str,
        proposal_id: str,
        transaction_id: str,
        source: str,
        destination: str,
        units: UnitsSpec,
        reason: str,
        reference: str,
    ) -> admin_pb.ProposeActionResponse:
        """Propose a transfer between holders (``kind``: COURT_ORDER_TRANSFER,
        MERGER_TRANSFER, SPLIT_TRANSFER or EXCHANGE_CORRECTION) for a second regulator
        to approve; approving it records the transfer under ``transaction_id``."""
        payload: dict[str, Any] = {
            "transaction_id": transaction_id,
            "source_account": source,
            "destination_account": destination,
            "unit_type": units.unit_type,
            "quantity": units.quantity,
            "reason": reason,
            "reference": reference,
        }
        if units.vintage is not None:
            payload["vintage"] = units.vintage
        if units.project is not None:
            payload["project"] = units.project
        return self.call(
            self.administration.ProposeAction,
            admin_pb.ProposeActionRequest(
                proposal_id=proposal_id,
                kind=admin_pb.ProposalKind.Value(f"PROPOSAL_KIND_{kind}"),
                payload_json=json.dumps(payload, sort_keys=True),
                reason=reason,
            ),
        )

    def projects(
        self,
        *,
        province: str = "",
        methodology: str = "",
        status: int = 0,
        page_size: int = 500,
    ) -> Iterator[admin_pb.Project]:
        """CCER projects by project id, filtered (``status``: an ``admin_pb.ProjectStatus``
        value, 0 for any), page after page."""
        token = ""
        while True:
            page = self.call(
                self.administration.ListProjects,
                admin_pb.ListProjectsRequest(
                    province=province,
                    methodology=methodology,
                    status=status,  # type: ignore[arg-type]
                    page_size=page_size,
                    page_token=token,
                ),
            )
            yield from page.projects
            token = page.next_page_token
            if not token:
                return

    def trace_serial(
        self, unit_class: common_pb.UnitClass, serial: int
    ) -> audit_pb.TraceSerialResponse:
        return self.call(
            self.audit.TraceSerial,
            audit_pb.TraceSerialRequest(unit_class=unit_class, serial=serial),
        )

    def stream_events(
        self,
        after_position: int = 0,
        *,
        event_types: Sequence[str] = (),
        account_id: str = "",
        page_size: int = 5000,
    ) -> Iterator[audit_pb.Event]:
        """Every event after ``after_position`` up to the head; resumes by itself from the
        last page received when the connection drops (no gap, no duplicate)."""
        after, failures = after_position, 0
        while True:
            request = audit_pb.StreamEventsRequest(
                after_position=after,
                event_types=event_types,
                account_id=account_id,
                page_size=page_size,
            )
            try:
                for page in self.audit.StreamEvents(
                    request, metadata=self.metadata, timeout=self.timeout
                ):
                    yield from page.events
                    after, failures = page.last_position, 0
                return
            except grpc.RpcError as error:
                failures += 1
                if error.code() not in RETRYABLE or failures >= self.attempts:
                    raise
                time.sleep(self.backoff * failures)


def unit_class(text: str) -> common_pb.UnitClass:
    """``CEA/2025`` or ``CCER/2024/PROJECT`` as a proto UnitClass."""
    parts = text.split("/")
    if len(parts) not in (2, 3) or not parts[1].isdigit():
        raise ValueError(f"unit class {text!r}: expected CEA/2025 or CCER/2024/PROJECT")
    return common_pb.UnitClass(
        unit_type=common_pb.UnitType.Value(f"UNIT_TYPE_{parts[0]}"),
        vintage=int(parts[1]),
        project=parts[2] if len(parts) == 3 else "",
    )
