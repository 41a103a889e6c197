"""What every PostgreSQL session of the registry sets when it connects.

``jit=off``: PostgreSQL compiles a query to machine code when the planner's cost
estimate passes ``jit_above_cost`` (100,000 by default), and compiles it again on
every execution. The estimates grow with the tables, so statements that take a
millisecond on a young registry cross the line as it fills: the serials projection's
block lookup took 73 ms a call after a 10x year instead of 6.5 ms after a 1x one
(measured on its own on a synthetic table of 2.2 million rows, 1,000 ranges: 42.7 ms
with JIT, 11 ms of it compiling, and 14.4 ms without). Every statement the registry
runs is a short index probe or a bounded write, which JIT never repays; an operator's
own reporting sessions keep the server's setting.
"""

from __future__ import annotations

SESSION_OPTIONS = "-c jit=off"
"""libpq's ``options`` for the registry's sessions."""


def session_options(given: str | None = None, *more: str) -> str:
    """``SESSION_OPTIONS`` after what the URL already asks for (``given``) and before
    what a kind of session adds (``more``): libpq takes the last ``-c`` of a name."""
    return " ".join(part for part in (given, SESSION_OPTIONS, *more) if part)
