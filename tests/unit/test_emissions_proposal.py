"""`registry import emissions --propose`: the file as one VERIFIED_EMISSIONS payload, a
reason every row shares written once, so a 10,000-row file fits the 4 MiB a proposal may
carry."""

from __future__ import annotations

import json

from registry.cli.imports import EmissionsLine, emissions_payload
from registry.domain.proposals import MAX_PAYLOAD_BYTES


def test_a_shared_reason_is_written_once_and_mixed_reasons_per_row() -> None:
    same = [EmissionsLine(f"PWR-SD-{i:04}", 2025, 1_000 + i, "reports 2025") for i in range(2)]
    assert emissions_payload(same) == {
        "reason": "reports 2025",
        "rows": [
            {"account_id": "PWR-SD-0000", "compliance_year": 2025, "verified_emissions": 1_000},
            {"account_id": "PWR-SD-0001", "compliance_year": 2025, "verified_emissions": 1_001},
        ],
    }
    mixed = [*same[:1], EmissionsLine("PWR-SD-0009", 2025, 5, "correction")]
    assert [r["reason"] for r in emissions_payload(mixed)["rows"]] == [  # type: ignore[index]
        "reports 2025",
        "correction",
    ]


def test_ten_thousand_rows_fit_a_proposal_with_a_shared_reason_not_with_long_own_ones() -> None:
    """10,000 rows of about 75 bytes each (account id, year, tonnes) are ~0.75 MB; with
    its own 500-character reason each row is ~5.8 MB, over the 4 MiB (4,194,304 bytes)."""
    rows = [EmissionsLine(f"PWR-SD-{i:04}", 2025, 123_456_789, "r" * 500) for i in range(10_000)]
    shared = json.dumps(emissions_payload(rows), separators=(",", ":")).encode()
    assert len(shared) < 1_000_000 < MAX_PAYLOAD_BYTES
    own = [EmissionsLine(r.account_id, 2025, 1, f"{i:04}" + "r" * 496) for i, r in enumerate(rows)]
    assert len(json.dumps(emissions_payload(own), separators=(",", ":")).encode()) > (
        MAX_PAYLOAD_BYTES
    )
