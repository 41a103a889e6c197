"""Keeping the digest chain up with the log, from the process that runs the projections.

The projection runner calls ``LedgerSealer.after_step`` after each batch: new events
are chained (and every ``checkpoint_every``-th signed) right after the projections
saw them, and the head is signed every ``head_every_seconds``, busy or idle, so the
latest history is signed within that time. Several workers may run it at once:
``extend_chain`` serialises them.

Every checkpoint signed is also published outside the database: appended as one JSON
line to ``REGISTRY_LEDGER_CHECKPOINTS`` (default ``$REGISTRY_DATA_DIR/
ledger-checkpoints.jsonl``) and logged (logger ``registry.integrity``), so an auditor
keeps them where a database insider cannot reach (`registry verify --checkpoint FILE`).
The sealer remembers its last published checkpoint (read back from that file at start)
and the digest it chained last: if either is gone from the database, or the chain since
the last checkpoint does not follow from the events, it refuses to chain or sign,
logs ``LEDGER_TAMPERED`` as an error on every attempt (one every ``head_every_seconds``
once refused), and the projections carry on.
It does the same at the first event, after the grandfathered boundary, that does not
carry the authenticator of the event key (``REGISTRY_EVENT_KEY``; ``authentication``):
a row appended with SQL is never chained or signed as if the registry had written it.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine

from registry.integrity.authentication import (
    event_key_id,
    event_key_path,
    load_or_create_event_key,
)
from registry.integrity.ledger import (
    DEFAULT_CHECKPOINT_EVERY,
    ChainTampered,
    ExtendResult,
    Known,
    extend_chain,
)
from registry.integrity.signing import (
    Checkpoint,
    key_id,
    load_or_create_private_key,
    private_key_path,
)
from registry.persistence.eventlog import DEFAULT_BATCH, EventLog
from registry.settings import ConfigurationError, data_file

if TYPE_CHECKING:
    from registry.observability.worker import WorkerMetrics

logger = logging.getLogger("registry.integrity")

DEFAULT_HEAD_EVERY_SECONDS = 60.0
WORKER_CHAIN_EVERY_SECONDS = 1.0
"""How often the worker (``registry project``) chains new events, at most: the chain's
head lags the log by a second at most, and it is signed once a minute anyway."""
CHECKPOINTS_ENV = "REGISTRY_LEDGER_CHECKPOINTS"
DEFAULT_CHECKPOINTS_FILE = "ledger-checkpoints.jsonl"


def checkpoints_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where signed checkpoints are published: ``REGISTRY_LEDGER_CHECKPOINTS``, else
    the data directory's ``ledger-checkpoints.jsonl``."""
    return data_file(CHECKPOINTS_ENV, DEFAULT_CHECKPOINTS_FILE, environ)


def checkpoint_record(
    checkpoint: Checkpoint, signed_at: datetime | None = None
) -> dict[str, object]:
    """A checkpoint as kept outside the database: the fields `registry ledger-digest
    --save` writes, so `registry verify --checkpoint` reads either. A version-2
    checkpoint also carries its link (``previous_position``, ``previous_digest``)."""
    record: dict[str, object] = {
        "position": checkpoint.position,
        "digest": checkpoint.digest.hex(),
        "key_id": checkpoint.key_id,
        "signature": base64.b64encode(checkpoint.signature).decode("ascii"),
        "sign_time": (signed_at or datetime.now(UTC)).isoformat(),
    }
    if checkpoint.previous is not None:  # version 2: the link the signature covers
        record["previous_position"] = checkpoint.previous[0]
        record["previous_digest"] = checkpoint.previous[1].hex()
    return record


@dataclass
class CheckpointPublisher:
    """Appends each signed checkpoint to a file (one JSON line, flushed to disk) and
    logs it. A file that cannot be written is logged as an error, never fatal: the
    registry keeps signing into the database and the log stream."""

    path: Path | None
    _failing: bool = field(default=False, init=False)

    def last(self, kid: str) -> tuple[int, bytes] | None:
        """The last checkpoint of key ``kid`` published in the file, if any."""
        if self.path is None or not self.path.exists():
            return None
        found = None
        try:
            with self.path.open(encoding="utf-8") as file:
                for line in file:
                    try:
                        record = json.loads(line)
                        if record.get("key_id") == kid:
                            found = (int(record["position"]), bytes.fromhex(record["digest"]))
                    except (ValueError, KeyError, TypeError, AttributeError):
                        continue  # a torn last line after a crash: the rest still counts
        except OSError as error:
            logger.error("cannot read the published ledger checkpoints %s: %s", self.path, error)
        return found

    def publish(self, checkpoints: list[Checkpoint]) -> None:
        lines = [json.dumps(checkpoint_record(c), sort_keys=True) for c in checkpoints]
        for line in lines:
            logger.info("ledger checkpoint %s", line)
        if self.path is None or not lines:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            with os.fdopen(descriptor, "a", encoding="utf-8") as file:
                file.write("".join(line + "\n" for line in lines))
                file.flush()
                os.fsync(file.fileno())
        except OSError as error:
            if not self._failing:  # once, not every minute: the log lines still carry them
                logger.error(
                    "cannot publish ledger checkpoints to %s (%s): they go to the "
                    "log only; set REGISTRY_LEDGER_CHECKPOINTS to a writable path",
                    self.path,
                    error,
                )
            self._failing = True
        else:
            if self._failing:
                logger.warning("ledger checkpoints are published to %s again", self.path)
            self._failing = False


@dataclass
class LedgerSealer:
    """Chains new events and signs checkpoints with the registry's key."""

    engine: Engine
    key: Ed25519PrivateKey
    log: EventLog | None = None
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY
    head_every_seconds: float = DEFAULT_HEAD_EVERY_SECONDS
    clock: Callable[[], float] = time.monotonic
    publisher: CheckpointPublisher = field(default_factory=lambda: CheckpointPublisher(None))
    _head_signed_at: float = field(default=float("-inf"), init=False)
    tampered: ChainTampered | None = field(default=None, init=False)
    """The last refusal: the store no longer holds what this sealer chained or signed."""
    _refused_at: float = field(default=float("-inf"), init=False)
    _known: Known = field(default_factory=Known, init=False)
    event_key: bytes | None = None
    """The key whose authenticators every new event must carry; None: the one at
    ``REGISTRY_EVENT_KEY`` (else the data directory's), as the writers use."""
    metrics: WorkerMetrics | None = None
    """Counts what each round chained and signed, and the rounds that failed."""
    chain_every_seconds: float = 0.0
    """Chain new events at most this often (0: after every step), unless a batch's
    worth is waiting or the head is due for signing. Each round is a locked transaction
    of several statements whatever it chains: when single trades arrive one by one,
    chaining after every projection step took as much of the worker as projecting."""
    _pending: int = field(default=0, init=False)
    _chained_at: float = field(default=float("-inf"), init=False)

    def __post_init__(self) -> None:
        self._known = Known(checkpoint=self.publisher.last(key_id(self.key)))
        if self.event_key is None:
            path = event_key_path()
            self.event_key = load_or_create_event_key(path)
            logger.info("events authenticated with key %s (%s)", event_key_id(self.event_key), path)

    @classmethod
    def from_env(
        cls, engine: Engine, log: EventLog | None = None, environ: Mapping[str, str] | None = None
    ) -> LedgerSealer:
        """With the key at ``REGISTRY_LEDGER_KEY`` (else the data directory's), signing
        the idle head every ``REGISTRY_LEDGER_SIGN_SECONDS`` (60)."""
        sealer = cls.with_key_file(
            engine,
            private_key_path(environ),
            log,
            sign_seconds(environ),
            checkpoints_path(environ),
            load_or_create_event_key(event_key_path(environ)),
        )
        sealer.chain_every_seconds = WORKER_CHAIN_EVERY_SECONDS
        return sealer

    @classmethod
    def with_key_file(
        cls,
        engine: Engine,
        path: Path,
        log: EventLog | None = None,
        head_every_seconds: float = DEFAULT_HEAD_EVERY_SECONDS,
        published: Path | None = None,
        event_key: bytes | None = None,
    ) -> LedgerSealer:
        """The key at ``path``, made there on first use, so an embedded registry signs
        with no set-up; checkpoints published to ``published`` (default: the
        environment's ``checkpoints_path``)."""
        key = load_or_create_private_key(path)
        target = published if published is not None else checkpoints_path()
        logger.info(
            "ledger checkpoints signed with key %s (%s), published to %s", key_id(key), path, target
        )
        return cls(
            engine,
            key,
            log,
            head_every_seconds=head_every_seconds,
            publisher=CheckpointPublisher(target),
            event_key=event_key,
        )

    def after_step(self, events: int) -> ExtendResult | None:
        """Chain what the step read; sign the head if that is due (busy or idle).

        After a refusal it tries again only once ``head_every_seconds`` have passed:
        what it refused stays in the store until someone acts, and each attempt rereads
        a batch of the log (every projection batch did, and under a steady flow of
        single trades the refusals took more of the worker than the projections)."""
        now = self.clock()
        self._pending += events
        due = now - self._head_signed_at >= self.head_every_seconds
        if not due and (
            self._pending == 0
            or (now - self._chained_at < self.chain_every_seconds and self._pending < DEFAULT_BATCH)
        ):
            return None
        if self.tampered is not None and now - self._refused_at < self.head_every_seconds:
            return None
        self._pending = 0
        self._chained_at = now
        try:
            result = extend_chain(
                self.engine,
                self.key,
                log=self.log,
                checkpoint_every=self.checkpoint_every,
                checkpoint_at_head=due,
                known=self._known,
                event_key=self.event_key,
            )
        except ChainTampered as error:
            if self.metrics is not None:
                self.metrics.seal_failed("tampered")
            self.tampered = error
            self._refused_at = now
            logger.error(
                "LEDGER_TAMPERED: refusing to chain or sign the ledger: %s "
                "(run `registry verify --checkpoint %s`)",
                error,
                self.publisher.path or "FILE",
            )
            return None
        except Exception:
            if self.metrics is not None:
                self.metrics.seal_failed("error")
            raise
        if self.metrics is not None:
            self.metrics.chained(
                result.chained, result.head, [c.position for c in result.checkpoints]
            )
        self.publisher.publish(result.checkpoints)
        last = result.checkpoints[-1] if result.checkpoints else None
        self._known = Known(
            checkpoint=self._known.checkpoint if last is None else (last.position, last.digest),
            chained=(result.head, result.digest) if result.head else self._known.chained,
        )
        if due:
            self._head_signed_at = self.clock()
        return result


def sign_seconds(environ: Mapping[str, str] | None = None) -> float:
    """``REGISTRY_LEDGER_SIGN_SECONDS``: how often an idle registry signs its head."""
    environ = os.environ if environ is None else environ
    text = environ.get("REGISTRY_LEDGER_SIGN_SECONDS", "").strip()
    try:
        seconds = float(text) if text else DEFAULT_HEAD_EVERY_SECONDS
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 86_400:
        raise ConfigurationError(
            f"REGISTRY_LEDGER_SIGN_SECONDS must be seconds in (0, 86400], got {text!r}"
        )
    return seconds
