"""The compose stack's Prometheus end to end: a real ``prometheus`` (Debian's package)
on deploy/prometheus/prometheus.yml, with the targets turned into a real ``registry
serve``'s metrics port on 127.0.0.1 and the intervals cut to a second, scrapes the
server (the target is ``up``, ``up{job="registry-server"}`` is 1), evaluates every rule
of alerts.yaml without an error, and fires test-alert.yaml's RegistryComposeTestAlert:
what ``docker compose`` shows, without Docker. Skipped without prometheus, failed under
CI=true (tests/deploy/test_prometheus_rules.py, ``require``)."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from tests.deploy.test_prometheus_rules import CONFIG, PROMETHEUS_DIR, require
from tests.e2e.test_server_process import free_port, serving

pytestmark = pytest.mark.slow

JOB = "registry-server"
TEST_ALERT = "RegistryComposeTestAlert"
RUNTIME_SECONDS = 15.0
"""The most the prometheus process may run: it scrapes and evaluates every second."""
T = TypeVar("T")


def config_for(metrics_port: int) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with the server job's targets replaced by this
    server, the worker's job dropped (no worker runs here), 1 s intervals, and the rule
    files by their absolute paths."""
    config: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    jobs[JOB]["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_port}"]}]
    config["scrape_configs"] = [jobs[JOB]]
    return config


@contextmanager
def prometheus(directory: Path, config: dict[str, Any]) -> Iterator[str]:
    """A prometheus process on ``config`` and a free port: its base URL."""
    binary = require("prometheus")
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with (directory / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def api(base: str, path: str, **query: str) -> Any:
    """The ``data`` of a Prometheus HTTP API answer (status "success")."""
    url = f"{base}{path}?{urllib.parse.urlencode(query)}"
    with urllib.request.urlopen(url, timeout=5) as response:
        answer = json.load(response)
    assert answer["status"] == "success", answer
    return answer["data"]


def eventually(what: str, deadline: float, probe: Callable[[], T | None], log: Path) -> T:
    """Poll ``probe`` until it returns something (connection errors count as nothing
    yet) or the deadline passes."""
    while True:
        try:
            found = probe()
        except OSError:
            found = None
        if found is not None:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"prometheus: {what} not seen in time; its log:\n{log.read_text()}")
        time.sleep(0.2)


def test_prometheus_scrapes_a_real_server_and_fires_the_test_alert(tmp_path: Path) -> None:
    require("prometheus")
    metrics_port = free_port()
    (tmp_path / "registry").mkdir()
    (tmp_path / "prometheus").mkdir()
    log = tmp_path / "prometheus" / "prometheus.log"
    with serving(tmp_path / "registry", REGISTRY_METRICS_PORT=str(metrics_port)):
        started = time.monotonic()
        deadline = started + RUNTIME_SECONDS - 3
        with prometheus(tmp_path / "prometheus", config_for(metrics_port)) as base:

            def target_up() -> dict[str, Any] | None:
                targets = api(base, "/api/v1/targets")["activeTargets"]
                ours = [t for t in targets if t["labels"]["job"] == JOB]
                assert len(ours) <= 1, targets  # none until discovery has run
                return ours[0] if ours and ours[0]["health"] == "up" else None

            target = eventually("the server's target up", deadline, target_up, log)
            assert target["labels"]["instance"] == f"127.0.0.1:{metrics_port}"
            assert target["scrapeUrl"] == f"http://127.0.0.1:{metrics_port}/metrics"
            assert target["lastError"] == ""

            def up_is_one() -> list[Any] | None:
                result = api(base, "/api/v1/query", query=f'up{{job="{JOB}"}}')["result"]
                return result or None

            (sample,) = eventually("up{job=...}", deadline, up_is_one, log)
            assert sample["metric"]["instance"] == f"127.0.0.1:{metrics_port}"
            assert sample["value"][1] == "1"

            def test_alert_firing() -> dict[str, Any] | None:
                alerts = api(base, "/api/v1/alerts")["alerts"]
                found = [a for a in alerts if a["labels"]["alertname"] == TEST_ALERT]
                return found[0] if found and found[0]["state"] == "firing" else None

            alert = eventually(f"{TEST_ALERT} firing", deadline, test_alert_firing, log)
            assert alert["labels"] == {
                "alertname": TEST_ALERT,
                "severity": "none",
                "service": "registry",
                "source": "prometheus",
            }
            assert "loaded and evaluated" in alert["annotations"]["summary"]

            def rules_evaluated() -> list[dict[str, Any]] | None:
                groups = api(base, "/api/v1/rules")["groups"]
                rules = [rule for group in groups for rule in group["rules"]]
                return None if any(r["health"] == "unknown" for r in rules) else rules

            rules = eventually("every rule evaluated", deadline, rules_evaluated, log)
            real = yaml.safe_load((PROMETHEUS_DIR / "alerts.yaml").read_text())
            names = {rule["alert"] for group in real["groups"] for rule in group["rules"]}
            assert {rule["name"] for rule in rules} == names | {TEST_ALERT}
            broken = {r["name"]: r["lastError"] for r in rules if r["health"] != "ok"}
            assert not broken, broken
            # A fresh, healthy server fires none of the real alerts (some are pending:
            # no worker or database target here, for minutes they do not last).
            firing = {
                a["labels"]["alertname"]
                for a in api(base, "/api/v1/alerts")["alerts"]
                if a["state"] == "firing"
            }
            assert firing == {TEST_ALERT}
        assert time.monotonic() - started < RUNTIME_SECONDS
