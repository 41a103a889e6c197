"""AdministrationService: regulators open and freeze accounts, issue, allocate, reverse
and record verified emissions."""

from __future__ import annotations

import json
from datetime import date
from typing import TypeVar

import grpc

from registry.application.commands import AllocationRow, EmissionsRow, check_batch
from registry.application.four_eyes import ProposalResult
from registry.application.projects import ProjectResult, StatusChange
from registry.application.results import (
    AccountResult,
    ComplianceRulesView,
    RowOutcome,
    RowResult,
)
from registry.domain.accounts import AccountType
from registry.domain.errors import InvalidCommand, ProposalRequired, RowsInvalid
from registry.domain.ids import check_party
from registry.domain.projects import (
    ProjectDetails,
    ProjectQuery,
    ProjectStatus,
    ProjectView,
    check_project_id,
)
from registry.domain.proposals import (
    DEFAULT_VALIDITY_SECONDS,
    ProposalKind,
    ProposalStatus,
    ProposalView,
    check_payload_size,
)
from registry.domain.reasons import check_reason
from registry.domain.restrictions import check_reference
from registry.domain.units import UnitType
from registry.readmodels.queries import check_page_size, encode_token
from registry.v1 import administration_service_pb2 as pb
from registry.v1 import administration_service_pb2_grpc as pb_grpc
from registry.v1 import common_pb2 as common
from services import convert
from services.auth import current_principal
from services.backend import Backend
from services.policy import FOUR_EYES

SERVICE = "registry.v1.AdministrationService"

ROW_STATUS = {
    RowOutcome.COMPLETED: common.ROW_STATUS_COMPLETED,
    RowOutcome.ALREADY_COMPLETED: common.ROW_STATUS_ALREADY_COMPLETED,
    RowOutcome.REFUSED: common.ROW_STATUS_REFUSED,
    RowOutcome.REJECTED: common.ROW_STATUS_REJECTED,
}


class AdministrationServicer(pb_grpc.AdministrationServiceServicer):
    def __init__(self, backend: Backend, four_eyes: bool = False) -> None:
        self.registry = backend.registry
        self.four_eyes = four_eyes

    def _direct(self, method: str) -> None:
        """With four eyes required, a call the policy lists in ``FOUR_EYES`` is refused
        here: a proposal of its kind must carry it."""
        kind = FOUR_EYES[f"{SERVICE}/{method}"]
        if self.four_eyes:
            raise ProposalRequired(
                f"{kind} needs a second regulator: propose it with ProposeAction (kind "
                f"{kind}) for another regulator to approve",
                kind=kind,
            )

    def OpenAccount(
        self, request: pb.OpenAccountRequest, context: grpc.ServicerContext
    ) -> pb.OpenAccountResponse:
        account_type = convert.enum_from_proto(
            request.account_type, common.AccountType, AccountType, "account_type"
        )
        assert account_type is not None
        result = self.registry.open_account(
            current_principal(),
            convert.required(request.account_id, "account_id"),
            account_type,
            convert.holder_from_proto(request.holder),
        )
        return pb.OpenAccountResponse(
            account=convert.account_view_to_proto(result.account),
            replayed=result.replayed,
            position=result.position or 0,
        )

    def FreezeAccount(
        self, request: pb.FreezeAccountRequest, context: grpc.ServicerContext
    ) -> pb.FreezeAccountResponse:
        self._direct("FreezeAccount")
        result = self.registry.freeze_account(
            current_principal(),
            convert.required(request.account_id, "account_id"),
            request.reason,
            request_id=convert.required(request.request_id, "request_id"),
        )
        return pb.FreezeAccountResponse(
            account=_account(result), replayed=result.replayed, position=result.position or 0
        )

    def UnfreezeAccount(
        self, request: pb.UnfreezeAccountRequest, context: grpc.ServicerContext
    ) -> pb.UnfreezeAccountResponse:
        self._direct("UnfreezeAccount")
        result = self.registry.unfreeze_account(
            current_principal(),
            convert.required(request.account_id, "account_id"),
            request.reason,
            request_id=convert.required(request.request_id, "request_id"),
        )
        return pb.UnfreezeAccountResponse(
            account=_account(result), replayed=result.replayed, position=result.position or 0
        )

    def CloseAccount(
        self, request: pb.CloseAccountRequest, context: grpc.ServicerContext
    ) -> pb.CloseAccountResponse:
        result = self.registry.close_account(
            current_principal(),
            convert.required(request.account_id, "account_id"),
            request.reason,
            request_id=convert.required(request.request_id, "request_id"),
        )
        return pb.CloseAccountResponse(
            account=_account(result), replayed=result.replayed, position=result.position or 0
        )

    def IssueUnits(
        self, request: pb.IssueUnitsRequest, context: grpc.ServicerContext
    ) -> pb.IssueUnitsResponse:
        self._direct("IssueUnits")
        result = self.registry.issue_units(
            current_principal(),
            request.transaction_id,
            convert.unit_class_from_proto(request.unit_class),
            request.quantity,
            request.reason,
        )
        return pb.IssueUnitsResponse(
            transaction=convert.completed(result), replayed=result.replayed
        )

    def AllocateUnits(
        self, request: pb.AllocateUnitsRequest, context: grpc.ServicerContext
    ) -> pb.AllocateUnitsResponse:
        self._direct("AllocateUnits")
        check_batch(len(request.rows), request.ByteSize(), "rows", "rows to allocate")
        rows: list[AllocationRow] = []
        rejected: dict[int, RowResult] = {}
        for index, row in enumerate(request.rows):
            try:
                unit_type = convert.enum_from_proto(
                    row.unit_type, common.UnitType, UnitType, f"rows[{index}].unit_type"
                )
                assert unit_type is not None
                rows.append(
                    AllocationRow(
                        transaction_id=row.transaction_id,
                        account_id=row.account_id,
                        unit_type=unit_type.value,
                        quantity=row.quantity,
                        reason=row.reason,
                        vintage=row.vintage if row.HasField("vintage") else None,
                        source=row.source_account or None,
                        returned=row.allocation_return,
                    )
                )
            except InvalidCommand as error:
                rejected[index] = RowResult.rejected(row.transaction_id, error)
        done = iter(self.registry.allocate_many(current_principal(), rows) if rows else [])
        results = [rejected[i] if i in rejected else next(done) for i in range(len(request.rows))]
        return pb.AllocateUnitsResponse(
            results=[
                pb.AllocationResult(
                    transaction_id=r.client_id,
                    status=ROW_STATUS[r.outcome],
                    reason=r.reason,
                    message=r.message,
                    position=r.position or 0,
                )
                for r in results
            ]
        )

    def ReverseTransaction(
        self, request: pb.ReverseTransactionRequest, context: grpc.ServicerContext
    ) -> pb.ReverseTransactionResponse:
        self._direct("ReverseTransaction")
        result = self.registry.reverse(
            current_principal(),
            request.transaction_id,
            convert.required(request.original_party, "original_party"),
            request.original_transaction_id,
            request.reason,
        )
        return pb.ReverseTransactionResponse(
            transaction=convert.completed(result), replayed=result.replayed
        )

    def RecordVerifiedEmissions(
        self, request: pb.RecordVerifiedEmissionsRequest, context: grpc.ServicerContext
    ) -> pb.RecordVerifiedEmissionsResponse:
        self._direct("RecordVerifiedEmissions")
        check_batch(len(request.rows), request.ByteSize(), "rows", "emissions rows to record")
        try:
            recorded = self.registry.record_verified_emissions(
                current_principal(),
                [
                    EmissionsRow(
                        account_id=row.account_id,
                        compliance_year=row.compliance_year,
                        verified_emissions=row.verified_emissions,
                        reason=row.reason,
                        unit_lines=convert.unit_lines(row.unit_lines),
                    )
                    for row in request.rows
                ],
            )
        except RowsInvalid as error:  # up to 10,000 bad rows: as many as the trailers hold
            raise convert.reportable(error) from None
        return pb.RecordVerifiedEmissionsResponse(
            results=[
                pb.VerifiedEmissionsResult(
                    account_id=r.account_id,
                    compliance_year=r.compliance_year,
                    status=pb.EmissionsRowStatus.Value(f"EMISSIONS_ROW_STATUS_{r.status}"),
                )
                for r in recorded.results
            ],
            position=recorded.position or 0,
        )

    def SetComplianceRules(
        self, request: pb.SetComplianceRulesRequest, context: grpc.ServicerContext
    ) -> pb.SetComplianceRulesResponse:
        self._direct("SetComplianceRules")
        view = self.registry.set_compliance_rules(
            current_principal(),
            request.compliance_year,
            convert.required(request.sector, "sector"),
            convert.rules_from_proto(request.rules),
            request.reason,
        )
        return pb.SetComplianceRulesResponse(year=_rules_view(view), position=view.position or 0)

    def GetComplianceRules(
        self, request: pb.GetComplianceRulesRequest, context: grpc.ServicerContext
    ) -> pb.GetComplianceRulesResponse:
        return _rules_view(self.registry.get_compliance_rules(request.compliance_year))

    def CloseComplianceYear(
        self, request: pb.CloseComplianceYearRequest, context: grpc.ServicerContext
    ) -> pb.CloseComplianceYearResponse:
        self._direct("CloseComplianceYear")
        closing = self.registry.close_compliance_year(
            current_principal(),
            request.compliance_year,
            request.reason,
            request.correction_days if request.HasField("correction_days") else None,
        )
        return pb.CloseComplianceYearResponse(
            compliance_year=closing.year,
            obligations_closed=closing.obligations_closed,
            shortfalls=closing.shortfalls,
            shortfall_tonnes=closing.shortfall_tonnes,
            replayed=closing.replayed,
            position=closing.position or 0,
            correction_deadline=closing.correction_deadline,
        )

    def ProposeAction(
        self, request: pb.ProposeActionRequest, context: grpc.ServicerContext
    ) -> pb.ProposeActionResponse:
        kind = convert.enum_from_proto(request.kind, pb.ProposalKind, ProposalKind, "kind")
        assert kind is not None
        check_payload_size(len(request.payload_json.encode()), "payload_json")
        try:
            payload = json.loads(request.payload_json or "{}")
        except ValueError:
            raise InvalidCommand(
                "payload_json is not JSON", reason="INVALID_PAYLOAD", field="payload_json"
            ) from None
        except RecursionError:  # the parser recurses once per level of nesting
            raise InvalidCommand(
                "payload_json is nested too deep", reason="INVALID_PAYLOAD", field="payload_json"
            ) from None
        if not isinstance(payload, dict):
            raise InvalidCommand(
                "payload_json must be a JSON object", reason="INVALID_PAYLOAD", field="payload_json"
            )
        return _respond(
            pb.ProposeActionResponse,
            self.registry.proposals.propose(
                current_principal(),
                convert.required(request.proposal_id, "proposal_id"),
                kind,
                payload,
                request.reason,
                request.validity_seconds or DEFAULT_VALIDITY_SECONDS,
            ),
        )

    def ApproveProposal(
        self, request: pb.ApproveProposalRequest, context: grpc.ServicerContext
    ) -> pb.ApproveProposalResponse:
        return _respond(
            pb.ApproveProposalResponse,
            self.registry.proposals.approve(
                current_principal(),
                check_party(convert.required(request.party, "party")),
                convert.client_id(request.proposal_id, "proposal_id"),
            ),
        )

    def RejectProposal(
        self, request: pb.RejectProposalRequest, context: grpc.ServicerContext
    ) -> pb.RejectProposalResponse:
        return _respond(
            pb.RejectProposalResponse,
            self.registry.proposals.reject(
                current_principal(),
                convert.required(request.party, "party"),
                convert.required(request.proposal_id, "proposal_id"),
                request.reason,
            ),
        )

    def GetProposal(
        self, request: pb.GetProposalRequest, context: grpc.ServicerContext
    ) -> pb.GetProposalResponse:
        return pb.GetProposalResponse(
            proposal=_proposal(
                self.registry.proposals.get(
                    convert.required(request.party, "party"),
                    convert.required(request.proposal_id, "proposal_id"),
                )
            )
        )

    def ListProposals(
        self, request: pb.ListProposalsRequest, context: grpc.ServicerContext
    ) -> pb.ListProposalsResponse:
        status = convert.enum_from_proto(
            request.status, pb.ProposalStatus, ProposalStatus, "status", required=False
        )
        size = check_page_size(request.page_size or 100)
        start = convert.page_token(request.page_token, int)[0] if request.page_token else 0
        province = convert.filter_text(request.province, "province")
        views = self.registry.proposals.list_proposals(status.value if status else "", province)
        page = views[start : start + size]
        more = start + size < len(views)
        return pb.ListProposalsResponse(
            proposals=[_proposal(v) for v in page],
            next_page_token=encode_token([start + size]) if more else "",
        )

    def ExpireProposals(
        self, request: pb.ExpireProposalsRequest, context: grpc.ServicerContext
    ) -> pb.ExpireProposalsResponse:
        return pb.ExpireProposalsResponse(
            proposals=[_proposal(v) for v in self.registry.proposals.expire_due()]
        )

    def RecordComplianceFine(
        self, request: pb.RecordComplianceFineRequest, context: grpc.ServicerContext
    ) -> pb.RecordComplianceFineResponse:
        self._direct("RecordComplianceFine")
        result = self.registry.record_compliance_fine(
            current_principal(),
            convert.required(request.account_id, "account_id"),
            request.compliance_year,
            request.multiple,
            request.reference_price,
            request.reason,
        )
        return pb.RecordComplianceFineResponse(
            account_id=result.account_id,
            compliance_year=result.compliance_year,
            fine=common.ComplianceFine(
                multiple=result.multiple,
                reference_price=result.reference_price,
                quantity=result.quantity,
                amount=result.amount,
            ),
            replayed=result.replayed,
            position=result.position or 0,
        )

    def EnforceDeductions(
        self, request: pb.EnforceDeductionsRequest, context: grpc.ServicerContext
    ) -> pb.EnforceDeductionsResponse:
        self._direct("EnforceDeductions")
        run = self.registry.enforce_deductions(
            current_principal(), request.compliance_year, request.reason
        )
        return pb.EnforceDeductionsResponse(
            compliance_year=run.year,
            deducted=run.deducted,
            deducted_tonnes=run.deducted_tonnes,
            awaiting_deadline=run.awaiting_deadline,
            position=run.position or 0,
        )

    # -- projects ---------------------------------------------------------------------

    def RegisterProject(
        self, request: pb.RegisterProjectRequest, context: grpc.ServicerContext
    ) -> pb.RegisterProjectResponse:
        self._direct("RegisterProject")
        result = self.registry.projects.register(
            current_principal(),
            convert.required(request.project_id, "project_id"),
            _project_details(request.details),
            _change(request),
        )
        return _project_result(pb.RegisterProjectResponse, result)

    def UpdateProject(
        self, request: pb.UpdateProjectRequest, context: grpc.ServicerContext
    ) -> pb.UpdateProjectResponse:
        self._direct("UpdateProject")
        result = self.registry.projects.change_details(
            current_principal(),
            check_project_id(request.project_id),
            _project_details(request.details),
            _change(request),
        )
        return _project_result(pb.UpdateProjectResponse, result)

    def SuspendProject(
        self, request: pb.SuspendProjectRequest, context: grpc.ServicerContext
    ) -> pb.SuspendProjectResponse:
        self._direct("SuspendProject")
        projects = self.registry.projects
        result = projects.suspend(
            current_principal(), check_project_id(request.project_id), _change(request)
        )
        return _project_result(pb.SuspendProjectResponse, result)

    def ReinstateProject(
        self, request: pb.ReinstateProjectRequest, context: grpc.ServicerContext
    ) -> pb.ReinstateProjectResponse:
        self._direct("ReinstateProject")
        projects = self.registry.projects
        result = projects.reinstate(
            current_principal(), check_project_id(request.project_id), _change(request)
        )
        return _project_result(pb.ReinstateProjectResponse, result)

    def DeregisterProject(
        self, request: pb.DeregisterProjectRequest, context: grpc.ServicerContext
    ) -> pb.DeregisterProjectResponse:
        self._direct("DeregisterProject")
        projects = self.registry.projects
        result = projects.deregister(
            current_principal(), check_project_id(request.project_id), _change(request)
        )
        return _project_result(pb.DeregisterProjectResponse, result)

    def GetProject(
        self, request: pb.GetProjectRequest, context: grpc.ServicerContext
    ) -> pb.GetProjectResponse:
        return pb.GetProjectResponse(
            project=_project(self.registry.projects.get(request.project_id))
        )

    def ListProjects(
        self, request: pb.ListProjectsRequest, context: grpc.ServicerContext
    ) -> pb.ListProjectsResponse:
        """Keyset pages by project id: a project registered meanwhile never shifts a page."""
        status = convert.enum_from_proto(
            request.status, pb.ProjectStatus, ProjectStatus, "status", required=False
        )
        size = check_page_size(request.page_size or 100)
        after = convert.page_token(request.page_token, str)[0] if request.page_token else ""
        query = ProjectQuery(
            province=convert.filter_text(request.province, "province") or None,
            methodology=convert.filter_text(request.methodology, "methodology") or None,
            statuses=frozenset({status}) if status else None,
        )
        views = [v for v in self.registry.projects.matching(query) if v.project_id > after]
        page = views[:size]
        more = len(views) > size
        return pb.ListProjectsResponse(
            projects=[_project(v) for v in page],
            next_page_token=encode_token([page[-1].project_id]) if more else "",
        )


def _project_details(message: pb.ProjectDetails) -> ProjectDetails:
    """The request's details; a bad one is named inside ``details``."""
    try:
        return _details(message)
    except InvalidCommand as error:
        label = error.metadata.get("field", "")
        if label and not label.startswith("details."):
            error.metadata["field"] = f"details.{label}"
        raise


def _details(message: pb.ProjectDetails) -> ProjectDetails:
    return ProjectDetails.from_dict(
        {
            "owner_account": message.owner_account,
            "province": message.province,
            "methodology": message.methodology,
            "sector": message.sector,
            "verifier": message.verifier,
            "developer": message.developer,
            "crediting_start": _required_date(message.crediting_start, "details.crediting_start"),
            "crediting_end": _required_date(message.crediting_end, "details.crediting_end"),
        }
    )


def _required_date(message: common.Date, field: str) -> date:
    value = convert.trade_date(message, field)
    if value is None:
        raise InvalidCommand(f"{field} is required", reason="MISSING_FIELD", field=field)
    return value


ChangeRequest = (
    pb.RegisterProjectRequest
    | pb.UpdateProjectRequest
    | pb.SuspendProjectRequest
    | pb.ReinstateProjectRequest
    | pb.DeregisterProjectRequest
)


def _change(request: ChangeRequest) -> StatusChange:
    return StatusChange(check_reason(request.reason), check_reference(request.reference))


P = TypeVar(
    "P",
    pb.RegisterProjectResponse,
    pb.UpdateProjectResponse,
    pb.SuspendProjectResponse,
    pb.ReinstateProjectResponse,
    pb.DeregisterProjectResponse,
)


def _project_result(response: type[P], result: ProjectResult) -> P:
    return response(
        project=_project(result.project),
        replayed=result.replayed,
        position=result.position or 0,
    )


def _project(view: ProjectView) -> pb.Project:
    details = view.details
    return pb.Project(
        project_id=view.project_id,
        details=pb.ProjectDetails(
            owner_account=details.owner_account,
            province=details.province,
            methodology=details.methodology,
            sector=details.sector,
            verifier=details.verifier,
            developer=details.developer,
            crediting_start=_date_to_proto(details.crediting_start),
            crediting_end=_date_to_proto(details.crediting_end),
        ),
        status=convert.enum_to_proto(view.status, pb.ProjectStatus),
        reference=view.reference,
        registered_by=view.registered_by,
        register_time=convert.timestamp(view.registered_at),
        status_reason=view.status_reason,
        status_reference=view.status_reference,
        update_time=convert.timestamp(view.changed_at),
    )


def _date_to_proto(value: date) -> common.Date:
    return common.Date(year=value.year, month=value.month, day=value.day)


def _proposal(view: ProposalView) -> pb.Proposal:
    return pb.Proposal(
        party=view.party,
        proposal_id=view.proposal_id,
        kind=convert.enum_to_proto(view.kind, pb.ProposalKind),
        payload_json=json.dumps(view.payload, sort_keys=True),
        status=convert.enum_to_proto(view.status, pb.ProposalStatus),
        proposer=view.proposer,
        reason=view.reason,
        create_time=convert.timestamp(view.created_at),
        expire_time=convert.timestamp(view.expires_at),
        approver=view.approver,
        approve_time=convert.timestamp(view.approved_at),
        rejected_by=view.rejected_by,
        rejection_reason=view.rejection_reason,
        result=view.result,
        failure_reason=view.failure_reason,
        failure_message=view.failure_message,
        proposer_provinces=view.proposer_provinces,
        approver_provinces=view.approver_provinces,
        rejecter_provinces=view.rejecter_provinces,
    )


R = TypeVar("R", pb.ProposeActionResponse, pb.ApproveProposalResponse, pb.RejectProposalResponse)


def _respond(response: type[R], result: ProposalResult) -> R:
    return response(
        proposal=_proposal(result.proposal), replayed=result.replayed, position=result.position or 0
    )


def _rules_view(view: ComplianceRulesView) -> pb.GetComplianceRulesResponse:
    return pb.GetComplianceRulesResponse(
        compliance_year=view.year,
        closed=view.closed,
        version=view.version,
        rules=[
            pb.SectorRules(sector=sector, rules=convert.rules_to_proto(rules))
            for sector, rules in view.rules.items()
        ],
    )


def _account(result: AccountResult) -> common.Account:
    return convert.account_view_to_proto(result.account)
