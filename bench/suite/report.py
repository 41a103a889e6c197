"""One table and one JSON document per run, and the check that a run produced them.

Each row is one figure of the registry with its latency, the peak memory and CPU of
every process in that scenario, the raw baseline's figure for the same work where
there is one, and the targets it is held to, each marked PASS or FAIL.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = "registry-bench/1"
SCENARIOS = (
    "settle_single_1",
    "settle_single_concurrent",
    "settle_batch_100",
    "settle_batch_1000",
    "settle_inprocess_1000",
    "get_balances_concurrent",
    "settle_single_open_loop",
    "get_balances_open_loop",
    "national_year",
    "national_year_scaled",
    "command_short_history",
    "command_long_history",
    "stream_events",
    "projection_catch_up",
    "projection_rebuild",
    "server_memory",
)
"""Every run has one row per key, in this order (national_year_scaled only with
``--year-scale`` above 1: see ``required``)."""
SCALED_YEAR = "national_year_scaled"
WITH_RAW = (
    "settle_single_1",
    "settle_single_concurrent",
    "settle_batch_100",
    "settle_batch_1000",
    "stream_events",
)
DOC_BEGIN = "<!-- bench-table:begin -->"
DOC_END = "<!-- bench-table:end -->"


@dataclass
class Target:
    text: str
    """The target as stated, e.g. '>= 5,000 trades/s'."""
    metric: str
    """Which number of the row it is held to: value, p99_ms, ratio_to_raw, ..."""
    op: str
    """'>=', '<=' or '<'."""
    threshold: float | None
    """None: a threshold computed in the run (``relative_target``) whose reference
    figure was missing; the target then fails."""
    measured: float | None = None
    passed: bool | None = None
    basis: str = ""
    """How a threshold computed in the run was computed ("": stated in the issue)."""

    def evaluate(self, row: Row) -> None:
        value = row.metric(self.metric)
        self.measured = value
        if (
            value is None
            or not math.isfinite(value)
            or self.threshold is None
            or not math.isfinite(self.threshold)
        ):
            self.passed = False
        elif self.op == ">=":
            self.passed = value >= self.threshold
        elif self.op == "<=":
            self.passed = value <= self.threshold
        else:
            self.passed = value < self.threshold


@dataclass
class Row:
    key: str
    title: str
    value: float
    unit: str
    p50_ms: float | None = None
    p99_ms: float | None = None
    count: int | None = None
    """Items measured (trades, calls, events)."""
    seconds: float | None = None
    raw_value: float | None = None
    """The raw baseline's figure for the same work, same unit."""
    ratio_to_raw: float | None = None
    peak_mib: dict[str, float] = field(default_factory=dict)
    """Peak resident memory per process (server, worker: the whole process tree; clients:
    the largest client process)."""
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def metric(self, name: str) -> float | None:
        value = (
            getattr(self, name, None)
            if name in self.__dataclass_fields__
            else self.details.get(name)
        )
        return None if value is None else float(value)

    def evaluate(self) -> None:
        if self.raw_value:
            self.ratio_to_raw = round(self.value / self.raw_value, 3)
        for target in self.targets:
            target.evaluate(self)


def relative_target(
    text: str, metric: str, op: str, factor: float, reference: Row | None
) -> Target:
    """A target held to ``factor`` times the same metric of another row of the run (the
    scaled year: < 1.2 x scale times the 1x year's seconds). No reference row, or no
    positive figure in it, leaves the threshold None, and the target fails."""
    figure = None if reference is None else reference.metric(metric)
    if reference is None or figure is None or not math.isfinite(figure) or figure <= 0:
        where = "no reference row" if reference is None else f"{reference.key}.{metric} {figure}"
        return Target(text, metric, op, None, basis=f"{factor:g} x {where}: no threshold")
    basis = f"{factor:g} x {reference.key}.{metric} {figure:g}"
    return Target(text, metric, op, round(factor * figure, 2), basis=basis)


def percentile_ms(values: Sequence[float], pct: float) -> float | None:
    """The pct-th percentile of seconds, in ms (nearest rank on the sorted values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, math.ceil(pct / 100 * len(ordered)) - 1)
    return round(ordered[rank] * 1000, 2)


def median_ms(values: Sequence[float]) -> float | None:
    return round(statistics.median(values) * 1000, 3) if values else None


# -- the table ---------------------------------------------------------------------------


def _number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    if digits == 0 and abs(value) >= 10:
        return f"{value:,.0f}"
    return f"{value:,.{max(digits, 1)}f}"


def _measured(row: Row) -> str:
    if row.unit == "s":
        return f"{row.value:,.1f} s"
    if row.unit == "x":
        return f"{row.value:.2f}x"
    if row.unit == "%":
        return f"{row.value:+.1f} %"
    return f"{_number(row.value)} {row.unit}"


def _per_process(values: dict[str, float], keys: Sequence[str], digits: int) -> str:
    return " / ".join("—" if values.get(k) is None else f"{values[k]:.{digits}f}" for k in keys)


def _targets(row: Row) -> tuple[str, str]:
    if not row.targets:
        return "—", ""
    texts = "; ".join(t.text for t in row.targets)
    results = " ".join("PASS" if t.passed else "FAIL" for t in row.targets)
    return texts, results


def table(rows: Sequence[Row]) -> str:
    """A Markdown table (readable as plain text too)."""
    header = [
        "scenario",
        "measured",
        "p50 ms",
        "p99 ms",
        "raw baseline",
        "vs raw",
        "peak MiB srv/wrk/cli",
        "CPU s srv/wrk/cli/pg/all",
        "target",
        "result",
    ]
    lines = [header]
    for row in rows:
        target, result = _targets(row)
        lines.append(
            [
                row.title,
                _measured(row),
                _number(row.p50_ms, 1),
                _number(row.p99_ms, 1),
                "—" if row.raw_value is None else f"{_number(row.raw_value)} {row.unit}",
                "—" if row.ratio_to_raw is None else f"{row.ratio_to_raw:.2f}",
                _per_process(row.peak_mib, ("server", "worker", "clients"), 0),
                _per_process(
                    row.cpu_seconds, ("server", "worker", "clients", "postgres", "machine"), 1
                ),
                target,
                result,
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for number, line in enumerate(lines):
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
        if number == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


# -- JSON --------------------------------------------------------------------------------


def document(rows: Sequence[Row], **sections: Any) -> dict[str, Any]:
    targets = [t for row in rows for t in row.targets]
    return {
        "schema": SCHEMA,
        **sections,
        "rows": [asdict(row) for row in rows],
        "summary": {
            "targets": len(targets),
            "passed": sum(1 for t in targets if t.passed),
            "failed": sum(1 for t in targets if not t.passed),
        },
    }


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def required(doc: dict[str, Any]) -> list[str]:
    """The rows a run must have: every scenario, the scaled year only when the run's
    settings asked for one (``year_scale`` above 1; runs before it had none)."""
    settings = doc.get("settings")
    scale = settings.get("year_scale", 1) if isinstance(settings, dict) else 1
    scaled = _is_number(scale) and scale > 1
    return [key for key in SCENARIOS if key != SCALED_YEAR or scaled]


def validate(doc: dict[str, Any]) -> list[str]:
    """What is missing or malformed in a run's JSON (empty: it is complete). Checks that
    every scenario produced a figure, not that any target was met."""
    problems = []
    if doc.get("schema") != SCHEMA:
        problems.append(f"schema is {doc.get('schema')!r}, not {SCHEMA!r}")
    rows = {row.get("key"): row for row in doc.get("rows", []) if isinstance(row, dict)}
    expected = required(doc)
    for key in [*expected, *(k for k in SCENARIOS if k in rows and k not in expected)]:
        row = rows.get(key)
        if row is None:
            problems.append(f"no row {key}")
            continue
        if not _is_number(row.get("value")) or row["value"] < 0:
            problems.append(f"{key}: value {row.get('value')!r} is not a number")
        if key != "server_memory" and not row["value"] > 0:
            problems.append(f"{key}: value is {row['value']}")
        if key in WITH_RAW and not (
            _is_number(row.get("raw_value")) and _is_number(row.get("ratio_to_raw"))
        ):
            problems.append(f"{key}: no raw baseline figure")
        for target in row.get("targets", []):
            if not isinstance(target.get("passed"), bool):
                problems.append(f"{key}: target {target.get('text')!r} was not evaluated")
        if not row.get("peak_mib"):
            problems.append(f"{key}: no peak memory")
        if key == SCALED_YEAR:
            details = row.get("details") or {}
            if not _is_number((row.get("peak_mib") or {}).get("server")):
                problems.append(f"{key}: no peak server memory")
            if not _is_number(details.get("server_rss_growth_mib")):
                problems.append(f"{key}: no server memory growth")
    for section in ("machine", "settings", "data"):
        if not isinstance(doc.get(section), dict):
            problems.append(f"no {section} section")
    return problems


def update_doc(path: Path, text: str) -> None:
    """Replace what is between the table markers of ``path`` with ``text``."""
    content = path.read_text()
    pattern = re.compile(re.escape(DOC_BEGIN) + ".*?" + re.escape(DOC_END), re.DOTALL)
    if not pattern.search(content):
        raise ValueError(f"{path} has no {DOC_BEGIN} ... {DOC_END} section")
    path.write_text(pattern.sub(lambda _: f"{DOC_BEGIN}\n{text}\n{DOC_END}", content))
