"""The one reason rule (``registry.domain.reasons``) and the wording each caller keeps:
clients are answered exactly as before the rule was gathered in one place."""

from __future__ import annotations

from typing import Any

import pytest

from registry.application.commands import check_reason as check_transaction_reason
from registry.domain.access import check_access_reason
from registry.domain.errors import InvalidCommand
from registry.domain.reasons import MAX_REASON, check_reason

TOO_LONG = "x" * (MAX_REASON + 1)


def refusal(call: Any, *args: Any, **kwargs: Any) -> tuple[str, str, dict[str, str]]:
    with pytest.raises(InvalidCommand) as raised:
        call(*args, **kwargs)
    return raised.value.reason, raised.value.message, raised.value.metadata


@pytest.mark.parametrize("good", ["x" * MAX_REASON, "two lines:\nfine, and a\ttab"])
def test_every_wording_accepts_the_same_reasons(good: str) -> None:
    assert check_reason(good) == good
    assert check_transaction_reason(good) == good
    assert check_access_reason(good) == good


@pytest.mark.parametrize("bad", [TOO_LONG, "nul\x00", "bell\x07", 42])
def test_every_wording_refuses_the_same_reasons(bad: Any) -> None:
    must = f"must be text of at most {MAX_REASON} characters, without control characters"
    assert refusal(check_reason, bad, "rejection_reason") == (
        "INVALID_REASON",
        f"rejection_reason {must}",
        {"field": "rejection_reason"},
    )
    assert refusal(check_transaction_reason, bad) == ("INVALID_REASON", f"reason {must}", {})
    assert refusal(check_access_reason, bad) == (
        "INVALID_REASON",
        f"say why, in 1-{MAX_REASON} characters without control characters",
        {"field": "reason"},
    )


def test_a_blank_reason_is_missing_invalid_or_fine_as_each_caller_said() -> None:
    assert refusal(check_reason, " ") == (
        "MISSING_FIELD",
        "reason is required",
        {"field": "reason"},
    )
    assert refusal(check_access_reason, "")[0] == "INVALID_REASON"
    assert check_transaction_reason("") == ""
    assert check_reason("", required=False) == ""
