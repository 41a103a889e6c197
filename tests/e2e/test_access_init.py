"""`registry access init` as a process: the founding of a registry's access in one
recorded step (two administrators and the first regulators, each token printed once),
refused afterwards, and refusing a founding that breaks separation of duties."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from registry.bootstrap import build_registry
from registry.domain.access import Role
from registry.domain.transactions import Principal
from registry.settings import Settings
from tests.e2e.test_server_process import registry_command


def init(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env["REGISTRY_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [*registry_command(), "access", "init", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_founding_is_one_step_and_happens_once(tmp_path: Path) -> None:
    founded = init(
        tmp_path,
        "--party",
        "mee",
        "--name",
        "admin",
        "--admin",
        "mee/admin-2",
        "--regulator",
        "mee/regulator-li",
        "--regulator",
        "mee/regulator-wang",
        "--reason",
        "founding ceremony 2026-06-01",
    )
    assert founded.returncode == 0, founded.stderr
    lines = founded.stdout.splitlines()
    assert lines[-2] == "mee/admin (admin): token (shown once):"  # the last line: its token
    for who in (
        "mee/admin-2 (admin)",
        "mee/regulator-li (regulator)",
        "mee/regulator-wang (regulator)",
    ):
        assert f"{who}: token (shown once):" in lines
    assert "one administrator" not in founded.stderr

    registry = build_registry(Settings(f"sqlite:///{tmp_path / 'registry.sqlite'}"))
    try:
        acl = registry.access.current()
        grants = {(str(g.principal), g.role, g.granted_by, g.reason) for g in acl.all_grants()}
        assert grants == {
            (p, role, "system/bootstrap", "founding ceremony 2026-06-01")
            for p, role in (
                ("mee/admin", Role.ADMIN),
                ("mee/admin-2", Role.ADMIN),
                ("mee/regulator-li", Role.REGULATOR),
                ("mee/regulator-wang", Role.REGULATOR),
            )
        }
        assert acl.principal_for_token(lines[-1]) == Principal("mee", "admin")
    finally:
        registry.close()

    again = init(tmp_path, "--party", "mee", "--name", "other")
    assert again.returncode == 6 and "principals exist already" in again.stderr


def test_a_founding_that_breaks_separation_of_duties_is_refused_whole(tmp_path: Path) -> None:
    for args, reason, status in (
        (["--regulator", "mee/admin"], "SEPARATION_OF_DUTIES", 6),  # refused
        (["--regulator", "system/root"], "RESERVED_PARTY", 5),  # invalid
        (["--admin", "no-slash"], "PARTY/NAME", 5),
    ):
        refused = init(tmp_path, "--party", "mee", "--name", "admin", *args)
        assert refused.returncode == status and reason in refused.stderr, refused.stderr
    alone = init(tmp_path, "--party", "mee", "--name", "admin")  # nothing was written
    assert alone.returncode == 0, alone.stderr
    assert "one administrator" in alone.stderr  # warned: grants need a second one
