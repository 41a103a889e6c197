"""The digest chain and checkpoint signatures, without a database."""

from __future__ import annotations

import hashlib
import stat
from dataclasses import replace
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from registry.integrity.chain import (
    GENESIS,
    StoredLogEvent,
    canonical_bytes,
    chain,
    chain_digest,
    event_hash,
    hash_and_link,
    link,
)
from registry.integrity.signing import (
    SIGNATURE_SIZE,
    SigningKeyError,
    checkpoint_message,
    generate_key,
    key_id,
    load_or_create_private_key,
    load_private_key,
    load_public_key,
    private_key_path,
    save_private_key,
    save_public_key,
    sign_checkpoint,
    verify_signature,
)

ORIGINATOR = UUID("5e4db784-b2ce-5bf7-82e4-922a78bbe5fc")
EVENT = StoredLogEvent(7, ORIGINATOR, 3, "registry.Account.Credited", b'{"quantity":5}')


def test_link_is_sha256_of_previous_and_canonical_bytes_and_deterministic() -> None:
    assert len(GENESIS) == 32
    assert hashlib.sha256(b"carbon-registry/ledger/genesis/v1").digest() == GENESIS
    expected = hashlib.sha256(GENESIS + canonical_bytes(EVENT)).digest()
    assert link(GENESIS, EVENT) == expected == link(GENESIS, replace(EVENT))
    assert hash_and_link(GENESIS, EVENT) == (event_hash(EVENT), expected)
    assert event_hash(EVENT) == hashlib.sha256(canonical_bytes(EVENT)).digest()


@pytest.mark.parametrize(
    "changed",
    [
        replace(EVENT, position=8),
        replace(EVENT, originator_id=uuid4()),
        replace(EVENT, originator_version=4),
        replace(EVENT, topic="registry.Account.Debited"),
        replace(EVENT, state=b'{"quantity":6}'),
        replace(EVENT, state=b'{"quantity":5} '),
        replace(EVENT, state=b""),
        replace(EVENT, state=None),
        replace(EVENT, topic=None),
        replace(EVENT, originator_id=None),
        replace(EVENT, originator_version=None),
        replace(EVENT, originator_id=ORIGINATOR.hex + "x"),
    ],
)
def test_any_field_change_changes_the_digest(changed: StoredLogEvent) -> None:
    assert canonical_bytes(changed) != canonical_bytes(EVENT)
    assert link(GENESIS, changed) != link(GENESIS, EVENT)


def test_the_previous_digest_changes_the_digest_and_must_be_a_digest() -> None:
    assert link(link(GENESIS, EVENT), EVENT) != link(GENESIS, EVENT)
    with pytest.raises(ValueError, match="32 bytes"):
        link(b"short", EVENT)


def test_both_spellings_of_an_originator_id_are_the_same_event() -> None:
    """SQLite stores the id as hex, PostgreSQL as a uuid: one event, one digest."""
    for spelling in (ORIGINATOR.hex, str(ORIGINATOR)):
        assert canonical_bytes(replace(EVENT, originator_id=spelling)) == canonical_bytes(EVENT)


def test_fields_are_length_prefixed_so_bytes_cannot_move_between_them() -> None:
    one = StoredLogEvent(1, ORIGINATOR, 1, "topic", b"state")
    other = StoredLogEvent(1, ORIGINATOR, 1, "topics", b"tate")
    assert canonical_bytes(one) != canonical_bytes(other)
    assert canonical_bytes(replace(one, state=b"")) != canonical_bytes(replace(one, state=None))


def test_the_chain_commits_to_order() -> None:
    a = EVENT
    b = StoredLogEvent(9, uuid4(), 1, "registry.Account.Opened", b"{}")
    forward = [digest for _, digest in chain([a, b])]
    assert forward[-1] == chain_digest([a, b]) == link(link(GENESIS, a), b)
    assert chain_digest([b, a]) != chain_digest([a, b])
    assert chain_digest([]) == GENESIS
    assert chain_digest([b], start=forward[0]) == forward[1]


events = st.builds(
    StoredLogEvent,
    position=st.integers(1, 2**63 - 1),
    originator_id=st.one_of(st.uuids(), st.none(), st.text(max_size=20)),
    originator_version=st.one_of(st.integers(-(2**63), 2**63 - 1), st.none()),
    topic=st.one_of(st.text(max_size=30), st.none()),
    state=st.one_of(st.binary(max_size=40), st.none()),
)


def _normal(event: StoredLogEvent) -> StoredLogEvent:
    """The event with its id as a UUID where the text spells one (the only aliasing)."""
    try:
        return replace(event, originator_id=UUID(str(event.originator_id)))
    except ValueError:
        return event


@given(events, events)
def test_different_events_never_share_canonical_bytes(a: StoredLogEvent, b: StoredLogEvent) -> None:
    if a.originator_id is not None and b.originator_id is not None:
        same = _normal(a) == _normal(b)
    else:
        same = a == b
    assert (canonical_bytes(a) == canonical_bytes(b)) == same


# -- signing -------------------------------------------------------------------------


DIGEST = link(GENESIS, EVENT)


def test_a_checkpoint_verifies_with_its_key_only() -> None:
    key, other = generate_key(), generate_key()
    checkpoint = sign_checkpoint(key, 10_000, DIGEST)
    assert checkpoint.key_id == key_id(key) == key_id(key.public_key())
    assert len(checkpoint.key_id) == 16 and int(checkpoint.key_id, 16) >= 0
    link_ = checkpoint.previous
    assert verify_signature(key.public_key(), 10_000, DIGEST, checkpoint.signature, None, link_)
    assert verify_signature(
        key.public_key(), 10_000, DIGEST, checkpoint.signature, checkpoint.key_id, link_
    )
    assert not verify_signature(
        other.public_key(), 10_000, DIGEST, checkpoint.signature, None, link_
    )


def test_an_altered_checkpoint_fails() -> None:
    key = generate_key()
    public = key.public_key()
    signature = sign_checkpoint(key, 10_000, DIGEST).signature
    first = (0, GENESIS)
    assert verify_signature(public, 10_000, DIGEST, signature, None, first)
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    assert not verify_signature(public, 10_000, DIGEST, flipped, None, first)
    assert not verify_signature(public, 10_001, DIGEST, signature, None, first)
    assert not verify_signature(public, 10_000, link(DIGEST, EVENT), signature, None, first)
    assert not verify_signature(public, 10_000, DIGEST, signature, "0" * 16, first)
    assert not verify_signature(public, 10_000, DIGEST, signature[:-1], None, first)
    assert not verify_signature(public, 10_000, DIGEST, signature), "the link is signed"


def test_a_checkpoint_carries_and_signs_its_link_to_the_previous_one() -> None:
    """Deleting a checkpoint must break the next one: the link, in fields of its own, is
    covered by the signature, so it cannot be rewritten to skip the gap. The signature
    itself is the plain 64-byte Ed25519 signature (before, the link was packed into a
    104-byte "signature": this test failed then)."""
    key = generate_key()
    public = key.public_key()
    first = sign_checkpoint(key, 5, DIGEST)
    assert first.previous == (0, GENESIS) and len(first.signature) == SIGNATURE_SIZE == 64
    later_digest = link(DIGEST, EVENT)
    second = sign_checkpoint(key, 9, later_digest, (5, DIGEST))
    assert second.previous == (5, DIGEST) and len(second.signature) == 64
    assert verify_signature(public, 9, later_digest, second.signature, None, (5, DIGEST))
    assert not verify_signature(public, 9, later_digest, second.signature, None, (3, GENESIS)), (
        "link forged"
    )
    assert not verify_signature(public, 9, later_digest, second.signature), "link dropped"
    assert b"checkpoint/v2" in checkpoint_message(9, later_digest, key_id(key), (5, DIGEST))


def test_a_version_1_checkpoint_signed_before_links_still_verifies() -> None:
    key = generate_key()
    old = key.sign(checkpoint_message(10_000, DIGEST, key_id(key)))
    assert len(old) == 64
    assert verify_signature(key.public_key(), 10_000, DIGEST, old)
    assert not verify_signature(key.public_key(), 10_001, DIGEST, old)


def test_the_message_is_domain_separated() -> None:
    """A signature the key made over anything else (here the bare digest) is no
    checkpoint: the message carries a label, position and key id."""
    key = generate_key()
    message = checkpoint_message(10_000, DIGEST, key_id(key))
    assert b"carbon-registry/ledger/checkpoint/v1" in message and key_id(key).encode() in message
    assert not verify_signature(key.public_key(), 10_000, DIGEST, key.sign(DIGEST))
    assert verify_signature(key.public_key(), 10_000, DIGEST, key.sign(message))


def test_keys_round_trip_through_pem_files(tmp_path: Path) -> None:
    key = generate_key()
    private = tmp_path / "keys" / "signing.pem"
    public = tmp_path / "keys" / "public.pem"
    save_private_key(key, private)
    save_public_key(key, public)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"PRIVATE" not in public.read_bytes()
    assert key_id(load_private_key(private)) == key_id(key)
    assert key_id(load_public_key(public)) == key_id(key)
    assert key_id(load_public_key(private)) == key_id(key), "a private key's public half"
    with pytest.raises(FileExistsError):
        save_private_key(generate_key(), private)
    assert key_id(load_private_key(private)) == key_id(key), "never overwritten"
    assert sorted(p.name for p in private.parent.iterdir()) == ["public.pem", "signing.pem"]


def test_a_third_party_checks_a_checkpoint_with_the_public_pem_alone(tmp_path: Path) -> None:
    key = generate_key()
    checkpoint = sign_checkpoint(key, 42, DIGEST)
    save_public_key(key, tmp_path / "registry-public.pem")
    public = load_public_key(tmp_path / "registry-public.pem")
    assert verify_signature(
        public,
        checkpoint.position,
        checkpoint.digest,
        checkpoint.signature,
        checkpoint.key_id,
        checkpoint.previous,
    )


def test_bad_key_files_are_refused(tmp_path: Path) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    wrong = tmp_path / "ec.pem"
    wrong.write_bytes(
        ec_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    wrong_public = tmp_path / "ec-public.pem"
    wrong_public.write_bytes(
        ec_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    for path in (wrong, garbage, tmp_path / "missing.pem"):
        with pytest.raises(SigningKeyError):
            load_private_key(path)
    for path in (wrong_public, garbage, tmp_path / "missing.pem"):
        with pytest.raises(SigningKeyError):
            load_public_key(path)


def test_the_embedded_key_is_made_once_where_the_environment_says(tmp_path: Path) -> None:
    path = private_key_path({"REGISTRY_DATA_DIR": str(tmp_path)})
    assert path == tmp_path / "ledger-signing-key.pem"
    assert private_key_path({"REGISTRY_LEDGER_KEY": "/etc/registry/k.pem"}) == Path(
        "/etc/registry/k.pem"
    )
    first = load_or_create_private_key(path)
    assert key_id(load_or_create_private_key(path)) == key_id(first)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
