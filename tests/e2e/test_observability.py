"""Observability of a real server process: after a scripted run the exported call
counters equal the calls made, by method and status; settlements are counted by
outcome and refusal reason; a client's request id comes back, is on the call's JSON log
line, and is recorded on the events the call caused."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import grpc
import pytest
import yaml

from registry.client import RegistryClient
from registry.observability.metrics import RegistryMetrics
from registry.v1 import account_service_pb2 as account_pb
from registry.v1 import settlement_service_pb2 as settlement_pb
from tests.e2e.conftest import rpc_error
from tests.e2e.market import TRADER, caught_up, seed_market, trade
from tests.e2e.test_server_process import add_principal, first_token, free_port, serving
from tests.support import fresh_pg_database

A = "PWR-SD-0001"


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition: (name, labels) -> value."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    return scrape_text(text.decode())


def scrape_text(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    samples = {}
    for line in text.splitlines():
        found = re.match(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$", line)
        if found:
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', found.group(2) or ""))
            samples[(found.group(1), labels)] = float(found.group(3))
    return samples


def calls(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], method: str
) -> dict[str, float]:
    """code -> registry_rpc_calls_total of one method."""
    return {
        dict(labels)["code"]: value
        for (name, labels), value in samples.items()
        if name == "registry_rpc_calls_total" and dict(labels)["method"] == method
    }


ALERTS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yaml"
SELECTOR = re.compile(r"\b(registry_[a-z0-9_]+)\s*(?:\{([^}]*)\})?")
AFTER_FIRST_VERIFICATION = (
    "registry_ledger_verify_ok",
    "registry_ledger_verify_position",
    "registry_ledger_verify_timestamp_seconds",
)
"""Exported once the process's periodic ledger verification has run (hourly, so not in
this test's minute): their names are checked against the collector's own (below)."""
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
DOCS = Path(__file__).resolve().parents[2] / "docs" / "observability.md"
EXTERNAL_HEADING = "### Metrics the alerts use that the registry does not export"
SOURCES = ("prometheus", "cloudnativepg")
"""The rule, documented in alerts.yaml's header and docs/observability.md: a rule on
metrics the registry does not export has a ``source`` label naming their exporter; it
is not checked against our scrape, but its metrics must be in the documented table."""
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or"}
PROMQL_WORDS |= {"unless", "offset", "bool", "inf", "nan"}
PROMQL_WORDS |= {"sum", "min", "max", "avg", "count", "group", "stddev", "stdvar", "topk"}
PROMQL_WORDS |= {"bottomk", "quantile", "count_values", "limitk", "limit_ratio"}
"""Keywords and aggregation operators (``sum by (job) (...)``: not followed by "(")."""


def alert_rules() -> list[dict[str, object]]:
    rules: list[dict[str, object]] = [
        r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]
    ]
    return rules


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not inside
    a label matcher, a ``by (...)``/``on (...)`` list or a string, not a function
    (followed by ``(``), a keyword, a number or a duration."""
    text = re.sub(r'"[^"]*"', "", expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    names = set()
    for found in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", text):
        name, call = found.group(1), found.group(2)
        if call or name.lower() in PROMQL_WORDS:
            continue
        names.add(name)
    return names


def external_metrics() -> dict[str, str]:
    """metric -> source, from docs/observability.md's table."""
    text = DOCS.read_text()
    assert EXTERNAL_HEADING in text, f"docs/observability.md has no {EXTERNAL_HEADING!r}"
    section = text.split(EXTERNAL_HEADING, 1)[1].split("\n#", 1)[0]
    table = {}
    for row in re.findall(r"^\|\s*`([a-z_:]+)`\s*\|\s*(\w+)\s*\|", section, re.MULTILINE):
        table[row[0]] = row[1]
    assert table, "the table of external metrics is empty"
    return table


def test_alerts_on_metrics_we_do_not_export_are_marked_and_documented() -> None:
    """A rule without a ``source`` label uses only the registry's own metrics (checked
    against a real scrape below); a rule with one uses only metrics listed, with that
    source, in docs/observability.md (the CloudNativePG names cited there from its
    documentation), so no alert waits on a name nobody exports."""
    table = external_metrics()
    assert set(table.values()) <= set(SOURCES)
    problems = []
    for rule in alert_rules():
        labels = rule["labels"]
        assert isinstance(labels, dict)
        names = metric_names(str(rule["expr"]))
        assert names, rule["alert"]
        source = labels.get("source")
        if source is None:
            foreign = sorted(n for n in names if not n.startswith("registry_"))
            if foreign:
                problems.append(f"{rule['alert']}: {foreign} are not ours: give it a source")
            continue
        if source not in SOURCES:
            problems.append(f"{rule['alert']}: unknown source {source!r}")
        for name in sorted(names):
            if table.get(name) != source:
                problems.append(f"{rule['alert']}: {name} is not in the table as {source}")
    assert problems == [], "\n".join(problems)
    # the extraction itself
    assert metric_names(
        'max by (pod) (increase(cnpg_pg_stat_archiver_failed_count{job="x"}[15m])) > 0'
        ' or absent(up{job="registry-db"}) and on () time() - foo_seconds offset 1d > 26 * 3600'
    ) == {"cnpg_pg_stat_archiver_failed_count", "up", "foo_seconds"}


WORKER_PREFIX = "registry_worker_"
"""Metrics only the projection worker exports (registry.observability.worker): checked
against a real worker's scrape by tests/e2e/test_worker_observability.py."""


def check_alert_selectors(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], *, worker: bool = False
) -> None:
    """Every series selector of every alert rule selects something this server exports:
    the metric exists, each label it matches on is on the metric, and an exact match
    (``method="/registry.v1..."``) finds a series, so no alert waits on a name or label
    value nothing exports (the way ``RegistrySettlementSlow`` once waited on a method
    label the server wrote without its leading slash). ``worker``: the samples are a
    worker's scrape, and the selectors checked are those of ``registry_worker_*``
    metrics (a server's scrape checks all the others)."""
    exported: dict[str, list[dict[str, str]]] = {}
    for name, labels in samples:
        exported.setdefault(name, []).append(dict(labels))
    for name in AFTER_FIRST_VERIFICATION:
        exported.setdefault(name, [{}])
    problems = []
    for rule in alert_rules():
        labels = rule["labels"]
        assert isinstance(labels, dict)
        if "source" in labels:
            continue  # not our metrics: test_alerts_on_metrics_we_do_not_export_...
        for name, matchers in SELECTOR.findall(str(rule["expr"])):
            if name.startswith(WORKER_PREFIX) != worker:
                continue
            series = exported.get(name)
            if series is None:
                problems.append(f"{rule['alert']}: {name} is not exported")
                continue
            for label, op, value in MATCHER.findall(matchers):
                if not any(label in s for s in series):
                    problems.append(f"{rule['alert']}: {name} has no label {label}")
                elif op == "=" and not any(s.get(label) == value for s in series):
                    seen = sorted({s[label] for s in series if label in s})[:5]
                    problems.append(f"{rule['alert']}: no {name}{{{label}={value!r}}}: {seen}")
    assert problems == [], "\n".join(problems)


def test_the_verification_gauges_the_alerts_use_are_the_collectors() -> None:
    """The names in ``AFTER_FIRST_VERIFICATION`` are the ones the verification exports."""
    metrics = RegistryMetrics(process_metrics=False)
    metrics.set_verify_result(True, 7)
    exported = {name for name, _ in scrape_text(metrics.render().decode())}
    assert set(AFTER_FIRST_VERIFICATION) <= exported


def test_counters_equal_the_calls_made_and_request_ids_are_traceable(tmp_path: Path) -> None:
    port = free_port()
    with serving(tmp_path, REGISTRY_METRICS_PORT=str(port), REGISTRY_LOG_FORMAT="json") as server:
        token, _, _ = first_token(tmp_path)
        exchange_token = add_principal(server, "shanghai-exchange", "settlement", "exchange", "*")
        with (
            RegistryClient(server.address, token, attempts=1) as reg,
            RegistryClient(server.address, exchange_token, attempts=1) as exchange,
        ):
            seed_market(reg)
            caught_up(reg)
            before = calls(scrape(port), "/registry.v1.AccountService/GetBalances")
            made: Counter[str] = Counter()
            for _ in range(5):
                reg.balances(A)
                made["OK"] += 1
            for _ in range(3):
                assert rpc_error(lambda: reg.balances("NOPE-0001")).reason == "UNKNOWN_ACCOUNT"
                made["NOT_FOUND"] += 1
            with RegistryClient(
                server.address, "0" * 16 + ".no-such-secret-at-all-000000", attempts=1
            ) as stranger:
                for _ in range(2):
                    rpc_error(lambda: stranger.balances(A))
                    made["UNAUTHENTICATED"] += 1
            for _ in range(2):  # an exchange may read balances; regulator may not settle
                assert (
                    rpc_error(lambda: reg.settle_trades([trade("X", A, TRADER, 1)])).reason
                    == "ROLE_NOT_GRANTED"
                )
            # one batch: two settled, one refused for want of units, one malformed
            results = exchange.settle_trades(
                [
                    trade("T-1", A, TRADER, 10),
                    trade("T-2", A, TRADER, 10),
                    trade("T-3", A, TRADER, 10**9),
                    trade("T-4", A, TRADER, 0),
                ]
            )
            assert [r.status for r in results] == [
                settlement_pb.TRADE_STATUS_SETTLED,
                settlement_pb.TRADE_STATUS_SETTLED,
                settlement_pb.TRADE_STATUS_REFUSED,
                settlement_pb.TRADE_STATUS_REJECTED,
            ]

            # a request id given by the client comes back and is recorded with the call
            _, call = exchange.settlement.SettleTrades.with_call(
                settlement_pb.SettleTradesRequest(trades=[trade("T-5", A, TRADER, 1)]),
                metadata=(*exchange.metadata, ("x-request-id", "exchange-batch-0042")),
                timeout=10,
            )
            assert dict(call.trailing_metadata())["x-request-id"] == "exchange-batch-0042"
            refused = reg.accounts.GetAccount.with_call  # refusals echo it too
            try:
                refused(
                    account_pb.GetAccountRequest(account_id="NOPE-0001"),
                    metadata=(*reg.metadata, ("x-request-id", "lookup-7")),
                    timeout=10,
                )
            except grpc.RpcError as error:
                assert dict(error.trailing_metadata())["x-request-id"] == "lookup-7"

            samples = scrape(port)
            check_alert_selectors(samples)
        after = calls(samples, "/registry.v1.AccountService/GetBalances")
        assert {code: after.get(code, 0) - before.get(code, 0) for code in made} == made
        settle = calls(samples, "/registry.v1.SettlementService/SettleTrades")
        assert settle == {"OK": 2, "PERMISSION_DENIED": 2}
        outcomes = {
            dict(labels)["status"]: value
            for (name, labels), value in samples.items()
            if name == "registry_settlements_total"
        }
        assert outcomes == {"SETTLED": 3, "ALREADY_SETTLED": 0, "REFUSED": 1, "REJECTED": 1}
        refusals = {
            dict(labels)["reason"]: value
            for (name, labels), value in samples.items()
            if name == "registry_settlement_refusals_total"
        }
        assert refusals == {"INSUFFICIENT_UNITS": 1}
        assert (
            samples[("registry_projection_lag_events", frozenset({("projection", "accounts")}))]
            >= 0
        )

    lines = [
        json.loads(line) for line in server.stderr.read_text().splitlines() if line.startswith("{")
    ]
    [logged] = [
        line
        for line in lines
        if line.get("request_id") == "exchange-batch-0042"
        and "SettleTrades" in line.get("message", "")
    ]
    assert logged["principal"] == "shanghai-exchange/settlement"
    with sqlite3.connect(tmp_path / "registry.sqlite") as db:
        stamped = [
            json.loads(state)
            for (state,) in db.execute(
                "SELECT state FROM stored_events WHERE topic = 'registry.Transaction.Completed'"
            )
        ]
    [t5] = [s for s in stamped if s["client_id"] == "T-5"]
    assert t5["api_request_id"] == "exchange-batch-0042"


@pytest.mark.postgres
def test_the_worker_logs_in_json_when_asked(tmp_path: Path) -> None:
    """`registry project` with REGISTRY_LOG_FORMAT=json writes every line as a JSON log
    record (as the server does), so a log pipeline parses the worker's lines too."""
    with fresh_pg_database() as url:
        env = {
            **os.environ,
            "REGISTRY_DATABASE_URL": url,
            "REGISTRY_DATA_DIR": str(tmp_path),
            "REGISTRY_LOG_FORMAT": "json",
        }
        env.pop("REGISTRY_METRICS_PORT", None)
        worker = subprocess.Popen(
            [sys.executable, "-m", "registry.cli", "project"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            lines: list[str] = []
            assert worker.stderr is not None
            while time.monotonic() < deadline and not any("following new" in x for x in lines):
                line = worker.stderr.readline()
                if not line:
                    break
                lines.append(line)
        finally:
            worker.terminate()
            out, rest = worker.communicate(timeout=30)
    records = [
        json.loads(line) for line in [*lines, *rest.splitlines(keepends=True)] if line.strip()
    ]
    messages = [r["message"] for r in records]
    assert any(m.startswith("holding the projection lease") for m in messages), messages
    assert "following new events (Ctrl-C to stop)" in messages
    assert {r["logger"] for r in records if "projection lease" in r["message"]} == {
        "registry.worker"
    }
    assert out.strip() == "", out  # nothing unstructured on standard output either
