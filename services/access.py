"""AccessService: grants, tokens and certificates, for administrators (thin: each
method is one ``Registry.access`` use case). A four-eyes grant answers ``pending``
until a second administrator sends the same grant (``registry.application.access``)."""

from __future__ import annotations

import grpc

from registry.application.access import Access
from registry.domain.access import Role, check_principal
from registry.domain.errors import InvalidCommand
from registry.v1 import access_service_pb2 as pb
from registry.v1 import access_service_pb2_grpc as pb_grpc
from services import convert
from services.auth import current_principal
from services.backend import Backend
from services.tls import certificate_fingerprint


class AccessServicer(pb_grpc.AccessServiceServicer):
    def __init__(self, backend: Backend) -> None:
        self.access: Access = backend.registry.access

    def GrantRole(
        self, request: pb.GrantRoleRequest, context: grpc.ServicerContext
    ) -> pb.GrantRoleResponse:
        role = role_from_proto(request.role)
        done = self.access.grant_role(
            current_principal(),
            convert.required(request.grant_id, "grant_id"),
            check_principal(request.party, request.name),
            role.value,
            list(request.account_ids),
            request.reason,
            provinces=list(request.provinces),
        )
        return pb.GrantRoleResponse(
            grant_id=done.id,
            replayed=done.replayed,
            position=done.position or 0,
            pending=done.pending,
            proposed_by=done.proposed_by,
            approved_by=done.approved_by,
        )

    def RevokeGrant(
        self, request: pb.RevokeGrantRequest, context: grpc.ServicerContext
    ) -> pb.RevokeGrantResponse:
        done = self.access.revoke_grant(
            current_principal(), convert.required(request.grant_id, "grant_id"), request.reason
        )
        return pb.RevokeGrantResponse(position=done.position or 0)

    def IssueToken(
        self, request: pb.IssueTokenRequest, context: grpc.ServicerContext
    ) -> pb.IssueTokenResponse:
        issued = self.access.issue_token(
            current_principal(), check_principal(request.party, request.name), request.reason
        )
        return pb.IssueTokenResponse(
            credential_id=issued.credential_id, token=issued.token, position=issued.position or 0
        )

    def RotateToken(
        self, request: pb.RotateTokenRequest, context: grpc.ServicerContext
    ) -> pb.RotateTokenResponse:
        old = convert.required(request.credential_id, "credential_id")
        issued = self.access.rotate_token(current_principal(), old, request.reason)
        return pb.RotateTokenResponse(
            revoked_credential_id=old,
            credential_id=issued.credential_id,
            token=issued.token,
            position=issued.position or 0,
        )

    def RevokeCredential(
        self, request: pb.RevokeCredentialRequest, context: grpc.ServicerContext
    ) -> pb.RevokeCredentialResponse:
        done = self.access.revoke_credential(
            current_principal(),
            convert.required(request.credential_id, "credential_id"),
            request.reason,
        )
        return pb.RevokeCredentialResponse(position=done.position or 0)

    def RegisterCertificate(
        self, request: pb.RegisterCertificateRequest, context: grpc.ServicerContext
    ) -> pb.RegisterCertificateResponse:
        fingerprint, subject = certificate_fingerprint(request.certificate_pem)
        done = self.access.register_certificate(
            current_principal(),
            check_principal(request.party, request.name),
            fingerprint,
            subject,
            request.reason,
        )
        return pb.RegisterCertificateResponse(
            credential_id=done.id,
            fingerprint=fingerprint,
            subject=subject,
            position=done.position or 0,
        )

    def ListPrincipals(
        self, request: pb.ListPrincipalsRequest, context: grpc.ServicerContext
    ) -> pb.ListPrincipalsResponse:
        acl = self.access.current()
        principals: dict[tuple[str, str], pb.PrincipalAccess] = {}

        def entry(party: str, name: str) -> pb.PrincipalAccess:
            return principals.setdefault((party, name), pb.PrincipalAccess(party=party, name=name))

        for grant in acl.all_grants():
            entry(grant.principal.party, grant.principal.name).grants.append(
                pb.RoleGrant(
                    grant_id=grant.grant_id,
                    role=pb.Role.Value(f"ROLE_{grant.role.value.upper()}"),
                    account_ids=list(grant.accounts),
                    granted_by=grant.granted_by,
                    reason=grant.reason,
                    approved_by=grant.approved_by,
                    provinces=list(grant.provinces),
                )
            )
        for proposal in self.access.pending_grants():
            p = proposal.payload
            entry(p["party"], p["name"]).grants.append(
                pb.RoleGrant(
                    grant_id=p["grant_id"],
                    role=pb.Role.Value(f"ROLE_{p['role'].upper()}"),
                    account_ids=list(p["accounts"]),
                    granted_by=proposal.proposer,
                    reason=proposal.reason,
                    pending=True,
                    provinces=list(p.get("provinces", [])),
                )
            )
        for c in acl.all_credentials():
            entry(c.principal.party, c.principal.name).credentials.append(
                pb.Credential(
                    credential_id=c.credential_id,
                    kind=c.kind,
                    revoked=c.revoked,
                    fingerprint=c.fingerprint,
                    subject=c.subject,
                    issued_by=c.issued_by,
                )
            )
        return pb.ListPrincipalsResponse(principals=[principals[k] for k in sorted(principals)])


def role_from_proto(number: pb.Role.ValueType) -> Role:
    try:
        name = pb.Role.Name(number)
    except ValueError:
        raise InvalidCommand(
            f"role: unknown value {number}", reason="INVALID_ENUM_VALUE", field="role"
        ) from None
    if name == "ROLE_UNSPECIFIED":
        raise InvalidCommand("role is required", reason="MISSING_FIELD", field="role")
    return Role(name.removeprefix("ROLE_").lower())
