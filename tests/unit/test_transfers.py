"""Transfers outside the exchange: which account types each kind moves between (the one
movement table, and docs/ledger.md listing it), the same-holder guard, what a transfer
command must carry, and who may ask for one."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from registry.application.commands import Movement, Trade
from registry.domain.access import AccessControl, Role
from registry.domain.accounts import Account, AccountType, Holder
from registry.domain.errors import DifferentHolder, InvalidCommand, MovementNotAllowed, UnitsRetired
from registry.domain.ledger import (
    MOVEMENTS,
    ORDERED_TRANSFERS,
    SAME_HOLDER_TRANSFERS,
    TRANSFER_KINDS,
    check_account_types,
)
from registry.domain.proposals import ProposalKind
from registry.domain.transactions import Principal, TransactionKind
from registry.domain.units import UnitSelector, UnitType
from registry.v1 import account_service_pb2 as account_pb
from registry.v1 import administration_service_pb2 as admin_pb
from registry.v1 import common_pb2 as common_pb
from services.errors import ApiError
from services.policy import FOUR_EYES, authorize

K = TransactionKind
T = AccountType
ROOT = Path(__file__).resolve().parents[2]
CEA = UnitSelector(UnitType.CEA)
CODE_A = "91110000100001234X"
CODE_B = "91310000MA1FL0000B"


@pytest.mark.parametrize(
    ("kind", "source", "destination"),
    [
        (K.HOLDER_TRANSFER, T.COMPLIANCE, T.TRADING),
        (K.HOLDER_TRANSFER, T.PROJECT, T.TRADING),
        (K.COURT_ORDER_TRANSFER, T.TRADING, T.COMPLIANCE),
        (K.MERGER_TRANSFER, T.PROJECT, T.PROJECT),
        (K.SPLIT_TRANSFER, T.COMPLIANCE, T.COMPLIANCE),
        (K.EXCHANGE_CORRECTION, T.TRADING, T.PROJECT),
    ],
)
def test_a_transfer_moves_between_holders_accounts(
    kind: TransactionKind, source: AccountType, destination: AccountType
) -> None:
    check_account_types(kind, source, destination)


@pytest.mark.parametrize(
    ("kind", "source", "destination"),
    [
        # a project account receives its project's credits, a successor's or the exchange's
        (K.HOLDER_TRANSFER, T.TRADING, T.PROJECT),
        (K.COURT_ORDER_TRANSFER, T.COMPLIANCE, T.PROJECT),
        # national accounts take part in none of them
        (K.HOLDER_TRANSFER, T.ISSUANCE, T.TRADING),
        (K.MERGER_TRANSFER, T.ALLOCATION_RESERVE, T.COMPLIANCE),
        (K.COURT_ORDER_TRANSFER, T.COMPLIANCE, T.CANCELLATION),
        (K.EXCHANGE_CORRECTION, T.TRADING, T.ALLOCATION_RESERVE),
    ],
)
def test_a_transfer_never_reaches_national_or_foreign_account_types(
    kind: TransactionKind, source: AccountType, destination: AccountType
) -> None:
    with pytest.raises(MovementNotAllowed):
        check_account_types(kind, source, destination)


@pytest.mark.parametrize("kind", sorted(TRANSFER_KINDS))
def test_retired_units_are_never_transferred(kind: TransactionKind) -> None:
    for retired in (T.SURRENDER, T.CANCELLATION):
        with pytest.raises(UnitsRetired):
            check_account_types(kind, retired, T.TRADING)


def test_every_transfer_kind_is_in_the_movement_table_and_named_by_a_proposal_or_an_operator() -> (
    None
):
    assert MOVEMENTS.keys() >= TRANSFER_KINDS
    assert {K.HOLDER_TRANSFER} == SAME_HOLDER_TRANSFERS
    assert {ProposalKind(k.value) for k in ORDERED_TRANSFERS} == {
        ProposalKind.COURT_ORDER_TRANSFER,
        ProposalKind.MERGER_TRANSFER,
        ProposalKind.SPLIT_TRANSFER,
        ProposalKind.EXCHANGE_CORRECTION,
    }


def _types(cell: str) -> frozenset[AccountType]:
    return frozenset(AccountType(name) for name in re.findall(r"`([A-Z_]+)`", cell))


def test_docs_list_each_transfer_kind_with_the_table_s_account_types() -> None:
    """docs/ledger.md's movement table says what MOVEMENTS says, for every transfer kind."""
    text = (ROOT / "docs" / "ledger.md").read_text()
    rows: dict[str, tuple[str, str]] = {}
    for kind, sources, destinations in re.findall(
        r"^\| `([A-Z_]+)` \| ([^|]+) \| ([^|]+) \|", text, re.MULTILINE
    ):
        rows.setdefault(kind, (sources, destinations))  # the movement table comes first
    for kind in TRANSFER_KINDS:
        assert kind.value in rows, f"docs/ledger.md does not list {kind}"
        sources, destinations = rows[kind.value]
        assert (_types(sources), _types(destinations)) == MOVEMENTS[kind], kind


def account(account_id: str, credit_code: str) -> Account:
    return Account.open(
        account_id, AccountType.TRADING, Holder(f"{account_id} Co.", credit_code), "mee/li"
    )


def test_one_holder_is_one_credit_code_on_both_accounts() -> None:
    account("CMP-1", CODE_A).ensure_same_holder(account("TRD-1", CODE_A))
    with pytest.raises(DifferentHolder) as other:
        account("CMP-1", CODE_A).ensure_same_holder(account("TRD-2", CODE_B))
    assert other.value.reason == "DIFFERENT_HOLDER"
    assert other.value.metadata == {
        "source": "CMP-1",
        "destination": "TRD-2",
        "source_holder": CODE_A,
        "destination_holder": CODE_B,
    }


def test_an_account_without_a_recorded_credit_code_is_no_holder_s_own() -> None:
    """Names are not unique: two accounts of the same name are not thereby one holder's."""
    with pytest.raises(DifferentHolder, match="not recorded on TRD-1 and TRD-2"):
        account("TRD-1", "").ensure_same_holder(account("TRD-2", ""))
    with pytest.raises(DifferentHolder, match=r"not recorded on TRD-1$"):
        account("CMP-1", CODE_A).ensure_same_holder(account("TRD-1", ""))


def transfer(kind: TransactionKind, **changes: Any) -> Movement:
    fields: dict[str, Any] = {
        "client_id": "TR-1",
        "kind": kind,
        "source": "CMP-1",
        "destination": "TRD-1",
        "quantity": 10,
        "reason": "to the trading desk",
        "selector": CEA,
    }
    return Movement(**(fields | changes))


def reason_of(**changes: Any) -> str:
    with pytest.raises(InvalidCommand) as raised:
        transfer(**changes)
    return raised.value.reason


@pytest.mark.parametrize("kind", sorted(ORDERED_TRANSFERS))
def test_an_ordered_transfer_names_its_reason_and_its_reference(kind: TransactionKind) -> None:
    assert reason_of(kind=kind) == "MISSING_REFERENCE"
    assert reason_of(kind=kind, reference="  ") == "MISSING_REFERENCE"
    assert reason_of(kind=kind, reference="x" * 201) == "INVALID_REFERENCE"
    assert reason_of(kind=kind, reference="(2026) Jing 01", reason="") == "MISSING_FIELD"
    moved = transfer(kind, reference="(2026) Jing 01")
    assert moved.details()["reference"] == "(2026) Jing 01"


def test_a_holder_transfer_says_why_and_may_carry_the_operator_s_reference() -> None:
    assert reason_of(kind=K.HOLDER_TRANSFER, reason=" ") == "MISSING_FIELD"
    assert "reference" not in transfer(K.HOLDER_TRANSFER).details()
    assert transfer(K.HOLDER_TRANSFER, reference="DESK-7").details()["reference"] == "DESK-7"
    assert reason_of(kind=K.HOLDER_TRANSFER, destination="CMP-1") == "SAME_ACCOUNT"


def test_the_reference_is_part_of_the_content_a_retry_must_repeat() -> None:
    first = transfer(K.COURT_ORDER_TRANSFER, reference="CASE-1").fingerprint
    assert transfer(K.COURT_ORDER_TRANSFER, reference="CASE-2").fingerprint != first
    assert transfer(K.COURT_ORDER_TRANSFER, reference="CASE-1").fingerprint == first


def test_no_other_kind_carries_a_reference() -> None:
    assert reason_of(kind=K.SETTLEMENT, reference="T-1") == "UNEXPECTED_REFERENCE"


def test_earlier_kinds_keep_the_fingerprints_their_stored_transactions_have() -> None:
    """A retry of a transaction recorded before transfers existed must still replay:
    these are the fingerprints the code before this change computed (main at bd9b09a)."""
    trade = Trade("T-1", "PWR-0001", "TRD-0001", "CEA", 10, 2025).movement()
    assert trade.fingerprint == "ca4578c7d01672305b653a349212f7e96b4244ff7e97af0cb9c61f64f0b88219"
    moved = Movement("TR-1", K.TRANSFER, "PWR-0001", "TRD-0001", 5, "why", CEA)
    assert moved.fingerprint == "21c4ba6df51b1634d6534833de6fc3e46a5a02f60878653f8402634319ad9757"


def test_proto_enums_carry_the_new_kinds_in_their_ranges() -> None:
    for kind in TRANSFER_KINDS:
        assert 40 <= common_pb.TransactionKind.Value(f"TRANSACTION_KIND_{kind}") <= 49
    for kind in ORDERED_TRANSFERS:
        assert 50 <= admin_pb.ProposalKind.Value(f"PROPOSAL_KIND_{kind}") <= 59


NOW = datetime(2026, 6, 15, 9, 30, tzinfo=UTC)
OPERATOR = Principal("sdpower", "desk")
TRANSFER = "/registry.v1.AccountService/TransferUnits"


def test_an_operator_transfers_out_of_the_accounts_its_grant_names() -> None:
    acl = AccessControl.start()
    acl.grant(
        "g-op", OPERATOR, Role.OPERATOR, ("CMP-1",), Principal("system", "tests"), "desk", NOW
    )
    out = account_pb.TransferUnitsRequest(source_account_id="CMP-1", destination_account_id="TRD-1")
    authorize(TRANSFER, out, OPERATOR, acl)  # the destination is the ledger's to check
    into = account_pb.TransferUnitsRequest(
        source_account_id="TRD-1", destination_account_id="CMP-1"
    )
    with pytest.raises(ApiError) as denied:
        authorize(TRANSFER, into, OPERATOR, acl)
    assert denied.value.reason == "ACCOUNT_NOT_IN_SCOPE"
    regulator = Principal("mee", "regulator-li")
    acl.grant("g-li", regulator, Role.REGULATOR, (), Principal("system", "tests"), "li", NOW)
    with pytest.raises(ApiError) as refused:
        authorize(TRANSFER, out, regulator, acl)
    assert refused.value.reason == "ROLE_NOT_GRANTED"  # regulators order transfers by proposal
    assert TRANSFER.lstrip("/") not in FOUR_EYES
