"""The chain's tables, and ``extend_chain`` that keeps them up with the event log.

``ledger_digests`` has one row per chained event, keyed by its position: the event's
ordinal in the chain (``seq``), its identity (originator id and version) and hash, and
the chain digest after it. Identity and hash are not needed to check the chain; they let
the verifier say what changed (the event, its place, or the chain row) and which event
a deleted row was. ``ledger_checkpoints`` holds signed (position, digest) statements.

Extending is safe with several processes at once: each batch is one transaction that
first takes a lock (PostgreSQL: an advisory transaction lock; SQLite: ``BEGIN
IMMEDIATE``, the database's write lock), then reads the chain's last row, so a second
extender waits and continues from the first one's head. The primary key on position
refuses a duplicate should anything bypass the lock. Events commit in position order
(the library's table lock), so everything up to the head read is final: the chain never
has to be re-cut.

Before it signs, the extender re-verifies the stored chain since its key's last
checkpoint against the events (someone who rewrote an event and recomputed the chain
rows after it would otherwise have the forgery signed), and it checks that what the
sealer itself wrote and published is still there (``known``): a checkpoint deleted, or a
chain row it wrote changed, makes it refuse (``ChainTampered``) rather than sign on top.
Each checkpoint links to the key's previous one (``signing``), so deleting one breaks the
next.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Engine,
    LargeBinary,
    MetaData,
    RowMapping,
    String,
    Table,
    Uuid,
    and_,
    exists,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from registry.integrity.authentication import authentic, boundary_seal
from registry.integrity.chain import GENESIS, StoredLogEvent, hash_and_link
from registry.integrity.events import read_log, stream_log
from registry.integrity.signing import Checkpoint, key_id, sign_checkpoint
from registry.persistence.bulk import Writer
from registry.persistence.eventlog import DEFAULT_BATCH, EventLog
from registry.persistence.locks import LEDGER_LOCK_KEY

DEFAULT_CHECKPOINT_EVERY = 10_000
_CONFLICT_RETRIES = 3

metadata = MetaData()

digests = Table(
    "ledger_digests",
    metadata,
    Column("position", BigInteger, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("originator_id", Uuid, nullable=False),
    Column("originator_version", BigInteger, nullable=False),
    Column("event_hash", LargeBinary(32), nullable=False),
    Column("digest", LargeBinary(32), nullable=False),
    comment="Digest chain over the event log: one row per event, by log position.",
)

checkpoints = Table(
    "ledger_checkpoints",
    metadata,
    Column("position", BigInteger, primary_key=True, autoincrement=False),
    Column("key_id", String(16), primary_key=True),
    Column("digest", LargeBinary(32), nullable=False),
    Column("signature", LargeBinary(64), nullable=False),
    Column("signed_at", DateTime(timezone=True), nullable=False),
    # The link to the key's previous checkpoint (version 2; NULL: version 1, no link).
    Column("previous_position", BigInteger, nullable=True),
    Column("previous_digest", LargeBinary(32), nullable=True),
    comment="Signed checkpoints of the digest chain (Ed25519).",
)

event_authentication = Table(
    "ledger_event_authentication",
    metadata,
    Column("grandfathered_upto", BigInteger, primary_key=True, autoincrement=False),
    Column("seal", LargeBinary(32), nullable=True),
    comment="Events up to this log position predate event authenticators.",
)
"""One row, written by migration 0004: the log's head when event authenticators began
(``registry.integrity.authentication``), sealed by the first sealer holding the key."""

verified = Table(
    "ledger_verified",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("position", BigInteger, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("digest", LargeBinary(32), nullable=False),
    Column("key_id", String(16), nullable=False),
    Column("signature", LargeBinary(64), nullable=False),
    Column("verified_at", DateTime(timezone=True), nullable=False),
    Column("full_at", DateTime(timezone=True), nullable=True),
    comment="Where the last verification ended: the next incremental run starts here.",
)
"""One row (id 1), written by ``registry.integrity.verify.record_verified``: the last
signed checkpoint a successful verification matched (position, chain seq and digest,
its key and signature), and when the last full run succeeded."""

DIGEST_COLUMNS = ("position", "seq", "originator_id", "originator_version", "event_hash", "digest")


@dataclass(frozen=True)
class ChainRow:
    position: int
    seq: int
    originator_id: UUID
    originator_version: int
    event_hash: bytes
    digest: bytes


@dataclass(frozen=True)
class StoredCheckpoint:
    position: int
    key_id: str
    digest: bytes
    signature: bytes
    signed_at: datetime
    previous_position: int | None = None
    previous_digest: bytes | None = None

    @property
    def previous(self) -> tuple[int, bytes] | None:
        """The link to the key's previous checkpoint; None for version 1 (or a row whose
        link was half erased, which then fails its signature)."""
        if self.previous_position is None or self.previous_digest is None:
            return None
        return self.previous_position, self.previous_digest


@dataclass(frozen=True)
class ChainHead:
    """The chain's last row (position 0, seq 0 and GENESIS when empty) and its latest
    checkpoint."""

    position: int
    seq: int
    digest: bytes
    checkpoint: StoredCheckpoint | None


class ChainTampered(Exception):
    """The stored chain, its checkpoints or the events under them no longer say what
    was chained and signed: the extender refuses to chain or sign on top of them. Not a
    call's error: the sealer logs it as ``LEDGER_TAMPERED``."""

    def __init__(self, position: int, detail: str) -> None:
        super().__init__(f"position {position:,}: {detail}")
        self.position = position


@dataclass(frozen=True)
class Known:
    """What the sealer itself wrote and published, which must still be in the store:
    its last checkpoint (as published outside the database) and the chain's digest at
    the last position it chained."""

    checkpoint: tuple[int, bytes] | None = None
    chained: tuple[int, bytes] | None = None


@dataclass
class ExtendResult:
    chained: int = 0
    head: int = 0
    digest: bytes = GENESIS
    checkpoints: list[Checkpoint] = field(default_factory=list)


def latest_digest(engine: Engine | Connection) -> ChainHead:
    """The head of the chain: last chained position, its digest, the latest checkpoint."""
    if isinstance(engine, Connection):
        return _head(engine)
    with engine.connect() as conn:
        return _head(conn)


def _head(conn: Connection) -> ChainHead:
    row = conn.execute(
        select(digests.c.position, digests.c.seq, digests.c.digest)
        .order_by(digests.c.position.desc())
        .limit(1)
    ).first()
    checkpoint = conn.execute(
        select(checkpoints)
        .order_by(checkpoints.c.position.desc(), checkpoints.c.signed_at.desc())
        .limit(1)
    ).first()
    latest = None if checkpoint is None else _checkpoint(checkpoint._mapping)
    if row is None:
        return ChainHead(0, 0, GENESIS, latest)
    return ChainHead(int(row.position), int(row.seq), bytes(row.digest), latest)


def _checkpoint(row: RowMapping) -> StoredCheckpoint:
    before, before_digest = row["previous_position"], row["previous_digest"]
    return StoredCheckpoint(
        int(row["position"]),
        str(row["key_id"]),
        bytes(row["digest"]),
        bytes(row["signature"]),
        row["signed_at"],
        None if before is None else int(before),
        None if before_digest is None else bytes(before_digest),
    )


def extend_chain(
    engine: Engine,
    key: Ed25519PrivateKey,
    *,
    log: EventLog | None = None,
    batch_size: int = DEFAULT_BATCH,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    checkpoint_at_head: bool = False,
    clock: Callable[[], datetime] | None = None,
    known: Known | None = None,
    event_key: bytes | None = None,
) -> ExtendResult:
    """Chain every event stored after the chain's head, ``batch_size`` per transaction,
    signing a checkpoint at every ``checkpoint_every``-th chained event and, with
    ``checkpoint_at_head``, at the head reached (unless one is there already).

    With ``event_key`` (the sealer always passes it) every event after the grandfathered
    boundary must carry that key's authenticator: the events before the first one that
    does not are chained, then ``ChainTampered`` names it. Without, nothing is checked
    (tests of the chain alone).

    Raises ``ChainTampered`` (having written nothing in that batch) when ``known`` is no
    longer in the store, or when, before signing, the chain since the key's last
    checkpoint does not follow from the events."""
    if batch_size < 1 or checkpoint_every < 1:
        raise ValueError("batch_size and checkpoint_every must be at least 1")
    log = log or EventLog.default(engine.dialect.name)
    now = clock or (lambda: datetime.now(UTC))
    result = ExtendResult()
    while True:
        for attempt in range(_CONFLICT_RETRIES):
            try:
                with _locked(engine) as conn:
                    count, done = _extend_batch(
                        conn,
                        log,
                        key,
                        batch_size,
                        checkpoint_every,
                        checkpoint_at_head,
                        now,
                        result,
                        known or Known(),
                        event_key,
                    )
                break
            except IntegrityError:  # someone bypassed the lock: re-read and go on
                if attempt == _CONFLICT_RETRIES - 1:
                    raise
        result.chained += count
        if done:
            return result


def _extend_batch(
    conn: Connection,
    log: EventLog,
    key: Ed25519PrivateKey,
    batch_size: int,
    every: int,
    at_head: bool,
    now: Callable[[], datetime],
    result: ExtendResult,
    known: Known,
    event_key: bytes | None = None,
) -> tuple[int, bool]:
    """One batch in the caller's locked transaction: (events chained, head reached)."""
    kid = key_id(key)
    head = _head(conn)
    _check_known(conn, kid, known)
    last = _last_checkpoint(conn, kid)
    previous = (0, GENESIS) if last is None else (last.position, last.digest)
    events = read_log(log, conn, head.position, batch_size)
    forged: StoredLogEvent | None = None
    if event_key is not None and events:
        upto = grandfathered_upto(conn, log, event_key)
        forged = next(
            (e for e in events if e.position > upto and not authentic(event_key, e)), None
        )
        if forged is not None:
            if forged is events[0]:
                raise ChainTampered(forged.position, not_authenticated(forged))
            events = events[: events.index(forged)]  # chain the ones before it first
    digest, seq = head.digest, head.seq
    rows = []
    signed: list[Checkpoint] = []
    for event in events:
        event_digest, digest = hash_and_link(digest, event)
        seq += 1
        rows.append(
            (event.position, seq, _uuid(event), event.originator_version, event_digest, digest)
        )
        if seq % every == 0:
            signed.append(sign_checkpoint(key, event.position, digest, previous))
            previous = (event.position, digest)
    position = events[-1].position if events else head.position
    done = len(events) < batch_size and forged is None
    if (
        done
        and at_head
        and position
        and not (signed and signed[-1].position == position)
        and not _has_checkpoint(conn, position, kid)
    ):
        signed.append(sign_checkpoint(key, position, digest, previous))
    if signed:
        reverify_since_checkpoint(conn, log, last, head)
    Writer(conn).insert(digests, DIGEST_COLUMNS, rows)
    if signed:
        at = now()
        conn.execute(
            insert(checkpoints),
            [
                {
                    "position": c.position,
                    "key_id": c.key_id,
                    "digest": c.digest,
                    "signature": c.signature,
                    "signed_at": at,
                    "previous_position": None if c.previous is None else c.previous[0],
                    "previous_digest": None if c.previous is None else c.previous[1],
                }
                for c in signed
            ],
        )
    result.head, result.digest = position, digest
    result.checkpoints.extend(signed)
    return len(events), done


def not_authenticated(event: StoredLogEvent) -> str:
    """Why an event is refused: no authenticator, or one the key did not make."""
    what = f"aggregate {event.originator_id} version {event.originator_version} ({event.topic})"
    if event.authenticator is None:
        return (
            f"event not authenticated: {what} carries no authenticator, yet it "
            "follows the upgrade to authenticated events (written with SQL, not by "
            "the registry)"
        )
    return (
        f"event not authenticated: {what} carries an authenticator the event key "
        "did not make (written with SQL, or by a process with another "
        "REGISTRY_EVENT_KEY)"
    )


def grandfathered_upto(conn: Connection, log: EventLog, event_key: bytes, seal: bool = True) -> int:
    """The last position whose event may lack an authenticator (written before the
    upgrade), from the row migration 0004 wrote, sealing that row first if no key-holder
    has yet (``seal``; a reader never writes). Raises ``ChainTampered`` when the row is
    gone or its seal is not the key's, or when an unsealed boundary covers an event that
    carries an authenticator (none did at the upgrade: the boundary was moved)."""
    row = conn.execute(
        select(event_authentication.c.grandfathered_upto, event_authentication.c.seal)
    ).all()
    if len(row) != 1:
        raise ChainTampered(
            0,
            "event not authenticated: the record of where "
            "authenticated events begin (ledger_event_authentication) "
            f"holds {len(row)} rows, not the one the upgrade wrote",
        )
    upto, stored = int(row[0][0]), row[0][1]
    expected = boundary_seal(event_key, upto)
    if stored is not None:
        if not hmac.compare_digest(bytes(stored), expected):
            raise ChainTampered(
                upto,
                "event not authenticated: the record of where "
                "authenticated events begin was changed (its seal is not "
                "the event key's)",
            )
        return upto
    first = log.authenticated_upto(conn, upto)
    if first is not None:
        raise ChainTampered(
            first,
            "event not authenticated: the unsealed record of where "
            f"authenticated events begin covers position {first:,}, whose "
            "event is authenticated: it was moved since the upgrade",
        )
    if seal:
        conn.execute(update(event_authentication).values(seal=expected))
    return upto


def _uuid(event: StoredLogEvent) -> UUID:
    """The originator as a UUID: the registry writes nothing else."""
    originator = event.originator_id
    if isinstance(originator, UUID):
        return originator
    if originator is None or event.originator_version is None:
        raise ValueError(
            f"event at position {event.position} has no originator id or "
            "version: the store is damaged, run `registry verify`"
        )
    return UUID(originator)


def _last_checkpoint(conn: Connection, kid: str) -> StoredCheckpoint | None:
    row = conn.execute(
        select(checkpoints)
        .where(checkpoints.c.key_id == kid)
        .order_by(checkpoints.c.position.desc())
        .limit(1)
    ).first()
    return None if row is None else _checkpoint(row._mapping)


def _check_known(conn: Connection, kid: str, known: Known) -> None:
    """What this sealer signed and published, and the digest it chained last, must still
    be in the store: two primary-key look-ups per batch."""
    if known.checkpoint is not None:
        position, digest = known.checkpoint
        stored = conn.execute(
            select(checkpoints.c.digest).where(
                and_(checkpoints.c.position == position, checkpoints.c.key_id == kid)
            )
        ).scalar()
        if stored is None:
            raise ChainTampered(
                position,
                "the checkpoint this registry signed and published here is gone from the database",
            )
        if bytes(stored) != digest:
            raise ChainTampered(
                position,
                "the checkpoint this registry signed and "
                "published here holds another digest in the database",
            )
    if known.chained is not None:
        position, digest = known.chained
        stored = conn.execute(
            select(digests.c.digest).where(digests.c.position == position)
        ).scalar()
        if stored is None or bytes(stored) != digest:
            raise ChainTampered(
                position,
                "the chain row this registry wrote here is "
                + ("gone" if stored is None else "changed"),
            )


def reverify_since_checkpoint(
    conn: Connection, log: EventLog, last: StoredCheckpoint | None, head: ChainHead
) -> None:
    """Recompute the chain from ``last`` (the signing key's latest checkpoint; genesis
    when none) to the stored ``head`` from the events, and compare every stored row:
    what is about to be signed must follow from the events, not merely from rows
    someone may have recomputed."""
    start, digest, seq = 0, GENESIS, 0
    if last is not None:
        at = conn.execute(
            select(digests.c.seq, digests.c.digest).where(digests.c.position == last.position)
        ).first()
        if at is None or bytes(at.digest) != last.digest:
            raise ChainTampered(
                last.position,
                "the chain row at the last signed checkpoint no longer holds its signed digest",
            )
        start, digest, seq = last.position, last.digest, int(at.seq)
    events = stream_log(log, conn, start, head.position)
    for row in iter_chain(conn, start, head.position):
        event = next(events, None)
        if event is None or event.position != row.position:
            raise ChainTampered(
                row.position if event is None else min(row.position, event.position),
                "the events since the last checkpoint are "
                "not the ones chained (deleted, moved or inserted)",
            )
        event_digest, digest = hash_and_link(digest, event)
        seq += 1
        if (row.seq, row.event_hash, row.digest) != (seq, event_digest, digest):
            raise ChainTampered(
                row.position,
                "the stored chain since the last checkpoint "
                "does not follow from the events: refusing to sign it",
            )
    extra = next(events, None)
    if extra is not None:
        raise ChainTampered(
            extra.position,
            "an event before the chain's head has no chain row (inserted since it was chained)",
        )
    if (seq, digest) != (head.seq, head.digest):
        raise ChainTampered(
            head.position,
            "the chain's head does not follow from the events since the last checkpoint",
        )


def _has_checkpoint(conn: Connection, position: int, kid: str) -> bool:
    return bool(
        conn.execute(
            select(
                exists().where(
                    and_(checkpoints.c.position == position, checkpoints.c.key_id == kid)
                )
            )
        ).scalar()
    )


@contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """A transaction that no other extender runs beside."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LEDGER_LOCK_KEY})
        elif conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        yield conn


def iter_chain(
    conn: Connection, after: int = 0, upto: int | None = None, batch: int = DEFAULT_BATCH
) -> Iterator[ChainRow]:
    """The chain's rows after ``after`` (to ``upto``) in position order, ``batch`` at a
    time."""
    while True:
        query = (
            select(*(digests.c[name] for name in DIGEST_COLUMNS))
            .where(digests.c.position > after)
            .order_by(digests.c.position)
            .limit(batch)
        )
        if upto is not None:
            query = query.where(digests.c.position <= upto)
        rows = [
            ChainRow(int(r[0]), int(r[1]), r[2], int(r[3]), bytes(r[4]), bytes(r[5]))
            for r in conn.execute(query)
        ]
        yield from rows
        if len(rows) < batch:
            return
        after = rows[-1].position


def iter_checkpoints(
    conn: Connection, upto: int | None = None, batch: int = DEFAULT_BATCH, *, since: int = -1
) -> Iterator[StoredCheckpoint]:
    """Every checkpoint after position ``since`` in position order (then key id)."""
    after: tuple[int, str] = (-1, "")
    while True:
        query = (
            select(checkpoints)
            .where(checkpoints.c.position > since)
            .where(
                (checkpoints.c.position > after[0])
                | and_(checkpoints.c.position == after[0], checkpoints.c.key_id > after[1])
            )
            .order_by(checkpoints.c.position, checkpoints.c.key_id)
            .limit(batch)
        )
        if upto is not None:
            query = query.where(checkpoints.c.position <= upto)
        rows = [_checkpoint(r._mapping) for r in conn.execute(query)]
        yield from rows
        if len(rows) < batch:
            return
        after = (rows[-1].position, rows[-1].key_id)


def chain_bounds(conn: Connection) -> tuple[int, int]:
    """(last chained position, last checkpointed position), 0 when none."""
    last = conn.execute(select(func.max(digests.c.position))).scalar()
    signed = conn.execute(select(func.max(checkpoints.c.position))).scalar()
    return int(last or 0), int(signed or 0)
