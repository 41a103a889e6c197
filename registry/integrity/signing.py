"""Ed25519 keys and checkpoint signatures.

A checkpoint says "the chain digest at log position P is D, and my key's previous
checkpoint was at position P' with digest D'", signed. The signed message binds a
domain-separation label (so the signature cannot be replayed as anything else the key
might sign), the position, the digest, the key id (so a checkpoint cannot be passed off
as another key's) and the previous checkpoint (so the checkpoints form a chain of their
own: deleting one breaks the link of the next, which nobody without the key can
re-sign). The first checkpoint of a key links to (0, GENESIS).

The link is kept in fields of its own beside the 64-byte Ed25519 signature (the
``previous_position`` and ``previous_digest`` columns, API fields and published-file
keys). A checkpoint without a link is version 1, signed before checkpoints were chained:
its signature covers the version-1 message (no link) and it is accepted only before its
key's first linked checkpoint.

Whoever holds the public key and one checkpoint can later prove that the log up to
its position is unchanged: the registry cannot rewrite history without the recomputed
digest differing from the one they hold.

The private key lives in a PEM file (PKCS#8, unencrypted, mode 0600); the public key can
be handed out as PEM (SubjectPublicKeyInfo).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from registry.integrity.chain import DIGEST_SIZE, GENESIS
from registry.settings import ConfigurationError, data_file

CHECKPOINT_LABEL = b"carbon-registry/ledger/checkpoint/v1"
"""Version 1: no link to the previous checkpoint (accepted before a key's first v2)."""
CHECKPOINT_LABEL_V2 = b"carbon-registry/ledger/checkpoint/v2"
SIGNATURE_SIZE = 64
KEY_ID_LENGTH = 16

KEY_ENV = "REGISTRY_LEDGER_KEY"
"""Path of the private key (PEM) that signs checkpoints."""
PUBLIC_KEY_ENV = "REGISTRY_LEDGER_PUBLIC_KEY"
"""Path of a public key (PEM) that checks them, for a verifier without the private key."""
DEFAULT_KEY_FILE = "ledger-signing-key.pem"
"""In ``REGISTRY_DATA_DIR`` when ``REGISTRY_LEDGER_KEY`` is unset (the embedded store)."""


class SigningKeyError(ConfigurationError):
    """A key file that is missing, unreadable or not an Ed25519 key."""

    reason = "INVALID_LEDGER_KEY"


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement: the chain digest at ``position`` is ``digest``, and (version
    2) the key's previous checkpoint was ``previous`` (position, digest); ``signature``
    is the 64-byte Ed25519 signature over ``checkpoint_message`` of all of them.
    ``previous`` None: a version-1 checkpoint (no link)."""

    position: int
    digest: bytes
    key_id: str
    signature: bytes
    previous: tuple[int, bytes] | None = None


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def raw_public_bytes(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """First 16 hex digits of sha256 of the raw public key: names the key in checkpoints."""
    return hashlib.sha256(raw_public_bytes(key)).hexdigest()[:KEY_ID_LENGTH]


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_pem(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def save_private_key(key: Ed25519PrivateKey, path: Path) -> None:
    """Write the key to a new file readable by its owner only. Never overwrites: a lost
    signing key cannot be recovered, so replacing one must be a deliberate act."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_new(path, private_key_pem(key), 0o600)


def save_public_key(key: Ed25519PublicKey | Ed25519PrivateKey, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_new(path, public_key_pem(key), 0o644)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``data`` atomically (hard link of a complete temporary file),
    so a concurrent reader never sees a half-written key and a concurrent writer fails
    with FileExistsError instead of replacing it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "wb") as file:
            os.fchmod(file.fileno(), mode)  # whatever the umask
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as error:
        raise SigningKeyError(f"cannot load the ledger signing key {path}: {error}") from error
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A public key from PEM; a private key's PEM gives its public half, so the signer's
    own file also works."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise SigningKeyError(f"cannot read the public key {path}: {error}") from error
    if b"PRIVATE KEY" in data:
        return load_private_key(path).public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as error:
        raise SigningKeyError(f"{path} is not a PEM public key: {error}") from error
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{path} is not an Ed25519 public key")
    return key


def load_or_create_private_key(path: Path) -> Ed25519PrivateKey:
    """The key at ``path``, generated there first if there is none (embedded use)."""
    if not path.exists():
        with suppress(FileExistsError):  # another process made it first: use theirs
            save_private_key(generate_key(), path)
    return load_private_key(path)


def private_key_path(environ: Mapping[str, str] | None = None) -> Path:
    """``REGISTRY_LEDGER_KEY``, else the data directory's key file."""
    return data_file(KEY_ENV, DEFAULT_KEY_FILE, environ)


def checkpoint_message(
    position: int, digest: bytes, key: str, previous: tuple[int, bytes] | None = None
) -> bytes:
    """The bytes a checkpoint signature covers: label, position, digest, key id and (from
    version 2) the previous checkpoint's position and digest, each length-prefixed."""
    if len(digest) != DIGEST_SIZE:
        raise ValueError(f"a chain digest has {DIGEST_SIZE} bytes, not {len(digest)}")
    parts: tuple[bytes, ...] = (
        CHECKPOINT_LABEL,
        position.to_bytes(8, "big", signed=True),
        digest,
        key.encode("ascii"),
    )
    if previous is not None:
        before, before_digest = previous
        if len(before_digest) != DIGEST_SIZE:
            raise ValueError(f"a chain digest has {DIGEST_SIZE} bytes")
        parts = (
            CHECKPOINT_LABEL_V2,
            *parts[1:],
            before.to_bytes(8, "big", signed=True),
            before_digest,
        )
    return b"".join(len(part).to_bytes(8, "big") + part for part in parts)


def sign_checkpoint(
    key: Ed25519PrivateKey, position: int, digest: bytes, previous: tuple[int, bytes] = (0, GENESIS)
) -> Checkpoint:
    """A version-2 checkpoint linked to ``previous``: the key's last checkpoint before
    this one, (0, GENESIS) for its first."""
    kid = key_id(key)
    signature = key.sign(checkpoint_message(position, digest, kid, previous))
    return Checkpoint(position, digest, kid, signature, previous)


def verify_signature(
    public_key: Ed25519PublicKey,
    position: int,
    digest: bytes,
    signature: bytes,
    kid: str | None = None,
    previous: tuple[int, bytes] | None = None,
) -> bool:
    """True when ``signature`` is ``public_key``'s over this checkpoint: over the
    version-2 message including the link ``previous`` when one is given, else over the
    version-1 message. A ``kid`` other than the key's own fails: the checkpoint claims
    another signer."""
    own = key_id(public_key)
    if kid is not None and kid != own:
        return False
    if len(digest) != DIGEST_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    if previous is not None and len(previous[1]) != DIGEST_SIZE:
        return False
    try:
        public_key.verify(bytes(signature), checkpoint_message(position, digest, own, previous))
    except InvalidSignature:
        return False
    return True
