"""Throwaway PostgreSQL 15 clusters for tests that need a server of their own: one
with TLS only (test_database_tls.py), a primary and its ``pg_basebackup`` standby
(test_read_replica.py), the compose stack's two database services
(tests/deploy/test_compose_commands.py).

The shared server on 127.0.0.1:5432 cannot be reconfigured or replicated by a test;
these clusters live in a temporary directory and are stopped and removed when the
workspace closes. PostgreSQL refuses to run as root, so when the tests do (as CI
does) its programs run as the ``postgres`` user, and the workspace belongs to it.

A cluster that cannot be made or started fails the test under ``CI=true`` (CI must
exercise it, never pass by skipping) and skips it elsewhere, with the tool's output
and the server logs.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NoReturn

import pytest

PG_BIN = Path(os.environ.get("REGISTRY_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
SERVER_USER = "postgres"
FAST = ("fsync = off", "synchronous_commit = off", "full_page_writes = off")
"""Durability a throwaway cluster does without (it is removed after the test)."""


def unavailable(message: str) -> NoReturn:
    """Fail under CI=true, skip elsewhere."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def as_root() -> bool:
    return os.geteuid() == 0


def as_server_user() -> dict[str, Any]:
    """``subprocess`` arguments that run a program as ``postgres`` when the tests run
    as root, and as the current user otherwise; the environment is kept as given."""
    if not as_root():
        return {}
    return {"user": SERVER_USER, "group": SERVER_USER, "extra_groups": []}


def give_to_server_user(path: Path) -> None:
    """``path`` and everything under it owned by ``postgres`` (as root only)."""
    if not as_root():
        return
    shutil.chown(path, SERVER_USER, SERVER_USER)
    for inner in path.rglob("*"):
        shutil.chown(inner, SERVER_USER, SERVER_USER)


@dataclass
class Workspace:
    """A temporary directory the server user owns, and the clusters started in it."""

    base: Path
    purpose: str
    started: list[Path] = field(default_factory=list)

    def logs(self) -> str:
        return "".join(
            f"\n--- {log.name}\n{log.read_text(errors='replace')[-4000:]}"
            for log in sorted(self.base.rglob("*.log"))
        )

    def run(
        self, tool: str, *args: str, env: Mapping[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """``PG_BIN/tool args`` as the server user; a failure is ``unavailable``."""
        try:
            return subprocess.run(
                [str(PG_BIN / tool), *args],
                check=True,
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=self.base,
                env=dict(env) if env is not None else None,
                **as_server_user(),
            )
        except (OSError, subprocess.SubprocessError) as error:
            output = f"{getattr(error, 'stdout', '') or ''}{getattr(error, 'stderr', '') or ''}"
            unavailable(f"cannot start {self.purpose}: {error}\n{output}{self.logs()}")

    def initdb(self, data: Path, *args: str, user: str = "root", auth: str = "trust") -> None:
        """A new cluster whose superuser is ``user``."""
        self.run(
            "initdb", "-D", str(data), "-U", user, "-A", auth, "--no-sync", "-E", "UTF8", *args
        )

    def configure(self, data: Path, *lines: str) -> None:
        """Lines appended to ``postgresql.conf`` (copied by a base backup)."""
        with (data / "postgresql.conf").open("a") as conf:
            conf.write("".join(f"{line}\n" for line in lines))

    def start(self, data: Path, *options: str, port: int | None = None) -> None:
        """``pg_ctl start``, waiting until it accepts connections; ``options`` go to
        the server's command line (with ``port`` given, it listens on 127.0.0.1 there
        and keeps its socket in the workspace)."""
        if port is not None:
            options = (
                "-c", "listen_addresses=127.0.0.1", "-p", str(port), "-k", str(self.base),
                *options,
            )  # fmt: skip
        extra = ["-o", shlex.join(options)] if options else []
        log = self.base / f"{data.name}.log"
        self.run("pg_ctl", "-D", str(data), "-l", str(log), "-w", "-t", "60", *extra, "start")
        self.started.append(data)

    def stop(self, data: Path, mode: str = "immediate") -> None:
        subprocess.run(
            [str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", mode, "-w", "stop"],
            capture_output=True,
            timeout=60,
            cwd=self.base,
            check=False,
            **as_server_user(),
        )
        if data in self.started:
            self.started.remove(data)

    def standby(self, primary_port: int, data: Path, *, user: str = "root") -> None:
        """A hot standby of the cluster on ``primary_port``: ``pg_basebackup -R``
        (``standby.signal`` and ``primary_conninfo``), WAL streamed during the copy."""
        self.run(
            "pg_basebackup",
            "-h", "127.0.0.1", "-p", str(primary_port), "-U", user,
            "-D", str(data), "-R", "-X", "stream", "-c", "fast", "--no-sync",
        )  # fmt: skip

    def popen(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        stdout: IO[bytes],
        stderr: IO[bytes],
    ) -> subprocess.Popen[bytes]:
        """A long-running process (a server in the foreground) as the server user."""
        return subprocess.Popen(
            list(argv), env=dict(env), stdout=stdout, stderr=stderr, cwd=self.base,
            **as_server_user(),
        )  # fmt: skip

    def close(self) -> None:
        for data in reversed(list(self.started)):
            self.stop(data)
        shutil.rmtree(self.base, ignore_errors=True)


@contextmanager
def workspace(prefix: str, purpose: str) -> Iterator[Workspace]:
    """A workspace for ``purpose`` (named in a skip or failure), removed with its
    clusters on exit; without PostgreSQL 15's programs, ``unavailable``."""
    if not (PG_BIN / "initdb").exists():
        unavailable(f"no PostgreSQL 15 binaries in {PG_BIN} (set REGISTRY_TEST_PG_BIN)")
    base = Path(tempfile.mkdtemp(prefix=prefix))
    give_to_server_user(base)
    found = Workspace(base, purpose)
    try:
        yield found
    finally:
        found.close()
