"""Conservation, the ledger's first invariant, in one place (DESIGN.md, docs/domain.md):

    units issued  ==  sum of all account holdings (national accounts included)

for every unit class, after every commit. Surrender and cancellation are movements into
national accounts (``CN-SURRENDER``, ``CN-CANCELLATION``), so units retired that way are
still held and counted: no term other than holdings balances issuance.

Pure: the caller brings the figures (from aggregates, read models or the API), so
``registry check``, ``registry supply``, the tests and the bench all judge by this rule.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
"""A unit class, or its key (``CEA/2025``) where the figures come as text."""


@dataclass(frozen=True)
class Imbalance(Generic[K]):
    """A unit class whose units held in all accounts differ from its units issued."""

    unit_class: K
    issued: int
    held: int

    def __str__(self) -> str:
        return (
            f"{self.unit_class}: issued {self.issued:,} but held in accounts {self.held:,} "
            f"({self.held - self.issued:+,})"
        )


def conserved(issued: int, held: int) -> bool:
    """The rule for one unit class: ``held`` (the sum of every account's holding of it)
    equals ``issued``."""
    return issued == held


def imbalances(issued: Mapping[K, int], held: Mapping[K, int]) -> list[Imbalance[K]]:
    """Every unit class, issued or held, that breaks conservation (none: conserved).

    ``issued``: units issued per class; ``held``: the sum of every account's holding per
    class. A class missing from one mapping counts as zero there."""
    classes = list(issued) + [c for c in held if c not in issued]
    return [
        Imbalance(c, issued.get(c, 0), held.get(c, 0))
        for c in classes
        if not conserved(issued.get(c, 0), held.get(c, 0))
    ]


def per_class(quantities: Iterable[tuple[K, int]]) -> dict[K, int]:
    """Quantities summed per unit class (holdings or blocks, of every account)."""
    totals: dict[K, int] = {}
    for unit_class, quantity in quantities:
        totals[unit_class] = totals.get(unit_class, 0) + quantity
    return totals
