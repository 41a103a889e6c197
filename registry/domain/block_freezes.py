"""A judicial block freeze: a court order freezes specific serial blocks in one account.

While active those serials cannot leave that account (by any kind of transaction);
released by a later event that records the evidence (e.g. the ruling that lifts it).
Its id comes from a client-chosen freeze id that is unique registry-wide (not scoped by
party: a court order is named the same way by every regulator who refers to it). What
the three restrictions share, and the guards, are in ``registry.domain.restrictions``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from registry.domain.accounts import check_account_id
from registry.domain.errors import FreezeExistsWithDifferentContent, FreezeNotActive
from registry.domain.ids import NAMESPACE, check_client_id
from registry.domain.reasons import check_reason
from registry.domain.restrictions import (
    BlockRow,
    RestrictionHistory,
    aware,
    block_row,
    change_entry,
    check_blocks,
    check_evidence,
    check_reference,
    principal_name,
    row_block,
)
from registry.domain.transactions import Principal
from registry.domain.units import Holding, SerialBlock


class FreezeStatus(StrEnum):
    ACTIVE = "ACTIVE"
    RELEASED = "RELEASED"


class BlockFreeze(RestrictionHistory, Aggregate):
    """A court order freezing specific serial blocks of one account."""

    TOPIC = "registry.BlockFreeze"

    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []
        self.freeze_id = ""
        self.account_id = ""
        self.order_reference = ""
        self.blocks: list[BlockRow] = []
        self.quantity = 0
        self.status_name = FreezeStatus.ACTIVE.value
        self.reason = ""
        self.imposed_by = ""
        self.imposed_at: datetime | None = None
        self.released_by = ""
        self.released_at: datetime | None = None
        self.release_reason = ""
        self.release_evidence = ""

    @staticmethod
    @lru_cache(maxsize=4096)
    def id_for(freeze_id: str) -> UUID:
        return uuid5(NAMESPACE, f"block-freeze:{freeze_id}")

    @property
    def status(self) -> FreezeStatus:
        return FreezeStatus(self.status_name)

    @property
    def is_active(self) -> bool:
        return self.status_name == FreezeStatus.ACTIVE.value

    @property
    def frozen_blocks(self) -> Holding:
        """The frozen serials, sorted and disjoint (parsed from primitive state)."""
        return tuple(row_block(row) for row in self.blocks)

    # -- events ---------------------------------------------------------------

    class Created(Aggregate.Created):
        TOPIC = "registry.BlockFreeze.Created"

    class Imposed(Aggregate.Created):
        TOPIC = "registry.BlockFreeze.Imposed"
        freeze_id: str
        account_id: str
        order_reference: str
        blocks: list[SerialBlock]
        reason: str
        principal: str
        at: datetime
        proposal: str

        def apply(self, freeze: BlockFreeze) -> None:
            freeze.freeze_id = self.freeze_id
            freeze.account_id = self.account_id
            freeze.order_reference = self.order_reference
            freeze.blocks = [block_row(b) for b in self.blocks]
            freeze.quantity = sum(b.quantity for b in self.blocks)
            freeze.reason = self.reason
            freeze.imposed_by = self.principal
            freeze.imposed_at = self.at
            freeze._log(
                change_entry(
                    "IMPOSED",
                    self.at,
                    self.principal,
                    self.reason,
                    reference=self.order_reference,
                    proposal=self.proposal,
                )
            )

    class Released(Aggregate.Event):
        TOPIC = "registry.BlockFreeze.Released"
        reason: str
        evidence: str
        principal: str
        at: datetime
        proposal: str

        def apply(self, freeze: BlockFreeze) -> None:
            freeze.status_name = FreezeStatus.RELEASED.value
            freeze.released_by = self.principal
            freeze.released_at = self.at
            freeze.release_reason = self.reason
            freeze.release_evidence = self.evidence
            freeze._log(
                change_entry(
                    "RELEASED",
                    self.at,
                    self.principal,
                    self.reason,
                    evidence=self.evidence,
                    proposal=self.proposal,
                )
            )

    # -- creation -------------------------------------------------------------------

    @classmethod
    def impose(
        cls,
        *,
        freeze_id: str,
        account_id: str,
        blocks: Iterable[SerialBlock],
        order_reference: str,
        reason: str,
        principal: Principal | str,
        at: datetime,
        proposal: str = "",
    ) -> BlockFreeze:
        """Freeze ``blocks`` in ``account_id`` under a court order. Whether the account
        holds them is the application's check (``units.remove`` names a missing one).

        For an id that may exist, the application loads it first and asks
        :meth:`ensure_same_request`: a retry must not create a second freeze."""
        check_client_id(freeze_id, "freeze id")
        check_account_id(account_id)
        check_reference(order_reference, "order_reference")
        check_reason(reason)
        joined = check_blocks(blocks)
        return cls._create(
            cls.Imposed,
            id=cls.id_for(freeze_id),
            freeze_id=freeze_id,
            account_id=account_id,
            order_reference=order_reference,
            blocks=list(joined),
            reason=reason,
            principal=principal_name(principal),
            at=aware(at),
            proposal=proposal,
        )

    # -- guards and commands ------------------------------------------------------

    def ensure_same_request(
        self, *, account_id: str, blocks: Iterable[SerialBlock], order_reference: str
    ) -> None:
        """A retried ``impose`` (same account, serials and court order) is a replay: answer
        with this freeze. The reason's wording is not content. Anything else is refused."""
        joined = check_blocks(blocks)
        if (account_id, order_reference, joined) != (
            self.account_id,
            self.order_reference,
            self.frozen_blocks,
        ):
            raise FreezeExistsWithDifferentContent(
                f"freeze {self.freeze_id} exists with other content (court order "
                f"{self.order_reference}, account {self.account_id})",
                freeze=self.freeze_id,
                order_reference=self.order_reference,
            )

    def release(
        self,
        *,
        reason: str,
        evidence: str,
        principal: Principal | str,
        at: datetime,
        proposal: str = "",
    ) -> bool:
        """Lift the freeze; True if this call did, False for a retry (same evidence)."""
        check_reason(reason)
        check_evidence(evidence)
        aware(at)
        if not self.is_active:
            if evidence == self.release_evidence:
                return False
            raise FreezeNotActive(
                f"freeze {self.freeze_id} was released on {self.released_at} by {self.released_by}",
                freeze=self.freeze_id,
                order_reference=self.order_reference,
                status=self.status_name,
            )
        self.trigger_event(
            self.Released,
            reason=reason,
            evidence=evidence,
            principal=principal_name(principal),
            at=at,
            proposal=proposal,
        )
        return True
