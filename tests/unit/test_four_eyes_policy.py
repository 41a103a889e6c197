"""Which calls need a proposal under four eyes is data (``services.policy.FOUR_EYES``):
every entry names a real call and a real proposal kind, and the servicer refuses exactly
the listed calls, with the listed kind."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from registry.domain.errors import ProposalRequired
from registry.domain.proposals import ProposalKind
from registry.v1 import administration_service_pb2 as pb
from services.administration import SERVICE, AdministrationServicer
from services.policy import FOUR_EYES, POLICY

METHODS = pb.DESCRIPTOR.services_by_name["AdministrationService"].methods_by_name


class Untouchable:
    """A registry the refused call must never reach."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"reached the registry ({name})")


def test_every_entry_names_a_call_of_the_policy_and_a_proposal_kind() -> None:
    assert FOUR_EYES
    for method, kind in FOUR_EYES.items():
        service, name = method.split("/")
        assert service == SERVICE and name in METHODS and method in POLICY
        assert isinstance(kind, ProposalKind)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_four_eyes_refuses_exactly_the_listed_calls(name: str) -> None:
    servicer = AdministrationServicer(
        SimpleNamespace(registry=Untouchable()),  # type: ignore[arg-type]
        four_eyes=True,
    )
    request = getattr(pb, METHODS[name].input_type.name)()
    kind = FOUR_EYES.get(f"{SERVICE}/{name}")
    try:
        getattr(servicer, name)(request, None)
    except ProposalRequired as refused:
        assert kind is not None, f"{name} is refused but not listed in FOUR_EYES"
        assert refused.metadata == {"kind": kind.value}
        assert str(refused.message) == (
            f"{kind.value} needs a second regulator: propose it with ProposeAction "
            f"(kind {kind.value}) for another regulator to approve"
        )
    except Exception:  # anything else: the call went on past the four-eyes check
        assert kind is None, f"{name} is listed in FOUR_EYES but not refused"
    else:
        assert kind is None
