"""AccountService over a real channel: accounts, balances, movements, surrender,
cancellation and compliance status, with every documented error."""

from __future__ import annotations

import base64
import itertools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import psycopg
import pytest

from registry.client import RegistryClient
from registry.persistence.engine import READS_APPLICATION_NAME
from registry.v1 import access_service_pb2 as access_pb
from registry.v1 import account_service_pb2 as pb
from registry.v1 import administration_service_pb2 as admin_pb
from registry.v1 import common_pb2 as common
from registry.v1 import settlement_service_pb2 as settlement_pb
from tests.e2e.conftest import EXISTS, INVALID, NOT_FOUND, PRECONDITION, Api, rpc_error, running_api
from tests.e2e.market import (
    ALLOCATIONS,
    CCER,
    CEA,
    CEA_2025,
    NATIONAL_ACCOUNT_IDS,
    PROJECT_OWNER,
    TRADER,
    allocate,
    balance,
    cancel,
    caught_up,
    ccer_trade,
    compliance,
    compliance_holder,
    emissions,
    freeze,
    head_position,
    issue,
    open_account,
    open_company,
    open_trader,
    record_emissions,
    register_project,
    reverse,
    seed_market,
    surrender,
    trade,
    transaction,
    unfreeze,
)

A, B = list(ALLOCATIONS)
COMPLIANCE = common.ACCOUNT_TYPE_COMPLIANCE
OPERATOR_PARTY = "huaneng"
CCER_2024 = common.UnitClass(unit_type=CCER, vintage=2024, project="CCER-2024-0117")


def list_accounts(client: RegistryClient, **fields: object) -> pb.ListAccountsResponse:
    return client.call(client.accounts.ListAccounts, pb.ListAccountsRequest(**fields))


def all_accounts(
    client: RegistryClient, page_size: int, **filters: object
) -> tuple[list[common.Account], int]:
    """Every account the filters select, page by page; (accounts, number of pages)."""
    accounts: list[common.Account] = []
    token, pages = "", 0
    while True:
        page = list_accounts(client, page_size=page_size, page_token=token, **filters)
        assert len(page.accounts) <= page_size
        accounts.extend(page.accounts)
        pages += 1
        token = page.next_page_token
        if not token:
            return accounts, pages


def movements(
    client: RegistryClient, account_id: str, page_size: int = 100, **filters: object
) -> tuple[list[pb.AccountMovement], int]:
    found: list[pb.AccountMovement] = []
    token, pages = "", 0
    while True:
        page = client.call(
            client.accounts.ListTransactions,
            pb.ListTransactionsRequest(
                account_id=account_id, page_size=page_size, page_token=token, **filters
            ),
        )
        assert len(page.movements) <= page_size
        found.extend(page.movements)
        pages += 1
        token = page.next_page_token
        if not token:
            return found, pages


def surrender_units(
    client: RegistryClient, request: pb.SurrenderUnitsRequest
) -> pb.SurrenderUnitsResponse:
    return client.call(client.accounts.SurrenderUnits, request)


def cancel_units(client: RegistryClient, request: pb.CancelUnitsRequest) -> pb.CancelUnitsResponse:
    return client.call(client.accounts.CancelUnits, request)


def holdings(
    client: RegistryClient, account_id: str, min_position: int = 0
) -> dict[tuple[int, int, str], tuple[int, int, int]]:
    """(unit type, vintage, project) -> (total, held, available)."""
    return {
        (h.unit_class.unit_type, h.unit_class.vintage, h.unit_class.project): (
            h.total,
            h.held,
            h.available,
        )
        for h in client.balances(account_id, min_position=min_position)
    }


# -- GetAccount, ListAccounts -----------------------------------------------------------


def test_get_account_and_list_accounts_with_paging_and_filters(api: Api) -> None:
    reg = api.regulator
    steel, cement = common.SECTOR_STEEL, common.SECTOR_CEMENT
    open_company(reg, A)
    open_account(
        reg, "PWR-GD-0001", COMPLIANCE, compliance_holder("Guangzhou Power", province="Guangdong")
    )
    open_account(reg, "STL-SD-0001", COMPLIANCE, compliance_holder("Jinan Steel", sector=steel))
    open_account(
        reg,
        "CEM-HB-0001",
        COMPLIANCE,
        compliance_holder("Hebei Cement", sector=cement, province="Hebei"),
    )
    open_trader(reg, TRADER)
    open_trader(reg, "TRD-BJ-0001")
    open_account(
        reg,
        "PRJ-YN-0001",
        common.ACCOUNT_TYPE_PROJECT,
        common.Holder(name="Yunnan Forestry", province="Yunnan"),
    )
    freeze(reg, "FRZ-1", "TRD-BJ-0001")
    caught_up(reg)

    mine = ["CEM-HB-0001", "PRJ-YN-0001", A, "PWR-GD-0001", "STL-SD-0001", "TRD-BJ-0001", TRADER]
    everything, pages = all_accounts(reg, page_size=2)
    assert [a.account_id for a in everything] == sorted(NATIONAL_ACCOUNT_IDS + mine)
    assert pages == 6
    one_page = list_accounts(reg)  # default page size 100
    assert list(one_page.accounts) == everything and one_page.next_page_token == ""
    # the read model agrees with the write model on every account
    for listed in everything:
        got = reg.call(
            reg.accounts.GetAccount, pb.GetAccountRequest(account_id=listed.account_id)
        ).account
        assert (got.account_id, got.account_type, got.state, got.holder) == (
            listed.account_id,
            listed.account_type,
            listed.state,
            listed.holder,
        )
    by_id = {a.account_id: a for a in everything}
    assert by_id["TRD-BJ-0001"].state == common.ACCOUNT_STATE_FROZEN
    assert by_id["STL-SD-0001"].holder == compliance_holder("Jinan Steel", sector=steel)
    assert by_id["CN-SURRENDER"].account_type == common.ACCOUNT_TYPE_SURRENDER

    def ids(page_size: int = 2, **filters: object) -> list[str]:
        return [a.account_id for a in all_accounts(reg, page_size, **filters)[0]]

    assert ids(account_type=COMPLIANCE) == ["CEM-HB-0001", "PWR-GD-0001", A, "STL-SD-0001"]
    assert ids(account_type=common.ACCOUNT_TYPE_TRADING) == ["TRD-BJ-0001", TRADER]
    assert ids(sector=steel) == ["STL-SD-0001"]
    assert ids(1, sector=common.SECTOR_POWER) == ["PWR-GD-0001", A]
    assert ids(province="Shandong") == [A, "STL-SD-0001"]
    assert ids(province="Yunnan") == ["PRJ-YN-0001"]
    assert ids(account_type=COMPLIANCE, sector=common.SECTOR_POWER, province="Guangdong") == [
        "PWR-GD-0001"
    ]
    assert ids(sector=common.SECTOR_ALUMINIUM) == []

    error = rpc_error(
        lambda: reg.call(reg.accounts.GetAccount, pb.GetAccountRequest(account_id="NOPE-0001"))
    )
    assert (error.code, error.reason, error.metadata) == (
        NOT_FOUND,
        "UNKNOWN_ACCOUNT",
        {"account": "NOPE-0001"},
    )
    error = rpc_error(lambda: reg.call(reg.accounts.GetAccount, pb.GetAccountRequest()))
    assert (error.code, error.reason) == (INVALID, "MISSING_FIELD")
    assert error.violations == [("account_id", "account_id is required")]
    wrong_shape = base64.urlsafe_b64encode(json.dumps(["A", "B"]).encode()).decode()
    for token in ("garbage", wrong_shape):
        error = rpc_error(lambda t=token: list_accounts(reg, page_token=t))
        assert (error.code, error.reason) == (INVALID, "INVALID_PAGE_TOKEN")
    for size in (5000, 1001, -1):
        error = rpc_error(lambda s=size: list_accounts(reg, page_size=s))
        assert (error.code, error.reason) == (INVALID, "INVALID_PAGE_SIZE")
    error = rpc_error(lambda: list_accounts(reg, account_type=99))
    assert (error.code, error.reason) == (INVALID, "INVALID_ENUM_VALUE")
    assert error.violations == [("account_type", "account_type: unknown value 99")]


# -- GetBalances ------------------------------------------------------------------------


def test_balances_read_your_writes(api: Api) -> None:
    reg, exchange, operator = api.regulator, api.exchange, api.operator
    seed_market(reg)
    placed = exchange.call(
        exchange.settlement.PlaceHold,
        settlement_pb.PlaceHoldRequest(
            hold_id="H-1",
            account_id=A,
            unit_type=CEA,
            vintage=2025,
            quantity=40_000,
            timeout_seconds=3600,
        ),
    )
    response = operator.call(
        operator.accounts.GetBalances,
        pb.GetBalancesRequest(account_id=A, min_position=placed.position),
    )
    assert response.account_id == A
    assert [
        (h.account_id, h.unit_class, h.total, h.held, h.available) for h in response.holdings
    ] == [(A, CEA_2025, 100_000, 40_000, 60_000)]

    record_emissions(reg, emissions(A, 10_000))
    done = surrender_units(operator, surrender("S-1", A, 10_000)).transaction
    assert holdings(operator, A, done.position) == {(CEA, 2025, ""): (90_000, 40_000, 50_000)}
    assert holdings(operator, "CN-SURRENDER", done.position) == {
        (CEA, 2025, ""): (10_000, 0, 10_000)
    }
    assert holdings(operator, TRADER, done.position) == {}
    register_project(reg, "CCER-2024-0117")
    issued = issue(reg, "ISS-CCER", 300, CCER_2024).transaction
    assert holdings(operator, "CN-ISSUANCE", issued.position) == {
        (CEA, 2025, ""): (850_000, 0, 850_000),
    }
    assert holdings(operator, PROJECT_OWNER, issued.position) == {
        (CCER, 2024, "CCER-2024-0117"): (300, 0, 300),
    }

    error = rpc_error(lambda: operator.balances("NOPE-0001"))
    assert (error.code, error.reason) == (NOT_FOUND, "UNKNOWN_ACCOUNT")
    error = rpc_error(lambda: operator.balances(""))
    assert (error.code, error.reason) == (INVALID, "MISSING_FIELD")
    assert error.violations == [("account_id", "account_id is required")]


def test_balances_behind_min_position_is_unavailable(tmp_path: Path) -> None:
    """The server waits at most 5 s for the read models, then READ_MODELS_BEHIND (here
    no projection runs, so they stay behind a position the log has)."""
    with running_api("sqlite", tmp_path, projections_in_process=False) as api:
        head = head_position(api.operator)
        assert head > 0
        started = time.monotonic()
        error = rpc_error(lambda: api.operator.balances("CN-ISSUANCE", min_position=head))
        waited = time.monotonic() - started
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "READ_MODELS_BEHIND")
        assert 4.9 < waited < 8


@pytest.mark.parametrize("ahead", [1, 1_000, 2**62])
def test_min_position_beyond_the_head_is_refused_at_once(tmp_path: Path, ahead: int) -> None:
    """Issue 15: a position no write returned used to park a server thread for 5 s per
    call (an operator looping it held every thread); it is INVALID_ARGUMENT at once,
    with the head in the metadata. A negative one is refused too."""
    with running_api("sqlite", tmp_path) as api:
        head = caught_up(api.operator)
        started = time.monotonic()
        error = rpc_error(lambda: api.operator.balances("CN-ISSUANCE", min_position=head + ahead))
        assert time.monotonic() - started < 1
        assert (error.code, error.reason) == (INVALID, "INVALID_POSITION")
        assert error.metadata["head"] == str(head)
        assert [field for field, _ in error.violations] == ["min_position"]
        error = rpc_error(lambda: api.operator.balances("CN-ISSUANCE", min_position=-1))
        assert (error.code, error.reason) == (INVALID, "INVALID_POSITION")
        assert api.operator.balances("CN-ISSUANCE", min_position=head) is not None


@pytest.mark.postgres
def test_a_dropped_query_connection_fails_one_call_as_retryable(tmp_path: Path) -> None:
    """Query connections are not pinged before use: one the database dropped fails its
    call with UNAVAILABLE DATABASE_CONNECTION_LOST, and the next call gets a new one."""
    with running_api("postgres", tmp_path) as api:
        caught_up(api.operator)
        before = api.operator.balances("CN-ISSUANCE")
        url = api.read_models.reads.url.set(drivername="postgresql")
        with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as admin:
            dropped = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = %s",
                (READS_APPLICATION_NAME,),
            ).fetchone()
        assert dropped is not None and dropped[0] >= 1
        error = rpc_error(lambda: api.operator.balances("CN-ISSUANCE"))
        assert (error.code, error.reason) == (
            grpc.StatusCode.UNAVAILABLE,
            "DATABASE_CONNECTION_LOST",
        )
        assert "SQL" not in error.message and "psycopg" not in error.message
        assert api.operator.balances("CN-ISSUANCE") == before


# -- ListTransactions -------------------------------------------------------------------


def test_list_transactions_pages_filters_by_kind_and_time(api: Api) -> None:
    reg, exchange, operator = api.regulator, api.exchange, api.operator
    seed_market(reg)
    exchange.settle_trades([trade("T-1", A, TRADER, 1_000)])
    record_emissions(reg, emissions(A, 500))
    surrender_units(operator, surrender("S-1", A, 500))
    cancel_units(operator, cancel("C-1", A, 200))
    [last] = exchange.settle_trades([trade("T-2", TRADER, A, 300)])
    reg.balances(A, min_position=last.position)

    found, pages = movements(operator, A, page_size=2)
    assert pages == 3
    assert [
        (m.kind, m.direction, m.quantity, m.counterparty_account, m.party, m.transaction_id)
        for m in found
    ] == [
        (
            common.TRANSACTION_KIND_ALLOCATION,
            pb.DIRECTION_CREDIT,
            ALLOCATIONS[A],
            "CN-ISSUANCE",
            "mee",
            f"ALLOC-2025-{A}",
        ),
        (
            common.TRANSACTION_KIND_SETTLEMENT,
            pb.DIRECTION_DEBIT,
            1_000,
            TRADER,
            "shanghai-exchange",
            "T-1",
        ),
        (
            common.TRANSACTION_KIND_SURRENDER,
            pb.DIRECTION_DEBIT,
            500,
            "CN-SURRENDER",
            OPERATOR_PARTY,
            "S-1",
        ),
        (
            common.TRANSACTION_KIND_CANCELLATION,
            pb.DIRECTION_DEBIT,
            200,
            "CN-CANCELLATION",
            OPERATOR_PARTY,
            "C-1",
        ),
        (
            common.TRANSACTION_KIND_SETTLEMENT,
            pb.DIRECTION_CREDIT,
            300,
            TRADER,
            "shanghai-exchange",
            "T-2",
        ),
    ]
    positions = [m.position for m in found]
    assert positions == sorted(set(positions)) and positions[-1] == last.position
    assert all(m.unit_class == CEA_2025 for m in found)
    assert [(b.first_serial, b.last_serial) for b in found[1].blocks] == [(1, 1_000)]
    assert found[2].principal == "huaneng/operator-wang" and found[2].reason == "2025 compliance"
    assert movements(operator, A)[0] == found
    assert movements(operator, TRADER)[0] == list(movements(operator, TRADER, page_size=1)[0])

    def kinds_of(*kinds: int, page_size: int = 100) -> list[str]:
        return [m.transaction_id for m in movements(operator, A, page_size, kinds=list(kinds))[0]]

    assert kinds_of(common.TRANSACTION_KIND_SURRENDER, common.TRANSACTION_KIND_CANCELLATION) == [
        "S-1",
        "C-1",
    ]
    assert kinds_of(common.TRANSACTION_KIND_SETTLEMENT, page_size=1) == ["T-1", "T-2"]
    assert kinds_of(common.TRANSACTION_KIND_REVERSAL) == []

    times = [m.record_time for m in found]
    assert all(a.ToDatetime() < b.ToDatetime() for a, b in itertools.pairwise(times))

    def window(page_size: int = 100, **bounds: object) -> list[str]:
        return [m.transaction_id for m in movements(operator, A, page_size, **bounds)[0]]

    # start_time inclusive, end_time exclusive
    assert window(start_time=times[1], end_time=times[3]) == ["T-1", "S-1"]
    assert window(1, start_time=times[1], end_time=times[3]) == ["T-1", "S-1"]
    assert window(start_time=times[4]) == ["T-2"]
    assert window(end_time=times[1]) == [f"ALLOC-2025-{A}"]
    assert window(start_time=times[2], end_time=times[2]) == []
    assert [
        m.transaction_id
        for m in movements(
            operator, A, kinds=[common.TRANSACTION_KIND_SETTLEMENT], start_time=times[2]
        )[0]
    ] == ["T-2"]

    error = rpc_error(lambda: movements(operator, "NOPE-0001"))
    assert (error.code, error.reason) == (NOT_FOUND, "UNKNOWN_ACCOUNT")
    error = rpc_error(
        lambda: operator.call(
            operator.accounts.ListTransactions,
            pb.ListTransactionsRequest(account_id=A, page_token="x"),
        )
    )
    assert (error.code, error.reason) == (INVALID, "INVALID_PAGE_TOKEN")
    error = rpc_error(lambda: movements(operator, A, page_size=5000))
    assert (error.code, error.reason) == (INVALID, "INVALID_PAGE_SIZE")
    error = rpc_error(lambda: movements(operator, A, kinds=[99]))
    assert (error.code, error.reason) == (INVALID, "INVALID_ENUM_VALUE")
    assert error.violations == [("kinds[0]", "kinds[0]: unknown value 99")]


def test_a_movement_of_two_vintages_is_one_row_per_unit_class(api: Api) -> None:
    """A selector without a vintage takes the oldest class first, so one surrender can
    span CEA/2025 and CEA/2026: ListTransactions has a row per class at the same position,
    and paging one row at a time neither drops nor repeats either of them."""
    reg, operator = api.regulator, api.operator
    seed_market(reg)
    cea_2026 = common.UnitClass(unit_type=CEA, vintage=2026)
    issue(reg, "ISS-2026", 1_000, cea_2026)
    allocate(
        reg,
        admin_pb.AllocationRow(
            transaction_id="AL-2026",
            account_id=A,
            unit_type=CEA,
            vintage=2026,
            quantity=100,
            source_account="CN-ISSUANCE",
        ),
    )
    # for 2026, which accepts both vintages (for 2025, 2026 allowances are advance use)
    txn = surrender_units(operator, surrender("S-1", A, ALLOCATIONS[A] + 40, year=2026)).transaction
    assert [(b.unit_class, b.first_serial, b.last_serial) for b in txn.blocks] == [
        (CEA_2025, 1, ALLOCATIONS[A]),
        (cea_2026, 1, 40),
    ]
    assert holdings(operator, A, txn.position) == {(CEA, 2026, ""): (60, 0, 60)}
    one_by_one, pages = movements(operator, A, page_size=1)
    assert pages == 4 and one_by_one == movements(operator, A)[0]
    assert [(m.position, m.kind, m.unit_class.vintage, m.quantity) for m in one_by_one[2:]] == [
        (txn.position, common.TRANSACTION_KIND_SURRENDER, 2025, ALLOCATIONS[A]),
        (txn.position, common.TRANSACTION_KIND_SURRENDER, 2026, 40),
    ]
    assert compliance(operator, A, 2026).surrendered_cea == ALLOCATIONS[A] + 40


# -- SurrenderUnits, CancelUnits --------------------------------------------------------


def test_surrender_units(api: Api) -> None:
    reg, operator = api.regulator, api.operator
    seed_market(reg)
    record_emissions(reg, emissions(A, 50_000))

    first = surrender_units(operator, surrender("S-1", A, 30_000))
    txn = first.transaction
    assert not first.replayed and txn.position > 0
    assert (txn.party, txn.transaction_id, txn.kind, txn.status, txn.principal) == (
        OPERATOR_PARTY,
        "S-1",
        common.TRANSACTION_KIND_SURRENDER,
        common.TRANSACTION_STATUS_COMPLETED,
        "huaneng/operator-wang",
    )
    assert (txn.source_account, txn.destination_account, txn.quantity) == (
        A,
        "CN-SURRENDER",
        30_000,
    )
    assert [(b.first_serial, b.last_serial) for b in txn.blocks] == [(1, 30_000)]
    assert json.loads(txn.details_json)["compliance_year"] == 2025
    replay = surrender_units(operator, surrender("S-1", A, 30_000))
    assert replay.replayed and replay.transaction.blocks == txn.blocks
    assert replay.transaction.position == 0
    error = rpc_error(lambda: surrender_units(operator, surrender("S-1", A, 29_000)))
    assert (error.code, error.reason, error.metadata) == (
        EXISTS,
        "TRANSACTION_EXISTS_WITH_DIFFERENT_CONTENT",
        {"transaction": "huaneng:S-1"},
    )

    # refused for the ledger's state: recorded, so a retry gets the same error
    for _ in range(2):
        error = rpc_error(lambda: surrender_units(operator, surrender("S-2", A, 1_000_000)))
        assert (error.code, error.reason) == (PRECONDITION, "INSUFFICIENT_UNITS")
        assert (
            error.metadata["account"],
            error.metadata["requested"],
            error.metadata["available"],
            error.metadata["transaction"],
        ) == (A, "1000000", "70000", "huaneng:S-2")
    refused = transaction(operator, "S-2")
    assert (refused.status, refused.refusal_reason) == (
        common.TRANSACTION_STATUS_REFUSED,
        "INSUFFICIENT_UNITS",
    )
    vintage_2026 = surrender("S-3", A, 1)
    vintage_2026.vintage = 2026
    error = rpc_error(lambda: surrender_units(operator, vintage_2026))
    assert (error.code, error.reason) == (PRECONDITION, "INSUFFICIENT_UNITS")

    freeze(reg, "FRZ-1", A)
    error = rpc_error(lambda: surrender_units(operator, surrender("S-4", A, 10)))
    assert (error.code, error.reason, error.metadata["account"]) == (
        PRECONDITION,
        "ACCOUNT_FROZEN",
        A,
    )
    unfreeze(reg, "UNF-1", A)
    error = rpc_error(lambda: surrender_units(operator, surrender("S-4", A, 10)))
    assert (error.code, error.reason) == (PRECONDITION, "ACCOUNT_FROZEN")  # S-4 is recorded

    error = rpc_error(lambda: surrender_units(operator, surrender("S-5", TRADER, 10)))
    assert (error.code, error.reason) == (PRECONDITION, "MOVEMENT_NOT_ALLOWED")
    # an account beyond the operator's grants is refused before anything is looked up:
    # whether it exists is not told
    error = rpc_error(lambda: surrender_units(operator, surrender("S-6", "NOPE-0001", 10)))
    assert (error.code, error.reason, error.metadata["account"]) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "ACCOUNT_NOT_IN_SCOPE",
        "NOPE-0001",
    )

    invalid = {
        "INVALID_COMPLIANCE_YEAR": surrender("S-7", A, 10, year=1999),
        "QUANTITY_NOT_POSITIVE": surrender("S-7", A, 0),
        "MISSING_FIELD": surrender("S-7", A, 10, unit_type=common.UNIT_TYPE_UNSPECIFIED),
        "MISSING_ID": surrender("", A, 10),
        "INVALID_ACCOUNT_ID": surrender("S-7", "a", 10),
    }
    for reason, request in invalid.items():
        error = rpc_error(lambda r=request: surrender_units(operator, r))
        assert (error.code, error.reason) == (INVALID, reason), reason
    error = rpc_error(lambda: surrender_units(operator, surrender("S-7", A, 10, year=2101)))
    assert (error.code, error.reason) == (INVALID, "INVALID_COMPLIANCE_YEAR")
    # nothing of the invalid requests was stored: S-7 is still free
    done = surrender_units(operator, surrender("S-7", A, 10, year=2025)).transaction
    assert balance(operator, A, done.position) == ALLOCATIONS[A] - 30_010
    assert balance(operator, "CN-SURRENDER", done.position) == 30_010
    # surrendered units are retired: they move again only by a reversal
    [retired] = api.exchange.settle_trades([trade("T-1", "CN-SURRENDER", TRADER, 1)])
    assert (retired.status, retired.reason) == (settlement_pb.TRADE_STATUS_REFUSED, "UNITS_RETIRED")


def test_cancel_units(api: Api) -> None:
    reg, operator = api.regulator, api.operator
    seed_market(reg)
    first = cancel_units(operator, cancel("C-1", A, 700))
    txn = first.transaction
    assert not first.replayed
    assert (txn.kind, txn.status, txn.source_account, txn.destination_account, txn.quantity) == (
        common.TRANSACTION_KIND_CANCELLATION,
        common.TRANSACTION_STATUS_COMPLETED,
        A,
        "CN-CANCELLATION",
        700,
    )
    assert cancel_units(operator, cancel("C-1", A, 700)).replayed
    error = rpc_error(lambda: cancel_units(operator, cancel("C-1", A, 701)))
    assert (error.code, error.reason) == (EXISTS, "TRANSACTION_EXISTS_WITH_DIFFERENT_CONTENT")
    for _ in range(2):
        error = rpc_error(lambda: cancel_units(operator, cancel("C-2", A, 10**9)))
        assert (error.code, error.reason) == (PRECONDITION, "INSUFFICIENT_UNITS")
    error = rpc_error(lambda: cancel_units(operator, cancel("C-3", A, 0)))
    assert (error.code, error.reason) == (INVALID, "QUANTITY_NOT_POSITIVE")
    error = rpc_error(lambda: cancel_units(operator, cancel("C-3", A, 5, unit_type=CCER)))
    assert (error.code, error.reason) == (PRECONDITION, "INSUFFICIENT_UNITS")
    error = rpc_error(lambda: cancel_units(operator, cancel("C-4", "NOPE-0001", 5)))
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ACCOUNT_NOT_IN_SCOPE")
    # a regulator cancels only by an approved proposal, not directly
    error = rpc_error(lambda: cancel_units(reg, cancel("C-5", "CN-ISSUANCE", 1_000)))
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_GRANTED")
    # no grant covers a national account (issue 15: an operator scope on CN-ISSUANCE
    # cancelled with no proposal): a cancellation from it is a regulator's approved
    # proposal; retired units never move
    error = rpc_error(
        lambda: api.admin.call(
            api.admin.access.GrantRole,
            access_pb.GrantRoleRequest(
                grant_id="desk",
                party="mee",
                name="registry-desk",
                role=access_pb.ROLE_OPERATOR,
                account_ids=["CN-ISSUANCE"],
                reason="national accounts",
            ),
        )
    )
    assert (error.code, error.reason) == (INVALID, "INVALID_GRANT_SCOPE")
    wang = api.clients["regulator2"]

    def cancelled(transaction_id: str, account_id: str, quantity: int) -> admin_pb.Proposal:
        reg.call(
            reg.administration.ProposeAction,
            admin_pb.ProposeActionRequest(
                proposal_id=transaction_id,
                kind=admin_pb.PROPOSAL_KIND_REGULATOR_CANCELLATION,
                payload_json=json.dumps(
                    {
                        "transaction_id": transaction_id,
                        "account_id": account_id,
                        "unit_type": "CEA",
                        "vintage": 2025,
                        "quantity": quantity,
                        "reason": "voluntary cancellation",
                    }
                ),
                reason="voluntary cancellation",
            ),
        )
        return wang.call(
            wang.administration.ApproveProposal,
            admin_pb.ApproveProposalRequest(party="mee", proposal_id=transaction_id),
        ).proposal

    national = cancelled("C-5", "CN-ISSUANCE", 1_000)
    assert (national.status, national.result) == (admin_pb.PROPOSAL_STATUS_EXECUTED, "mee:C-5")
    last = surrender_units(operator, surrender("S-1", A, 100)).transaction
    assert cancelled("C-6", "CN-SURRENDER", 1).failure_reason == "UNITS_RETIRED"
    assert cancelled("C-7", "CN-CANCELLATION", 1).failure_reason == "SAME_ACCOUNT"
    assert balance(operator, "CN-CANCELLATION", last.position) == 1_700
    assert balance(operator, A, last.position) == ALLOCATIONS[A] - 700 - 100


# -- GetComplianceStatus ----------------------------------------------------------------


def test_compliance_status_follows_emissions_and_surrenders(api: Api) -> None:
    reg, operator = api.regulator, api.operator
    seed_market(reg)
    register_project(reg, "CCER-2024-0117")
    issue(reg, "ISS-CCER", 10_000, CCER_2024)
    bought = api.exchange.settle_trades([ccer_trade("T-CCER", PROJECT_OWNER, A, 4_000)])
    assert [r.status for r in bought] == [settlement_pb.TRADE_STATUS_SETTLED]

    def status(year: int = 2025) -> tuple[int, int, int, int, int, int]:
        """(state, verified, obligation, surrendered CEA, surrendered CCER, outstanding)"""
        s = compliance(operator, A, year)
        assert (s.account_id, s.compliance_year) == (A, year)
        return (
            s.state,
            s.verified_emissions,
            s.obligation,
            s.surrendered_cea,
            s.surrendered_ccer,
            s.outstanding,
        )

    NOT_VERIFIED, OPEN = pb.COMPLIANCE_STATE_NOT_VERIFIED, pb.COMPLIANCE_STATE_OPEN
    COMPLIANT = pb.COMPLIANCE_STATE_COMPLIANT
    assert status() == (NOT_VERIFIED, 0, 0, 0, 0, 0)
    surrender_units(operator, surrender("S-0", A, 1_000))
    assert status() == (NOT_VERIFIED, 0, 0, 1_000, 0, 0)
    record_emissions(reg, emissions(A, 30_000))
    assert status() == (OPEN, 30_000, 30_000, 1_000, 0, 29_000)
    over_cap = rpc_error(
        lambda: surrender_units(operator, surrender("S-CCER-0", A, 1_501, unit_type=CCER))
    )  # CCER: at most 5 % of 30,000
    assert (over_cap.code, over_cap.reason) == (PRECONDITION, "CCER_CAP_EXCEEDED")
    surrender_units(operator, surrender("S-CCER", A, 1_500, unit_type=CCER))
    assert status() == (OPEN, 30_000, 30_000, 1_000, 1_500, 27_500)
    surrender_units(operator, surrender("S-2026", A, 5_000, year=2026))
    assert status() == (OPEN, 30_000, 30_000, 1_000, 1_500, 27_500)
    assert status(2026) == (NOT_VERIFIED, 0, 0, 5_000, 0, 0)
    surrender_units(operator, surrender("S-1", A, 27_500))
    assert status() == (COMPLIANT, 30_000, 30_000, 28_500, 1_500, 0)
    # a reversed surrender no longer counts
    reg.call(
        reg.administration.ReverseTransaction,
        reverse("REV-1", OPERATOR_PARTY, "S-CCER", "wrong year"),
    )
    assert status() == (OPEN, 30_000, 30_000, 28_500, 0, 1_500)
    surrender_units(operator, surrender("S-2", A, 10_000))
    assert status() == (COMPLIANT, 30_000, 30_000, 38_500, 0, 0)
    # a corrected, higher figure reopens the obligation
    record_emissions(reg, emissions(A, 40_000, reason="corrected report"))
    assert status() == (OPEN, 40_000, 40_000, 38_500, 0, 1_500)
    # zero verified emissions (the plant did not run) is compliant at once
    record_emissions(reg, emissions(B, 0))
    zero = compliance(operator, B)
    assert (zero.state, zero.obligation, zero.outstanding) == (COMPLIANT, 0, 0)

    error = rpc_error(lambda: compliance(operator, "NOPE-0001"))
    assert (error.code, error.reason) == (NOT_FOUND, "UNKNOWN_ACCOUNT")
    error = rpc_error(lambda: compliance(operator, A, 0))
    assert (error.code, error.reason) == (INVALID, "INVALID_COMPLIANCE_YEAR")
    error = rpc_error(lambda: compliance(operator, TRADER))
    assert (error.code, error.reason) == (INVALID, "NOT_COMPLIANCE_ACCOUNT")
    assert error.violations[0][0] == "account_id"
    error = rpc_error(lambda: compliance(operator, ""))
    assert (error.code, error.reason) == (INVALID, "MISSING_FIELD")
    assert error.violations == [("account_id", "account_id is required")]


# -- BadRequest names the offending field -----------------------------------------------


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def seeded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    """One seeded server per backend for the invalid-input table (nothing it sends is
    stored)."""
    with running_api(request.param, tmp_path_factory.mktemp("accounts")) as api:
        seed_market(api.regulator)
        caught_up(api.regulator)
        yield api


def _surrender(request: pb.SurrenderUnitsRequest) -> Callable[[RegistryClient], object]:
    return lambda c: surrender_units(c, request)


ACCOUNT_CASES = [
    pytest.param(
        lambda c: c.call(c.accounts.GetAccount, pb.GetAccountRequest()),
        "MISSING_FIELD",
        ["account_id"],
        id="get-account-no-id",
    ),
    # issue 15: malformed ids were looked up and answered NOT_FOUND
    pytest.param(
        lambda c: c.call(c.accounts.GetAccount, pb.GetAccountRequest(account_id="pwr sd 0001")),
        "INVALID_ACCOUNT_ID",
        ["account_id"],
        id="get-account-malformed-id",
    ),
    pytest.param(
        lambda c: c.call(c.accounts.GetAccount, pb.GetAccountRequest(account_id="A\x00B")),
        "INVALID_ACCOUNT_ID",
        ["account_id"],
        id="get-account-nul",
    ),
    pytest.param(
        lambda c: c.balances(A, min_position=-5),
        "INVALID_POSITION",
        ["min_position"],
        id="balances-negative-min-position",
    ),
    pytest.param(
        lambda c: list_accounts(c, page_size=5000),
        "INVALID_PAGE_SIZE",
        ["page_size"],
        id="list-accounts-page-size",
    ),
    pytest.param(
        lambda c: list_accounts(c, page_token="garbage"),
        "INVALID_PAGE_TOKEN",
        ["page_token"],
        id="list-accounts-page-token",
    ),
    pytest.param(
        lambda c: list_accounts(c, sector=42),
        "INVALID_ENUM_VALUE",
        ["sector"],
        id="list-accounts-sector",
    ),
    pytest.param(
        lambda c: movements(c, A, page_size=5000),
        "INVALID_PAGE_SIZE",
        ["page_size"],
        id="list-transactions-page-size",
    ),
    pytest.param(
        lambda c: movements(c, A, kinds=[common.TRANSACTION_KIND_SURRENDER, 0]),
        "MISSING_FIELD",
        ["kinds[1]"],
        id="list-transactions-kind-unspecified",
    ),
    pytest.param(
        lambda c: c.balances(""), "MISSING_FIELD", ["account_id"], id="balances-no-account"
    ),
    pytest.param(
        _surrender(surrender("S-9", A, 10, year=1999)),
        "INVALID_COMPLIANCE_YEAR",
        ["compliance_year"],
        id="surrender-year-1999",
    ),
    pytest.param(
        _surrender(surrender("S-9", A, 0)),
        "QUANTITY_NOT_POSITIVE",
        ["quantity"],
        id="surrender-quantity-0",
    ),
    pytest.param(
        _surrender(surrender("S-9", A, 10, unit_type=0)),
        "MISSING_FIELD",
        ["unit_type"],
        id="surrender-no-unit-type",
    ),
    pytest.param(
        _surrender(surrender("S-9", "", 10)),
        "MISSING_FIELD",
        ["account_id"],
        id="surrender-no-account",
    ),
    pytest.param(
        _surrender(surrender("", A, 10)),
        "MISSING_ID",
        ["transaction_id"],
        id="surrender-no-transaction-id",
    ),
    pytest.param(
        lambda c: cancel_units(c, cancel("C-9", A, -1)),
        "QUANTITY_NOT_POSITIVE",
        ["quantity"],
        id="cancel-quantity-negative",
    ),
    pytest.param(
        lambda c: compliance(c, A, 0),
        "INVALID_COMPLIANCE_YEAR",
        ["compliance_year"],
        id="compliance-year-0",
    ),
]


@pytest.mark.parametrize(("call", "reason", "fields"), ACCOUNT_CASES)
def test_invalid_input_names_the_field(
    seeded: Api, call: Callable[[RegistryClient], object], reason: str, fields: list[str]
) -> None:
    error = rpc_error(lambda: call(seeded.operator))
    assert (error.code, error.reason) == (INVALID, reason)
    assert [field for field, _ in error.violations] == fields
