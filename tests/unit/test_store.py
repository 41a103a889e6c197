"""The store the use cases share: how an attempt is retried, when it trusts the cache,
and what it answers after a lost race. In memory: no database."""

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from uuid import UUID

import pytest
from eventsourcing.application import Application
from eventsourcing.persistence import IntegrityError

from registry.application import store as store_module
from registry.application.store import MAX_ATTEMPTS, Store
from registry.application.unit_of_work import StaleRead, UnitOfWork
from registry.domain.accounts import Account, AccountType, Holder
from registry.domain.errors import ConcurrencyConflict, UnknownAccount

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    monkeypatch.setattr(store_module.time, "sleep", lambda _: None)  # no back-off waits
    app: Application[UUID] = Application(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    yield Store(app, None, lambda: NOW)
    app.close()


def test_an_attempt_lost_to_a_race_is_tried_again_on_a_fresh_unit_of_work(store: Store) -> None:
    seen: list[UnitOfWork] = []

    def attempt(uow: UnitOfWork) -> str:
        seen.append(uow)
        if len(seen) < 3:
            raise IntegrityError("lost the race") if len(seen) == 1 else StaleRead()
        return "saved"

    assert store.retrying(attempt) == "saved"
    assert len(set(map(id, seen))) == 3
    assert [uow.optimistic for uow in seen] == [True, False, False], (
        "only the first attempt trusts the cache when there is none to refresh"
    )


def test_a_lost_race_asks_for_a_replay_before_trying_again(store: Store) -> None:
    tries: list[int] = []

    def attempt(uow: UnitOfWork) -> str:
        tries.append(1)
        raise IntegrityError("the id is taken")

    assert store.retrying(attempt, on_conflict=lambda: "recorded first") == "recorded first"
    assert len(tries) == 1


def test_a_registry_error_is_the_answer_not_a_race(store: Store) -> None:
    tries: list[int] = []

    def attempt(uow: UnitOfWork) -> None:
        tries.append(1)
        uow.account("PWR-0001")

    with pytest.raises(UnknownAccount):
        store.retrying(attempt)
    assert len(tries) == 1


def test_races_lost_every_time_end_in_a_retryable_conflict(store: Store) -> None:
    def attempt(uow: UnitOfWork) -> None:
        raise IntegrityError("lost again")

    with pytest.raises(ConcurrencyConflict) as raised:
        store.retrying(attempt)
    assert raised.value.metadata == {"attempts": str(MAX_ATTEMPTS)}
    store.max_attempts = 2
    with pytest.raises(ConcurrencyConflict, match="after 2 attempts"):
        store.retrying(attempt)


def test_an_unexpected_error_on_current_reads_is_raised(store: Store) -> None:
    def attempt(uow: UnitOfWork) -> None:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        store.retrying(attempt)


def test_every_attempt_runs_under_the_lock_it_asks_for(store: Store) -> None:
    asked: list[bool] = []

    def lock(retry: bool) -> AbstractContextManager[None]:
        @contextmanager
        def held() -> Iterator[None]:
            asked.append(retry)
            yield

        return held()

    attempts = iter([IntegrityError("lost"), None])

    def attempt(uow: UnitOfWork) -> str:
        error = next(attempts)
        if error is not None:
            raise error
        return "saved"

    assert store.retrying(attempt, lock=lock) == "saved"
    assert asked == [False, True]


def test_without_a_postgresql_cache_the_store_loads_one_by_one(store: Store) -> None:
    assert store.aggregates is None and store.load_many is None
    store.catch_up()  # nothing to follow
    assert store.group_lock(retry=False).__class__.__name__ == "nullcontext"
    assert store.recorded_transactions("exchange", ["T-1"]) == {}


def test_find_save_and_originators(store: Store) -> None:
    account = Account.open("TRD-0001", AccountType.TRADING, Holder("Trader"), "mee/li")
    store.save(account)
    found = store.find(account.id, Account)
    assert found is not None and found.account_id == "TRD-0001"
    assert store.account("TRD-0001").version == account.version
    assert list(store.originators(Account.Opened.TOPIC)) == [account.id]
    assert store.clock() == NOW
