"""The one rule for a free-text reason (why a unit moved, a grant changed, a restriction
was placed): text of at most ``MAX_REASON`` characters without control characters (tab
and line breaks allowed), and, where one is required, not blank.

Callers keep the wording their clients have always been answered with, so the rule is
parametrised rather than the wording unified: a transaction's reason is optional and not
named as a field; an access change says "say why"; a regulator's proposal, rejection or
restriction answers ``MISSING_FIELD`` for a blank one.
"""

from __future__ import annotations

from registry.domain.errors import InvalidCommand
from registry.domain.ids import has_control_characters

MAX_REASON = 500
"""Long enough for a sentence or two and a case reference; stored in every event, read
model row and listing that carries it."""


def check_reason(
    value: str,
    field: str = "reason",
    *,
    required: bool = True,
    message: str | None = None,
    name_field: bool = True,
) -> str:
    """``value`` if it is a valid reason, else ``InvalidCommand``.

    ``required``: a blank reason is refused, as ``MISSING_FIELD`` ("{field} is
    required") unless ``message`` is given. ``message``: the one wording of every
    refusal (``INVALID_REASON``, a blank required reason included). ``name_field``:
    whether the error's metadata names ``field`` (a transaction's reason never has).
    """
    invalid = (
        not isinstance(value, str)
        or len(value) > MAX_REASON
        or has_control_characters(value, line_breaks=True)
    )
    blank = not invalid and required and not value.strip()
    metadata = {"field": field} if name_field else {}
    if invalid or (blank and message is not None):
        raise InvalidCommand(
            message
            or f"{field} must be text of at most {MAX_REASON} characters, "
            "without control characters",
            reason="INVALID_REASON",
            **metadata,
        )
    if blank:
        raise InvalidCommand(f"{field} is required", reason="MISSING_FIELD", **metadata)
    return value
