"""AdministrationService over a real channel: accounts, issuance, allocation tables,
reversals and verified emissions, with every documented error (code, ErrorInfo reason,
BadRequest field names)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from registry.client import RegistryClient
from registry.domain.transactions import Principal
from registry.v1 import account_service_pb2 as account_pb
from registry.v1 import administration_service_pb2 as pb
from registry.v1 import audit_service_pb2 as audit_pb
from registry.v1 import common_pb2 as common
from tests.e2e.conftest import EXISTS, INVALID, NOT_FOUND, PRECONDITION, Api, rpc_error, running_api
from tests.e2e.market import (
    ALLOCATIONS,
    CCER,
    CEA,
    CEA_2025,
    PROJECT_OWNER,
    TRADER,
    allocate,
    allocation,
    balance,
    caught_up,
    close,
    compliance,
    compliance_holder,
    emissions,
    freeze,
    head_position,
    issue,
    open_account,
    open_trader,
    record_emissions,
    register_project,
    reverse,
    seed_market,
    trade,
    transaction,
    unfreeze,
)

A, B = list(ALLOCATIONS)
COMPLIANCE = common.ACCOUNT_TYPE_COMPLIANCE
TRADING = common.ACCOUNT_TYPE_TRADING
OPEN = common.ACCOUNT_STATE_OPEN
FROZEN = common.ACCOUNT_STATE_FROZEN
CLOSED = common.ACCOUNT_STATE_CLOSED
COMPLETED = common.ROW_STATUS_COMPLETED
ALREADY = common.ROW_STATUS_ALREADY_COMPLETED
REFUSED = common.ROW_STATUS_REFUSED
REJECTED = common.ROW_STATUS_REJECTED
RECORDED = pb.EMISSIONS_ROW_STATUS_RECORDED
UNCHANGED = pb.EMISSIONS_ROW_STATUS_UNCHANGED
EXCHANGE_PARTY = "shanghai-exchange"


def get_account(client: RegistryClient, account_id: str) -> common.Account:
    return client.call(
        client.accounts.GetAccount, account_pb.GetAccountRequest(account_id=account_id)
    ).account


def bad_request(call: Callable[[], object]) -> tuple[grpc.StatusCode, str, list[tuple[str, str]]]:
    """Make the call, expect it to fail; (code, ErrorInfo reason, [(field, violation
    reason)]) from its status."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    status = rpc_status.from_call(caught.value)
    assert status is not None, "no google.rpc.Status on the error"
    reason, fields = "", []
    for packed in status.details:
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            assert info.domain == "carbon-registry.v1"
            reason = info.reason
        elif packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            packed.Unpack(bad)
            fields = [(v.field, v.reason) for v in bad.field_violations]
    return caught.value.code(), reason, fields


# -- OpenAccount ------------------------------------------------------------------------


def test_open_account_replays_same_details_and_refuses_other_details(api: Api) -> None:
    reg = api.regulator
    holder = compliance_holder("Jinan Steel Co.", sector=common.SECTOR_STEEL)
    opened = open_account(reg, "STL-SD-0001", COMPLIANCE, holder)
    account = opened.account
    assert not opened.replayed
    assert (account.account_id, account.account_type, account.state) == (
        "STL-SD-0001",
        COMPLIANCE,
        OPEN,
    )
    assert account.holder == holder and account.open_time.seconds > 0
    assert get_account(reg, "STL-SD-0001") == account

    again = open_account(reg, "STL-SD-0001", COMPLIANCE, holder)
    assert again.replayed and again.account == account
    # another regulator retrying the same opening is answered the same way
    assert open_account(api.clients["regulator2"], "STL-SD-0001", COMPLIANCE, holder).replayed

    for account_type, other in (
        (COMPLIANCE, compliance_holder("Someone Else Co.")),
        (TRADING, holder),
    ):
        error = rpc_error(lambda t=account_type, h=other: open_account(reg, "STL-SD-0001", t, h))
        assert (error.code, error.reason) == (EXISTS, "ACCOUNT_EXISTS_WITH_DIFFERENT_CONTENT")
        assert error.metadata == {"account": "STL-SD-0001"}
    assert get_account(reg, "STL-SD-0001") == account

    error = rpc_error(
        lambda: open_account(reg, "STL-SD-0002", common.ACCOUNT_TYPE_UNSPECIFIED, holder)
    )
    assert (error.code, error.reason) == (INVALID, "MISSING_FIELD")
    assert error.violations == [("account_type", "account_type is required")]
    invalid_holders = {
        "INVALID_CREDIT_CODE": compliance_holder("X Co.", credit_code="91370000-BAD"),
        "INVALID_SECTOR": common.Holder(
            name="X Co.", credit_code="91370000163081422B", province="Shandong"
        ),
        "MISSING_PROVINCE": compliance_holder("X Co.", province=" "),
        "INVALID_HOLDER": compliance_holder(""),
    }
    for reason, bad in invalid_holders.items():
        error = rpc_error(lambda h=bad: open_account(reg, "STL-SD-0002", COMPLIANCE, h))
        assert (error.code, error.reason) == (INVALID, reason)
    error = rpc_error(lambda: open_account(reg, "stl sd 2", COMPLIANCE, holder))
    assert (error.code, error.reason) == (INVALID, "INVALID_ACCOUNT_ID")
    # a trading account needs no credit code, sector or province
    assert (
        open_account(reg, "TRD-BJ-0001", TRADING, common.Holder(name="Beijing Fund")).account.state
        == OPEN
    )
    # nothing of the invalid requests was stored
    error = rpc_error(lambda: get_account(reg, "STL-SD-0002"))
    assert (error.code, error.reason, error.metadata) == (
        NOT_FOUND,
        "UNKNOWN_ACCOUNT",
        {"account": "STL-SD-0002"},
    )


def test_open_account_of_a_national_type_needs_its_fixed_id(api: Api) -> None:
    error = rpc_error(
        lambda: open_account(
            api.regulator, "MY-ISSUANCE", common.ACCOUNT_TYPE_ISSUANCE, common.Holder(name="Rogue")
        )
    )
    assert (error.code, error.reason) == (INVALID, "NATIONAL_ACCOUNT_ID")
    assert [field for field, _ in error.violations] == ["account_id"]
    # the national account itself is opened at start-up; opening it again is a replay
    again = open_account(
        api.regulator,
        "CN-ISSUANCE",
        common.ACCOUNT_TYPE_ISSUANCE,
        common.Holder(name="National Carbon Emissions Registry"),
    )
    assert again.replayed


# -- FreezeAccount, UnfreezeAccount, CloseAccount ---------------------------------------


def test_freeze_unfreeze_close_with_request_ids(api: Api) -> None:
    reg = api.regulator
    account_id = "TRD-BJ-0001"
    open_trader(reg, account_id)

    frozen = freeze(reg, "FRZ-1", account_id)
    assert (frozen.account.state, frozen.replayed) == (FROZEN, False)
    retried = freeze(reg, "FRZ-1", account_id)
    assert (retried.account.state, retried.replayed) == (FROZEN, True)
    error = rpc_error(lambda: freeze(reg, "FRZ-2", account_id))
    assert (error.code, error.reason, error.metadata) == (
        PRECONDITION,
        "ACCOUNT_STATE_UNCHANGED",
        {"account": account_id},
    )
    assert get_account(reg, account_id).state == FROZEN

    unfrozen = unfreeze(reg, "UNF-1", account_id)
    assert (unfrozen.account.state, unfrozen.replayed) == (OPEN, False)
    assert unfreeze(reg, "UNF-1", account_id).replayed
    error = rpc_error(lambda: unfreeze(reg, "UNF-2", account_id))
    assert (error.code, error.reason) == (PRECONDITION, "ACCOUNT_STATE_UNCHANGED")

    for change in (freeze, unfreeze, close):
        error = rpc_error(lambda c=change: c(reg, "", account_id))
        assert (error.code, error.reason) == (INVALID, "MISSING_FIELD")
        assert error.violations == [("request_id", "request_id is required")]
        error = rpc_error(lambda c=change: c(reg, "CHG-9", "NOPE-0001"))
        assert (error.code, error.reason, error.metadata) == (
            NOT_FOUND,
            "UNKNOWN_ACCOUNT",
            {"account": "NOPE-0001"},
        )
        error = rpc_error(lambda c=change: c(reg, "CHG-9", ""))
        assert (error.code, error.reason) == (INVALID, "MISSING_FIELD")
        assert error.violations == [("account_id", "account_id is required")]
    error = rpc_error(lambda: freeze(reg, "bad id!", account_id))
    assert (error.code, error.reason) == (INVALID, "INVALID_ID")

    closed = close(reg, "CLS-1", account_id)
    assert (closed.account.state, closed.replayed) == (CLOSED, False)
    assert close(reg, "CLS-1", account_id).replayed
    for change in (close, freeze, unfreeze):
        error = rpc_error(lambda c=change: c(reg, "CLS-2", account_id))
        assert (error.code, error.reason) == (PRECONDITION, "ACCOUNT_CLOSED")
    assert get_account(reg, account_id).state == CLOSED

    # the account's history has exactly the changes that were made, once each
    caught_up(reg)
    listed = reg.call(
        reg.accounts.ListAccounts, account_pb.ListAccountsRequest(account_type=TRADING)
    )
    assert [(a.account_id, a.state) for a in listed.accounts] == [(account_id, CLOSED)]
    history = reg.call(
        reg.audit.GetAccountHistory, audit_pb.GetAccountHistoryRequest(account_id=account_id)
    )
    assert [e.event_type.rsplit(".", 1)[1] for e in history.events] == [
        "Opened",
        "Frozen",
        "Unfrozen",
        "Closed",
    ]


def test_close_refuses_non_empty_and_national_accounts(api: Api) -> None:
    reg = api.regulator
    seed_market(reg)
    error = rpc_error(lambda: close(reg, "CLS-1", A))
    assert (error.code, error.reason, error.metadata) == (
        PRECONDITION,
        "ACCOUNT_NOT_EMPTY",
        {"account": A},
    )
    for national in ("CN-ISSUANCE", "CN-ALLOCATION-RESERVE", "CN-SURRENDER", "CN-CANCELLATION"):
        error = rpc_error(lambda n=national: close(reg, "CLS-2", n))
        assert (error.code, error.reason, error.metadata) == (
            PRECONDITION,
            "NATIONAL_ACCOUNT_PROTECTED",
            {"account": national},
        )
        assert get_account(reg, national).state == OPEN
    # a frozen account refuses outgoing movements but may still receive
    freeze(reg, "FRZ-A", A)
    results = allocate(reg, allocation("AL-TO-FROZEN", A, 10))
    assert [(r.status, r.reason) for r in results] == [(COMPLETED, "")]
    [refused] = api.exchange.settle_trades([trade("T-1", A, TRADER, 1)])
    assert refused.reason == "ACCOUNT_FROZEN"
    assert balance(reg, A, results[0].position) == ALLOCATIONS[A] + 10


def test_national_accounts_cannot_be_frozen(api: Api) -> None:
    for national in ("CN-ISSUANCE", "CN-ALLOCATION-RESERVE", "CN-SURRENDER", "CN-CANCELLATION"):
        error = rpc_error(lambda n=national: freeze(api.regulator, "FRZ-N", n))
        assert (error.code, error.reason, error.metadata) == (
            PRECONDITION,
            "NATIONAL_ACCOUNT_PROTECTED",
            {"account": national},
        )
        assert get_account(api.regulator, national).state == OPEN


def test_a_late_retry_of_a_freeze_is_answered_not_repeated(api: Api) -> None:
    reg = api.regulator
    open_trader(reg, "TRD-BJ-0001")
    freeze(reg, "FRZ-1", "TRD-BJ-0001")
    unfreeze(reg, "UNF-1", "TRD-BJ-0001")
    late = freeze(reg, "FRZ-1", "TRD-BJ-0001")  # the first freeze's reply was lost
    assert late.replayed and late.account.state == OPEN
    assert unfreeze(reg, "UNF-1", "TRD-BJ-0001").replayed
    assert get_account(reg, "TRD-BJ-0001").state == OPEN
    history = reg.call(
        reg.audit.GetAccountHistory, audit_pb.GetAccountHistoryRequest(account_id="TRD-BJ-0001")
    )
    assert [e.event_type.rsplit(".", 1)[1] for e in history.events] == [
        "Opened",
        "Frozen",
        "Unfrozen",
    ]


def test_a_request_id_reused_for_another_change_is_already_exists(api: Api) -> None:
    reg = api.regulator
    open_trader(reg, "TRD-BJ-0001")
    freeze(reg, "CHG-1", "TRD-BJ-0001")
    for change in (unfreeze, close):
        error = rpc_error(lambda c=change: c(reg, "CHG-1", "TRD-BJ-0001"))
        assert (error.code, error.reason) == (EXISTS, "REQUEST_EXISTS_WITH_DIFFERENT_CONTENT")
        assert error.metadata == {"account": "TRD-BJ-0001", "request": "CHG-1"}
    assert get_account(reg, "TRD-BJ-0001").state == FROZEN
    # the same id on another account is another request
    open_trader(reg, "TRD-BJ-0002")
    assert not freeze(reg, "CHG-1", "TRD-BJ-0002").replayed


# -- IssueUnits -------------------------------------------------------------------------


def test_issue_units_creates_serials_once_per_id(api: Api) -> None:
    reg = api.regulator
    first = issue(reg, "ISS-1", 1_000)
    txn = first.transaction
    assert not first.replayed and txn.position > 0
    assert (txn.party, txn.transaction_id, txn.kind, txn.status) == (
        "mee",
        "ISS-1",
        common.TRANSACTION_KIND_ISSUANCE,
        common.TRANSACTION_STATUS_COMPLETED,
    )
    assert (txn.source_account, txn.destination_account, txn.quantity, txn.principal) == (
        "",
        "CN-ISSUANCE",
        1_000,
        "mee/regulator-li",
    )
    assert [(b.unit_class, b.first_serial, b.last_serial, b.quantity) for b in txn.blocks] == [
        (CEA_2025, 1, 1_000, 1_000)
    ]
    second = issue(reg, "ISS-2", 500).transaction
    assert [(b.first_serial, b.last_serial) for b in second.blocks] == [(1_001, 1_500)]

    replay = issue(reg, "ISS-1", 1_000)
    assert replay.replayed and replay.transaction.position == 0
    assert replay.transaction.blocks == txn.blocks
    assert replay.transaction.record_time == txn.record_time
    error = rpc_error(lambda: issue(reg, "ISS-1", 999))
    assert (error.code, error.reason, error.metadata) == (
        EXISTS,
        "TRANSACTION_EXISTS_WITH_DIFFERENT_CONTENT",
        {"transaction": "mee:ISS-1"},
    )
    # ids are scoped by party: another party's ISS-1 is another issuance
    api.registry.access.grant_role(
        Principal("system", "tests"),
        "exchange-issues",
        Principal(EXCHANGE_PARTY, "settlement"),
        "regulator",
        (),
        "a second party that may issue, for this test",
    )
    other = issue(api.exchange, "ISS-1", 999).transaction
    assert (other.party, other.blocks[0].first_serial) == (EXCHANGE_PARTY, 1_501)

    project = common.UnitClass(unit_type=CCER, vintage=2024, project="CCER-2024-0117")
    unregistered = rpc_error(lambda: issue(reg, "ISS-CCER-0", 300, project))
    assert (unregistered.code, unregistered.reason) == (PRECONDITION, "PROJECT_NOT_REGISTERED")
    register_project(reg, "CCER-2024-0117")
    ccer = issue(reg, "ISS-CCER-1", 300, project).transaction
    assert [(b.unit_class, b.first_serial, b.last_serial) for b in ccer.blocks] == [
        (project, 1, 300)
    ]
    assert ccer.destination_account == PROJECT_OWNER  # into the project owner's account

    invalid = {
        "QUANTITY_NOT_POSITIVE": ("ISS-3", 0, CEA_2025),
        "QUANTITY_TOO_LARGE": ("ISS-3", 10**12 + 1, CEA_2025),
        "MISSING_ID": ("", 10, CEA_2025),
        "INVALID_ID": ("ISS 3", 10, CEA_2025),
        "MISSING_PROJECT": ("ISS-3", 10, common.UnitClass(unit_type=CCER, vintage=2024)),
        "UNEXPECTED_PROJECT": (
            "ISS-3",
            10,
            common.UnitClass(unit_type=CEA, vintage=2025, project="P-1"),
        ),
        "INVALID_VINTAGE": ("ISS-3", 10, common.UnitClass(unit_type=CEA, vintage=1990)),
        "MISSING_FIELD": ("ISS-3", 10, common.UnitClass(vintage=2025)),
    }
    for reason, (txn_id, quantity, unit_class) in invalid.items():
        error = rpc_error(lambda i=txn_id, q=quantity, u=unit_class: issue(reg, i, q, u))
        assert (error.code, error.reason) == (INVALID, reason), reason
    error = rpc_error(lambda: issue(reg, "ISS-3", -5))
    assert (error.code, error.reason) == (INVALID, "QUANTITY_NOT_POSITIVE")
    # ISS-3 was never stored: it is still free
    assert issue(reg, "ISS-3", 1).transaction.blocks[0].first_serial == 2_500
    holdings = reg.balances("CN-ISSUANCE", min_position=head_position(reg))
    assert {(h.unit_class.unit_type, h.total) for h in holdings} == {(CEA, 2_500)}
    owned = reg.balances(PROJECT_OWNER, min_position=head_position(reg))
    assert {(h.unit_class.unit_type, h.total) for h in owned} == {(CCER, 300)}


# -- AllocateUnits ----------------------------------------------------------------------


def test_allocation_table_reports_each_row_in_request_order(api: Api) -> None:
    reg = api.regulator
    seed_market(reg)
    no_type = allocation("AL-6", A, 5)
    no_type.unit_type = common.UNIT_TYPE_UNSPECIFIED
    reserve = allocation("AL-3", A, 10)
    reserve.ClearField("source_account")  # the allocation reserve, which is empty
    rows = [
        allocation("AL-1", A, 1_000),  # good
        allocation(f"ALLOC-2025-{A}", A, ALLOCATIONS[A]),  # the seed's, same content
        allocation(f"ALLOC-2025-{B}", B, 999),  # the seed's id, other content
        allocation("AL-2", "NOPE-0001", 10),  # unknown account
        reserve,  # nothing in the reserve
        allocation("AL-4", TRADER, 10),  # allocation to a trading account
        allocation("AL-5", A, 0),  # malformed quantity
        no_type,  # no unit type
        allocation("AL-7", B, 2_000),  # good
        allocation("AL-1", A, 1_000),  # repeated within the table
        allocation("AL-8", A, 5, source="not an id"),  # malformed source
        allocation("", A, 5),  # no id
    ]
    results = allocate(reg, *rows)
    assert [(r.transaction_id, r.status, r.reason) for r in results] == [
        ("AL-1", COMPLETED, ""),
        (f"ALLOC-2025-{A}", ALREADY, ""),
        (f"ALLOC-2025-{B}", REJECTED, "TRANSACTION_EXISTS_WITH_DIFFERENT_CONTENT"),
        ("AL-2", REFUSED, "UNKNOWN_ACCOUNT"),
        ("AL-3", REFUSED, "INSUFFICIENT_UNITS"),
        ("AL-4", REFUSED, "MOVEMENT_NOT_ALLOWED"),
        ("AL-5", REJECTED, "QUANTITY_NOT_POSITIVE"),
        ("AL-6", REJECTED, "MISSING_FIELD"),
        ("AL-7", COMPLETED, ""),
        ("AL-1", ALREADY, ""),
        ("AL-8", REJECTED, "INVALID_ACCOUNT_ID"),
        ("", REJECTED, "MISSING_ID"),
    ]
    # one atomic save: completed and refused rows share its position; the rest wrote nothing
    position = results[0].position
    assert position > 0
    assert [r.position for r in results] == [
        position,
        0,
        0,
        position,
        position,
        position,
        0,
        0,
        position,
        0,
        0,
        0,
    ]
    assert all(r.message for r in results if r.status in (REFUSED, REJECTED))
    assert balance(reg, A, position) == ALLOCATIONS[A] + 1_000
    assert balance(reg, B, position) == ALLOCATIONS[B] + 2_000
    assert balance(reg, TRADER, position) == 0

    # refusals are recorded under their ids; the same table again changes nothing
    refused = transaction(reg, "AL-2")
    assert (refused.status, refused.refusal_reason, refused.destination_account) == (
        common.TRANSACTION_STATUS_REFUSED,
        "UNKNOWN_ACCOUNT",
        "NOPE-0001",
    )
    head = head_position(reg)
    again = allocate(reg, *rows)
    assert [(r.status, r.reason) for r in again] == [
        (ALREADY, ""),
        (ALREADY, ""),
        (REJECTED, "TRANSACTION_EXISTS_WITH_DIFFERENT_CONTENT"),
        (REFUSED, "UNKNOWN_ACCOUNT"),
        (REFUSED, "INSUFFICIENT_UNITS"),
        (REFUSED, "MOVEMENT_NOT_ALLOWED"),
        (REJECTED, "QUANTITY_NOT_POSITIVE"),
        (REJECTED, "MISSING_FIELD"),
        (ALREADY, ""),
        (ALREADY, ""),
        (REJECTED, "INVALID_ACCOUNT_ID"),
        (REJECTED, "MISSING_ID"),
    ]
    assert all(r.position == 0 for r in again)
    assert head_position(reg) == head

    error = rpc_error(lambda: reg.call(reg.administration.AllocateUnits, pb.AllocateUnitsRequest()))
    assert (error.code, error.reason) == (INVALID, "EMPTY_BATCH")
    assert error.violations == [("rows", "no rows to allocate")]
    too_many = pb.AllocateUnitsRequest(rows=[allocation(f"X-{i}", A, 1) for i in range(10_001)])
    error = rpc_error(lambda: reg.call(reg.administration.AllocateUnits, too_many))
    assert (error.code, error.reason, error.metadata["limit"]) == (
        INVALID,
        "BATCH_TOO_LARGE",
        "10000",
    )
    assert head_position(reg) == head


# -- ReverseTransaction -----------------------------------------------------------------


def test_reversal_moves_the_same_serials_back_once(api: Api) -> None:
    reg, exchange = api.regulator, api.exchange
    seed_market(reg)
    [sold] = exchange.settle_trades([trade("T-1", A, TRADER, 1_000)])
    original = transaction(exchange, "T-1")

    reversal = reg.call(
        reg.administration.ReverseTransaction,
        reverse("REV-1", EXCHANGE_PARTY, "T-1", "trade annulled"),
    )
    txn = reversal.transaction
    assert not reversal.replayed and txn.position > sold.position
    assert (txn.party, txn.kind, txn.status, txn.source_account, txn.destination_account) == (
        "mee",
        common.TRANSACTION_KIND_REVERSAL,
        common.TRANSACTION_STATUS_COMPLETED,
        TRADER,
        A,
    )
    assert txn.blocks == original.blocks and txn.quantity == 1_000
    assert transaction(exchange, "T-1").reversed
    assert balance(reg, A, txn.position) == ALLOCATIONS[A]
    assert balance(reg, TRADER, txn.position) == 0

    replay = reg.call(
        reg.administration.ReverseTransaction,
        reverse("REV-1", EXCHANGE_PARTY, "T-1", "trade annulled"),
    )
    assert replay.replayed and replay.transaction.blocks == txn.blocks
    error = rpc_error(
        lambda: reg.call(
            reg.administration.ReverseTransaction, reverse("REV-1", EXCHANGE_PARTY, "T-1", "other")
        )
    )
    assert (error.code, error.reason) == (EXISTS, "TRANSACTION_EXISTS_WITH_DIFFERENT_CONTENT")

    # a second reversal under a new id is refused, recorded, and refused again on retry
    for _ in range(2):
        error = rpc_error(
            lambda: reg.call(
                reg.administration.ReverseTransaction, reverse("REV-2", EXCHANGE_PARTY, "T-1")
            )
        )
        assert (error.code, error.reason) == (PRECONDITION, "TRANSACTION_ALREADY_REVERSED")
        assert error.metadata["transaction"] == f"{EXCHANGE_PARTY}:T-1"
    assert transaction(reg, "REV-2").refusal_reason == "TRANSACTION_ALREADY_REVERSED"

    not_reversible = {
        "REV-3": ("mee", "ISS-CEA-2025"),  # an issuance
        "REV-4": ("mee", "REV-1"),  # a reversal
        "REV-5": ("mee", "REV-2"),
    }  # a refused transaction
    for txn_id, (party, original_id) in not_reversible.items():
        error = rpc_error(
            lambda i=txn_id, p=party, o=original_id: reg.call(
                reg.administration.ReverseTransaction, reverse(i, p, o)
            )
        )
        assert (error.code, error.reason) == (PRECONDITION, "TRANSACTION_NOT_REVERSIBLE")

    # serials spent since the original moved them cannot come back
    exchange.settle_trades([trade("T-2", B, TRADER, 10)])
    error = rpc_error(
        lambda: reg.call(
            reg.administration.ReverseTransaction, reverse("REV-6", "mee", f"ALLOC-2025-{B}")
        )
    )
    assert (error.code, error.reason) == (PRECONDITION, "UNITS_NOT_HELD")

    # an allocation reversed whole empties the account, which can then be closed
    undone = reg.call(
        reg.administration.ReverseTransaction, reverse("REV-7", "mee", f"ALLOC-2025-{A}")
    ).transaction
    assert (undone.source_account, undone.destination_account, undone.quantity) == (
        A,
        "CN-ISSUANCE",
        ALLOCATIONS[A],
    )
    assert balance(reg, A, undone.position) == 0
    assert close(reg, "CLS-A", A).account.state == CLOSED

    error = rpc_error(
        lambda: reg.call(reg.administration.ReverseTransaction, reverse("REV-8", "", "T-1"))
    )
    assert (error.code, error.reason) == (INVALID, "MISSING_FIELD")
    assert error.violations == [("original_party", "original_party is required")]
    error = rpc_error(
        lambda: reg.call(
            reg.administration.ReverseTransaction, reverse("REV-8", EXCHANGE_PARTY, "")
        )
    )
    assert (error.code, error.reason) == (INVALID, "MISSING_ID")


def test_reversal_of_an_unknown_transaction(api: Api) -> None:
    """An unknown original is NOT_FOUND, and (as the application defines it) the reversal
    is recorded as refused under its id: a retry gets the same NOT_FOUND, and the id is
    burnt, so resending it with the corrected original is ALREADY_EXISTS."""
    reg = api.regulator
    seed_market(reg)
    for _ in range(2):
        error = rpc_error(
            lambda: reg.call(
                reg.administration.ReverseTransaction, reverse("REV-9", "mee", "NOPE-1")
            )
        )
        assert (error.code, error.reason) == (NOT_FOUND, "UNKNOWN_TRANSACTION")
        assert error.metadata == {"transaction": "mee:NOPE-1"}
    recorded = transaction(reg, "REV-9")
    assert (recorded.status, recorded.refusal_reason) == (
        common.TRANSACTION_STATUS_REFUSED,
        "UNKNOWN_TRANSACTION",
    )
    error = rpc_error(
        lambda: reg.call(
            reg.administration.ReverseTransaction, reverse("REV-9", "mee", f"ALLOC-2025-{A}")
        )
    )
    assert (error.code, error.reason) == (EXISTS, "TRANSACTION_EXISTS_WITH_DIFFERENT_CONTENT")
    assert balance(reg, A, head_position(reg)) == ALLOCATIONS[A]


# -- RecordVerifiedEmissions ------------------------------------------------------------


def test_verified_emissions_are_recorded_all_or_nothing(api: Api) -> None:
    reg = api.regulator
    seed_market(reg)
    first = record_emissions(reg, emissions(A, 120_000), emissions(B, 40_000))
    assert [(r.account_id, r.compliance_year, r.status) for r in first.results] == [
        (A, 2025, RECORDED),
        (B, 2025, RECORDED),
    ]
    assert first.position > 0
    same = record_emissions(reg, emissions(A, 120_000), emissions(B, 40_000))
    assert [r.status for r in same.results] == [UNCHANGED, UNCHANGED]
    assert same.position == 0
    corrected = record_emissions(
        reg, emissions(A, 125_000, reason="corrected report"), emissions(B, 40_000)
    )
    assert [r.status for r in corrected.results] == [RECORDED, UNCHANGED]
    assert corrected.position > first.position
    assert compliance(reg, A).verified_emissions == 125_000
    assert compliance(reg, B).verified_emissions == 40_000

    head = head_position(reg)
    rows = [
        emissions(A, 9, year=2026),  # good, but the request fails whole
        emissions("NOPE-0001", 1),  # unknown account
        emissions(TRADER, -1, year=1999),  # year, figure, and not compliance
        emissions("bad id", 5),  # malformed account id
        emissions(A, 1, reason="x" * 501),  # reason too long
        emissions(A, 10, year=2026),  # A 2026 twice
    ]
    code, reason, fields = bad_request(lambda: record_emissions(reg, *rows))
    assert (code, reason) == (INVALID, "INVALID_ROWS")
    assert fields == [
        ("rows[1].account_id", "UNKNOWN_ACCOUNT"),
        ("rows[2].compliance_year", "INVALID_COMPLIANCE_YEAR"),
        ("rows[2].verified_emissions", "INVALID_EMISSIONS"),
        ("rows[2].account_id", "NOT_COMPLIANCE_ACCOUNT"),
        ("rows[3].account_id", "INVALID_ACCOUNT_ID"),
        ("rows[4].reason", "INVALID_REASON"),
        ("rows[5].account_id", "DUPLICATE_ROW"),
    ]
    error = rpc_error(lambda: record_emissions(reg, *rows))
    assert error.message == "5 of 6 emissions rows are invalid; nothing was recorded"
    assert head_position(reg) == head
    assert compliance(reg, A, 2026).state == account_pb.COMPLIANCE_STATE_NOT_VERIFIED
    assert compliance(reg, A).verified_emissions == 125_000

    error = rpc_error(lambda: record_emissions(reg))
    assert (error.code, error.reason) == (INVALID, "EMPTY_BATCH")


# -- BadRequest names the offending field -----------------------------------------------


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def seeded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    """One seeded server per backend for the invalid-input table (nothing it sends is
    stored)."""
    with running_api(request.param, tmp_path_factory.mktemp("admin")) as api:
        seed_market(api.regulator)
        caught_up(api.regulator)
        yield api


def _open(
    account_id: str, account_type: int, holder: common.Holder
) -> Callable[[RegistryClient], object]:
    return lambda c: open_account(c, account_id, account_type, holder)


ADMIN_CASES = [
    pytest.param(
        _open("NEW-0001", common.ACCOUNT_TYPE_UNSPECIFIED, compliance_holder("X")),
        "MISSING_FIELD",
        ["account_type"],
        id="open-no-account-type",
    ),
    pytest.param(
        _open("NEW-0001", COMPLIANCE, compliance_holder("X", credit_code="bad")),
        "INVALID_CREDIT_CODE",
        ["holder.credit_code"],
        id="open-bad-credit-code",
    ),
    pytest.param(
        _open("new 1", TRADING, common.Holder(name="X")),
        "INVALID_ACCOUNT_ID",
        ["account_id"],
        id="open-bad-account-id",
    ),
    pytest.param(
        lambda c: freeze(c, "", A), "MISSING_FIELD", ["request_id"], id="freeze-no-request-id"
    ),
    pytest.param(
        lambda c: freeze(c, "bad id!", A), "INVALID_ID", ["request_id"], id="freeze-bad-request-id"
    ),
    pytest.param(
        lambda c: issue(c, "ISS-9", 0), "QUANTITY_NOT_POSITIVE", ["quantity"], id="issue-quantity-0"
    ),
    pytest.param(
        lambda c: issue(c, "", 5), "MISSING_ID", ["transaction_id"], id="issue-no-transaction-id"
    ),
    pytest.param(
        lambda c: issue(c, "ISS-9", 5, common.UnitClass(vintage=2025)),
        "MISSING_FIELD",
        ["unit_class.unit_type"],
        id="issue-no-unit-type",
    ),
    pytest.param(
        lambda c: issue(c, "ISS-9", 5, common.UnitClass(unit_type=CEA, vintage=1990)),
        "INVALID_VINTAGE",
        ["unit_class.vintage"],
        id="issue-bad-vintage",
    ),
    pytest.param(
        lambda c: issue(c, "ISS-9", 5, common.UnitClass(unit_type=CCER, vintage=2024)),
        "MISSING_PROJECT",
        ["unit_class.project"],
        id="issue-ccer-no-project",
    ),
    pytest.param(
        lambda c: c.call(c.administration.ReverseTransaction, reverse("REV-9", "mee", "")),
        "MISSING_ID",
        ["original_transaction_id"],
        id="reverse-no-original-id",
    ),
    pytest.param(
        lambda c: c.call(c.administration.ReverseTransaction, reverse("REV-9", "", "T-1")),
        "MISSING_FIELD",
        ["original_party"],
        id="reverse-no-original-party",
    ),
    pytest.param(lambda c: allocate(c), "EMPTY_BATCH", ["rows"], id="allocate-no-rows"),
    pytest.param(
        lambda c: allocate(c, *[allocation(f"X-{i}", A, 1) for i in range(10_001)]),
        "BATCH_TOO_LARGE",
        ["rows"],
        id="allocate-too-many-rows",
    ),
    pytest.param(lambda c: record_emissions(c), "EMPTY_BATCH", ["rows"], id="emissions-no-rows"),
    pytest.param(
        lambda c: record_emissions(c, emissions("NOPE-0001", 1)),
        "INVALID_ROWS",
        ["rows[0].account_id"],
        id="emissions-unknown-account",
    ),
]


@pytest.mark.parametrize(("call", "reason", "fields"), ADMIN_CASES)
def test_invalid_input_names_the_field(
    seeded: Api, call: Callable[[RegistryClient], object], reason: str, fields: list[str]
) -> None:
    code, got_reason, violations = bad_request(lambda: call(seeded.regulator))
    assert (code, got_reason) == (INVALID, reason)
    assert [field for field, _ in violations] == fields


def test_account_writes_return_the_position_to_read_them_at(api: Api) -> None:
    reg = api.regulator
    opened = open_trader(reg, "TRD-BJ-0001")
    assert opened.position > 0
    assert open_trader(reg, "TRD-BJ-0001").position == 0  # a replay wrote nothing
    frozen = freeze(reg, "FRZ-1", "TRD-BJ-0001")
    assert frozen.position > opened.position
    assert freeze(reg, "FRZ-1", "TRD-BJ-0001").position == 0
    # read your writes: the read models include the account, frozen, at that position
    assert reg.balances("TRD-BJ-0001", min_position=frozen.position) == []
    listed = reg.call(
        reg.accounts.ListAccounts, account_pb.ListAccountsRequest(account_type=TRADING)
    ).accounts
    assert [(a.account_id, a.state) for a in listed] == [("TRD-BJ-0001", FROZEN)]
    unfrozen = unfreeze(reg, "UNF-1", "TRD-BJ-0001")
    closed = close(reg, "CLS-1", "TRD-BJ-0001")
    assert frozen.position < unfrozen.position < closed.position
    assert closed.position == head_position(reg)
    reg.balances("TRD-BJ-0001", min_position=closed.position)
    listed = reg.call(
        reg.accounts.ListAccounts, account_pb.ListAccountsRequest(account_type=TRADING)
    ).accounts
    assert [(a.account_id, a.state) for a in listed] == [("TRD-BJ-0001", CLOSED)]
