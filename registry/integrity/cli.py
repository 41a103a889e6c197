"""``registry verify``: check the event log against its digest chain and checkpoints.

Prints one line and exits 0 when everything chained verifies, 1 naming the first
position that does not (2, via ``registry.cli``, for a configuration error such as no
public key). Wired into ``registry.cli`` with ``add_parser(sub)``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Engine

from registry.config import ConfigurationError, Settings, build_registry
from registry.integrity.ledger import DEFAULT_CHECKPOINT_EVERY
from registry.integrity.log import DEFAULT_BATCH, EventLog
from registry.integrity.signing import (
    PUBLIC_KEY_ENV,
    key_id,
    load_public_key,
    private_key_path,
)
from registry.integrity.verify import check_checkpoint, verify_ledger
from registry.readmodels.sql import make_engine
from registry.remote import add_connection_options, client_for, report_error
from registry.v1 import audit_service_pb2 as audit_pb


def add_parser(sub: Any) -> None:
    command = sub.add_parser(
        "verify", help="recompute the event log's digest chain and check it and its "
        "signed checkpoints; exit 1 naming the first position that does not match")
    command.add_argument(
        "--public-key", type=Path, metavar="PEM",
        help=f"the checkpoints' public key (default: ${PUBLIC_KEY_ENV}, else the public "
        "half of the signing key file)")
    command.add_argument(
        "--checkpoint-every", type=int, default=DEFAULT_CHECKPOINT_EVERY, metavar="N",
        help="the interval the chain is signed at: a checkpoint missing at a multiple of "
        "it fails; 0 skips that check (default %(default)s)")
    command.add_argument("--batch-size", type=int, default=DEFAULT_BATCH,
                         help="events read per query (default %(default)s)")
    command.add_argument("--checkpoint", type=Path, metavar="FILE",
                         help="instead: check one checkpoint kept earlier (`registry "
                         "ledger-digest --save FILE`): its signature, and that the log up "
                         "to its position still gives its digest")
    command.set_defaults(run=run)
    digest = sub.add_parser("ledger-digest", help="the digest chain's head and latest signed "
                            "checkpoint, from a running server")
    digest.add_argument("--save", type=Path, metavar="FILE",
                        help="keep the latest checkpoint as JSON, to check it later")
    add_connection_options(digest)
    digest.set_defaults(run=_ledger_digest)


def public_key(given: Path | None, environ: Mapping[str, str] | None = None
               ) -> Ed25519PublicKey:
    """The key to check signatures with: the option, the environment, else the signer's
    own key file. A verifier with no key would pass any forged checkpoint: refused."""
    environ = os.environ if environ is None else environ
    if given is not None:
        return load_public_key(given)
    if environ.get(PUBLIC_KEY_ENV, "").strip():
        return load_public_key(Path(environ[PUBLIC_KEY_ENV].strip()))
    signer = private_key_path(environ)
    if signer.exists():
        return load_public_key(signer)
    raise ConfigurationError(
        f"no public key to check the checkpoints with: pass --public-key PEM or set "
        f"{PUBLIC_KEY_ENV} (no signing key at {signer} either)")


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if settings.backend not in ("sqlite", "postgresql", "postgres"):
        raise ConfigurationError(
            f"{settings.describe()} keeps nothing to verify: set REGISTRY_DATABASE_URL")
    if args.checkpoint_every < 0 or args.batch_size < 1:
        raise ConfigurationError("--checkpoint-every must be 0 or more, --batch-size 1 or more")
    key = public_key(args.public_key)
    registry = build_registry(settings)
    engine = make_engine(settings)
    try:
        if args.checkpoint is not None:
            return _check_kept(args.checkpoint, key, engine, EventLog.of(registry.recorder))
        report = verify_ledger(engine, [key], log=EventLog.of(registry.recorder),
                               batch_size=args.batch_size,
                               checkpoint_every=args.checkpoint_every or None)
    finally:
        registry.close()
        engine.dispose()
    print(report.summary())
    return 0 if report.ok else 1


def _check_kept(path: Path, key: Ed25519PublicKey, engine: Engine, log: EventLog) -> int:
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
        position, digest = int(kept["position"]), bytes.fromhex(kept["digest"])
        signature = base64.b64decode(kept["signature"], validate=True)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigurationError(f"{path} is not a checkpoint saved by `registry "
                                 f"ledger-digest --save`: {error}") from None
    check = check_checkpoint(key, position, digest, signature, kid=kept.get("key_id"),
                             engine=engine, log=log)
    if check.ok:
        print(f"OK: the checkpoint at position {position:,} is signed by key "
              f"{key_id(key)} and the log up to it still gives digest {digest.hex()[:16]}")
        return 0
    print(f"FAILED at {check.failure}")
    return 1


def _ledger_digest(args: argparse.Namespace) -> int:
    try:
        with client_for(args) as client:
            reply = client.call(client.audit.GetLedgerDigest,
                                audit_pb.GetLedgerDigestRequest())
    except grpc.RpcError as error:
        return report_error(error)
    print(f"chain: {reply.events_chained:,} events up to position {reply.position:,} "
          f"(log head {reply.head_position:,}), digest {reply.digest}")
    if not reply.HasField("latest_checkpoint"):
        print("no signed checkpoint yet")
        return 0
    c = reply.latest_checkpoint
    print(f"latest checkpoint: position {c.position:,}, digest {c.digest}, key {c.key_id}, "
          f"signed {c.sign_time.ToDatetime():%Y-%m-%d %H:%M:%S} UTC")
    if args.save is not None:
        args.save.write_text(json.dumps({
            "position": c.position, "digest": c.digest, "key_id": c.key_id,
            "signature": base64.b64encode(c.signature).decode("ascii"),
            "sign_time": c.sign_time.ToJsonString(),
            "public_key_pem": reply.public_key_pem}, indent=2) + "\n", encoding="utf-8")
        print(f"saved to {args.save}; check it later with: registry verify --checkpoint "
              f"{args.save} --public-key PEM")
    return 0
