"""The one place where registry errors become gRPC statuses.

Every error leaves the server as a ``google.rpc.Status`` carrying an ``ErrorInfo``
(UPPER_SNAKE ``reason``, the fixed ``ERROR_DOMAIN``, metadata naming the offending ids)
and, for invalid input, a ``BadRequest`` with one field violation per bad field. The
status code follows from the branch of the domain error tree (``registry.domain.errors``)
so a client can act on the code alone and refine on the reason. The README's error table
is checked against ``CODES`` and ``GUIDANCE`` by a test.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from registry.domain.errors import (
    MAX_MESSAGE_BYTES,
    ConcurrencyConflict,
    Conflict,
    InvalidCommand,
    NotFound,
    Refused,
    RegistryError,
    clip,
)
from registry.persistence.faults import CONNECTION_LOST, DATABASE_BUSY, database_fault
from registry.readmodels.runner import ReadModelTimeout

ERROR_DOMAIN = "carbon-registry.v1"
"""ErrorInfo.domain of every error this API returns."""

CODES: dict[type[RegistryError], grpc.StatusCode] = {
    InvalidCommand: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    Refused: grpc.StatusCode.FAILED_PRECONDITION,
    Conflict: grpc.StatusCode.ALREADY_EXISTS,
    ConcurrencyConflict: grpc.StatusCode.ABORTED,
}
"""Branch of the error tree -> status code (the most specific branch wins)."""

GUIDANCE: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.INVALID_ARGUMENT: (
        "Fix the request (BadRequest names each bad field); nothing was stored."
    ),
    grpc.StatusCode.NOT_FOUND: "Check the id (ErrorInfo metadata names it).",
    grpc.StatusCode.FAILED_PRECONDITION: (
        "The ledger's state does not allow it (a transaction id is recorded as refused "
        "and stays taken); change the state or send a new request with a new id."
    ),
    grpc.StatusCode.ALREADY_EXISTS: (
        "The id is taken by different content; use a new id, or resend the original "
        "content to get the original answer."
    ),
    grpc.StatusCode.ABORTED: "Lost repeated races with concurrent writers; retry as is.",
    grpc.StatusCode.UNAVAILABLE: (
        "Transient (shutting down, read models behind); retry as is, with backoff."
    ),
    grpc.StatusCode.UNAUTHENTICATED: "Send a valid bearer token.",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "The server is at capacity; retry with backoff.",
    grpc.StatusCode.DEADLINE_EXCEEDED: (
        "The deadline ran out before the work began; retry as is (ids make it safe)."
    ),
    grpc.StatusCode.INTERNAL: "A registry defect; nothing half-written. Report it.",
}

DATABASE_MESSAGES: dict[str, str] = {
    CONNECTION_LOST: "the connection to the database was lost (restart or failover); "
    "retry as is with backoff: transaction ids make it safe",
    DATABASE_BUSY: "the database could not do it in time (a lock or statement timeout, "
    "no free connection); retry as is with backoff: transaction ids "
    "make it safe",
}
"""What a client is told for each database fault (``registry.persistence.faults``)."""

FIELD_BY_REASON: dict[str, str] = {
    "INVALID_ACCOUNT_ID": "account_id",
    "INVALID_HOLDER": "holder.name",
    "INVALID_CREDIT_CODE": "holder.credit_code",
    "INVALID_SECTOR": "holder.sector",
    "MISSING_PROVINCE": "holder.province",
    "INVALID_PROVINCE": "holder.province",
    "INVALID_PROJECT": "project",
    "INVALID_QUANTITY": "quantity",
    "QUANTITY_NOT_POSITIVE": "quantity",
    "QUANTITY_TOO_LARGE": "quantity",
    "INVALID_REASON": "reason",
    "INVALID_TIMEOUT": "timeout_seconds",
    "INVALID_VALIDITY_PERIOD": "validity_seconds",
    "INVALID_COMPLIANCE_YEAR": "compliance_year",
    "INVALID_VINTAGE": "vintage",
    "MISSING_PROJECT": "project",
    "UNEXPECTED_PROJECT": "project",
    "EMPTY_BATCH": "rows",
    "BATCH_TOO_LARGE": "rows",
    "INVALID_PAGE_SIZE": "page_size",
    "INVALID_PAGE_TOKEN": "page_token",
}
"""The request field a domain check is about, when the check does not say (the domain
knows values, not protobuf field paths); ``field`` metadata, when present, wins."""

FIELD_LABELS = {
    "reversed transaction id": "original_transaction_id",
    "reverses": "original_transaction_id",
}
"""Domain labels that are not the field name with spaces as underscores."""


@dataclass(eq=False)
class ApiError(Exception):
    """An error raised by the API layer itself (authentication, deadlines, capacity).

    Not frozen: raising sets ``__traceback__`` on it (through context managers too)."""

    code: grpc.StatusCode
    reason: str
    message: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    """ErrorInfo metadata: what a client needs to act (the principal, the account)."""

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


def code_for(error: RegistryError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in CODES:
            return CODES[cls]
    return grpc.StatusCode.INTERNAL


def classify(error: BaseException) -> tuple[grpc.StatusCode, str, str, dict[str, str]]:
    """The status code, reason, message and metadata a failed call is answered with:
    one place, for the answer (``to_status``), the call's log line and its metrics."""
    if isinstance(error, RegistryError):
        return code_for(error), error.reason, error.message, dict(error.metadata)
    if isinstance(error, ApiError):
        return (
            error.code,
            error.reason,
            clip(error.message, MAX_MESSAGE_BYTES),  # it may echo what it refuses
            {key: clip(value) for key, value in error.metadata.items()},
        )
    if isinstance(error, ReadModelTimeout):
        return grpc.StatusCode.UNAVAILABLE, "READ_MODELS_BEHIND", str(error), {}
    if (fault := database_fault(error)) is not None:
        # Any path (writes through the event store, reads through SQLAlchemy): a
        # failover, restart, lock or statement timeout is cured by a retry.
        return grpc.StatusCode.UNAVAILABLE, fault, DATABASE_MESSAGES[fault], {}
    # never leak internals: the log has the traceback
    return (grpc.StatusCode.INTERNAL, "INTERNAL", "internal error; nothing was half-written", {})


def to_status(error: BaseException) -> grpc.Status:
    """The rich status a failed call is answered with."""
    code, reason, message, metadata = classify(error)
    details = [
        _pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata))
    ]
    if code is grpc.StatusCode.INVALID_ARGUMENT and isinstance(error, RegistryError):
        details.append(_pack(_bad_request(error)))
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=details)
    return rpc_status.to_status(status)


def _bad_request(error: RegistryError) -> error_details_pb2.BadRequest:
    violations = [
        error_details_pb2.BadRequest.FieldViolation(
            field=v.field, description=v.description, reason=v.reason
        )
        for v in getattr(error, "violations", ())
    ]
    if not violations:
        violations.append(
            error_details_pb2.BadRequest.FieldViolation(
                field=field_of(error), description=error.message, reason=error.reason
            )
        )
    return error_details_pb2.BadRequest(field_violations=violations)


def field_of(error: RegistryError) -> str:
    label = error.metadata.get("field", "")
    if not label:
        return FIELD_BY_REASON.get(error.reason, "")
    return FIELD_LABELS.get(label, label.replace(" ", "_"))


def _pack(message: error_details_pb2.ErrorInfo | error_details_pb2.BadRequest) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed
