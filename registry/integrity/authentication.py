"""Write-side event authenticators: the processes that write events prove they wrote them.

The digest chain proves the log was not changed after it was chained, but the sealer
chains whatever it finds after the head: a row appended at the tail with SQL by a
database insider would be chained and signed as if the registry had written it. So every
process that writes events (servers, workers, the embedded store) holds a key kept
outside the database, ``REGISTRY_EVENT_KEY``, and stores beside each event

    authenticator = HMAC-SHA256(key, label || originator id || version || topic || state)

(each field length-prefixed, as in ``chain``; the label separates this from anything
else the key might ever authenticate). The sealer refuses to chain an event whose
authenticator is missing or wrong, and ``registry verify`` given the key names it. The
position is not covered: the store assigns it only at insert time, and the chain covers
the order once an event is chained.

Events written before the upgrade that added the column (revision 0004) have none. The
upgrade records the log's head then, in ``ledger_event_authentication``: events up to
it are grandfathered, events after it must be authenticated. The first sealer holding
the key seals that boundary (an HMAC over it), and only while no event at or before it
carries an authenticator (which an honest boundary never has): an insider who moves it
later, to grandfather an appended event, breaks the seal.

The key is 32 random bytes, kept as hex in a file readable by its owner only; the
embedded store makes it on first use under ``REGISTRY_DATA_DIR``. On PostgreSQL every
server and worker must be given the same file: a process with another key writes events
the sealer refuses (``LEDGER_TAMPERED`` at the first of them).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from uuid import UUID

from registry.integrity.chain import StoredLogEvent, originator_bytes
from registry.integrity.signing import _write_new
from registry.settings import ConfigurationError, data_file

EVENT_KEY_ENV = "REGISTRY_EVENT_KEY"
"""Path of the key file that authenticates stored events."""
DEFAULT_EVENT_KEY_FILE = "event-key"
"""In ``REGISTRY_DATA_DIR`` when ``REGISTRY_EVENT_KEY`` is unset."""
KEY_SIZE = 32
AUTHENTICATOR_LABEL = b"carbon-registry/event/authenticator/v1"
BOUNDARY_LABEL = b"carbon-registry/event/grandfathered-upto/v1"
AUTHENTICATOR_SIZE = 32

_LENGTH_BYTES = 8


class EventKeyError(ConfigurationError):
    """A key file that is missing, unreadable or not a key (``INVALID_CONFIGURATION``:
    a start-up and CLI error, never a call's)."""


def event_key_path(environ: Mapping[str, str] | None = None) -> Path:
    """``REGISTRY_EVENT_KEY``, else the data directory's ``event-key``."""
    return data_file(EVENT_KEY_ENV, DEFAULT_EVENT_KEY_FILE, environ)


def event_key_given(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``REGISTRY_EVENT_KEY`` names the key (rather than the default file)."""
    environ = os.environ if environ is None else environ
    return bool(environ.get(EVENT_KEY_ENV, "").strip())


def save_event_key(key: bytes, path: Path) -> None:
    """Write a new key file (mode 0600). Never overwrites: events authenticated with a
    lost key can no longer be told from forged ones."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_new(path, key.hex().encode("ascii") + b"\n", 0o600)


def load_event_key(path: Path) -> bytes:
    try:
        text = path.read_text(encoding="ascii").strip()
        key = bytes.fromhex(text)
    except (OSError, ValueError) as error:
        raise EventKeyError(f"cannot load the event key {path}: {error}") from error
    if len(key) < KEY_SIZE:
        raise EventKeyError(
            f"{path} holds {len(key)} bytes: an event key has at least {KEY_SIZE} (64 hex digits)"
        )
    return key


def load_or_create_event_key(path: Path) -> bytes:
    """The key at ``path``, generated there first if there is none."""
    if not path.exists():
        try:
            save_event_key(secrets.token_bytes(KEY_SIZE), path)
        except FileExistsError:
            pass  # another process made it first: use theirs
        except OSError as error:  # e.g. a read-only data directory in a container
            raise EventKeyError(
                f"cannot create the event key {path} ({error}): set "
                f"{EVENT_KEY_ENV} to the key file every server and worker "
                "shares"
            ) from error
    return load_event_key(path)


def event_key_id(key: bytes) -> str:
    """Names the key in logs and messages (16 hex digits; reveals nothing of it)."""
    return hashlib.sha256(b"carbon-registry/event/key-id/v1" + key).hexdigest()[:16]


def _field(value: bytes | None) -> bytes:
    if value is None:
        return b"\xff" * _LENGTH_BYTES
    return len(value).to_bytes(_LENGTH_BYTES, "big") + value


def authenticator(
    key: bytes,
    originator_id: UUID | str | None,
    version: int | None,
    topic: str | None,
    state: bytes | None,
) -> bytes:
    """HMAC-SHA256 over the event's identity and bytes, length-prefixed and labelled."""
    message = b"".join(
        map(
            _field,
            (
                AUTHENTICATOR_LABEL,
                originator_bytes(originator_id),
                None if version is None else version.to_bytes(8, "big", signed=True),
                None if topic is None else topic.encode("utf-8", "surrogatepass"),
                None if state is None else bytes(state),
            ),
        )
    )
    return hmac.digest(key, message, "sha256")  # the one-shot C path: ~3x hmac.new


def authentic(key: bytes, event: StoredLogEvent) -> bool:
    """Whether the stored authenticator is the key's over this event."""
    if event.authenticator is None:
        return False
    expected = authenticator(
        key, event.originator_id, event.originator_version, event.topic, event.state
    )
    return hmac.compare_digest(expected, event.authenticator)


def boundary_seal(key: bytes, position: int) -> bytes:
    """HMAC over the grandfathered boundary: fixes it once a key-holder has seen it."""
    return hmac.new(
        key,
        _field(BOUNDARY_LABEL) + _field(position.to_bytes(8, "big", signed=True)),
        hashlib.sha256,
    ).digest()
