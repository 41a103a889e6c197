"""AccountService: operators' accounts, balances, history, surrender and cancellation."""

from __future__ import annotations

import grpc

from registry.domain.accounts import AccountType, Sector
from registry.domain.errors import InvalidCommand
from registry.domain.restriction_index import RestrictionIndex
from registry.domain.transactions import TransactionKind
from registry.persistence.eventlog import EventLog
from registry.v1 import account_service_pb2 as pb
from registry.v1 import account_service_pb2_grpc as pb_grpc
from registry.v1 import common_pb2 as common
from services import convert
from services.auth import current_principal
from services.backend import Backend

DEFAULT_PAGE = 100
RESTRICTION_INDEX = RestrictionIndex.id_for()
NOTHING_RESTRICTED = (0, 0)


class AccountServicer(pb_grpc.AccountServiceServicer):
    def __init__(self, backend: Backend) -> None:
        self.registry = backend.registry
        self.backend = backend
        self._log = EventLog.of(backend.registry.recorder)

    def GetAccount(
        self, request: pb.GetAccountRequest, context: grpc.ServicerContext
    ) -> pb.GetAccountResponse:
        view = self.registry.get_account(convert.account_id(request.account_id))
        return pb.GetAccountResponse(account=convert.account_view_to_proto(view))

    def ListAccounts(
        self, request: pb.ListAccountsRequest, context: grpc.ServicerContext
    ) -> pb.ListAccountsResponse:
        account_type = convert.enum_from_proto(
            request.account_type, common.AccountType, AccountType, "account_type", required=False
        )
        sector = convert.enum_from_proto(
            request.sector, common.Sector, Sector, "sector", required=False
        )
        if request.page_token:
            convert.page_token(request.page_token, str)  # the last account id listed
        if request.province:
            convert.filter_text(request.province, "province", 64)
        page = self.backend.read_models.accounts(
            page_size=request.page_size or DEFAULT_PAGE,
            page_token=request.page_token,
            account_type=account_type.value if account_type else None,
            sector=sector.value if sector else None,
            province=request.province or None,
        )
        return pb.ListAccountsResponse(
            accounts=[convert.account_row_to_proto(row) for row in page.rows],
            next_page_token=page.next_token,
        )

    def GetBalances(
        self, request: pb.GetBalancesRequest, context: grpc.ServicerContext
    ) -> pb.GetBalancesResponse:
        """The read model's holdings, with what of them is detained or frozen from the
        write model as committed when the holdings were read: one statement reads both
        the holdings and the restriction index's stored version, and the index itself
        is read again only when that version moved (``restricted_quantities``)."""
        account_id = convert.account_id(request.account_id)
        self.backend.wait_for(request.min_position, context)
        rows, version = self.backend.read_models.holdings_and_version(
            account_id, self._log, RESTRICTION_INDEX
        )
        restricted = (
            self.registry.restrictions.restricted_quantities(
                account_id, index_version=version, projects={row["project"] for row in rows}
            )
            if rows
            else {}
        )
        return pb.GetBalancesResponse(
            account_id=account_id,
            holdings=[
                convert.holding_row_to_proto(
                    account_id, row, restricted.get(row["unit_class"], NOTHING_RESTRICTED)
                )
                for row in rows
            ],
        )

    def ListTransactions(
        self, request: pb.ListTransactionsRequest, context: grpc.ServicerContext
    ) -> pb.ListTransactionsResponse:
        account_id = convert.account_id(request.account_id)
        kinds = convert.filter_values(
            [
                convert.enum_from_proto(k, common.TransactionKind, TransactionKind, f"kinds[{i}]")
                for i, k in enumerate(request.kinds)
            ],
            "kinds",
        )
        since = convert.optional_time(request, "start_time")
        until = convert.optional_time(request, "end_time")
        if request.page_token:  # the last movement listed: position, unit class, direction
            convert.page_token(request.page_token, int, str, str)
        self.backend.read_models.account(account_id)
        page = self.backend.read_models.history(
            account_id,
            page_size=request.page_size or DEFAULT_PAGE,
            page_token=request.page_token,
            kinds=[k.value for k in kinds if k],
            since=since,
            until=until,
        )
        return pb.ListTransactionsResponse(
            movements=[_movement(row) for row in page.rows], next_page_token=page.next_token
        )

    def SurrenderUnits(
        self, request: pb.SurrenderUnitsRequest, context: grpc.ServicerContext
    ) -> pb.SurrenderUnitsResponse:
        result = self.registry.surrender(
            current_principal(),
            request.transaction_id,
            convert.required(request.account_id, "account_id"),
            convert.selector(request),
            request.quantity,
            request.compliance_year,
            request.reason,
        )
        return pb.SurrenderUnitsResponse(
            transaction=convert.completed(result), replayed=result.replayed
        )

    def CancelUnits(
        self, request: pb.CancelUnitsRequest, context: grpc.ServicerContext
    ) -> pb.CancelUnitsResponse:
        result = self.registry.cancel(
            current_principal(),
            request.transaction_id,
            convert.required(request.account_id, "account_id"),
            convert.selector(request),
            request.quantity,
            request.reason,
        )
        return pb.CancelUnitsResponse(
            transaction=convert.completed(result), replayed=result.replayed
        )

    def TransferUnits(
        self, request: pb.TransferUnitsRequest, context: grpc.ServicerContext
    ) -> pb.TransferUnitsResponse:
        source = convert.account_id(request.source_account_id, "source_account_id")
        destination = convert.account_id(request.destination_account_id, "destination_account_id")
        if source == destination:
            raise InvalidCommand(
                f"source and destination are both {source}",
                reason="SAME_ACCOUNT",
                field="destination_account_id",
            )
        result = self.registry.transfer_units(
            current_principal(),
            request.transaction_id,
            source,
            destination,
            convert.selector(request),
            request.quantity,
            request.reason,
            request.reference,
        )
        return pb.TransferUnitsResponse(
            transaction=convert.completed(result), replayed=result.replayed
        )

    def SubmitRebuttal(
        self, request: pb.SubmitRebuttalRequest, context: grpc.ServicerContext
    ) -> pb.SubmitRebuttalResponse:
        result = self.registry.origins.submit_rebuttal(
            current_principal(),
            convert.required(request.origin, "origin"),
            convert.account_id(request.account_id),
            convert.client_id(request.rebuttal_id, "rebuttal_id"),
            request.statement,
            list(request.evidence_sha256),
        )
        return pb.SubmitRebuttalResponse(
            holder=convert.detained_holder_to_proto(result.holder),
            detention_reference=result.reference,
            replayed=result.replayed,
            position=result.position or 0,
        )

    def GetComplianceStatus(
        self, request: pb.GetComplianceStatusRequest, context: grpc.ServicerContext
    ) -> pb.GetComplianceStatusResponse:
        view = self.registry.get_compliance_status(
            convert.required(request.account_id, "account_id"), request.compliance_year
        )
        window = view.rules.net_sales_window()  # the one the surrender counts in too
        if window is not None:  # the carry-over limit depends on the ledger's settlements
            view = view.with_net_sales(self.backend.read_models.net_sales(view.account_id, *window))
        return pb.GetComplianceStatusResponse(
            account_id=view.account_id,
            compliance_year=view.compliance_year,
            state=pb.ComplianceState.Value(f"COMPLIANCE_STATE_{view.state}"),
            verified_emissions=view.verified_emissions or 0,
            obligation=view.obligation,
            surrendered_cea=view.surrendered_cea,
            surrendered_ccer=view.surrendered_ccer,
            outstanding=view.outstanding,
            allocated=view.allocated,
            advance_used=view.advance_used,
            shortfall=view.shortfall,
            debt_carried=view.debt_carried,
            debt_deducted=view.debt_deducted,
            ccer_cap=view.ccer_cap,
            ccer_remaining=view.ccer_remaining,
            gap=view.gap,
            may_borrow=view.may_borrow,
            advance_use_limit=view.advance_use_limit,
            advance_use_remaining=view.advance_use_remaining,
            carry_over_limit=view.carry_over_limit,
            net_sales=view.net_sales,
            enforcement_step=pb.EnforcementStep.Value(f"ENFORCEMENT_STEP_{view.enforcement_step}"),
            correction_deadline=view.correction_deadline,
            shortfall_remaining=view.shortfall_remaining,
            debt_carried_forward=view.carried_forward,
            fine=common.ComplianceFine(**view.fine) if view.fine else None,
            invalidated=view.invalidated,
            replacement_remaining=view.replacement_remaining,
            replacement_deadline=view.replacement_deadline,
            unit_lines=[
                pb.UnitLineStatus(
                    unit_category=d.line.category,
                    unit_id=d.line.unit_id,
                    verified_emissions=d.line.verified_emissions,
                    allocated=d.allocated,
                    due=d.due,
                )
                for d in view.unit_lines
            ],
        )


def _movement(row: dict[str, object]) -> pb.AccountMovement:
    return pb.AccountMovement(
        position=int(str(row["position"])),
        direction=pb.Direction.Value(f"DIRECTION_{row['direction']}"),
        kind=convert.enum_to_proto(str(row["kind"]), common.TransactionKind),
        party=str(row["party"]),
        transaction_id=str(row["client_id"]),
        counterparty_account=str(row["counterparty"] or ""),
        unit_class=convert.unit_class_to_proto(str(row["unit_class"])),
        quantity=int(str(row["quantity"])),
        blocks=convert.blocks_from_json(str(row["blocks"])),
        reason=str(row["reason"]),
        principal=str(row["principal"]),
        record_time=convert.timestamp(row["recorded_at"]),  # type: ignore[arg-type]
        reference=str(row.get("reference") or ""),
    )
