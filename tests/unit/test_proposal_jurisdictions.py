"""Who did what, by province (issue 18 item 8): the API's ``Proposal`` carries the
proposer's and the approver's jurisdictions as the domain recorded them, and the
``ListProposals`` province filter keeps the proposals a regulator of that province
proposed or approved. Pure: the conversion and the filter, no server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from registry.application.four_eyes import acted_in
from registry.domain.proposals import Proposal, ProposalKind, ProposalView
from registry.domain.transactions import Principal
from services.administration import _proposal

NOW = datetime(2026, 6, 15, 9, 30, tzinfo=UTC)
ZHANG = Principal("sd-eeb", "zhang")  # Shandong department
WANG = Principal("mee", "wang")  # national
PAYLOAD = {"rows": [{"account_id": "PWR-SD-0001", "compliance_year": 2025}], "reason": "r"}


def proposed(principal: Principal, provinces: tuple[str, ...]) -> Proposal:
    return Proposal.propose(
        proposal_id="P-SD",
        kind=ProposalKind.VERIFIED_EMISSIONS,
        payload=PAYLOAD,
        reason="verification 2025",
        principal=principal,
        now=NOW,
        provinces=provinces,
    )


def test_the_message_carries_both_jurisdictions_as_recorded() -> None:
    p = proposed(ZHANG, ("Shandong",))
    assert p.approve(WANG, NOW + timedelta(hours=1), ())
    message = _proposal(p.view(NOW + timedelta(hours=1)))
    assert (message.proposer, list(message.proposer_provinces)) == ("sd-eeb/zhang", ["Shandong"])
    assert (message.approver, list(message.approver_provinces)) == ("mee/wang", [])


def test_a_national_proposal_has_no_provinces_sorted_otherwise() -> None:
    national = _proposal(proposed(WANG, ()).view(NOW))
    assert list(national.proposer_provinces) == list(national.approver_provinces) == []
    two = _proposal(proposed(ZHANG, ("Shandong", "Hebei")).view(NOW))
    assert list(two.proposer_provinces) == ["Hebei", "Shandong"]


def test_a_view_from_before_provinces_converts_as_national() -> None:
    """A view built without the fields (their defaults: proposals recorded before)."""
    old = proposed(WANG, ()).view(NOW)
    fields = {k: getattr(old, k) for k in ProposalView.__dataclass_fields__}
    del fields["proposer_provinces"], fields["approver_provinces"]
    message = _proposal(ProposalView(**fields))
    assert list(message.proposer_provinces) == list(message.approver_provinces) == []


def test_the_province_filter_matches_proposer_or_approver_case_insensitively() -> None:
    by_zhang = proposed(ZHANG, ("Shandong",)).view(NOW)
    approved_in_sd = proposed(WANG, ())
    assert approved_in_sd.approve(ZHANG, NOW + timedelta(hours=1), ("Shandong",))
    approved = approved_in_sd.view(NOW + timedelta(hours=1))
    national = proposed(WANG, ()).view(NOW)
    for province in ("Shandong", "shandong", " SHANDONG "):
        assert [acted_in(v, province) for v in (by_zhang, approved, national)] == [
            True,
            True,
            False,
        ]
    assert not acted_in(by_zhang, "Guangdong")
