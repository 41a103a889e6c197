"""Keeping the digest chain up with the log, from the process that runs the projections.

The projection runner calls ``LedgerSealer.after_step`` after each batch: new events
are chained (and every ``checkpoint_every``-th signed) right after the projections
saw them, and when the runner is idle the head is signed, at most every
``head_every_seconds``, so a quiet registry's latest history is signed within that
time too. Several workers may run it at once: ``extend_chain`` serialises them.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine

from registry.config import ConfigurationError
from registry.integrity.ledger import DEFAULT_CHECKPOINT_EVERY, ExtendResult, extend_chain
from registry.integrity.log import EventLog
from registry.integrity.signing import key_id, load_or_create_private_key, private_key_path

logger = logging.getLogger("registry.integrity")

DEFAULT_HEAD_EVERY_SECONDS = 60.0


@dataclass
class LedgerSealer:
    """Chains new events and signs checkpoints with the registry's key."""

    engine: Engine
    key: Ed25519PrivateKey
    log: EventLog | None = None
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY
    head_every_seconds: float = DEFAULT_HEAD_EVERY_SECONDS
    clock: Callable[[], float] = time.monotonic
    _head_signed_at: float = field(default=float("-inf"), init=False)

    @classmethod
    def from_env(cls, engine: Engine, log: EventLog | None = None,
                 environ: Mapping[str, str] | None = None) -> LedgerSealer:
        """With the key at ``REGISTRY_LEDGER_KEY`` (else the data directory's), signing
        the idle head every ``REGISTRY_LEDGER_SIGN_SECONDS`` (60)."""
        return cls.with_key_file(engine, private_key_path(environ), log,
                                 sign_seconds(environ))

    @classmethod
    def with_key_file(cls, engine: Engine, path: Path, log: EventLog | None = None,
                      head_every_seconds: float = DEFAULT_HEAD_EVERY_SECONDS) -> LedgerSealer:
        """The key at ``path``, made there on first use, so an embedded registry signs
        with no set-up."""
        key = load_or_create_private_key(path)
        logger.info("ledger checkpoints signed with key %s (%s)", key_id(key), path)
        return cls(engine, key, log, head_every_seconds=head_every_seconds)

    def after_step(self, events: int) -> ExtendResult | None:
        """Chain what the step read; when idle, sign the head if that is due."""
        idle = events == 0
        due = idle and self.clock() - self._head_signed_at >= self.head_every_seconds
        if idle and not due:
            return None
        result = extend_chain(self.engine, self.key, log=self.log,
                              checkpoint_every=self.checkpoint_every, checkpoint_at_head=due)
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
            f"REGISTRY_LEDGER_SIGN_SECONDS must be seconds in (0, 86400], got {text!r}")
    return seconds
