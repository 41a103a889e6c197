"""Verification: recompute the chain from the stored events and compare.

``verify_ledger`` walks three position-ordered streams at once (events, chain rows,
checkpoints), each read in batches, so memory stays flat however long the log. Up to
the chain's head every event must have its chain row and the reverse; each digest must
follow from the events before it; each checkpoint must be signed by a known key and
equal the recomputed digest at its position. The walk stops at the FIRST position that
does not hold and says why. Events after the head are "not yet chained", not a failure.

The walk reads every row of the event table, from its lowest position (a row at a
position the store never assigns, 0 or below, is forged), and afterwards checks that
every aggregate's versions are exactly 1..n (the write model replays by version, not by
position) and that every stored snapshot is the replay of its aggregate's events
(``snapshots``). Given the event key, every event after the grandfathered boundary,
chained or not, must carry the key's authenticator (``authentication``): a row appended
with SQL is named even though the sealer, refusing it, never chained it.

The stored chain rows only localise a change: someone able to rewrite the events can
rewrite them too. What they cannot forge is a checkpoint signature, and each checkpoint
is linked to its key's previous one, so a rewritten history shows at the first
checkpoint after the change, a deleted checkpoint at the next one, and a cut at the end
to anyone holding a later checkpoint outside the database (``kept``).

Incremental (``since``, a ``Verified`` record from ``last_verified``): the walk resumes
at the last signed checkpoint a successful run matched, after re-checking that the
chain row and the checkpoint there are still the ones recorded (``BOUNDARY_CHANGED``).
It then checks everything after that position as a full run does (events, chain rows,
checkpoints and their links, authenticators, the row count after it). What it cannot
see is a change at or before the boundary that leaves the boundary's chain row and
checkpoint as recorded (an event, chain row or checkpoint rewritten, inserted or deleted
in the verified prefix): the prefix's digests are not re-derived. Nor does it check
versions, snapshots or kept checkpoints. Only a full run (``since=None``) does those.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from uuid import UUID

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, Engine, and_, func, insert, select, update

from registry.integrity.authentication import authentic
from registry.integrity.chain import GENESIS, StoredLogEvent, hash_and_link, link
from registry.integrity.events import stream_log
from registry.integrity.ledger import (
    DEFAULT_CHECKPOINT_EVERY,
    ChainRow,
    ChainTampered,
    StoredCheckpoint,
    chain_bounds,
    digests,
    grandfathered_upto,
    iter_chain,
    iter_checkpoints,
    not_authenticated,
    verified,
)
from registry.integrity.ledger import checkpoints as checkpoint_table
from registry.integrity.signing import key_id, verify_signature
from registry.integrity.snapshots import check_snapshots
from registry.persistence.eventlog import DEFAULT_BATCH, EventLog


class Reason(StrEnum):
    PAYLOAD_ALTERED = "payload altered"
    EVENT_MISSING = "event missing"
    EVENTS_REORDERED = "events reordered"
    EXTRA_EVENT = "extra event"
    CHAIN_ROW_MISSING = "chain row missing"
    CHAIN_ROW_ALTERED = "chain row altered"
    CHECKPOINT_MISMATCH = "checkpoint mismatch"
    CHECKPOINT_MISSING = "checkpoint missing"
    BAD_SIGNATURE = "bad signature"
    UNKNOWN_KEY = "unknown key"
    FORGED_POSITION = "forged position"
    VERSION_GAP = "version gap"
    SNAPSHOT_FORGED = "snapshot forged"
    CHAIN_CUT = "chain cut"
    NOT_AUTHENTICATED = "event not authenticated"
    BOUNDARY_CHANGED = "verified boundary changed"


@dataclass(frozen=True)
class Verified:
    """Where a successful verification ended: the last signed checkpoint it matched
    (position, the chain's seq and digest there, the checkpoint's key and signature), so
    the next run can start there; and when the last full run succeeded."""

    position: int
    seq: int
    digest: bytes
    key_id: str
    signature: bytes
    verified_at: datetime
    full_at: datetime | None = None


@dataclass(frozen=True)
class KeptCheckpoint:
    """A checkpoint kept outside the database (published file, `ledger-digest --save`)."""

    position: int
    digest: bytes
    key_id: str | None
    signature: bytes
    previous: tuple[int, bytes] | None = None
    """The link to its key's previous checkpoint (version 2); None: version 1."""


@dataclass(frozen=True)
class Failure:
    position: int
    reason: Reason
    detail: str

    def __str__(self) -> str:
        return f"position {self.position:,}: {self.reason.value}: {self.detail}"


@dataclass(frozen=True)
class VerifyReport:
    failure: Failure | None
    events_checked: int
    """Events whose chain rows matched, in order, before any failure."""
    chain_head: int
    """The last position the chain (or a checkpoint) covers."""
    digest: bytes
    """The digest recomputed at the last position checked."""
    checkpoints_checked: int
    last_checkpoint: int | None
    unchained: int
    """Events after ``chain_head``: appended since the chain was last extended."""
    log_head: int
    signatures_checked: bool
    unsigned: int = 0
    """Chained events after the last checkpoint: covered by unsigned digests only."""
    kept_checked: int = 0
    """Checkpoints kept outside the database that matched the recomputed digests."""
    last_kept: int | None = None
    snapshots_checked: bool = False
    authenticators_checked: bool = False
    """Whether the events' authenticators were checked (an event key was given)."""
    since: int | None = None
    """Incremental: the verified position this run started after (None: a full run)."""
    matched: tuple[int, StoredCheckpoint] | None = None
    """The last signed checkpoint this run matched, with the chain's seq there."""

    @property
    def ok(self) -> bool:
        return self.failure is None

    def summary(self) -> str:
        """One line: what was verified, or the first position that failed."""
        if self.failure is not None:
            return f"FAILED at {self.failure} ({self.events_checked:,} events verified before it)"
        signed = f"{self.checkpoints_checked:,} signed checkpoints match" + (
            f" (last at position {self.last_checkpoint:,})"
            if self.last_checkpoint is not None
            else ""
        )
        if not self.signatures_checked:
            signed += ", their signatures NOT checked (no public key)"
        if self.unsigned:
            signed += (
                f", {self.unsigned:,} chained events "
                + ("after it " if self.last_checkpoint is not None else "")
                + "unsigned"
            )
        pending = f"; {self.unchained:,} events after it not yet chained" if self.unchained else ""
        kept = (
            f"; {self.kept_checked:,} checkpoints kept outside the database match"
            + (f" (last at position {self.last_kept:,})" if self.last_kept else "")
            if self.kept_checked
            else ""
        )
        authenticated = (
            "; event authenticators checked"
            if self.authenticators_checked
            else "; event authenticators NOT checked (no event key)"
        )
        mode = (
            ""
            if self.since is None
            else f" (incremental: after position {self.since:,}, verified before;"
            " the prefix is re-derived only by a full run)"
        )
        return (
            f"OK{mode}: {self.events_checked:,} events chained up to position "
            f"{self.chain_head:,} verified, digest {self.digest.hex()[:16]}; "
            f"{signed}{pending}{kept}{authenticated}"
        )


def verify_ledger(
    engine: Engine,
    public_keys: Iterable[Ed25519PublicKey] | None = None,
    *,
    log: EventLog | None = None,
    batch_size: int = DEFAULT_BATCH,
    checkpoint_every: int | None = DEFAULT_CHECKPOINT_EVERY,
    kept: Sequence[KeptCheckpoint] = (),
    snapshots: bool = True,
    event_key: bytes | None = None,
    since: Verified | None = None,
) -> VerifyReport:
    """Recompute the chain from the stored events and compare it with the stored chain
    and checkpoints. ``public_keys`` check the checkpoints' signatures (a checkpoint by
    any other key fails); None checks digests only. ``checkpoint_every`` is the interval
    the chain was extended with: a checkpoint missing at one of its multiples fails
    (deleting the checkpoints after a change would otherwise hide it); None skips that.
    ``kept`` are checkpoints kept outside the database: each must be signed by a given
    key and equal the recomputed digest at its position, and none may lie beyond the
    chain (a cut end). ``snapshots`` checks every stored snapshot against the replay.
    ``event_key`` checks every event's authenticator after the grandfathered boundary.
    ``since`` (incremental) starts after a position a previous run verified: see the
    module's docstring for what that leaves to a full run."""
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be at least 1, not {checkpoint_every}")
    if since is not None and kept:
        raise ValueError("checkpoints kept outside the database need a full run")
    log = log or EventLog.default(engine.dialect.name)
    keys = None if public_keys is None else {key_id(k): k for k in public_keys}
    ordered = sorted(kept, key=lambda c: c.position)
    with _reading(engine) as conn:
        chained, signed = chain_bounds(conn)
        head = max(chained, signed)
        log_head = log.head(conn)
        walk = _Walk(conn, log, keys, checkpoint_every, ordered)
        failure = None
        if event_key is not None:
            try:
                walk.authenticate = (
                    event_key,
                    grandfathered_upto(conn, log, event_key, seal=False),
                )
            except ChainTampered as error:
                failure = Failure(error.position, Reason.NOT_AUTHENTICATED, _detail(str(error)))
        start = min(log.first(conn), 1) - 1
        if since is not None:
            failure = failure or walk.resume(since)
            start = since.position
        failure = (
            failure
            or walk.kept_signatures()
            or walk.run(
                stream_log(log, conn, start, head, batch_size),
                iter_chain(conn, max(start, 0), head, batch_size),
                iter_checkpoints(conn, head, batch_size, since=start),
            )
        )
        failure = failure or walk.kept_beyond(head)
        for event in stream_log(log, conn, head, None, batch_size) if failure is None else ():
            failure = walk.unauthentic(event)  # not yet chained: authenticated still
            if failure is not None:
                break
        unchained = log.count_after(conn, head)
        if failure is None and since is None:
            failure = _count_and_versions(conn, log, walk.checked, unchained, head)
        elif failure is None and since is not None:
            failure = _count_after(conn, log, since.position, walk.checked, unchained, head)
        checked_snapshots = (
            failure is None and since is None and snapshots and bool(log.snapshot_table)
        )
        if checked_snapshots:
            failure = next(
                (
                    Failure(
                        p.position,
                        Reason.SNAPSHOT_FORGED,
                        f"the snapshot of {_describe(p.originator_id, p.version)}: {p.detail}",
                    )
                    for p in check_snapshots(conn, log)
                ),
                None,
            )
    return VerifyReport(
        failure,
        walk.checked,
        head,
        walk.digest,
        walk.checkpoints,
        walk.last_checkpoint,
        unchained,
        log_head,
        keys is not None,
        walk.seq - walk.signed_seq,
        walk.kept_checked,
        walk.last_kept,
        checked_snapshots,
        event_key is not None,
        None if since is None else since.position,
        walk.matched,
    )


def last_verified(engine: Engine) -> Verified | None:
    """The record of the last successful verification (None: none yet, or no table)."""
    with engine.connect() as conn:
        row = conn.execute(select(verified).where(verified.c.id == 1)).first()
    if row is None:
        return None
    return Verified(
        int(row.position),
        int(row.seq),
        bytes(row.digest),
        row.key_id,
        bytes(row.signature),
        _aware(row.verified_at),
        None if row.full_at is None else _aware(row.full_at),
    )


def record_verified(
    engine: Engine, report: VerifyReport, *, now: datetime | None = None
) -> Verified | None:
    """Keep where a successful, signature-checked run ended, for the next incremental
    run (and, for a full run, when). A failed run, or one that checked no signature,
    records nothing: the next run starts where the last good one did."""
    if not report.ok or not report.signatures_checked:
        return None
    now = now or datetime.now(UTC)
    previous = last_verified(engine)
    full_at = now if report.since is None else (previous.full_at if previous else None)
    if report.matched is not None:
        seq, checkpoint = report.matched
        record = Verified(
            checkpoint.position,
            seq,
            checkpoint.digest,
            checkpoint.key_id,
            checkpoint.signature,
            now,
            full_at,
        )
    elif previous is not None and report.since == previous.position:
        record = Verified(
            previous.position,
            previous.seq,
            previous.digest,
            previous.key_id,
            previous.signature,
            now,
            full_at,
        )  # nothing newly signed: same boundary, verified again
    else:
        return None
    values = {
        "position": record.position,
        "seq": record.seq,
        "digest": record.digest,
        "key_id": record.key_id,
        "signature": record.signature,
        "verified_at": record.verified_at,
        "full_at": record.full_at,
    }
    with engine.begin() as conn:
        if not conn.execute(update(verified).where(verified.c.id == 1).values(**values)).rowcount:
            conn.execute(insert(verified).values(id=1, **values))
    return record


def _link(position: int | None, digest: bytes | None) -> tuple[int, bytes] | None:
    return None if position is None or digest is None else (int(position), bytes(digest))


def _aware(moment: datetime) -> datetime:
    """SQLite returns naive datetimes: they were stored in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _count_after(
    conn: Connection, log: EventLog, since: int, checked: int, unchained: int, head: int
) -> Failure | None:
    """Incremental: every row after the verified position is chained or after the head."""
    total = log.count_after(conn, since)
    if total != checked + unchained:
        return Failure(
            head,
            Reason.EXTRA_EVENT,
            f"the event table holds {total:,} rows after position {since:,}, but "
            f"{checked:,} are chained and {unchained:,} follow the chain",
        )
    return None


def _detail(message: str) -> str:
    """A ``ChainTampered`` message as a failure's detail (its position and reason are
    said apart)."""
    return message.split(": ", 1)[-1].removeprefix("event not authenticated: ")


def _count_and_versions(
    conn: Connection, log: EventLog, checked: int, unchained: int, head: int
) -> Failure | None:
    """Every row of the event table is accounted for (chained, or after the head), and
    every aggregate's versions are 1..n."""
    total = log.count(conn)
    if total != checked + unchained:
        return Failure(
            head,
            Reason.EXTRA_EVENT,
            f"the event table holds {total:,} rows, but {checked:,} are chained "
            f"and {unchained:,} follow the chain",
        )
    for originator, count, first, last in log.version_gaps(conn, 1):
        position = 0
        uuid = _uuid(originator)
        if uuid is not None:
            position = log.position_of(conn, uuid, int(last)) or 0
        return Failure(
            position,
            Reason.VERSION_GAP,
            f"aggregate {uuid or originator} has {int(count):,} events but "
            f"versions {int(first):,} to {int(last):,}: an event was forged or "
            "deleted (the write model replays by version)",
        )
    return None


@dataclass(frozen=True)
class CheckpointCheck:
    position: int
    failure: Failure | None
    log_checked: bool
    """Whether the log was recomputed too, or only the signature checked."""

    @property
    def ok(self) -> bool:
        return self.failure is None


def check_checkpoint(
    public_key: Ed25519PublicKey,
    position: int,
    digest: bytes,
    signature: bytes,
    *,
    kid: str | None = None,
    previous: tuple[int, bytes] | None = None,
    engine: Engine | None = None,
    log: EventLog | None = None,
    batch_size: int = DEFAULT_BATCH,
) -> CheckpointCheck:
    """For a holder of an earlier checkpoint: is it ``public_key``'s signature (over its
    link ``previous`` too, for version 2), and (given an ``engine``) does the log up to
    ``position`` still give ``digest``?"""
    if not verify_signature(public_key, position, digest, signature, kid, previous):
        return CheckpointCheck(
            position,
            Failure(
                position,
                Reason.BAD_SIGNATURE,
                f"not a signature of key {key_id(public_key)} over this checkpoint",
            ),
            False,
        )
    if engine is None:
        return CheckpointCheck(position, None, False)
    log = log or EventLog.default(engine.dialect.name)
    recomputed, last = GENESIS, 0
    with _reading(engine) as conn:
        for event in stream_log(log, conn, 0, position, batch_size):
            recomputed, last = link(recomputed, event), event.position
    if last != position:
        return CheckpointCheck(
            position,
            Failure(
                position,
                Reason.EVENT_MISSING,
                f"the log has no event at position {position:,} (last before it: {last:,})",
            ),
            True,
        )
    if recomputed != digest:
        return CheckpointCheck(
            position,
            Failure(
                position,
                Reason.CHECKPOINT_MISMATCH,
                "the log up to this position no longer gives the signed digest: it was "
                "changed since (`registry verify` names the first changed position)",
            ),
            True,
        )
    return CheckpointCheck(position, None, True)


@contextmanager
def _reading(engine: Engine) -> Iterator[Connection]:
    """A connection in autocommit: a long verification holds no transaction open (and
    so no snapshot back from vacuum). Each read is bounded by the chain head read first,
    and everything up to it is final, so separate snapshots agree."""
    with engine.connect() as conn:
        yield conn.execution_options(isolation_level="AUTOCOMMIT")


def _uuid(value: UUID | str | None) -> UUID | None:
    if value is None or isinstance(value, UUID):
        return value
    try:
        return UUID(value)
    except ValueError:
        return None


def _describe(originator: UUID | str | None, version: int | None) -> str:
    return f"aggregate {_uuid(originator) or originator} version {version}"


class _Walk:
    """The merge of the three streams, and what each kind of mismatch means."""

    def __init__(
        self,
        conn: Connection,
        log: EventLog,
        keys: dict[str, Ed25519PublicKey] | None,
        every: int | None,
        kept: Sequence[KeptCheckpoint] = (),
    ) -> None:
        self.conn, self.log, self.keys, self.every = conn, log, keys, every
        self.digest = GENESIS
        self.seq = self.checked = self.checkpoints = self.position = self.signed_seq = 0
        self.last_checkpoint: int | None = None
        self.links: dict[str, tuple[int, bytes]] = {}
        """Each key's last checkpoint walked: the next one must link to it."""
        self.linked: set[str] = set()
        """Keys whose checkpoints are linked (version 2): an unlinked one cannot follow."""
        self.kept = list(kept)
        self.kept_checked = 0
        self.last_kept: int | None = None
        self.authenticate: tuple[bytes, int] | None = None
        """The event key and the grandfathered boundary, when authenticators are checked."""
        self.matched: tuple[int, StoredCheckpoint] | None = None

    def resume(self, since: Verified) -> Failure | None:
        """Start after ``since``: its chain row and checkpoint must still be the ones
        recorded; each key's links continue from its last checkpoint up to there."""
        position = since.position
        row = self.conn.execute(
            select(digests.c.seq, digests.c.digest).where(digests.c.position == position)
        ).first()
        if row is None or (int(row.seq), bytes(row.digest)) != (since.seq, since.digest):
            return Failure(
                position,
                Reason.BOUNDARY_CHANGED,
                "the chain row where the last verification ended is "
                + ("gone" if row is None else "not the one verified")
                + ": the verified prefix was changed (run a full verification)",
            )
        stored = self.conn.execute(
            select(checkpoint_table).where(
                and_(
                    checkpoint_table.c.position == position,
                    checkpoint_table.c.key_id == since.key_id,
                )
            )
        ).first()
        if stored is None or (bytes(stored.digest), bytes(stored.signature)) != (
            since.digest,
            since.signature,
        ):
            return Failure(
                position,
                Reason.BOUNDARY_CHANGED,
                "the signed checkpoint where the last verification ended is "
                + ("gone" if stored is None else "not the one verified")
                + " (run a full verification)",
            )
        key = None if self.keys is None else self.keys.get(since.key_id)
        if self.keys is not None and (
            key is None
            or not verify_signature(
                key,
                position,
                since.digest,
                since.signature,
                since.key_id,
                _link(stored.previous_position, stored.previous_digest),
            )
        ):
            return Failure(
                position,
                Reason.UNKNOWN_KEY if key is None else Reason.BAD_SIGNATURE,
                f"the checkpoint where the last verification ended (key {since.key_id}) "
                "does not verify with the keys given",
            )
        latest = (
            select(checkpoint_table.c.key_id, func.max(checkpoint_table.c.position))
            .where(checkpoint_table.c.position <= position)
            .group_by(checkpoint_table.c.key_id)
        )
        for kid, at in self.conn.execute(latest).all():
            [last] = self.conn.execute(
                select(checkpoint_table).where(
                    and_(checkpoint_table.c.key_id == kid, checkpoint_table.c.position == at)
                )
            ).all()
            self.links[kid] = (int(at), bytes(last.digest))
            if last.previous_digest is not None:
                self.linked.add(kid)
        self.digest, self.seq, self.position = since.digest, since.seq, position
        self.signed_seq, self.last_checkpoint = since.seq, position
        return None

    def unauthentic(self, event: StoredLogEvent) -> Failure | None:
        """The event after the boundary lacks the key's authenticator."""
        if self.authenticate is None:
            return None
        key, upto = self.authenticate
        if event.position <= upto or authentic(key, event):
            return None
        return Failure(event.position, Reason.NOT_AUTHENTICATED, _detail(not_authenticated(event)))

    def kept_signatures(self) -> Failure | None:
        """Each kept checkpoint must be signed by a given key (checked before the walk)."""
        for kept in self.kept if self.keys is not None else ():
            assert self.keys is not None
            key = (
                self.keys.get(kept.key_id or "")
                if kept.key_id
                else next(iter(self.keys.values()), None)
            )
            if key is None or not verify_signature(
                key, kept.position, kept.digest, kept.signature, kept.key_id, kept.previous
            ):
                return Failure(
                    kept.position,
                    Reason.BAD_SIGNATURE,
                    "a checkpoint kept outside the database is not signed by "
                    f"the key given ({', '.join(sorted(self.keys)) or 'none'})",
                )
        return None

    def _kept_at(self, position: int) -> Failure | None:
        """Kept checkpoints at ``position`` (just verified) must hold its digest; any
        before it fell where the log has no event."""
        while self.kept and self.kept[0].position <= position:
            kept = self.kept.pop(0)
            if kept.position < position:
                return Failure(
                    kept.position,
                    Reason.EVENT_MISSING,
                    "a checkpoint kept outside the database covers this "
                    "position, but the log has no event here",
                )
            if kept.digest != self.digest:
                return Failure(
                    position,
                    Reason.CHECKPOINT_MISMATCH,
                    "a checkpoint kept outside the database signs another "
                    "digest here: the log up to it no longer gives the signed "
                    "digest (events changed and the chain rewritten)",
                )
            self.kept_checked += 1
            self.last_kept = position
        return None

    def kept_beyond(self, head: int) -> Failure | None:
        if not self.kept:
            return None
        cut = self.kept[0]
        return Failure(
            cut.position,
            Reason.CHAIN_CUT,
            f"a checkpoint kept outside the database covers position "
            f"{cut.position:,}, beyond the chain's head {head:,}: the end of the "
            "log or of its chain and checkpoints was removed",
        )

    def run(
        self,
        events: Iterator[StoredLogEvent],
        rows: Iterator[ChainRow],
        checkpoints: Iterator[StoredCheckpoint],
    ) -> Failure | None:
        event, row, checkpoint = next(events, None), next(rows, None), next(checkpoints, None)
        while event is not None or row is not None:
            position = min(x.position for x in (event, row) if x is not None)
            if event is not None and event.position == position and position <= 0:
                forged = _describe(event.originator_id, event.originator_version)
                return Failure(
                    position,
                    Reason.FORGED_POSITION,
                    f"it holds {forged}, at a position the store never assigns (they "
                    "start at 1): written by hand, yet the write model would apply it",
                )
            if checkpoint is not None and checkpoint.position < position:
                return self._nothing_at(checkpoint)
            if event is None or event.position != position:
                assert row is not None
                return self._row_only(row)
            if row is None or row.position != position:
                return self._event_only(event, row)
            failure = self._both(event, row) or self.unauthentic(event)
            due = failure is None and self.every is not None and self.seq % self.every == 0
            while failure is None and checkpoint is not None and checkpoint.position == position:
                failure = self._checkpoint(checkpoint)
                checkpoint = next(checkpoints, None)
                due = False
            if failure is None and due:
                failure = Failure(
                    position,
                    Reason.CHECKPOINT_MISSING,
                    f"the chain is signed every {self.every:,} events and "
                    f"this is its {self.seq:,}th, but it has no checkpoint",
                )
            failure = failure or self._kept_at(position)
            if failure is not None:
                return failure
            event, row = next(events, None), next(rows, None)
        return None if checkpoint is None else self._nothing_at(checkpoint)

    def _both(self, event: StoredLogEvent, row: ChainRow) -> Failure | None:
        position = event.position
        here = _describe(event.originator_id, event.originator_version)
        chained = _describe(row.originator_id, row.originator_version)
        if (_uuid(event.originator_id), event.originator_version) != (
            row.originator_id,
            row.originator_version,
        ):
            moved = self.log.position_of(self.conn, row.originator_id, row.originator_version)
            if moved is not None:
                return Failure(
                    position,
                    Reason.EVENTS_REORDERED,
                    f"it holds {here}; the event chained here, {chained}, is "
                    f"now at position {moved:,}",
                )
            return Failure(
                position,
                Reason.PAYLOAD_ALTERED,
                f"it holds {here}, but {chained} was chained here and is no longer in the log",
            )
        if row.seq != self.seq + 1:
            if row.seq > self.seq + 1:
                return Failure(
                    position,
                    Reason.EVENT_MISSING,
                    f"{row.seq - self.seq - 1:,} chained events after position "
                    f"{self.position:,} and before this one are gone, with their "
                    "chain rows",
                )
            return Failure(
                position,
                Reason.CHAIN_ROW_ALTERED,
                f"its chain row counts {row.seq:,} events, not {self.seq + 1:,}",
            )
        event_digest, digest = hash_and_link(self.digest, event)
        if event_digest != row.event_hash:
            if digest == row.digest:
                return Failure(
                    position,
                    Reason.CHAIN_ROW_ALTERED,
                    "the event hash in its chain row was changed",
                )
            return Failure(
                position,
                Reason.PAYLOAD_ALTERED,
                f"the stored {here} is not the event chained: its topic or state bytes changed",
            )
        if digest != row.digest:
            return Failure(
                position,
                Reason.CHAIN_ROW_ALTERED,
                "the digest stored here does not follow from the events before "
                "it (the chain was rewritten or forked)",
            )
        self.digest, self.seq, self.position = digest, row.seq, position
        self.checked += 1
        return None

    def _row_only(self, row: ChainRow) -> Failure:
        chained = _describe(row.originator_id, row.originator_version)
        moved = self.log.position_of(self.conn, row.originator_id, row.originator_version)
        if moved is not None:
            return Failure(
                row.position,
                Reason.EVENTS_REORDERED,
                f"the event chained here, {chained}, is now at position {moved:,}",
            )
        return Failure(
            row.position, Reason.EVENT_MISSING, f"the event chained here, {chained}, was deleted"
        )

    def _event_only(self, event: StoredLogEvent, following: ChainRow | None) -> Failure:
        here = _describe(event.originator_id, event.originator_version)
        originator = _uuid(event.originator_id)
        if originator is not None and event.originator_version is not None:
            chained_at = self.conn.execute(
                select(digests.c.position).where(
                    and_(
                        digests.c.originator_id == originator,
                        digests.c.originator_version == event.originator_version,
                    )
                )
            ).scalar()
            if chained_at is not None:
                return Failure(
                    event.position,
                    Reason.EVENTS_REORDERED,
                    f"it holds {here}, which was chained at position {int(chained_at):,}",
                )
        if following is not None and following.seq == self.seq + 1:
            return Failure(
                event.position,
                Reason.EXTRA_EVENT,
                f"it holds {here}, which was not in the log when the chain "
                "passed this position (inserted since)",
            )
        return Failure(
            event.position,
            Reason.CHAIN_ROW_MISSING,
            f"{here} was chained (the chain counts events past it) but its chain row is gone",
        )

    def _nothing_at(self, checkpoint: StoredCheckpoint) -> Failure:
        return Failure(
            checkpoint.position,
            Reason.EVENT_MISSING,
            "a signed checkpoint covers this position, but the log has no "
            "event (nor chain row) here",
        )

    def _checkpoint(self, checkpoint: StoredCheckpoint) -> Failure | None:
        position = checkpoint.position
        if self.keys is not None:
            key = self.keys.get(checkpoint.key_id)
            if key is None:
                known = ", ".join(sorted(self.keys)) or "none"
                return Failure(
                    position,
                    Reason.UNKNOWN_KEY,
                    f"its checkpoint is signed by key {checkpoint.key_id}, not "
                    f"one given (known: {known})",
                )
            if not verify_signature(
                key,
                position,
                checkpoint.digest,
                checkpoint.signature,
                checkpoint.key_id,
                checkpoint.previous,
            ):
                return Failure(
                    position,
                    Reason.BAD_SIGNATURE,
                    f"its checkpoint's signature by key {checkpoint.key_id} does not verify",
                )
        if checkpoint.digest != self.digest:
            return Failure(
                position,
                Reason.CHECKPOINT_MISMATCH,
                "the signed digest differs from the one recomputed from the log: "
                "events up to here were changed and the chain rows rewritten",
            )
        link = checkpoint.previous
        previous = self.links.get(checkpoint.key_id, (0, GENESIS))
        if link is None and checkpoint.key_id in self.linked:
            return Failure(
                position,
                Reason.CHECKPOINT_MISMATCH,
                "an unlinked (version 1) checkpoint after linked ones",
            )
        if link is not None and link != previous:
            if link[0] > previous[0]:
                return Failure(
                    position,
                    Reason.CHECKPOINT_MISSING,
                    f"its checkpoint follows key {checkpoint.key_id}'s checkpoint "
                    f"at position {link[0]:,}, which is gone",
                )
            return Failure(
                position,
                Reason.CHECKPOINT_MISSING,
                f"its checkpoint follows key {checkpoint.key_id}'s checkpoint at "
                f"position {link[0]:,}, not the one at {previous[0]:,}",
            )
        if link is not None:
            self.linked.add(checkpoint.key_id)
        self.links[checkpoint.key_id] = (position, checkpoint.digest)
        self.matched = (self.seq, checkpoint)
        self.checkpoints += 1
        self.last_checkpoint, self.signed_seq = position, self.seq
        return None
