"""``registry verify``: check the event log against its digest chain and checkpoints.

Prints one line and exits 0 when everything chained verifies, 1 naming the first
position that does not (2, via ``registry.cli``, for a configuration error such as no
public key). Wired into ``registry.cli`` with ``add_parser(sub)``.

Verification opens the store read-only (PostgreSQL: read-only transactions; SQLite: the
file opened ``mode=ro``) and never builds the application on it: it must not change what
it checks (no migration, no national accounts opened), and it reads events as raw rows,
so a tampered event is reported, never a traceback.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from registry.cli.remote import add_connection_options, client_for, report_error
from registry.integrity.authentication import (
    EVENT_KEY_ENV,
    event_key_given,
    event_key_path,
    load_event_key,
)
from registry.integrity.signing import (
    PUBLIC_KEY_ENV,
    load_public_key,
    private_key_path,
)
from registry.settings import ConfigurationError, Settings
from registry.v1 import audit_service_pb2 as audit_pb

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from registry.integrity.verify import KeptCheckpoint


DEFAULT_CHECKPOINT_EVERY = 10_000
"""``registry.integrity.ledger``'s checkpoint interval and ``registry.persistence.eventlog``'s
batch, repeated so building the parser imports no SQLAlchemy (tests/unit/test_cli_imports.py
checks they agree)."""
DEFAULT_BATCH = 5000


def add_parser(sub: Any) -> None:
    command = sub.add_parser(
        "verify",
        help="recompute the event log's digest chain and check it and its "
        "signed checkpoints; exit 1 naming the first position that does not match",
    )
    command.add_argument(
        "--public-key",
        type=Path,
        metavar="PEM",
        help=f"the checkpoints' public key (default: ${PUBLIC_KEY_ENV}, else the public "
        "half of the signing key file)",
    )
    command.add_argument(
        "--checkpoint-every",
        type=int,
        default=DEFAULT_CHECKPOINT_EVERY,
        metavar="N",
        help="the interval the chain is signed at: a checkpoint missing at a multiple of "
        "it fails; 0 skips that check (default %(default)s)",
    )
    command.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH,
        help="events read per query (default %(default)s)",
    )
    command.add_argument(
        "--checkpoint",
        type=Path,
        metavar="FILE",
        help="also check checkpoints kept outside the database: the "
        "published file (REGISTRY_LEDGER_CHECKPOINTS, one JSON line each) "
        "or one saved by `registry ledger-digest --save`; each must be "
        "signed, match the log, and none lie beyond the chain (the "
        "routine check)",
    )
    command.add_argument(
        "--event-key",
        type=Path,
        metavar="FILE",
        help="the key the registry authenticates events with, to check "
        "that every event after the upgrade to authenticated events was "
        f"written by the registry (default: ${EVENT_KEY_ENV}, else the data "
        "directory's event-key file if there is one; without a key this "
        "check is skipped and the summary says so)",
    )
    command.add_argument(
        "--skip-snapshots",
        action="store_true",
        help="do not check the stored snapshots against the replay of the events",
    )
    mode = command.add_mutually_exclusive_group()
    mode.add_argument(
        "--full",
        dest="incremental",
        action="store_false",
        help="re-derive the whole chain from the first event (the default)",
    )
    mode.add_argument(
        "--incremental",
        dest="incremental",
        action="store_true",
        help="start where the worker's last successful verification ended (its chain "
        "row and checkpoint re-checked): fast, but a change to the events before it "
        "that keeps that boundary intact is found only by a full run",
    )
    command.set_defaults(run=run, incremental=False)
    digest = sub.add_parser(
        "ledger-digest",
        help="the digest chain's head and latest signed checkpoint, from a running server",
    )
    digest.add_argument(
        "--save",
        type=Path,
        metavar="FILE",
        help="keep the latest checkpoint as JSON, to check it later",
    )
    add_connection_options(digest)
    digest.set_defaults(run=_ledger_digest)


def public_key(given: Path | None, environ: Mapping[str, str] | None = None) -> Ed25519PublicKey:
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
        f"{PUBLIC_KEY_ENV} (no signing key at {signer} either)"
    )


def verifier_event_key(
    given: Path | None, environ: Mapping[str, str] | None = None
) -> bytes | None:
    """The event key to check authenticators with: the option or ``REGISTRY_EVENT_KEY``
    (which must load), else the data directory's file if there is one, else None (an
    auditor without the key still checks the chain and signatures)."""
    if given is not None:
        return load_event_key(given)
    path = event_key_path(environ)
    if event_key_given(environ) or path.exists():
        return load_event_key(path)
    return None


def run(args: argparse.Namespace) -> int:
    from sqlalchemy import inspect

    from registry.integrity.verify import last_verified, verify_ledger
    from registry.persistence.eventlog import EventLog

    settings = Settings.from_env()
    if settings.backend not in ("sqlite", "postgresql", "postgres"):
        raise ConfigurationError(
            f"{settings.describe()} keeps nothing to verify: set REGISTRY_DATABASE_URL"
        )
    if args.checkpoint_every < 0 or args.batch_size < 1:
        raise ConfigurationError("--checkpoint-every must be 0 or more, --batch-size 1 or more")
    if args.incremental and args.checkpoint is not None:
        raise ConfigurationError("--checkpoint needs a full run: drop --incremental")
    key = public_key(args.public_key)
    kept = [] if args.checkpoint is None else read_kept(args.checkpoint)
    event_key = verifier_event_key(args.event_key)
    engine = read_only_engine(settings)
    try:
        log = EventLog.default(engine.dialect.name)
        since = None
        if args.incremental:
            if "ledger_verified" in inspect(engine).get_table_names():
                since = last_verified(engine)
            if since is None:
                print("no verification recorded yet: running a full one")
        report = verify_ledger(
            engine,
            [key],
            log=log,
            batch_size=args.batch_size,
            checkpoint_every=args.checkpoint_every or None,
            kept=kept,
            snapshots=not args.skip_snapshots,
            event_key=event_key,
            since=since,
        )
    finally:
        engine.dispose()
    print(report.summary())
    return 0 if report.ok else 1


def read_only_engine(settings: Settings) -> Engine:
    """An engine that cannot write: PostgreSQL sessions in read-only transactions, the
    SQLite file opened read-only (a missing file is an error, not created). The schema
    must be migrated: verify reports a store it cannot check rather than changing it."""
    from sqlalchemy import inspect

    from registry.persistence.engine import make_read_only_engine

    if settings.backend == "sqlite":
        path = Path(settings.eventsourcing_env()["SQLITE_DBNAME"])
        if not path.exists():
            raise ConfigurationError(f"no registry store at {path}: nothing to verify")
    engine = make_read_only_engine(settings)
    tables = set(inspect(engine).get_table_names())
    if not {"ledger_digests", "ledger_checkpoints", "ledger_event_authentication"} <= tables:
        engine.dispose()
        raise ConfigurationError(
            f"{settings.describe()} has no ledger tables: run `registry migrate` first"
        )
    return engine


def read_kept(path: Path) -> list[KeptCheckpoint]:
    """Checkpoints kept outside the database: a JSON object (`ledger-digest --save`) or
    JSON lines (the published file). A torn last line (a crash mid-append) is skipped."""
    from registry.integrity.verify import KeptCheckpoint

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigurationError(f"cannot read the kept checkpoints {path}: {error}") from None
    records: list[Any] = []
    try:
        records = [json.loads(text)]  # one saved checkpoint, possibly indented
    except ValueError:
        lines = [line for line in text.splitlines() if line.strip()]
        for number, line in enumerate(lines, 1):
            try:
                records.append(json.loads(line))
            except ValueError as error:
                if number == len(lines) > 1:
                    continue
                raise ConfigurationError(
                    f"{path} line {number} is not a kept checkpoint: {error}"
                ) from None
    kept = []
    for record in records:
        try:
            previous = None
            if record.get("previous_digest"):  # version 2: linked (absent/empty: v1)
                previous = (
                    int(record["previous_position"]),
                    bytes.fromhex(record["previous_digest"]),
                )
            kept.append(
                KeptCheckpoint(
                    int(record["position"]),
                    bytes.fromhex(record["digest"]),
                    record.get("key_id"),
                    base64.b64decode(record["signature"], validate=True),
                    previous,
                )
            )
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ConfigurationError(
                f"{path} holds a record that is not a checkpoint "
                f"saved by `registry ledger-digest --save` or "
                f"published by the registry: {error}"
            ) from None
    if not kept:
        raise ConfigurationError(f"{path} holds no checkpoint")
    return kept


def _ledger_digest(args: argparse.Namespace) -> int:
    try:
        with client_for(args) as client:
            reply = client.call(client.audit.GetLedgerDigest, audit_pb.GetLedgerDigestRequest())
    except grpc.RpcError as error:
        return report_error(error)
    print(
        f"chain: {reply.events_chained:,} events up to position {reply.position:,} "
        f"(log head {reply.head_position:,}), digest {reply.digest}"
    )
    if not reply.HasField("latest_checkpoint"):
        print("no signed checkpoint yet")
        return 0
    c = reply.latest_checkpoint
    print(
        f"latest checkpoint: position {c.position:,}, digest {c.digest}, key {c.key_id}, "
        f"signed {c.sign_time.ToDatetime():%Y-%m-%d %H:%M:%S} UTC"
    )
    if args.save is not None:
        saved: dict[str, object] = {
            "position": c.position,
            "digest": c.digest,
            "key_id": c.key_id,
            "signature": base64.b64encode(c.signature).decode("ascii"),
            "sign_time": c.sign_time.ToJsonString(),
            "public_key_pem": reply.public_key_pem,
        }
        if c.previous_digest:  # version 2: the link its signature covers
            saved.update(previous_position=c.previous_position, previous_digest=c.previous_digest)
        args.save.write_text(json.dumps(saved, indent=2) + "\n", encoding="utf-8")
        print(
            f"saved to {args.save}; check it later with: registry verify --checkpoint "
            f"{args.save} --public-key PEM"
        )
    return 0
