"""The image's build stage without Docker: the build context that .dockerignore lets
through, the files the Dockerfile's builder stage copies, and its `pip wheel` (with
pyproject's build-system requirements, so the pinned grpcio-tools generates the stubs)
must make a complete wheel: stubs, migrations, data, the `registry` entry point. The
wheel, installed alone, must import and migrate a fresh store from outside the tree.

Only this project's wheel is built (`--no-deps`): the dependencies' own wheels are what
PyPI serves."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.deploy.files import ROOT, dockerfile

pytestmark = pytest.mark.slow


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(re-included?, pattern) per line, as Docker reads .dockerignore: `*` within one
    path element, `**` across any number, `!` lets back in; the last match decides."""
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        text = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(text):
            if text.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif text.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif text[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif text[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif text[i] == "[":
                end = text.index("]", i)
                regex, i = regex + text[i : end + 1], end + 1
            else:
                regex, i = regex + re.escape(text[i]), i + 1
        patterns.append((negated, re.compile(regex + r"\Z")))
    return patterns


def in_context(relative: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether Docker sends this file: a pattern matches the path or one of its parents."""
    parts = relative.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    included = True
    for negated, pattern in patterns:
        if any(pattern.match(candidate) for candidate in candidates):
            included = negated
    return included


def build_context(target: Path) -> list[str]:
    """Copy what `docker build .` would send into ``target``; return the paths."""
    patterns = dockerignore_patterns()
    sent = []
    for directory, subdirectories, files in os.walk(ROOT):
        # Not worth walking (.git, .venv, caches): .dockerignore's "*" leaves them out.
        subdirectories[:] = sorted(
            d for d in subdirectories if not d.startswith(".") and d != "__pycache__"
        )
        for name in sorted(files):
            path = Path(directory) / name
            relative = path.relative_to(ROOT).as_posix()
            if in_context(relative, patterns):
                sent.append(relative)
                (target / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / relative)
    return sent


def builder_copies(context: Path, workdir: Path) -> None:
    """The builder stage's COPY instructions, from the context into its WORKDIR."""
    for instruction in dockerfile():
        if instruction.stage != "builder" or instruction.keyword != "COPY":
            continue
        *sources, destination = instruction.arguments.split()
        for source in sources:
            origin = context / source.rstrip("/")
            into = workdir / destination
            if origin.is_dir():
                shutil.copytree(origin, into / origin.name if destination.endswith("./") else into)
            else:
                into.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, into / origin.name)


def test_dockerignore_matcher_reads_patterns_as_docker_does() -> None:
    patterns = dockerignore_patterns()
    assert in_context("registry/cli/app.py", patterns)
    assert in_context("protos/registry/v1/common.proto", patterns)
    assert not in_context("registry/__pycache__/cli.cpython-311.pyc", patterns)
    assert not in_context("registry/v1/common_pb2.py", patterns)
    assert not in_context("tests/conftest.py", patterns)
    assert not in_context("registry-data/registry.sqlite", patterns)
    assert not in_context("deploy/compose/secrets/ledger-signing-key.pem", patterns)


def test_the_build_stage_makes_a_complete_wheel_that_runs_alone(tmp_path: Path) -> None:
    context, workdir, wheels = tmp_path / "context", tmp_path / "src", tmp_path / "wheels"
    sent = build_context(context)
    assert not [p for p in sent if p.startswith(("tests/", "bench/", "deploy/", "docs/"))]
    assert not [p for p in sent if re.search(r"_pb2(_grpc)?\.pyi?$", p)], (
        "generated stubs must be made by the build, not copied from a developer's tree"
    )
    builder_copies(context, workdir)
    (run,) = [i.arguments for i in dockerfile() if i.stage == "builder" and i.keyword == "RUN"]
    assert run == "pip wheel --wheel-dir /wheels ."
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "PYTHON"))}
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--wheel-dir", str(wheels), "."],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = wheels.glob("carbon_registry-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "registry/cli/app.py",
        "registry/cli/health.py",
        "registry/settings.py",
        "registry/bootstrap.py",
        "services/server.py",
        "registry/v1/account_service_pb2.py",
        "registry/v1/account_service_pb2_grpc.py",
        "migrations/env.py",
        "migrations/script.py.mako",
    ):
        assert required in names, required
    assert any(n.startswith("migrations/versions/") for n in names)
    assert any(n.startswith("registry/data/") and n.endswith(".csv") for n in names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "registry = registry.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

    site = tmp_path / "site"
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--target",
            str(site),
            str(wheel),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    # From outside the tree, the wheel's packages first (its dependencies from here).
    alone = {
        **env,
        "PYTHONPATH": str(site),
        "REGISTRY_DATABASE_URL": f"sqlite:///{tmp_path / 'store.sqlite'}",
    }
    script = (
        "import registry, services, migrations, sys\n"
        "assert all(m.__file__.startswith(sys.argv[1]) for m in "
        "(registry, services, migrations)), registry.__file__\n"
        "from registry.cli import main\n"
        "sys.exit(main(['migrate']))\n"
    )
    migrated = subprocess.run(
        [sys.executable, "-c", script, str(site)],
        cwd=tmp_path,
        env=alone,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert "migrated to head" in migrated.stdout
