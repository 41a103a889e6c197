"""The README's test command and .ci/run must not drift apart, and the docs a
newcomer reads first say only what is true in a fresh clone."""

import argparse
import contextlib
import io
import re
import subprocess
from pathlib import Path

import pytest

from registry import cli

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
    """.ci/run's last command is the README's, word for word; and lint and format (ruff)
    and types (mypy) are steps of it, before the suite, not tests inside it."""
    command = readme_commands()[1]
    ci = [
        line
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert ci[-1] == command
    steps = [step.strip() for step in command.split("&&")]
    assert steps[-1] == ".venv/bin/python -m pytest -q"
    assert steps.index(".venv/bin/ruff check .") < len(steps) - 1
    assert steps.index(".venv/bin/ruff format --check .") < len(steps) - 1
    assert steps.index(".venv/bin/mypy") < len(steps) - 1


def make_recipes() -> dict[str, list[str]]:
    """The Makefile's targets -> their recipe lines (``$(PY)`` expanded)."""
    recipes: dict[str, list[str]] = {}
    target = ""
    for line in (ROOT / "Makefile").read_text().splitlines():
        if line.startswith("\t") and target:
            recipes[target].append(line.strip().replace("$(PY)", ".venv/bin/python"))
        elif re.match(r"^[a-z0-9-]+:", line):
            target = line.split(":", 1)[0]
            recipes[target] = []
    return recipes


def test_make_test_runs_the_readme_test_command_steps() -> None:
    """`make test` (after `make install`) runs every step of the README's test command,
    and `make help` lists every target, so the shortcuts cannot drift from CI."""
    recipes = make_recipes()
    steps = [step.strip() for step in readme_commands()[1].split("&&")]
    install = " && ".join(steps[:2])
    assert recipes["install"] == [install]
    checks = [s for r in ("lint", "typecheck", "check", "test") for s in recipes[r]]
    assert set(steps[2:]) <= set(checks), (steps[2:], checks)
    text = (ROOT / "Makefile").read_text()
    assert all(
        f"{target}:" in text and "## " in text.split(f"\n{target}:")[1].split("\n")[0]
        for target in recipes
    ), "every target has a '## ' description for make help"


# The docs a newcomer reads first must hold in a fresh clone (issue 16): no pointer
# outside the repository, every path the architecture page names exists, and every
# `registry <command>` the README shows is a command of the installed CLI.

TOP_LEVEL = (
    "registry/",
    "services/",
    "migrations/",
    "protos/",
    "clients/",
    "deploy/",
    "bench/",
    "tests/",
    "docs/",
    "setup.py",
    "pyproject.toml",
    "alembic.ini",
)


def tracked_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    return [ROOT / name for name in listed.split("\0") if name]


def test_nothing_in_the_repository_points_outside_it() -> None:
    """Before issue 16 the README's first pointer was a design brief in a directory
    beside the clone, which a clone does not have (a bench docstring named its notes)."""
    sibling = "../" + "shared"
    outside = []
    for path in tracked_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, IsADirectoryError, FileNotFoundError):
            continue
        outside += [
            f"{path.relative_to(ROOT)}:{n}"
            for n, line in enumerate(text.splitlines(), 1)
            if sibling in line
        ]
    assert not outside, outside


def named_paths(text: str) -> list[str]:
    """The repository paths a page names: backticked `dir/file` spans; in a table row
    whose first cell is a directory, bare `file.py` names are relative to it; in a
    fenced block, the first word of each line."""
    names: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            word = line.split(" ", 1)[0]
            if word.startswith(TOP_LEVEL):
                names.append(word)
            continue
        base = re.match(r"\| `([\w/]+/)` \|", line)
        for span in re.findall(r"`([\w./*-]+)`", line):
            if span.startswith(TOP_LEVEL):
                names.append(span)
            elif base and (span.endswith((".py", "/")) and "/" not in span.rstrip("/")):
                names.append(base.group(1) + span)
    return names


def test_every_path_the_architecture_page_names_exists() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    names = named_paths(page)
    assert len(names) > 50, names  # the page still names the code it describes
    missing = [name for name in names if not list(ROOT.glob(name.rstrip("/")))]
    assert not missing, missing


def test_the_readme_layout_names_what_exists_and_every_top_level_directory() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = text[text.index("## Layout") :]
    names = named_paths(layout)
    missing = [name for name in names if not list(ROOT.glob(name.rstrip("/")))]
    assert not missing, missing
    tracked_dirs = {
        p.relative_to(ROOT).parts[0]
        for p in tracked_files()
        if len(p.relative_to(ROOT).parts) > 1 and not p.name.startswith(".")
    }
    tracked_dirs -= {".ci"}
    assert {name.split("/")[0] for name in names} >= tracked_dirs
    assert "tests/" in layout and "deploy" in layout.split("tests/", 1)[1].splitlines()[0]


def test_the_domain_page_links_resolve() -> None:
    page = (ROOT / "docs" / "domain.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([\w.-]+\.md)(?:#[\w-]+)?\)", page)
    assert links and all((ROOT / "docs" / link).exists() for link in links), links


def subcommands(*words: str) -> set[str]:
    """The subcommands of `registry WORDS`, read from the CLI's own parser."""
    parser = cli.build_parser()
    for word in words:
        parser = _subparsers(parser)[word]
    return set(_subparsers(parser))


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_registry_command_the_readme_shows_exists() -> None:
    """Each `registry CMD [SUB]` in the README's code (spans and blocks) is a command of
    the CLI; `registry health` must be in the commands table (issue 16 found it missing)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    code = "\n".join(
        re.findall(r"```\w*\n(.+?)```", text, re.DOTALL) + re.findall(r"`([^`\n]+)`", text)
    )
    shown = set(
        re.findall(r"(?:^|\$\()registry ([a-z][a-z-]+)(?: ([a-z][a-z-]+))?", code, re.MULTILINE)
    )
    top = subcommands()
    unknown = [f"{a} {b}".strip() for a, b in shown if a not in top]
    for first, second in shown:
        if first in top and first != "bench" and second:
            subs = subcommands(first)
            if subs and second not in subs:
                unknown.append(f"{first} {second}")
    assert not unknown, unknown
    table = text[text.index("## Commands") : text.index("## gRPC API")]
    assert "| `registry health" in table


def help_text(words: list[str]) -> tuple[int | str | None, str]:
    out = io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(io.StringIO()),
        pytest.raises(SystemExit) as exit_,
    ):
        cli.main([*words, "--help"])
    return exit_.value.code, out.getvalue()


def test_every_option_the_commands_table_shows_is_in_the_commands_help() -> None:
    """Each `--option` of a `registry CMD [SUB] ...` span of the commands table is one
    `registry CMD [SUB] --help` lists."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text[text.index("## Commands") : text.index("## gRPC API")]
    checked, missing = 0, []
    for row in table.splitlines():
        if not row.startswith("| `registry"):
            continue  # the prose around the table (`registry COMMAND --help`, ...)
        for span in re.findall(r"`(registry [^`]+)`", row.split(" | ")[0]):
            words = span.split()
            command = [words[1]]
            if words[1] == "bench":  # its own parser; `registry bench --help`: issue 16
                continue
            code, shown = help_text(command)
            if len(words) > 2 and re.fullmatch(r"[a-z-]+(\\\|[a-z-]+)*", words[2]):
                sub = words[2].split("\\|")[0]
                if sub in subcommands(*command):
                    command.append(sub)
                    code, shown = help_text(command)
            assert code == 0, command
            for option in re.findall(r"--[a-z][a-z-]*", span):
                checked += 1
                if option not in shown:
                    missing.append(f"{' '.join(command)} {option}")
    assert checked > 30 and not missing, missing
