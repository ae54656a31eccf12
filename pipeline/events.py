"""Event validation at the edge: raw bytes in, a typed AccountEvent out, or one error type.

``schemas/`` is the single source of truth for the wire format; this module only loads it.
Anything that is not a valid event raises :class:`InvalidEvent` with a reason code from
``schemas/dead_letter.v1.json``, which the stream routes to the dead-letter topic.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator

from pipeline.types import AccountEvent

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
EVENT_TYPES = ("account.created.v1", "profile.updated.v1")
MAX_EVENT_BYTES = 64 * 1024


class InvalidEvent(Exception):
    """An input record that cannot be processed; ``code`` is a dead-letter reason code."""

    def __init__(self, code: str, detail: str, event_id: str | None = None) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail[:2000]
        self.event_id = event_id


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The JSON Schema ``schemas/<name>.json`` as a dict."""
    with open(SCHEMA_DIR / f"{name}.json", encoding="utf-8") as fh:
        schema: dict[str, Any] = json.load(fh)
    return schema


@cache
def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(
        load_schema(name), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def validate(name: str, document: Any) -> None:
    """Raise :class:`InvalidEvent` (schema_violation) unless ``document`` matches ``name``."""
    error = jsonschema.exceptions.best_match(_validator(name).iter_errors(document))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        event_id = document.get("event_id") if isinstance(document, dict) else None
        raise InvalidEvent(
            "schema_violation",
            f"{where}: {error.message}",
            event_id if isinstance(event_id, str) else None,
        )


def _parse_time(value: str, event_id: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidEvent("bad_timestamp", str(exc), event_id) from exc
    if parsed.tzinfo is None:
        raise InvalidEvent("bad_timestamp", "occurred_at has no time zone", event_id)
    return parsed


def _unstorable_text(value: Any) -> str | None:
    """The first string inside ``value`` that no database can store as text (a NUL character,
    or a lone surrogate that JSON escapes can smuggle past UTF-8 decoding), else None."""
    if isinstance(value, str):
        if "\x00" in value:
            return value
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value
        return None
    if isinstance(value, dict):
        value = [*value.keys(), *value.values()]
    if isinstance(value, list):
        for item in value:
            found = _unstorable_text(item)
            if found is not None:
                return found
    return None


def parse_event(raw: bytes) -> AccountEvent:
    """Decode and validate one record from ``accounts.events``.

    Pure and non-blocking. Raises :class:`InvalidEvent` for anything that is not a valid
    ``account.created.v1`` or ``profile.updated.v1`` event; never raises anything else.
    """
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent("too_large", f"{len(raw)} bytes > {MAX_EVENT_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent("bad_encoding", str(exc)) from exc
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InvalidEvent("bad_json", str(exc)[:200]) from exc
    if not isinstance(document, dict):
        raise InvalidEvent("not_an_object", f"top level is {type(document).__name__}")
    event_type = document.get("event_type")
    if event_type not in EVENT_TYPES:
        event_id = document.get("event_id")
        raise InvalidEvent(
            "unknown_event_type",
            f"event_type={str(event_type)[:100]!r}",
            event_id if isinstance(event_id, str) else None,
        )
    validate(event_type, document)
    if _unstorable_text(document) is not None:
        raise InvalidEvent("bad_encoding", "text contains NUL or an unpaired surrogate",
                           document["event_id"])
    occurred_at = _parse_time(document["occurred_at"], document["event_id"])
    links = document.get("links")
    return AccountEvent(
        event_type=event_type,
        event_id=document["event_id"],
        occurred_at=occurred_at,
        account_id=document["account_id"],
        display_name=document.get("display_name"),
        username=document.get("username"),
        email_domain=(document["email_domain"].lower() if document.get("email_domain") else None),
        signup_ip=document.get("signup_ip"),
        device_id=document.get("device_id"),
        country=document.get("country"),
        avatar_url=document.get("avatar_url"),
        bio=document.get("bio", "" if event_type == "account.created.v1" else None),
        links=tuple(links)
        if links is not None
        else (() if event_type == "account.created.v1" else None),
    )
