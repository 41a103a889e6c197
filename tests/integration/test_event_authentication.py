"""Issue 15: "events appended at the tail by SQL are chained and signed by the worker as
if legitimate". An insider with SQL access (but not the event key, a file outside the
database) appends a well-formed event at the tail: before the fix the sealer chained and
signed it and `registry verify` passed; now the sealer refuses it (LEDGER_TAMPERED) and
verify names it, while the events the registry writes, and the events it wrote before
the upgrade that introduced authenticators, still chain and verify. SQLite and
PostgreSQL alike, with the real sealer and the real recorders."""

from __future__ import annotations

import argparse
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from registry.application import Registry
from registry.bootstrap import build_registry
from registry.cli import verify as cli
from registry.integrity.authentication import (
    authenticator,
    event_key_path,
    load_event_key,
)
from registry.integrity.ledger import latest_digest
from registry.integrity.sealer import CheckpointPublisher, LedgerSealer
from registry.integrity.signing import generate_key, save_public_key
from registry.integrity.verify import Reason, verify_ledger
from registry.persistence import migrate
from registry.persistence.engine import make_engine
from registry.persistence.eventlog import EventLog
from registry.settings import Settings
from tests.integration.test_ledger_hardening import _next_event_of, _uuid_param
from tests.integration.test_ledger_verify import (
    BACKENDS,
    Store,
    failed_at,
    store_on,
    write_some_events,
)
from tests.support import FakeClock, fresh_pg_database


@pytest.fixture(autouse=True)
def own_event_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's writers and sealer share one event key, made on first use."""
    path = tmp_path / "keys" / "event-key"
    monkeypatch.setenv("REGISTRY_EVENT_KEY", str(path))
    return path


def sealer_for(store: Store, tmp_path: Path) -> LedgerSealer:
    sealer = LedgerSealer(
        store.engine,
        store.key,
        store.log(),
        publisher=CheckpointPublisher(tmp_path / "published.jsonl"),
    )
    sealer.checkpoint_every = 5
    return sealer


def append_with_sql(store: Store, account: str, tag: bytes | None) -> int:
    """The insider's row: the account's next version, a copy of its last event's topic
    and state (a credit, after the allocations), at the tail; ``tag`` as its
    authenticator. Returns its position."""
    aid, version, topic, state = _next_event_of(store, account)
    store.sql(
        "INSERT INTO {table} (originator_id, originator_version, topic, state, "
        "authenticator) VALUES (:o, :v, :t, :s, :a)",
        o=_uuid_param(store, aid),
        v=version,
        t=topic,
        s=state,
        a=tag,
    )
    return store.positions()[-1]


def verify_command(
    store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> tuple[int, str]:
    public = tmp_path / "public.pem"
    if not public.exists():
        save_public_key(store.key, public)
    monkeypatch.setenv("REGISTRY_DATABASE_URL", store.url)
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["verify", "--public-key", str(public), "--checkpoint-every", "0"])
    capsys.readouterr()
    code: int = args.run(args)
    return code, capsys.readouterr().out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("forged_tag", ["none", "random"])
def test_an_event_appended_with_sql_is_neither_chained_nor_signed_and_verify_names_it(
    backend: str,
    forged_tag: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with store_on(backend, tmp_path) as store:
        sealer = sealer_for(store, tmp_path)
        assert sealer.after_step(1) is not None and sealer.tampered is None
        chained = store.positions()
        assert latest_digest(store.engine).position == chained[-1], (
            "the registry's own events chain"
        )
        code, out = verify_command(store, tmp_path, monkeypatch, capsys)
        assert code == 0 and "event authenticators checked" in out, out

        write_some_events(store.registry, "L")  # the registry writes on
        written = store.positions()[-1]
        forged = append_with_sql(
            store, "PWR-0001", None if forged_tag == "none" else secrets.token_bytes(32)
        )
        with caplog.at_level(logging.ERROR, "registry.integrity"):
            assert sealer.after_step(1) is None
        assert sealer.tampered is not None and sealer.tampered.position == forged
        assert "event not authenticated" in str(sealer.tampered)
        assert any("LEDGER_TAMPERED" in r.getMessage() for r in caplog.records)
        head = latest_digest(store.engine)
        assert head.position == written > chained[-1], (
            "the registry's events before the forged row chained, the forged row not"
        )
        assert head.checkpoint is None or head.checkpoint.position < forged
        assert sealer.after_step(1) is None, "and it stays refused"

        report = verify_ledger(
            store.engine,
            [store.key.public_key()],
            log=store.log(),
            checkpoint_every=None,
            event_key=load_event_key(event_key_path()),
        )
        failed_at(report, forged, Reason.NOT_AUTHENTICATED)
        code, out = verify_command(store, tmp_path, monkeypatch, capsys)
        assert code == 1 and out.startswith(
            f"FAILED at position {forged:,}: event not authenticated"
        ), out


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_event_the_registry_wrote_and_an_insider_altered_is_not_chained(
    backend: str, tmp_path: Path
) -> None:
    """Changing an unchained event's state keeps its authenticator, which no longer
    matches: the sealer refuses it rather than chaining the change."""
    with store_on(backend, tmp_path) as store:
        sealer = sealer_for(store, tmp_path)
        sealer.after_step(1)
        write_some_events(store.registry, "M")
        victim = store.positions()[-1]
        store.set_state(victim, store.state(victim).replace(b"1", b"9", 1))
        assert sealer.after_step(1) is None
        assert sealer.tampered is not None and sealer.tampered.position == victim
        assert latest_digest(store.engine).position == store.positions()[-2], (
            "the events before it were chained"
        )


# -- events written before the upgrade --------------------------------------------------


def _previous_registry(settings: Settings) -> Registry:
    """The registry as revision 0003 ran it: the library's recorder, no authenticator."""
    env = settings.eventsourcing_env()
    env.pop("APPLICATION_RECORDER_TOPIC", None)
    registry = Registry(env=env, clock=FakeClock())
    registry.ensure_national_accounts()
    return registry


def _database(backend: str, tmp_path: Path) -> Any:
    if backend == "postgres":
        return fresh_pg_database(migrated=False)
    from contextlib import nullcontext

    return nullcontext(f"sqlite:///{tmp_path / 'registry.sqlite'}")


@pytest.fixture(params=BACKENDS)
def upgraded(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Events written by the previous recorder at revision 0003, the store upgraded,
    then more events written by this registry."""
    with _database(request.param, tmp_path) as url:
        settings = Settings(url)
        migrate.upgrade(settings, "0003")
        before = _previous_registry(settings)
        write_some_events(before, "OLD")
        before.close()
        migrate.upgrade(settings)
        registry = build_registry(settings, clock=FakeClock())
        engine = make_engine(settings)
        try:
            write_some_events(registry, "NEW")
            yield Store(registry, engine, url, generate_key())
        finally:
            registry.close()
            engine.dispose()


def test_events_written_before_the_upgrade_still_chain_and_verify(
    upgraded: Store, tmp_path: Path
) -> None:
    store = upgraded
    [(boundary, seal)] = store.sql(
        "SELECT grandfathered_upto, seal FROM ledger_event_authentication"
    )
    unauthenticated = [
        int(p)
        for (p,) in store.sql(
            "SELECT {pos} FROM {table} WHERE authenticator IS NULL ORDER BY {pos}"
        )
    ]
    assert seal is None and unauthenticated and unauthenticated[-1] == int(boundary)
    assert store.positions()[-1] > int(boundary), "events written after the upgrade"
    sealer = sealer_for(store, tmp_path)
    assert sealer.after_step(1) is not None and sealer.tampered is None
    assert latest_digest(store.engine).position == store.positions()[-1]
    [(sealed,)] = store.sql("SELECT seal FROM ledger_event_authentication")
    assert sealed is not None, "the first sealer with the key seals the boundary"
    key = load_event_key(event_key_path())
    report = verify_ledger(
        store.engine,
        [store.key.public_key()],
        log=store.log(),
        checkpoint_every=None,
        event_key=key,
    )
    assert report.ok and report.authenticators_checked, report.summary()


def test_the_grandfathered_boundary_cannot_be_moved_over_an_appended_event(
    upgraded: Store, tmp_path: Path
) -> None:
    """The insider appends an unauthenticated row and moves the boundary past it: the
    seal breaks; with the seal erased too, the boundary now covers authenticated events,
    which no honest boundary does."""
    store = upgraded
    sealer = sealer_for(store, tmp_path)
    sealer.after_step(1)
    key = load_event_key(event_key_path())
    forged = append_with_sql(store, "PWR-OLD0001", None)
    store.sql("UPDATE ledger_event_authentication SET grandfathered_upto = :p", p=forged)

    def verify() -> Any:
        return verify_ledger(
            store.engine,
            [store.key.public_key()],
            log=store.log(),
            checkpoint_every=None,
            event_key=key,
        )

    failed_at(verify(), forged, Reason.NOT_AUTHENTICATED)
    assert sealer.after_step(1) is None and sealer.tampered is not None
    store.sql("UPDATE ledger_event_authentication SET seal = NULL")
    report = verify()
    assert not report.ok and report.failure is not None
    assert report.failure.reason is Reason.NOT_AUTHENTICATED
    assert sealer.after_step(1) is None and sealer.tampered is not None
    [(seal,)] = store.sql("SELECT seal FROM ledger_event_authentication")
    assert seal is None, "the sealer never seals a moved boundary"
    assert latest_digest(store.engine).position < forged


def test_the_recorders_store_the_keys_authenticator(tmp_path: Path) -> None:
    """What the recorder writes is what the sealer checks: HMAC over the stored row."""
    with store_on("sqlite", tmp_path) as store:
        key = load_event_key(event_key_path())
        rows = store.sql(
            "SELECT originator_id, originator_version, topic, state, authenticator FROM {table}"
        )
        assert rows and all(
            bytes(tag) == authenticator(key, o, v, t, bytes(s)) for o, v, t, s, tag in rows
        )
        with store.engine.connect() as conn:
            assert (
                EventLog.of(store.registry.recorder).authenticated_upto(conn, store.positions()[-1])
                == store.positions()[0]
            )
