"""The ``registry`` command starts light: building its parser imports no persistence.

Every CLI process (an operator's ``registry balances``, each of the suite's hundreds of
CLI runs) used to pay ~1.1 s of CPU importing the whole application before parsing its
arguments. Command modules import the application, SQLAlchemy, eventsourcing and the
domain aggregates inside the functions that run a command; this keeps it so, and checks
the parser-time constants the CLI repeats against the modules they come from."""

from __future__ import annotations

import json
import subprocess
import sys

from registry.cli import access, allocate, project, regulator, verify
from registry.domain.access import Role
from registry.domain.allocation import OutputUse
from registry.domain.rules import AdvanceUseBase, CarryOver, CcerCapBase
from registry.integrity.ledger import DEFAULT_CHECKPOINT_EVERY
from registry.persistence.eventlog import DEFAULT_BATCH as EVENTLOG_BATCH
from registry.readmodels.runner import DEFAULT_BATCH as RUNNER_BATCH
from registry.readmodels.runner import PROJECTION_NAMES

HEAVY = ("sqlalchemy", "eventsourcing", "psycopg", "alembic")

PROBE = """
import json, sys
import registry.cli.app as app
imported = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})
app.build_parser()
built = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})
print(json.dumps([imported, built]))
"""


def test_importing_and_building_the_parser_imports_no_persistence() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=set(HEAVY))],
        capture_output=True,
        text=True,
        check=True,
    )
    imported, built = json.loads(result.stdout)
    assert imported == []
    assert built == []


HELP_PROBE = """
import atexit, sys
atexit.register(lambda: print(sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})))
from registry.cli import main
sys.exit(main(["--help"]))
"""


def test_help_exits_0_without_persistence() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "registry.cli", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: registry")
    probe = subprocess.run(
        [sys.executable, "-c", HELP_PROBE.format(heavy=set(HEAVY))], capture_output=True, text=True
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.rstrip().endswith("[]"), probe.stdout[-300:]


def test_parser_constants_agree_with_their_sources() -> None:
    assert [role.value for role in Role] == access.ROLES
    assert tuple(project.PROJECTION_NAMES) == tuple(PROJECTION_NAMES)
    assert project.DEFAULT_BATCH == RUNNER_BATCH
    assert verify.DEFAULT_CHECKPOINT_EVERY == DEFAULT_CHECKPOINT_EVERY
    assert verify.DEFAULT_BATCH == EVENTLOG_BATCH
    assert [b.value for b in CcerCapBase] == regulator.CCER_CAP_BASES
    assert [b.value for b in AdvanceUseBase] == regulator.ADVANCE_USE_BASES
    assert [c.value for c in CarryOver] == regulator.CARRY_OVERS
    uses = {use.value for use in OutputUse}
    assert set(allocate.PHASES.values()) == set(allocate.ID_PREFIX) == set(allocate.HELP) == uses
