"""Conservation as one pure rule: units issued == the sum of every account's holding,
per unit class (national surrender and cancellation accounts included)."""

from __future__ import annotations

from registry.domain.conservation import Imbalance, conserved, imbalances, per_class


def test_a_class_is_conserved_when_its_holdings_add_up_to_its_issuance() -> None:
    assert conserved(0, 0) and conserved(1_000, 1_000)
    assert not conserved(1_000, 999) and not conserved(1_000, 1_001)


def test_every_class_that_does_not_add_up_is_named_in_order() -> None:
    held = per_class(
        [
            ("CEA/2025", 600),  # a company
            ("CEA/2025", 400),  # CN-SURRENDER: surrendered units are still held
            ("CCER/2024/P-1", 50),
            ("CEA/2026", 5),  # held but never issued
        ]
    )
    assert held == {"CEA/2025": 1_000, "CCER/2024/P-1": 50, "CEA/2026": 5}
    issued = {"CEA/2025": 1_000, "CCER/2024/P-1": 60}
    assert imbalances(issued, held) == [
        Imbalance("CCER/2024/P-1", 60, 50),
        Imbalance("CEA/2026", 0, 5),
    ]
    assert str(Imbalance("CCER/2024/P-1", 60, 50)) == (
        "CCER/2024/P-1: issued 60 but held in accounts 50 (-10)"
    )
    assert imbalances({"CEA/2025": 1_000}, {"CEA/2025": 1_000}) == []
    assert imbalances({}, {}) == []
