"""RegistryMetrics: what observed calls, settlements and watched state look like to a
scrape, that a failing source costs only its own family, the HTTP endpoint, and that
the example alert rules name only metrics the registry exports."""

from __future__ import annotations

import re
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

from registry.bootstrap import build_registry
from registry.observability.metrics import DURATION_BUCKETS, RegistryMetrics
from registry.observability.worker import WorkerHealth, WorkerMetrics
from registry.persistence.engine import make_engine
from registry.readmodels.runner import ProjectionRunner
from registry.settings import Settings
from tests.support import open_trader

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
SETTLE = "/registry.v1.SettlementService/SettleTrades"
BALANCE = "/registry.v1.AccountService/GetHoldings"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(metrics: RegistryMetrics) -> Samples:
    """Every sample of a scrape, by (name, labels)."""
    return parse(metrics.render())


def parse(text: bytes) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def names(found: Samples) -> set[str]:
    return {name for name, _ in found}


@pytest.fixture
def metrics() -> RegistryMetrics:
    return RegistryMetrics(process_metrics=False)


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'pool.sqlite'}")
    yield engine
    engine.dispose()


# -- calls ------------------------------------------------------------------------------


def test_calls_are_counted_by_method_and_code_and_timed(metrics: RegistryMetrics) -> None:
    metrics.observe_call(SETTLE, "OK", "", 0.004)
    metrics.observe_call(SETTLE, "OK", "", 0.2)
    metrics.observe_call(BALANCE, "NOT_FOUND", "ACCOUNT_NOT_FOUND", 0.0007)
    found = samples(metrics)
    assert value(found, "registry_rpc_calls_total", method=SETTLE, code="OK") == 2
    assert value(found, "registry_rpc_calls_total", method=BALANCE, code="NOT_FOUND") == 1
    assert value(found, "registry_rpc_duration_seconds_count", method=SETTLE) == 2
    assert value(found, "registry_rpc_duration_seconds_sum", method=SETTLE) == pytest.approx(0.204)
    bucket = "registry_rpc_duration_seconds_bucket"
    assert value(found, bucket, method=SETTLE, le="0.0025") == 0
    assert value(found, bucket, method=SETTLE, le="0.005") == 1
    assert value(found, bucket, method=SETTLE, le="0.25") == 2
    assert value(found, bucket, method=SETTLE, le="+Inf") == 2
    assert value(found, bucket, method=BALANCE, le="0.001") == 1


def test_only_calls_that_did_not_end_ok_are_errors(metrics: RegistryMetrics) -> None:
    metrics.observe_call(SETTLE, "OK", "", 0.01)
    metrics.observe_call(BALANCE, "NOT_FOUND", "ACCOUNT_NOT_FOUND", 0.01)
    metrics.observe_call(BALANCE, "NOT_FOUND", "ACCOUNT_NOT_FOUND", 0.01)
    metrics.observe_call(SETTLE, "INTERNAL", "", 0.01)
    found = samples(metrics)
    errors = {
        labels: count
        for (name, labels), count in found.items()
        if name == "registry_rpc_errors_total"
    }
    assert errors == {
        frozenset({("method", BALANCE), ("code", "NOT_FOUND"), ("reason", "ACCOUNT_NOT_FOUND")}): 2,
        frozenset({("method", SETTLE), ("code", "INTERNAL"), ("reason", "")}): 1,
    }


def test_duration_buckets_span_a_millisecond_to_thirty_seconds() -> None:
    assert DURATION_BUCKETS[0] == 0.001
    assert DURATION_BUCKETS[-1] == 30.0
    assert list(DURATION_BUCKETS) == sorted(DURATION_BUCKETS)


# -- settlement, holds, verification ------------------------------------------------------


def test_settlements_by_status_and_refusals_and_rejections_by_reason(
    metrics: RegistryMetrics,
) -> None:
    fresh = samples(metrics)
    for status in ("SETTLED", "ALREADY_SETTLED", "REFUSED", "REJECTED"):
        assert value(fresh, "registry_settlements_total", status=status) == 0
    metrics.observe_settlement("SETTLED", "", 998)
    metrics.observe_settlement("ALREADY_SETTLED")
    metrics.observe_settlement("REFUSED", "INSUFFICIENT_UNITS")
    metrics.observe_settlement("REFUSED", "ACCOUNT_FROZEN", 3)
    metrics.observe_settlement("REJECTED", "INVALID_QUANTITY", 2)
    metrics.observe_settlement("SETTLED", "", 0)  # an empty tally changes nothing
    found = samples(metrics)
    assert value(found, "registry_settlements_total", status="SETTLED") == 998
    assert value(found, "registry_settlements_total", status="ALREADY_SETTLED") == 1
    assert value(found, "registry_settlements_total", status="REFUSED") == 4
    assert value(found, "registry_settlements_total", status="REJECTED") == 2
    assert value(found, "registry_settlement_refusals_total", reason="INSUFFICIENT_UNITS") == 1
    assert value(found, "registry_settlement_refusals_total", reason="ACCOUNT_FROZEN") == 3
    assert value(found, "registry_settlement_rejections_total", reason="INVALID_QUANTITY") == 2
    refused_reasons = {
        labels for (name, labels) in found if name == "registry_settlement_refusals_total"
    }
    assert refused_reasons == {
        frozenset({("reason", "INSUFFICIENT_UNITS")}),
        frozenset({("reason", "ACCOUNT_FROZEN")}),
    }


def test_hold_expiries_add_up(metrics: RegistryMetrics) -> None:
    assert value(samples(metrics), "registry_hold_expiries_total") == 0
    metrics.observe_hold_expiries(3)
    metrics.observe_hold_expiries(0)
    metrics.observe_hold_expiries(2)
    assert value(samples(metrics), "registry_hold_expiries_total") == 5


def test_verification_shows_only_once_it_has_run(metrics: RegistryMetrics) -> None:
    assert "registry_ledger_verify_ok" not in names(samples(metrics))
    metrics.set_verify_result(True, 1200)
    found = samples(metrics)
    assert value(found, "registry_ledger_verify_ok") == 1
    assert value(found, "registry_ledger_verify_position") == 1200
    first = value(found, "registry_ledger_verify_timestamp_seconds")
    assert first is not None and first > 1.6e9
    metrics.set_verify_result(False, 77)
    found = samples(metrics)
    assert value(found, "registry_ledger_verify_ok") == 0
    assert value(found, "registry_ledger_verify_position") == 77
    assert (value(found, "registry_ledger_verify_timestamp_seconds") or 0) >= first


# -- state read at scrape time ------------------------------------------------------------


def test_projection_positions_and_lag_are_read_at_each_scrape(metrics: RegistryMetrics) -> None:
    state = {"head": 120, "accounts": 120, "holdings": 100}
    calls = []

    def status() -> list[tuple[str, int, int]]:
        calls.append(1)
        return [(name, state[name], state["head"]) for name in ("accounts", "holdings")]

    metrics.watch_projections(status)
    assert not calls  # nothing is read until a scrape
    found = samples(metrics)
    assert value(found, "registry_projection_position", projection="accounts") == 120
    assert value(found, "registry_projection_position", projection="holdings") == 100
    assert value(found, "registry_projection_lag_events", projection="accounts") == 0
    assert value(found, "registry_projection_lag_events", projection="holdings") == 20
    assert value(found, "registry_log_head_position") == 120
    state.update(head=150, holdings=150)
    found = samples(metrics)
    assert value(found, "registry_projection_lag_events", projection="accounts") == 30
    assert value(found, "registry_projection_lag_events", projection="holdings") == 0
    assert value(found, "registry_log_head_position") == 150
    assert len(calls) == 2


def test_a_projection_ahead_of_a_stale_head_shows_no_negative_lag(metrics: RegistryMetrics) -> None:
    metrics.watch_projections(lambda: [("supply", 12, 10)])
    assert value(samples(metrics), "registry_projection_lag_events", projection="supply") == 0


def test_a_real_projection_runner_status_feeds_the_gauges(
    tmp_path: Path, metrics: RegistryMetrics
) -> None:
    settings = Settings(f"sqlite:///{tmp_path / 'registry.sqlite'}")
    registry = build_registry(settings)
    engine = make_engine(settings)
    try:
        runner = ProjectionRunner(registry, engine)
        metrics.watch_projections(
            lambda: [(p.projection, p.position, p.head) for p in runner.status()]
        )
        metrics.watch_pool("writes", engine)
        open_trader(registry, "TRD-0001")
        head = runner.head()
        behind = samples(metrics)
        assert value(behind, "registry_log_head_position") == head > 0
        assert value(behind, "registry_projection_lag_events", projection="accounts") == head
        runner.catch_up()
        caught_up = samples(metrics)
        for progress in runner.status():
            assert (
                value(caught_up, "registry_projection_position", projection=progress.projection)
                == head
            )
            assert (
                value(caught_up, "registry_projection_lag_events", projection=progress.projection)
                == 0
            )
        assert value(caught_up, "registry_db_pool_checked_out", pool="writes") == 0
    finally:
        registry.close()
        engine.dispose()


def test_pools_show_checked_out_connections_and_size(
    metrics: RegistryMetrics, sqlite_engine: Engine, tmp_path: Path
) -> None:
    queued = create_engine(f"sqlite:///{tmp_path / 'reads.sqlite'}", pool_size=3)
    metrics.watch_pool("writes", sqlite_engine)
    metrics.watch_pool("reads", queued)
    try:
        with sqlite_engine.connect(), sqlite_engine.connect(), queued.connect():
            found = samples(metrics)
            assert value(found, "registry_db_pool_checked_out", pool="writes") == 2
            assert value(found, "registry_db_pool_checked_out", pool="reads") == 1
            assert value(found, "registry_db_pool_size", pool="writes") == 5
            assert value(found, "registry_db_pool_size", pool="reads") == 3
        found = samples(metrics)
        assert value(found, "registry_db_pool_checked_out", pool="writes") == 0
        text = metrics.render().decode()
        for family in ("registry_db_pool_checked_out", "registry_db_pool_size"):
            assert text.count(f"# TYPE {family} gauge") == 1, "one family for all pools"
    finally:
        queued.dispose()


def test_pools_without_a_size_are_left_out_not_failed(metrics: RegistryMetrics) -> None:
    memory = create_engine("sqlite://")  # SingletonThreadPool
    unpooled = create_engine("sqlite://", poolclass=NullPool)
    metrics.watch_pool("memory", memory)
    metrics.watch_pool("unpooled", unpooled)
    try:
        found = samples(metrics)
        pools = {
            dict(labels).get("pool")
            for (name, labels) in found
            if name.startswith("registry_db_pool_")
        }
        assert "memory" not in pools
        assert "unpooled" not in pools
        errors = {
            dict(labels)["source"]: value
            for (name, labels), value in found.items()
            if name == "registry_metrics_scrape_errors_total"
        }
        assert errors == {"pool:memory": 0, "pool:unpooled": 0}  # exported, none counted
    finally:
        memory.dispose()
        unpooled.dispose()


# -- a failing source ---------------------------------------------------------------------


def test_a_failing_projection_status_costs_its_family_only_and_is_counted(
    metrics: RegistryMetrics, sqlite_engine: Engine
) -> None:
    def status() -> list[tuple[str, int, int]]:
        raise RuntimeError("database unreachable")

    metrics.watch_projections(status)
    metrics.watch_pool("writes", sqlite_engine)
    metrics.observe_call(SETTLE, "OK", "", 0.01)
    found = samples(metrics)
    assert not {
        n for n in names(found) if n.startswith(("registry_projection_", "registry_log_head"))
    }
    assert value(found, "registry_rpc_calls_total", method=SETTLE, code="OK") == 1
    assert value(found, "registry_db_pool_size", pool="writes") == 5
    assert value(found, "registry_metrics_scrape_errors_total", source="projections") == 1
    assert (
        value(samples(metrics), "registry_metrics_scrape_errors_total", source="projections") == 2
    )


def test_a_failing_pool_costs_that_pool_only(
    metrics: RegistryMetrics, sqlite_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = create_engine(f"sqlite:///{tmp_path / 'broken.sqlite'}")

    def checkedout() -> int:
        raise RuntimeError("pool gone")

    monkeypatch.setattr(broken.pool, "checkedout", checkedout)
    metrics.watch_pool("broken", broken)
    metrics.watch_pool("writes", sqlite_engine)
    try:
        found = samples(metrics)
        assert value(found, "registry_db_pool_size", pool="writes") == 5
        assert value(found, "registry_db_pool_size", pool="broken") is None
        assert value(found, "registry_metrics_scrape_errors_total", source="pool:broken") == 1
    finally:
        monkeypatch.undo()  # dispose() asks the pool too
        broken.dispose()


def test_two_instances_in_one_process_do_not_collide() -> None:
    first, second = RegistryMetrics(), RegistryMetrics()
    first.observe_call(SETTLE, "OK", "", 0.01)
    assert value(samples(first), "registry_rpc_calls_total", method=SETTLE, code="OK") == 1
    assert value(samples(second), "registry_rpc_calls_total", method=SETTLE, code="OK") is None
    assert "process_cpu_seconds_total" in names(samples(first))


# -- the HTTP endpoint --------------------------------------------------------------------


def test_the_endpoint_serves_the_rendered_text_on_a_free_port(metrics: RegistryMetrics) -> None:
    metrics.observe_call(SETTLE, "OK", "", 0.01)
    metrics.observe_settlement("REFUSED", "ACCOUNT_FROZEN")
    metrics.watch_projections(lambda: [("accounts", 5, 9)])
    server = metrics.start_http(0, host="127.0.0.1")
    try:
        assert server.port > 0
        with urllib.request.urlopen(
            f"http://127.0.0.1:{server.port}/metrics", timeout=10
        ) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            body = response.read()
        assert body == metrics.render()
        assert value(parse(body), "registry_projection_lag_events", projection="accounts") == 4
    finally:
        server.stop()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=2):
        pass


# -- the example alert rules --------------------------------------------------------------

REQUIRED_ALERTS = {
    "RegistryServerDown",
    "RegistryInternalErrors",
    "RegistryLedgerVerifyFailed",
    "RegistryProjectionLagHigh",
    "RegistryProjectionStalled",
    "RegistrySettlementRefusalsSpike",
    "RegistryHoldExpirySurge",
    "RegistryDbPoolSaturated",
}
DURATION = re.compile(r"^(0|(\d+(ms|s|m|h|d|w|y))+)$")


def exported_names(tmp_path: Path) -> set[str]:
    """Every sample name a registry process can export, with every family exercised."""
    metrics = RegistryMetrics()
    worker = WorkerMetrics(metrics.registry, WorkerHealth())  # a worker's own families
    worker.chained(3, 9, [9])
    worker.watch_head(lambda: 9)
    metrics.observe_call(SETTLE, "INTERNAL", "", 0.01)
    metrics.observe_settlement("REFUSED", "ACCOUNT_FROZEN")
    metrics.observe_settlement("REJECTED", "INVALID_QUANTITY")
    metrics.observe_hold_expiries(1)
    metrics.set_verify_result(True, 10)
    metrics.watch_projections(lambda: [("accounts", 5, 9)])
    engine = create_engine(f"sqlite:///{tmp_path / 'names.sqlite'}")
    metrics.watch_pool("writes", engine)

    def fail() -> list[tuple[str, int, int]]:
        raise RuntimeError("for the error counter's name")

    try:
        found = names(samples(metrics))
        metrics.watch_projections(fail)
        found |= names(samples(metrics))
        return found
    finally:
        engine.dispose()


def load_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    assert isinstance(document, dict) and set(document) == {"groups"}
    rules = []
    group_names = set()
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "rules"} and group["rules"]
        assert group["name"] not in group_names
        group_names.add(group["name"])
        rules.extend(group["rules"])
    return rules


def test_the_alert_rules_parse_and_are_complete() -> None:
    rules = load_rules()
    alerts = [rule["alert"] for rule in rules]
    assert len(alerts) == len(set(alerts))
    assert set(alerts) >= REQUIRED_ALERTS
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, (
            rule["alert"]
        )
        assert isinstance(rule["expr"], str) and rule["expr"].strip(), rule["alert"]
        assert DURATION.match(str(rule["for"])), rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]


def test_the_alert_rules_name_only_exported_metrics(tmp_path: Path) -> None:
    exported = exported_names(tmp_path)
    used = set()
    for rule in load_rules():
        referenced = set(re.findall(r"\bregistry_[a-z0-9_]+\b", rule["expr"]))
        # a rule on metrics another exporter makes says so (alerts.yaml's header)
        assert referenced or "source" in rule["labels"], rule["alert"]
        assert referenced <= exported, (rule["alert"], referenced - exported)
        used |= referenced
    down = next(rule for rule in load_rules() if rule["alert"] == "RegistryServerDown")
    assert re.search(r"\bup\b.*== 0", down["expr"])
    assert {
        "registry_projection_lag_events",
        "registry_settlement_refusals_total",
        "registry_rpc_errors_total",
        "registry_ledger_verify_ok",
        "registry_hold_expiries_total",
        "registry_db_pool_checked_out",
        "registry_db_pool_size",
    } <= used


def test_the_docs_list_every_exported_metric(tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "observability.md").read_text(encoding="utf-8")
    families = {
        re.sub(r"_(bucket|sum|count)$", "", name)
        for name in exported_names(tmp_path)
        if name.startswith("registry_") and not name.endswith("_created")
    }
    listed = set(re.findall(r"`(registry_[a-z0-9_]+)`", doc))
    assert families <= listed, families - listed
