"""Tamper evidence end to end: a real server chains and signs its log as it projects,
`registry ledger-digest` keeps a signed checkpoint, `registry verify` recomputes the
chain, and after one stored event is altered on disk both name the damage."""

from __future__ import annotations

import json
import sqlite3
import time
from itertools import pairwise
from pathlib import Path

from registry.client import RegistryClient
from registry.v1 import audit_service_pb2 as audit_pb
from tests.e2e.market import caught_up, seed_market
from tests.e2e.test_server_process import cli, first_token, serving


def signed_head(client: RegistryClient, timeout: float = 30.0) -> audit_pb.GetLedgerDigestResponse:
    """The digest once the chain and its latest checkpoint reach the log's head."""
    deadline = time.monotonic() + timeout
    while True:
        reply = client.call(client.audit.GetLedgerDigest, audit_pb.GetLedgerDigestRequest())
        if (
            reply.position == reply.head_position > 0
            and reply.latest_checkpoint.position == reply.position
        ):
            return reply
        assert time.monotonic() < deadline, reply
        time.sleep(0.1)


def test_the_log_is_chained_signed_verified_and_tampering_is_named(tmp_path: Path) -> None:
    with serving(tmp_path, REGISTRY_LEDGER_SIGN_SECONDS="0.2") as server:
        token, _, _ = first_token(tmp_path)
        with RegistryClient(server.address, token, attempts=1) as client:
            seed_market(client)
            caught_up(client)
            head = signed_head(client)
        assert head.events_chained > 10 and len(head.digest) == 64
        assert head.public_key_pem.startswith("-----BEGIN PUBLIC KEY-----")
        kept = cli(server, "ledger-digest", "--save", str(tmp_path / "checkpoint.json"))
        assert kept.returncode == 0, kept.stderr
        assert f"latest checkpoint: position {head.position:,}" in kept.stdout
        saved = json.loads((tmp_path / "checkpoint.json").read_text())
        assert (saved["position"], saved["digest"]) == (head.position, head.digest)
        # the API's signature is the Ed25519 signature; the link has fields of its own
        latest = head.latest_checkpoint
        assert len(latest.signature) == 64 and len(latest.previous_digest) == 64
        assert latest.previous_position < latest.position
        assert (saved["previous_position"], saved["previous_digest"]) == (
            latest.previous_position,
            latest.previous_digest,
        )
        (tmp_path / "public.pem").write_text(head.public_key_pem)

    public = ["--public-key", str(tmp_path / "public.pem")]
    verified = cli(server, "verify", *public)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith(
        f"OK: {head.events_chained} events chained up to position {head.position}"
    )
    held = cli(server, "verify", "--checkpoint", str(tmp_path / "checkpoint.json"), *public)
    assert held.returncode == 0, held.stdout + held.stderr
    assert (
        "1 checkpoints kept outside the database match (last at position "
        f"{head.position})" in held.stdout
    ), held.stdout
    # the server published every checkpoint it signed outside the database, by default
    published = tmp_path / "ledger-checkpoints.jsonl"
    lines = [json.loads(line) for line in published.read_text().splitlines()]
    assert lines and lines[-1]["position"] == head.position, lines
    assert lines[0]["previous_position"] == 0 and all(
        (after["previous_position"], after["previous_digest"])
        == (before["position"], before["digest"])
        for before, after in pairwise(lines)
    ), lines
    routine = cli(server, "verify", "--checkpoint", str(published), *public)
    assert routine.returncode == 0, routine.stdout + routine.stderr
    assert f"{len(lines)} checkpoints kept outside the database match" in routine.stdout

    # an insider edits one stored event's payload in the database file
    victim = head.position // 2
    with sqlite3.connect(tmp_path / "registry.sqlite") as db:
        (state,) = db.execute(
            "SELECT state FROM stored_events WHERE rowid = ?", (victim,)
        ).fetchone()
        db.execute(
            "UPDATE stored_events SET state = ? WHERE rowid = ?",
            (bytes(state).replace(b"0", b"1", 1), victim),
        )
    broken = cli(server, "verify", *public)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert broken.stdout.startswith(f"FAILED at position {victim}: payload altered")
    stale = cli(server, "verify", "--checkpoint", str(tmp_path / "checkpoint.json"), *public)
    assert stale.returncode == 1
    assert stale.stdout.startswith(f"FAILED at position {victim}: payload altered")

    stranger = tmp_path / "stranger.pem"
    stranger.write_text(_another_public_key())
    forged = cli(
        server,
        "verify",
        "--checkpoint",
        str(tmp_path / "checkpoint.json"),
        "--public-key",
        str(stranger),
    )
    assert forged.returncode == 1 and "bad signature" in forged.stdout, forged.stdout


def _another_public_key() -> str:
    from registry.integrity.signing import generate_key, public_key_pem

    return public_key_pem(generate_key()).decode("ascii")
