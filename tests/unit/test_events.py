"""Validation at the edge: valid events parse, everything else raises InvalidEvent with a code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.events import InvalidEvent, load_schema, parse_event, validate
from pipeline.types import AccountEvent

EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples"


def created(**overrides: object) -> bytes:
    doc = json.loads((EXAMPLES / "account.created.v1.json").read_text())
    doc.update(overrides)
    return json.dumps(doc).encode()


def test_examples_match_their_schemas() -> None:
    for path in EXAMPLES.glob("*.json"):
        validate(path.stem, json.loads(path.read_text()))


def test_account_created_parses_to_typed_event() -> None:
    event = parse_event(created())
    assert event.event_type == "account.created.v1"
    assert event.account_id == "acct-1001"
    assert event.occurred_at.tzinfo is not None
    assert event.links == ("https://maria-photo.example.org/portfolio",)
    assert AccountEvent.from_dict(event.to_dict()) == event


def test_profile_update_keeps_unchanged_fields_none() -> None:
    event = parse_event((EXAMPLES / "profile.updated.v1.json").read_bytes())
    assert event.signup_ip is None and event.display_name is None
    assert event.links == ("https://outlet.example.net/today",)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"", "bad_json"),
        (b"{not json", "bad_json"),
        (b"\xff\xfe\x00", "bad_encoding"),
        (b"[1, 2]", "not_an_object"),
        (b'"text"', "not_an_object"),
        (b'{"event_type": "account.deleted.v1", "event_id": "e1"}', "unknown_event_type"),
        (b'{"event_id": "e1"}', "unknown_event_type"),
        (created(signup_ip="999.1.1.1"), "schema_violation"),
        (created(country="Spain"), "schema_violation"),
        (created(unexpected_field=1), "schema_violation"),
        (created(links="https://not-a-list.example"), "schema_violation"),
        (created(occurred_at="2026-11-29T10:15:00"), "bad_timestamp"),
        (created(occurred_at="yesterday"), "bad_timestamp"),
        (b"{" * 100_000, "too_large"),
        (b"[" * 5000 + b"]" * 5000, "bad_json"),
    ],
)
def test_invalid_records_raise_coded_error(raw: bytes, code: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_event(raw)
    assert info.value.code == code
    assert code in load_schema("dead_letter.v1")["properties"]["reason_code"]["enum"]


def test_schema_violation_keeps_event_id_for_the_dlq() -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_event(created(country="Spain", event_id="evt-77"))
    assert info.value.event_id == "evt-77"


def test_ipv6_signup_address_is_valid() -> None:
    assert parse_event(created(signup_ip="2001:db8::1")).signup_ip == "2001:db8::1"
