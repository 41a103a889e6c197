"""Issue 16, command line: what a newcomer meets running the installed `registry` entry
point from a directory of their own (a temporary one, with no REGISTRY_* settings).

Each test reproduces one finding of the issue and failed before its fix: an empty token
sent to the server, read-only commands creating an empty store and reporting OK, no
`--version`, a placeholder top-level help, options without help, a cut-off sentence in
`allocate --help`, `bench --help` exiting 2 without the suite, seven Alembic plugin lines
at every `serve` start, and long jobs without progress on a terminal.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest

REGISTRY = str(Path(sys.executable).with_name("registry"))


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a newcomer's shell: none of the registry's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    return {**env, **extra}


def registry(
    cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [REGISTRY, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or clean_env(),
        check=False,
    )


# == 1. no token: say so, where it looked, how to give one; call nobody ================


def test_a_remote_command_without_a_token_says_where_it_looked_and_calls_nobody(
    tmp_path: Path,
) -> None:
    """Before: the empty token went to the server, which answered "the authorization
    metadata must be 'Bearer <token>'"."""
    with socket.socket() as listener:  # stands in for a server: counts connections
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        done = registry(tmp_path, "balances", "ACC-1", "--server", f"127.0.0.1:{port}", timeout=60)
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected
    assert done.returncode == 2, done.stderr
    assert "no token" in done.stderr
    assert str(tmp_path / "registry-data" / "credentials") in done.stderr
    assert "--token" in done.stderr and "REGISTRY_TOKEN" in done.stderr
    assert "Bearer" not in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


# == 2. read-only commands never create a store ========================================


@pytest.mark.parametrize(
    "command",
    [["supply"], ["check"], ["project", "--status"], ["project", "--rebuild", "accounts"]],
)
def test_read_only_commands_in_a_directory_without_a_store_create_nothing(
    tmp_path: Path, command: list[str]
) -> None:
    """Before: each created and migrated registry-data/registry.sqlite and said OK."""
    done = registry(tmp_path, *command)
    where = tmp_path / "registry-data" / "registry.sqlite"
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert f"no registry store at {where}" in done.stderr
    assert "nothing was created" in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == [], "not even the registry-data folder"


def test_the_guard_follows_the_configured_url_and_lets_an_existing_store_through(
    tmp_path: Path,
) -> None:
    store = tmp_path / "elsewhere" / "demo.sqlite"
    missing = registry(
        tmp_path, "supply", env=clean_env(REGISTRY_DATABASE_URL=f"sqlite:///{store}")
    )
    assert missing.returncode == 2 and f"no registry store at {store}" in missing.stderr
    assert not store.parent.exists()
    demo = registry(tmp_path, "demo", "--data-dir", str(store.parent))
    assert demo.returncode == 0, demo.stderr
    found = registry(tmp_path, "supply", env=clean_env(REGISTRY_DATABASE_URL=f"sqlite:///{store}"))
    assert found.returncode == 0, found.stderr
    assert "CEA/2025" in found.stdout


# == 3. --version, help texts, bench --help ============================================


def test_version_is_the_installed_package_version(tmp_path: Path) -> None:
    done = registry(tmp_path, "--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"registry {metadata.version('carbon-registry')}"


def test_the_top_level_help_says_what_the_registry_is_and_its_command_groups(
    tmp_path: Path,
) -> None:
    text = registry(tmp_path, "--help").stdout
    assert "The ``registry`` command." not in text
    assert "carbon emissions trading registry" in text
    for group in (
        "run a registry",
        "check it",
        "use a server",
        "regulate",
        "administer access",
        "--version",
    ):
        assert group in text, group


def option_help(text: str, option: str) -> str:
    """The help column of ``option`` in an argparse help text ('' if it has none)."""
    match = re.search(
        rf"^  {re.escape(option)}\b[^\n]*?(?:  +(\S[^\n]*))?$"
        rf"((?:\n {{20,}}\S[^\n]*)*)",
        text,
        re.MULTILINE,
    )
    assert match, f"{option} not in help"
    return ((match.group(1) or "") + match.group(2)).strip()


def test_connection_reason_and_grant_arguments_have_help(tmp_path: Path) -> None:
    balances = registry(tmp_path, "balances", "--help").stdout
    assert "REGISTRY_SERVER" in option_help(balances, "--server HOST:PORT")
    assert "REGISTRY_TOKEN" in option_help(balances, "--token TOKEN")
    grant = registry(tmp_path, "access", "grant", "--help").stdout
    for argument in ("grant_id", "party", "name", "ROLE", "--reason REASON"):
        assert option_help(grant, argument), f"access grant {argument} has no help"
    for verb, arguments in (
        (["revoke-grant"], ["grant_id"]),
        (["token", "issue"], ["party", "name"]),
        (["token", "rotate"], ["credential_id"]),
        (["revoke"], ["credential_id"]),
        (["cert", "add"], ["party", "name", "certificate"]),
    ):
        text = registry(tmp_path, "access", *verb, "--help").stdout
        for argument in arguments:
            assert option_help(text, argument), f"access {verb} {argument} has no help"
    for command in (
        ["close-year"],
        ["rules", "set"],
        ["proposals", "reject"],
        ["propose"],
        ["surrender"],
    ):
        text = registry(tmp_path, *command, "--help").stdout
        assert "recorded" in option_help(text, "--reason REASON"), command


def test_allocate_help_sentences_are_whole(tmp_path: Path) -> None:
    text = registry(tmp_path, "allocate", "--help").stdout
    assert "topped up to" not in text
    pre = " ".join(registry(tmp_path, "allocate", "--help").stdout.split())
    assert "last year's output: allocate what each account lacks of it" in pre


def test_bench_help_from_another_directory(tmp_path: Path) -> None:
    done = registry(tmp_path, "bench", "--help")
    assert done.returncode == 0, done.stderr
    assert "usage: registry bench" in done.stdout and "--smoke" in done.stdout


def test_bench_help_without_the_suite_explains_and_exits_0(tmp_path: Path) -> None:
    """As in a non-editable install (no bench/ next to the package): before, exit 2.
    ``sys.modules['bench'] = None`` makes the suite's import fail exactly so."""
    program = (
        "import sys; sys.modules['bench'] = None; from registry.cli import main; "
        "raise SystemExit(main(sys.argv[1:]))"
    )

    def bench(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", program, "bench", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            env=clean_env(),
            check=False,
        )

    helped = bench("--help")
    assert helped.returncode == 0, helped.stderr
    assert "benchmark suite" in helped.stdout and "source checkout" in helped.stdout
    ran = bench("--smoke")
    assert ran.returncode == 2 and "source checkout" in ran.stderr


# == 4. serve: the applied migration steps, not Alembic's plugin chatter ===============


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_logs_each_applied_migration_and_no_alembic_chatter(tmp_path: Path) -> None:
    """Before: seven "setup plugin" lines and "Context impl"/"Will assume" pairs."""
    server = subprocess.Popen(
        [REGISTRY, "serve"],
        cwd=tmp_path,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=clean_env(REGISTRY_LISTEN=f"127.0.0.1:{free_port()}"),
    )
    assert server.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            line = server.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "registry serving on" in line:
                break
    finally:
        server.send_signal(signal.SIGINT)
        try:
            rest, _ = server.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # a slow shutdown is not this test's subject
            server.kill()
            rest, _ = server.communicate(timeout=30)
    out = "".join(lines) + rest
    assert "registry serving on" in out, out
    assert "setup plugin" not in out and "alembic.runtime.plugins" not in out
    assert "Context impl" not in out and "Will assume" not in out
    steps = [line for line in out.splitlines() if "Running upgrade" in line]
    heads = sorted(
        p.name for p in (Path(__file__).parents[2] / "migrations" / "versions").glob("[0-9]*.py")
    )
    assert len(steps) == len(heads), out


# == 5. progress on a terminal, quiet elsewhere ========================================


def run_on_a_terminal(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run with stdout and stderr on a pseudo-terminal, as in an interactive shell."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower
    )
    os.close(follower)
    output = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 120)
        if not ready:
            break
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the terminal's other side closed
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    return process.wait(timeout=60), output.decode(errors="replace")


def test_a_rebuild_shows_progress_on_a_terminal_only(tmp_path: Path) -> None:
    demo = registry(tmp_path, "demo", "--data-dir", str(tmp_path))
    assert demo.returncode == 0, demo.stderr
    env = clean_env(REGISTRY_DATABASE_URL=f"sqlite:///{tmp_path}/demo.sqlite")
    code, shown = run_on_a_terminal([REGISTRY, "project", "--rebuild", "accounts"], tmp_path, env)
    assert code == 0, shown
    assert re.search(
        r"\rrebuilt accounts from [\d,]+ of [\d,]+ events \(100%\), "
        r"[\d,]+ events/s, in \d+s",
        shown,
    ), shown
    piped = registry(tmp_path, "project", "--rebuild", "accounts", env=env)
    assert piped.returncode == 0, piped.stderr
    assert "events/s" not in piped.stderr + piped.stdout and "\r" not in piped.stderr
    assert "accounts rebuilt from" in piped.stdout
    code, as_json = run_on_a_terminal(
        [REGISTRY, "project", "--rebuild", "accounts"],
        tmp_path,
        {**env, "REGISTRY_LOG_FORMAT": "json"},
    )
    assert code == 0 and "events/s" not in as_json, as_json


def test_an_allocation_import_shows_validation_and_sending_progress_on_a_terminal(
    tmp_path: Path,
) -> None:
    from registry.client import RegistryClient
    from tests.e2e.market import seed_market
    from tests.e2e.test_server_process import environment, first_token, serving

    rows = "".join(
        f"PRE-2025-{i:05d},PWR-SD-000{1 + i % 2},CEA,2025,10,CN-ISSUANCE,pre-allocation 2025\n"
        for i in range(1_500)
    )  # two AllocateUnits calls
    table = tmp_path / "all.csv"
    table.write_text(
        "transaction_id,account_id,unit_type,vintage,quantity,source,reason\n" + rows,
        encoding="utf-8",
    )
    with serving(tmp_path) as server:
        token, _, _ = first_token(tmp_path)
        with RegistryClient(server.address, token, attempts=1) as client:
            seed_market(client)
        env = environment(tmp_path, int(server.address.rsplit(":", 1)[1]))
        code, shown = run_on_a_terminal(
            [REGISTRY, "import", "allocations", str(table)], tmp_path, env
        )
    assert code == 0, shown
    assert re.search(
        r"\rall\.csv: validated 1,500 of 1,500 rows \(100%\), [\d,]+ rows/s, "
        r"in \d+s",
        shown,
    ), shown
    assert re.search(r"\rsent 1,500 of 1,500 rows \(100%\), [\d,]+ rows/s, in \d+s", shown), shown
    completed = [line.split() for line in shown.splitlines() if line.startswith("COMPLETED")]
    assert completed and completed[0][1] == "1,500", shown  # the summary, as in a pipe
