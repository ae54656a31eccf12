"""The decide stage's cheap event document equals ``AccountEvent.to_dict``."""

from __future__ import annotations

from datetime import UTC, datetime

from pipeline.decide.stage import _event_dict
from pipeline.types import AccountEvent


def test_event_dict_equals_to_dict() -> None:
    when = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    full = AccountEvent(
        "account.created.v1",
        "e1",
        when,
        "a1",
        "Ann 1",
        "ann1",
        "example.org",
        "10.0.0.1",
        "dev-1",
        "DE",
        "https://x/y.png",
        "see https://news.example.co.uk",
        ("https://a.b/c",),
    )
    sparse = AccountEvent("profile.updated.v1", "e2", when, "a1", display_name="Ann 2")
    for event in (full, sparse):
        assert _event_dict(event) == event.to_dict()
    assert isinstance(_event_dict(full)["links"], list)
