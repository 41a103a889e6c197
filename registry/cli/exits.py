"""The ``registry`` command's exit statuses: one table, one mapping, for every command.

A script or an alert tells outcomes apart by the status alone, so each class of
outcome has its own code, and the same failure gets the same code whether the
registry answered in-process (an error of ``registry.domain.errors``) or over gRPC
(its status code: the server maps the error tree to statuses one-to-one,
``services/errors.py``).

Why these numbers: 0-3 were the documented contract before the others existed (alerts
rely on 1 meaning "a finding" and 3 "the database is away"), and 2 is what ``argparse``
exits with on a usage error, so the table extends them with small contiguous codes
(as ``curl`` and ``git`` do) rather than renumbering to BSD ``sysexits.h`` (64-78).
From ``sysexits.h`` it borrows one code, ``EX_SOFTWARE`` (70), for a defect: an
uncaught exception would otherwise exit 1, which an alert would read as a finding.

This module imports nothing heavy (no grpc): gRPC codes are matched by name."""

from __future__ import annotations

from enum import IntEnum

from registry.domain.errors import (
    ConcurrencyConflict,
    Conflict,
    InvalidCommand,
    NotFound,
    Refused,
    RegistryError,
)


class UsageError(Exception):
    """A bad argument found deep in a command (an unreadable input file, a year with
    nothing shipped): ``main`` prints the message as it is and exits ``Exit.USAGE``."""


class Exit(IntEnum):
    """What a ``registry`` command's exit status means (``registry --help`` lists it)."""

    OK = 0
    """Done (for ``check``, ``verify``, ``supply``: everything matches)."""
    FINDING = 1
    """The command ran and found a problem: a read model differs, the ledger does not
    verify, units not conserved, some rows of an import refused (the rest applied)."""
    USAGE = 2
    """Bad command line, option or setting (argparse's own code), no token found, no
    store where a read-only command looked, an input file that cannot be read."""
    UNAVAILABLE = 3
    """Nothing was decided, try again later (with the same ids): the database or the
    server cannot be reached or did not answer in time, the server is at capacity, or
    a write lost repeated concurrency races."""
    NOT_FOUND = 4
    """What the command names does not exist: an account, transaction, proposal,
    project, serial, hold..."""
    INVALID = 5
    """The request or the input file is malformed (a bad value, bad rows by line):
    nothing was stored; fix the input and run it again."""
    REFUSED = 6
    """The registry's state does not allow it (insufficient units, a frozen account,
    a closed year, self-approval, a suspended project...); a refused movement is
    recorded, so a retry gets the same refusal."""
    CONFLICT = 7
    """The id is already taken by different content: choose a new id, or send the
    same content to replay the first request."""
    DENIED = 8
    """The token is missing, unknown or revoked, or its principal may not do this."""
    INTERNAL = 70
    """A defect (``EX_SOFTWARE``): an unexpected exception here, or the server's
    ``INTERNAL``/``UNKNOWN``/``DATA_LOSS``; nothing was half-written. Report it."""
    BROKEN_PIPE = 141
    """The reader of the output closed it early (``registry config | head``): 128 +
    SIGPIPE, what a shell reports for ``cat`` in the same place; no traceback."""


def exit_for_error(error: RegistryError) -> Exit:
    """The exit status of a refusal raised in-process, by the branch of the error tree
    it belongs to (the same branch -> gRPC status mapping the server uses)."""
    from registry.settings import ConfigurationError  # settings imports the domain

    if isinstance(error, ConfigurationError):
        return Exit.USAGE
    if isinstance(error, InvalidCommand):
        return Exit.INVALID
    if isinstance(error, NotFound):
        return Exit.NOT_FOUND
    if isinstance(error, Refused):
        return Exit.REFUSED
    if isinstance(error, Conflict):
        return Exit.CONFLICT
    if isinstance(error, ConcurrencyConflict):
        return Exit.UNAVAILABLE
    return Exit.INTERNAL


STATUS_EXITS: dict[str, Exit] = {
    "OK": Exit.OK,
    "INVALID_ARGUMENT": Exit.INVALID,
    "OUT_OF_RANGE": Exit.INVALID,
    "NOT_FOUND": Exit.NOT_FOUND,
    "FAILED_PRECONDITION": Exit.REFUSED,
    "ALREADY_EXISTS": Exit.CONFLICT,
    "ABORTED": Exit.UNAVAILABLE,
    "UNAVAILABLE": Exit.UNAVAILABLE,
    "DEADLINE_EXCEEDED": Exit.UNAVAILABLE,
    "RESOURCE_EXHAUSTED": Exit.UNAVAILABLE,
    "CANCELLED": Exit.UNAVAILABLE,
    "UNAUTHENTICATED": Exit.DENIED,
    "PERMISSION_DENIED": Exit.DENIED,
    "UNIMPLEMENTED": Exit.INTERNAL,
    "INTERNAL": Exit.INTERNAL,
    "UNKNOWN": Exit.INTERNAL,
    "DATA_LOSS": Exit.INTERNAL,
}
"""A gRPC status code's name -> the exit status of a remote command that got it."""


def exit_for_status(code_name: str) -> Exit:
    """The exit status of a failed call, by its gRPC status code's name (``NOT_FOUND``)."""
    return STATUS_EXITS.get(code_name, Exit.INTERNAL)


SUMMARY: dict[Exit, str] = {
    Exit.OK: "done (check, verify, supply: everything matches)",
    Exit.FINDING: "a finding: a read model differs, the ledger does not verify, rows refused",
    Exit.USAGE: "bad command line, option, setting or input path; no token found",
    Exit.UNAVAILABLE: "database or server unreachable, timed out, busy: retry later",
    Exit.NOT_FOUND: "what the command names does not exist",
    Exit.INVALID: "the request or input file is malformed: nothing was stored",
    Exit.REFUSED: "the registry's state does not allow it (recorded refusal)",
    Exit.CONFLICT: "the id is taken by different content",
    Exit.DENIED: "no valid token, or the principal may not do this",
    Exit.INTERNAL: "a defect (here or the server's INTERNAL): report it",
    Exit.BROKEN_PIPE: "the reader closed the output early (| head)",
}
"""One line per status, for ``registry --help``."""


def exit_table() -> str:
    """The exit statuses as ``registry --help`` lists them."""
    return "\n".join(f"  {code.value:>3}  {SUMMARY[code]}" for code in Exit)
