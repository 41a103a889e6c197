"""The compose stack's Prometheus, checked offline: its configuration and the alert
rules with Debian's ``promtool`` (``check config``, ``check rules``), the alerts'
unit tests (deploy/prometheus/alerts_test.yaml) with ``promtool test rules``, and,
without promtool, that compose.yaml mounts what the configuration names and that it
scrapes every registry process on its metrics port under the job names the alerts use.

promtool comes with Debian's ``prometheus`` package. Without it these tests skip, but
fail under CI=true: CI must run them (.ci/run installs the package and stops if it
cannot), never pass by skipping them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.files import DEPLOY, argv, built_here, services

PROMETHEUS_DIR = DEPLOY / "prometheus"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTS = PROMETHEUS_DIR / "alerts.yaml"
TEST_ALERT = PROMETHEUS_DIR / "test-alert.yaml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yaml"
INSTALL = "apt-get install prometheus"
JOBS = {"serve": "registry-server", "project": "registry-worker"}
"""The registry command a compose service runs -> the scrape job the alerts select."""


def require(tool: str) -> str:
    """The path of ``promtool`` or ``prometheus``: skip without it, fail under CI=true."""
    found = shutil.which(tool)
    if found is not None:
        return found
    message = (
        f"{tool} is not installed, so the compose stack's Prometheus configuration and "
        f"alert rules are not exercised: install it with `{INSTALL}` (Debian; it "
        "brings promtool and the prometheus server) and put it on PATH"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def promtool(*arguments: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require("promtool"), *map(str, arguments)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def loaded(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict), path
    return document


def test_without_promtool_ci_fails_where_a_desk_skips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no promtool on it
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=INSTALL):
        require("promtool")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match=INSTALL):
        require("promtool")


def test_compose_prometheus_config_and_its_rule_files_are_valid() -> None:
    """``check config`` loads the rule files too (named relative to the config, as in
    the container): both must be found and valid."""
    checked = promtool("check", "config", CONFIG)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 2 rule files found" in checked.stdout, checked.stdout
    assert f"Checking {ALERTS}" in checked.stdout, checked.stdout


def test_alert_rules_are_valid() -> None:
    checked = promtool("check", "rules", ALERTS, TEST_ALERT)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rules = sum(len(group["rules"]) for group in loaded(ALERTS)["groups"])
    assert f"SUCCESS: {rules} rules found" in checked.stdout, checked.stdout
    assert "SUCCESS: 1 rules found" in checked.stdout, checked.stdout


def test_alert_unit_tests_pass() -> None:
    tested = promtool("test", "rules", ALERTS_TEST)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout, tested.stdout


def test_alert_unit_tests_fire_the_alerts_that_matter_and_hold_others_back() -> None:
    """What alerts_test.yaml must keep covering: a missing target, slow settlement and
    a stalled chain firing with their labels and annotations, and alerts not firing."""
    firing: set[str] = set()
    silent: set[str] = set()
    for test in loaded(ALERTS_TEST)["tests"]:
        for case in test["alert_rule_test"]:
            if case["exp_alerts"]:
                assert all(a["exp_labels"] and a["exp_annotations"] for a in case["exp_alerts"])
                firing.add(case["alertname"])
            else:
                silent.add(case["alertname"])
    assert {
        "RegistryTargetMissing",
        "RegistrySettlementSlow",
        "RegistryWorkerChainStalled",
    } <= firing, firing
    assert {"RegistryTargetMissing", "RegistrySettlementSlow"} <= silent, silent
    alerts = {rule["alert"] for group in loaded(ALERTS)["groups"] for rule in group["rules"]}
    assert firing | silent <= alerts


def test_alert_unit_tests_catch_a_wrong_expectation(tmp_path: Path) -> None:
    """promtool compares the annotations exactly: a wrong value fails the run (so the
    passing run above checked something)."""
    shutil.copy(ALERTS, tmp_path / ALERTS.name)
    text = ALERTS_TEST.read_text()
    assert text.count("SettleTrades p99 is 29.8s") == 1
    (tmp_path / ALERTS_TEST.name).write_text(text.replace("29.8s", "29.9s"))
    tested = promtool("test", "rules", tmp_path / ALERTS_TEST.name)
    assert tested.returncode != 0, tested.stdout
    assert 'summary="SettleTrades p99 is 29.8s"' in tested.stdout + tested.stderr


def test_compose_mounts_the_config_and_every_rule_file_beside_it() -> None:
    compose_dir = DEPLOY / "compose"
    document = loaded(compose_dir / "compose.yaml")
    prometheus = services()["prometheus"]
    command = prometheus["command"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in command
    mounted = {
        entry["target"]: (compose_dir / document["configs"][entry["source"]]["file"]).resolve()
        for entry in prometheus["configs"]
    }
    assert mounted["/etc/prometheus/prometheus.yml"] == CONFIG.resolve()
    rule_files = loaded(CONFIG)["rule_files"]
    assert {"alerts.yaml", "test-alert.yaml"} == set(rule_files)
    for name in rule_files:
        assert mounted[f"/etc/prometheus/{name}"] == (PROMETHEUS_DIR / name).resolve()
    storage = next(arg for arg in command if arg.startswith("--storage.tsdb.path="))
    assert f"prometheus:{storage.partition('=')[2]}" in prometheus["volumes"]
    assert prometheus["networks"] == ["backend"] and "ports" not in prometheus


def test_compose_prometheus_scrapes_every_registry_process_under_the_alerts_jobs() -> None:
    """Every server and worker service, by its compose name on its REGISTRY_METRICS_PORT,
    in the job the alerts select; no target that is not one of them."""
    expected: dict[str, set[str]] = {}
    for name, service in services().items():
        if built_here(service) and argv(service)[2] in JOBS:
            port = service["environment"]["REGISTRY_METRICS_PORT"]
            expected.setdefault(JOBS[argv(service)[2]], set()).add(f"{name}:{port}")
    assert expected == {
        "registry-server": {"registry-1:9464", "registry-2:9464"},
        "registry-worker": {"worker:9464"},
    }
    scraped = {
        job["job_name"]: {t for static in job["static_configs"] for t in static["targets"]}
        for job in loaded(CONFIG)["scrape_configs"]
    }
    assert scraped == expected
    alerts = ALERTS.read_text()
    for job in scraped:
        assert f'absent(up{{job="{job}"}})' in alerts, f"no alert for a missing {job} target"
