""".ci/run lets a failed nginx install be seen: it tries ``apt-get install``, then
``apt-get update`` and install again, and when both fail prints apt-get's words and why,
and stops non-zero before running anything else (it used to hide the failure, ``|| true``
with the output sent to /dev/null, and go on to a suite whose nginx test then skipped).

Run against a stand-in ``apt-get`` that fails (first on the PATH, which lacks nginx), so
nothing is installed; the script is the real one, copied into an empty directory so that,
should it go on, it builds no venv in (and runs no suite of) this checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PATH = "/usr/bin:/bin"


def test_a_failed_nginx_install_stops_ci_and_says_why(tmp_path: Path) -> None:
    if shutil.which("nginx", path=SYSTEM_PATH) is not None:
        pytest.skip(f"nginx is on {SYSTEM_PATH}: the script would not try to install it")
    calls = tmp_path / "calls"
    apt_get = tmp_path / "apt-get"
    apt_get.write_text(
        f'#!/bin/sh\necho "$*" >> {calls}\n'
        'echo "E: Unable to locate package nginx-light" >&2\nexit 100\n'
    )
    apt_get.chmod(0o755)
    script = tmp_path / "checkout" / ".ci" / "run"
    script.parent.mkdir(parents=True)
    shutil.copy(ROOT / ".ci" / "run", script)
    done = subprocess.run(
        ["bash", str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PATH": f"{tmp_path}:{SYSTEM_PATH}"},
    )
    assert done.returncode == 1, done
    assert calls.read_text().splitlines() == ["install -y -q nginx-light", "update -q"], (
        calls.read_text()
    )
    assert "E: Unable to locate package nginx-light" in done.stderr
    assert "could not install nginx-light" in done.stderr
    assert "pytest" not in done.stdout + done.stderr  # stopped before the suite
