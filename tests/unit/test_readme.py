"""The README's test command and .ci/run must not drift apart."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(.+?)\n```", text)


def test_readme_has_exactly_two_setup_commands() -> None:
    commands = readme_commands()
    assert len(commands) == 2
    assert "registry demo" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run's last command is the README's, word for word; and lint (ruff) and types
    (mypy) are steps of it, before the suite, not tests inside it."""
    command = readme_commands()[1]
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    assert ci[-1] == command
    steps = [step.strip() for step in command.split("&&")]
    assert steps[-1] == ".venv/bin/python -m pytest -q"
    assert steps.index(".venv/bin/ruff check .") < len(steps) - 1
    assert steps.index(".venv/bin/mypy") < len(steps) - 1
