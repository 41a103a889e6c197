"""The command line as a pipeline's first stage, and the package as a typed library
(issue 21)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path: Path) -> None:
    """`registry config | head -1`: the reader closes the pipe before the command writes;
    the command stops with 141 (what a shell reports for SIGPIPE) and no traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written
    env = {**os.environ, "REGISTRY_DATA_DIR": str(tmp_path)}
    env.pop("REGISTRY_DATABASE_URL", None)
    run = subprocess.run(
        [sys.executable, "-m", "registry.cli", "config"],
        stdout=write_end,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    os.close(write_end)
    assert run.returncode == 141, run.stderr
    assert "Traceback" not in run.stderr and "BrokenPipeError" not in run.stderr, run.stderr


def test_the_package_says_it_is_typed() -> None:
    """PEP 561: without `py.typed` in the installed package, a user's mypy treats the
    typed client (`registry.client`) as untyped."""
    assert resources.files("registry").joinpath("py.typed").is_file()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["registry"]
