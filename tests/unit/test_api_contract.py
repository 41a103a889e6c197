"""The API contract: buf STANDARD lint, stubs that match the protos, the error table.

buf comes from the npm registry (pinned) into ``.tools/`` on first use; the tests need
node and npm, which CI machines have.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import grpc
import pytest

from registry.domain.errors import REFUSAL_TYPES
from services.errors import CODES, code_for

ROOT = Path(__file__).resolve().parents[2]
BUF_VERSION = "1.75.0"
TOOLS = ROOT / ".tools"


def buf() -> Path:
    binary = TOOLS / "node_modules" / ".bin" / "buf"
    if not binary.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is needed to install buf (npm install @bufbuild/buf)")
        subprocess.run(
            [
                npm,
                "install",
                "--silent",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(TOOLS),
                f"@bufbuild/buf@{BUF_VERSION}",
            ],
            check=True,
            timeout=300,
        )
    return binary


def test_protos_pass_buf_standard_lint() -> None:
    done = subprocess.run(
        [str(buf()), "lint"],
        cwd=ROOT / "protos",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_installed_stubs_match_the_protos(tmp_path: Path) -> None:
    """Generated code is made at install time; after editing a proto, reinstall."""
    from grpc_tools import protoc

    include = Path(protoc.__file__).parent / "_proto"
    protos = ROOT / "protos"
    sources = sorted(str(p.relative_to(protos)) for p in protos.rglob("*.proto"))
    assert (
        protoc.main(
            [
                "protoc",
                f"-I{protos}",
                f"-I{include}",
                f"--python_out={tmp_path}",
                f"--grpc_python_out={tmp_path}",
                *sources,
            ]
        )
        == 0
    )
    fresh = sorted((tmp_path / "registry" / "v1").glob("*_pb2*.py"))
    assert fresh, "protoc generated nothing"
    for generated in fresh:
        installed = ROOT / "registry" / "v1" / generated.name
        assert installed.exists() and installed.read_bytes() == generated.read_bytes(), (
            f"{installed.name} is stale: run `pip install -e .` to regenerate the stubs"
        )


def test_the_readme_error_table_matches_the_mapping() -> None:
    """Every domain reason is documented with the status code the server returns."""
    readme = (ROOT / "README.md").read_text()
    rows = dict(re.findall(r"^\| `([A-Z_]+)` \| `([A-Z_]+)` \|", readme, re.MULTILINE))
    for reason, cls in REFUSAL_TYPES.items():
        if cls in CODES:  # the branch names (REFUSED, NOT_FOUND, ...) are not reasons
            continue
        assert reason in rows, f"README error table lacks {reason}"
        expected = code_for(cls("x", reason=reason)).name
        assert rows[reason] == expected, (
            f"{reason}: README says {rows[reason]}, server returns {expected}"
        )


NOT_API_REASONS = {"DATABASE_NOT_MIGRATED", "INVALID_CONFIGURATION", "INVALID_LEDGER_KEY"}
"""Start-up and CLI errors: never returned by a call."""


def test_every_reason_the_code_can_raise_is_documented() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z_]+)` \| `[A-Z_]+` \|", readme, re.MULTILINE))
    raised: set[str] = set()
    for source in [
        *ROOT.joinpath("registry").rglob("*.py"),
        *ROOT.joinpath("services").rglob("*.py"),
    ]:
        if "_pb2" in source.name:
            continue
        raised |= set(re.findall(r'reason\s*=\s*"([A-Z_]+)"', source.read_text()))
        raised |= set(re.findall(r'StatusCode\.[A-Z_]+, "([A-Z_]+)"', source.read_text()))
    assert raised - NOT_API_REASONS - documented == set()


def test_every_branch_of_the_error_tree_has_a_status_code() -> None:
    for cls in set(REFUSAL_TYPES.values()):
        assert code_for(cls("x")) is not grpc.StatusCode.INTERNAL, cls


def test_the_readme_shows_the_policy_table_as_enforced() -> None:
    from services.policy import policy_table

    assert policy_table() in (ROOT / "README.md").read_text()
