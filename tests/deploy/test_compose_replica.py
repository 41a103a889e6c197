"""The compose stack's read replica, wired as a standby must be (no database here;
test_compose_commands.py runs it): postgres-replica copies and streams from postgres on
the same pinned image, the servers and only the servers read from it, the primary's
init script is mounted where the image runs it, and the two scripts build the read URL
and the password file from the one password secret, escaped."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

from tests.deploy.files import (
    COMPOSE_DIR,
    argv,
    built_here,
    command_options,
    compose,
    services,
    unescape,
)

SERVERS = ("registry-1", "registry-2")


def config_file(service: dict[str, Any], target: str) -> Path:
    (source,) = [e["source"] for e in service["configs"] if e["target"] == target]
    return COMPOSE_DIR / compose()["configs"][source]["file"]


def test_the_replica_is_a_standby_of_the_primary_on_the_same_image() -> None:
    primary, replica = services()["postgres"], services()["postgres-replica"]
    assert replica["image"] == primary["image"] == "postgres:15.20-trixie"
    assert replica["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    # its own entrypoint, the script, then the image's postgres command
    entrypoint = replica["entrypoint"]
    assert entrypoint[0] == "/bin/sh"
    assert config_file(replica, entrypoint[1]) == COMPOSE_DIR / "postgres-replica.sh"
    assert argv(replica)[2] == "postgres"
    # a hot standby refuses to start below the primary's max_connections
    assert (
        command_options(replica)["max_connections"] == command_options(primary)["max_connections"]
    )
    assert command_options(primary)["max_slot_wal_keep_size"]
    # its own volume, with PGDATA inside it (the copy is renamed into place)
    (volume,) = replica["volumes"]
    name, mount = volume.split(":")
    assert name in compose()["volumes"] and name != primary["volumes"][0].split(":")[0]
    pgdata = Path(replica["environment"]["PGDATA"])
    assert pgdata.parent == Path(mount), "PGDATA must be one level inside the volume"
    # the password file on a tmpfs, never in the volume
    passfile = Path(replica["environment"]["PGPASSFILE"])
    assert any(passfile.is_relative_to(tmpfs) for tmpfs in replica["tmpfs"])
    assert replica["environment"]["DB_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert replica["secrets"] == ["postgres_password"]
    assert replica["environment"]["DB_HOST"] == "postgres"
    assert replica["user"] == "postgres" and replica["cap_drop"] == ["ALL"]
    check = unescape(replica["healthcheck"]["test"][1])
    assert replica["healthcheck"]["test"][0] == "CMD-SHELL"
    assert "pg_isready" in check and "pg_is_in_recovery()" in check
    assert "pg_stat_wal_receiver" in check


def test_the_primary_runs_the_replication_init_script_on_a_new_volume() -> None:
    primary = services()["postgres"]
    targets = [e["target"] for e in primary["configs"]]
    (target,) = [t for t in targets if t.startswith("/docker-entrypoint-initdb.d/")]
    assert target.endswith(".sh"), "the image runs only *.sh (and *.sql) files there"
    script = config_file(primary, target).read_text()
    assert "host replication ${POSTGRES_USER:?} samenet scram-sha-256" in script
    # sourced by the image's entrypoint: no exit, no change to its shell options
    code = [line for line in script.splitlines() if not line.startswith("#")]
    assert not any(line.strip().startswith(("exit", "set ")) for line in code), code


def test_servers_and_only_the_servers_read_from_the_replica() -> None:
    for name, service in services().items():
        environment = service.get("environment", {})
        if name in SERVERS:
            assert environment["DB_READ_HOST"] == "postgres-replica", name
            assert environment["DB_READ_PORT"] == "5432", name
            assert environment["DB_HOST"] == "postgres", name
            condition = service["depends_on"]["postgres-replica"]["condition"]
            assert condition == "service_healthy", name
        else:
            # the worker (leases, tracking), the jobs (migrations, the founding): primary
            assert "DB_READ_HOST" not in environment, name
    assert sorted(n for n, s in services().items() if built_here(s) and "serve" in argv(s)) == [
        *SERVERS
    ]


def run_registry_run(tmp_path: Path, **extra: str) -> list[str]:
    """registry-run.sh with a stand-in ``registry`` that prints the URLs it is given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    standin = bin_dir / "registry"
    standin.write_text(
        '#!/bin/sh\nprintf "%s\\n" "$REGISTRY_DATABASE_URL" '
        '"${REGISTRY_READ_DATABASE_URL-(unset)}"\n'
    )
    standin.chmod(0o755)
    password = tmp_path / "password"
    password.write_text("p@ss:w/rd%\n")
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "DB_HOST": "postgres",
        "DB_PORT": "5432",
        "DB_NAME": "registry",
        "DB_USER": "registry",
        "DB_PASSWORD_FILE": str(password),
        **extra,
    }
    done = subprocess.run(
        ["sh", str(COMPOSE_DIR / "registry-run.sh"), "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_registry_run_builds_the_read_url_from_the_same_password(tmp_path: Path) -> None:
    """``p@ss:w/rd%`` percent-encoded: @ %40, : %3A, / %2F, % %25."""
    encoded = "p%40ss%3Aw%2Frd%25"
    primary, read = run_registry_run(tmp_path, DB_READ_HOST="postgres-replica", DB_READ_PORT="5433")
    assert primary == f"postgresql://registry:{encoded}@postgres:5432/registry"
    assert read == f"postgresql://registry:{encoded}@postgres-replica:5433/registry"
    # without DB_READ_HOST (the jobs, the worker) no read URL: everything on the primary
    assert run_registry_run(tmp_path)[1] == "(unset)"
    assert run_registry_run(tmp_path, DB_READ_HOST="")[1] == "(unset)"


def replica_env(tmp_path: Path, password: str) -> dict[str, str]:
    secret = tmp_path / "postgres_password"
    secret.write_text(f"{password}\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    standin = bin_dir / "docker-entrypoint.sh"
    standin.write_text('#!/bin/sh\necho "entrypoint: $*"\n')
    standin.chmod(0o755)
    pg_bin = os.environ.get("REGISTRY_TEST_PG_BIN", "/usr/lib/postgresql/15/bin")
    return {
        "PATH": os.pathsep.join([str(bin_dir), pg_bin, os.environ["PATH"]]),
        "PGDATA": str(tmp_path / "volume" / "standby"),
        "PGPASSFILE": str(tmp_path / "tmpfs" / "primary.pgpass"),
        "DB_HOST": "postgres",
        "DB_PORT": "5432",
        "DB_NAME": "registry",
        "DB_USER": "registry",
        "DB_PASSWORD_FILE": str(secret),
    }


def run_replica_script(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(COMPOSE_DIR / "postgres-replica.sh"), "postgres", "-c", "x=1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_replica_script_writes_the_password_file_escaped_then_hands_over(
    tmp_path: Path,
) -> None:
    """A later start (a cluster in PGDATA): only the password file, then the image's
    entrypoint with the command. libpq's file escapes ``:`` and ``\\``: ``a:b\\c``
    is written ``a\\:b\\\\c``."""
    env = replica_env(tmp_path, "a:b\\c")
    Path(env["PGDATA"]).mkdir(parents=True)
    (Path(env["PGDATA"]) / "PG_VERSION").write_text("15\n")
    Path(env["PGPASSFILE"]).parent.mkdir()
    done = run_replica_script(env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["entrypoint: postgres -c x=1"]
    passfile = Path(env["PGPASSFILE"])
    assert passfile.read_text() == "postgres:5432:*:registry:a\\:b\\\\c\n"
    assert stat.S_IMODE(passfile.stat().st_mode) == 0o600


def test_a_failed_first_copy_leaves_nothing_taken_for_a_cluster(tmp_path: Path) -> None:
    """The primary unreachable on the first start: the script fails (compose restarts
    it) before the image's entrypoint, which would make a new, empty primary."""
    env = replica_env(tmp_path, "secret")
    env.update(DB_HOST="127.0.0.1", DB_PORT="1")  # nothing listens on port 1
    Path(env["PGPASSFILE"]).parent.mkdir()
    done = run_replica_script(env)
    assert done.returncode != 0
    assert "entrypoint:" not in done.stdout
    assert not Path(env["PGDATA"]).exists()
    assert not Path(f"{env['PGDATA']}.partial").exists()
