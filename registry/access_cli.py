"""``registry access``: principals, role grants and credentials.

    registry access init --party mee --name admin          # local: the first administrator
    registry access grant GRANT_ID PARTY NAME ROLE [--accounts A,B | --accounts '*'] --reason R
    registry access revoke-grant GRANT_ID --reason R
    registry access token issue PARTY NAME --reason R      # prints the token once
    registry access token rotate CREDENTIAL_ID --reason R
    registry access revoke CREDENTIAL_ID --reason R         # a token or a certificate
    registry access cert add PARTY NAME client.pem --reason R
    registry access list

All but ``init`` talk to a running server with an administrator's token (``--token``
or ``REGISTRY_TOKEN``). ``init`` writes to the configured store directly, once: it
refuses when anyone holds a grant already.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

from registry.client import RegistryClient
from registry.config import Settings, build_registry
from registry.domain.access import Role, check_principal
from registry.remote import add_connection_options, call_remote
from registry.v1 import access_service_pb2 as pb

ROLES = [role.value for role in Role]


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    access = sub.add_parser("access", help="principals, role grants, tokens, certificates")
    verbs = access.add_subparsers(dest="verb", required=True)
    init = verbs.add_parser("init", help="create the first administrator and its token, "
                            "directly in the configured store (only when nobody has a grant)")
    init.add_argument("--party", required=True)
    init.add_argument("--name", required=True)
    init.add_argument("--role", action="append", choices=ROLES, default=None,
                      help="roles besides admin (repeat)")
    init.set_defaults(run=_init)
    grant = verbs.add_parser("grant", help="grant a role (over accounts, for exchange and "
                             "operator)")
    grant.add_argument("grant_id")
    grant.add_argument("party")
    grant.add_argument("name")
    grant.add_argument("role", choices=ROLES)
    grant.add_argument("--accounts", default="",
                       help="comma-separated account ids ('*': every account, exchange only)")
    revoke_grant = verbs.add_parser("revoke-grant", help="withdraw a grant")
    revoke_grant.add_argument("grant_id")
    token = verbs.add_parser("token", help="issue or rotate a bearer token")
    token_verbs = token.add_subparsers(dest="token_verb", required=True)
    issue = token_verbs.add_parser("issue", help="a new token for a principal (shown once)")
    issue.add_argument("party")
    issue.add_argument("name")
    rotate = token_verbs.add_parser("rotate", help="a new token, the old one revoked")
    rotate.add_argument("credential_id")
    revoke = verbs.add_parser("revoke", help="revoke a token or certificate at once")
    revoke.add_argument("credential_id")
    cert = verbs.add_parser("cert", help="register a client certificate (mutual TLS)")
    cert_verbs = cert.add_subparsers(dest="cert_verb", required=True)
    add = cert_verbs.add_parser("add", help="map a certificate to a principal")
    add.add_argument("party")
    add.add_argument("name")
    add.add_argument("certificate", type=Path, help="the client certificate, PEM")
    listing = verbs.add_parser("list", help="every principal with its grants and credentials")
    for parser, work in ((grant, "grant"), (revoke_grant, "revoke-grant"), (issue, "issue"),
                         (rotate, "rotate"), (revoke, "revoke"), (add, "cert"),
                         (listing, "list")):
        if parser is not listing:
            parser.add_argument("--reason", required=True)
        parser.set_defaults(run=partial(_call, work=work))
        add_connection_options(parser)


def _init(args: argparse.Namespace) -> int:
    principal = check_principal(args.party, args.name)
    roles = [Role.ADMIN, *(Role(r) for r in args.role or () if r != Role.ADMIN.value)]
    registry = build_registry(Settings.from_env())
    try:
        issued = registry.access.bootstrap(principal, roles, "registry access init")
    finally:
        registry.close()
    if issued is None:
        print("registry access init: principals exist already; an administrator grants "
              "with 'registry access grant'", file=sys.stderr)
        return 2
    print(f"{principal} ({', '.join(roles)}): token (shown once):\n{issued.token}")
    return 0


def _call(args: argparse.Namespace, work: str) -> int:
    return call_remote(args, _WORK[work])


def _grant(client: RegistryClient, args: argparse.Namespace) -> None:
    accounts = [a.strip() for a in args.accounts.split(",") if a.strip()]
    reply = client.call(client.access.GrantRole, pb.GrantRoleRequest(
        grant_id=args.grant_id, party=args.party, name=args.name,
        role=pb.Role.Value(f"ROLE_{args.role.upper()}"), account_ids=accounts,
        reason=args.reason))
    print(f"grant {reply.grant_id}: {args.party}/{args.name} {args.role}"
          + (f" over {', '.join(accounts)}" if accounts else "")
          + (" (already granted)" if reply.replayed else ""))


def _revoke_grant(client: RegistryClient, args: argparse.Namespace) -> None:
    client.call(client.access.RevokeGrant, pb.RevokeGrantRequest(grant_id=args.grant_id,
                                                                 reason=args.reason))
    print(f"grant {args.grant_id} revoked")


def _issue(client: RegistryClient, args: argparse.Namespace) -> None:
    reply = client.call(client.access.IssueToken, pb.IssueTokenRequest(
        party=args.party, name=args.name, reason=args.reason))
    print(f"credential {reply.credential_id} for {args.party}/{args.name}; the token "
          f"(shown once):\n{reply.token}")


def _rotate(client: RegistryClient, args: argparse.Namespace) -> None:
    reply = client.call(client.access.RotateToken, pb.RotateTokenRequest(
        credential_id=args.credential_id, reason=args.reason))
    print(f"credential {reply.revoked_credential_id} revoked; new credential "
          f"{reply.credential_id}, the token (shown once):\n{reply.token}")


def _revoke(client: RegistryClient, args: argparse.Namespace) -> None:
    client.call(client.access.RevokeCredential, pb.RevokeCredentialRequest(
        credential_id=args.credential_id, reason=args.reason))
    print(f"credential {args.credential_id} revoked: its next call is refused")


def _cert(client: RegistryClient, args: argparse.Namespace) -> None:
    reply = client.call(client.access.RegisterCertificate, pb.RegisterCertificateRequest(
        party=args.party, name=args.name,
        certificate_pem=args.certificate.read_text(encoding="ascii"), reason=args.reason))
    print(f"credential {reply.credential_id}: certificate {reply.fingerprint[:16]}... "
          f"({reply.subject}) is {args.party}/{args.name}")


def _list(client: RegistryClient, args: argparse.Namespace) -> None:
    reply = client.call(client.access.ListPrincipals, pb.ListPrincipalsRequest())
    for p in reply.principals:
        print(f"{p.party}/{p.name}")
        for g in p.grants:
            role = pb.Role.Name(g.role).removeprefix("ROLE_").lower()
            scope = f" over {', '.join(g.account_ids)}" if list(g.account_ids) != ["*"] else ""
            print(f"  grant {g.grant_id}: {role}{scope} (by {g.granted_by})")
        for c in p.credentials:
            state = "revoked" if c.revoked else "active"
            what = f" {c.subject}" if c.kind == "certificate" else ""
            print(f"  {c.kind} {c.credential_id}{what}: {state} (by {c.issued_by})")
    if not reply.principals:
        print("(no principals)")


_WORK = {"grant": _grant, "revoke-grant": _revoke_grant, "issue": _issue, "rotate": _rotate,
         "revoke": _revoke, "cert": _cert, "list": _list}
