"""Dead-letter records: the raw bytes of a refused input and a coded reason (dead_letter.v1)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine

from pipeline import metrics
from pipeline.events import InvalidEvent
from pipeline.store.db import insert_ignore
from pipeline.store.tables import dlq_records


def _storable(value: str | None, limit: int) -> str | None:
    """``value`` as text any database column takes: no NUL, no lone surrogate, at most ``limit``
    characters (refused records carry whatever an attacker put in their key or event_id)."""
    if value is None:
        return None
    text = value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return text[:limit]


def dead_letter(
    raw: bytes,
    error: InvalidEvent,
    source_topic: str,
    partition: int | None,
    offset: int | None,
    key: bytes | None,
) -> dict[str, Any]:
    """The dead_letter.v1 document for one refused record."""
    return {
        "dlq_type": "dead_letter.v1",
        "reason_code": error.code,
        "detail": _storable(error.detail, 2000),
        "raw_b64": base64.b64encode(raw).decode("ascii"),
        "source_topic": source_topic,
        "source_partition": partition,
        "source_offset": offset,
        "key": _storable(key.decode("utf-8", "replace"), 255) if key is not None else None,
        "event_id": _storable(error.event_id, 200),
        "failed_at": datetime.now(UTC).isoformat(),
    }


def record_dead_letters(engine: Engine, records: list[dict[str, Any]]) -> int:
    """Keep an audit row per dead letter; idempotent on (topic, partition, offset)."""
    rows = [
        {
            "reason_code": r["reason_code"],
            "detail": r["detail"],
            "raw": base64.b64decode(r["raw_b64"]),
            "source_topic": r["source_topic"],
            "source_partition": r["source_partition"] if r["source_partition"] is not None else -1,
            "source_offset": r["source_offset"],
            "record_key": r["key"],
            "event_id": r["event_id"],
            "failed_at": datetime.fromisoformat(r["failed_at"]),
        }
        for r in records
    ]
    with engine.begin() as conn:
        inserted = insert_ignore(
            conn, dlq_records, rows, ["source_topic", "source_partition", "source_offset"]
        )
    for r in records:
        metrics.DLQ_RECORDS.labels(r["reason_code"]).inc()
    return inserted
