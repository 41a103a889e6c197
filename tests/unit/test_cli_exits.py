"""The ``registry`` command's exit statuses (registry/cli/exits.py): one class of
outcome, one code, the same whether the error was raised in-process or came back from
the server as a gRPC status."""

from __future__ import annotations

import argparse
from typing import NoReturn

import grpc
import pytest

from registry.cli import app
from registry.cli.exits import STATUS_EXITS, SUMMARY, Exit, exit_for_error, exit_for_status
from registry.domain.errors import (
    REFUSAL_TYPES,
    AccountFrozen,
    ConcurrencyConflict,
    InvalidCommand,
    RegistryError,
    TransactionExistsWithDifferentContent,
    UnknownAccount,
)
from registry.settings import ConfigurationError
from services.errors import code_for


def test_each_branch_of_the_error_tree_has_its_own_status() -> None:
    assert exit_for_error(InvalidCommand("bad")) is Exit.INVALID
    assert exit_for_error(UnknownAccount("no account X")) is Exit.NOT_FOUND
    assert exit_for_error(AccountFrozen("frozen")) is Exit.REFUSED
    assert exit_for_error(TransactionExistsWithDifferentContent("taken")) is Exit.CONFLICT
    assert exit_for_error(ConcurrencyConflict("lost")) is Exit.UNAVAILABLE
    assert exit_for_error(ConfigurationError("no store")) is Exit.USAGE  # not INVALID
    assert exit_for_error(RegistryError("?")) is Exit.INTERNAL


@pytest.mark.parametrize("reason", sorted(REFUSAL_TYPES))
def test_an_error_exits_as_its_grpc_status_would(reason: str) -> None:
    """In-process or remote, the same error, the same status: the server's mapping
    (services/errors.py) composed with the CLI's equals the CLI's own."""
    cls = REFUSAL_TYPES[reason]
    error = cls("x", reason=reason)
    if isinstance(error, ConfigurationError):
        pytest.skip("a local setting: never sent by a server")
    assert exit_for_status(code_for(error).name) is exit_for_error(error)


def test_every_grpc_status_has_a_status_and_unknown_names_are_defects() -> None:
    assert set(STATUS_EXITS) == {code.name for code in grpc.StatusCode}
    assert exit_for_status("PERMISSION_DENIED") is exit_for_status("UNAUTHENTICATED") is Exit.DENIED
    assert exit_for_status("DEADLINE_EXCEEDED") is exit_for_status("UNAVAILABLE")
    assert exit_for_status("NO_SUCH_CODE") is Exit.INTERNAL


def test_the_statuses_are_distinct_and_listed_in_the_help() -> None:
    assert len({int(code) for code in Exit}) == len(Exit)
    assert set(SUMMARY) == set(Exit)
    assert [int(code) for code in Exit][:4] == [0, 1, 2, 3]  # the contract before the table
    epilog = app.build_parser().epilog or ""
    for code in Exit:
        assert f"{int(code):>3}  {SUMMARY[code]}" in epilog


def _defect(args: argparse.Namespace) -> NoReturn:
    raise ZeroDivisionError("a bug")


def test_a_defect_exits_70_with_its_traceback_not_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An uncaught exception would exit 1, which an alert reads as a finding."""
    build = app.build_parser

    def with_defect() -> argparse.ArgumentParser:
        parser = build()
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        commands.choices["config"].set_defaults(run=_defect)  # the command runs into a bug
        return parser

    monkeypatch.setattr(app, "build_parser", with_defect)
    assert app.main(["config"]) == Exit.INTERNAL == 70
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError: a bug" in err
    assert "registry: internal error (ZeroDivisionError)" in err
