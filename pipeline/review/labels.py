"""Export of reviewer labels for retraining (``unmask labels export``).

One row per label: avatar (ai | real), photo (stolen | original), account (fake | genuine), with
the avatar's sha256 (the bytes are in the image store), the model's score and version and the
hashes at decision time, so a training script can join labels to pictures and measure drift.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.store.review_tables import review_labels

FIELDS = ("id", "created_at", "kind", "value", "account_id", "avatar_sha256", "avatar_score",
          "model_version", "item_id", "decision_id", "reviewer", "hashes", "matches")


def iter_labels(engine: Engine, since_id: int = 0, kind: str | None = None
                ) -> Iterator[dict[str, Any]]:
    """Label rows with id > ``since_id`` in id order, flattened to FIELDS."""
    stmt = sa.select(review_labels).where(review_labels.c.id > since_id).order_by(
        review_labels.c.id)
    if kind is not None:
        stmt = stmt.where(review_labels.c.kind == kind)
    with engine.connect() as conn:
        for row in conn.execute(stmt.execution_options(yield_per=1000)).mappings():
            detail = row["detail"] or {}
            created = row["created_at"]
            if created.tzinfo is None:
                created = created.replace(tzinfo=UTC)
            yield {
                "id": row["id"], "created_at": created.isoformat(), "kind": row["kind"],
                "value": row["value"], "account_id": row["account_id"],
                "avatar_sha256": row["avatar_sha256"], "avatar_score": detail.get("avatar_score"),
                "model_version": detail.get("model_version"), "item_id": row["item_id"],
                "decision_id": row["decision_id"], "reviewer": row["reviewer"],
                "hashes": detail.get("hashes") or {}, "matches": detail.get("matches") or [],
            }


def write_labels(rows: Iterator[dict[str, Any]], out: IO[str], fmt: str) -> int:
    """Write JSON lines or CSV (nested fields as JSON text); returns rows written."""
    count = 0
    if fmt == "jsonl":
        for row in rows:
            out.write(json.dumps(row, sort_keys=True) + "\n")
            count += 1
        return count
    if fmt != "csv":
        raise ValueError("format must be jsonl or csv")
    writer = csv.DictWriter(out, fieldnames=FIELDS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v
                         for k, v in row.items()})
        count += 1
    return count


def export_labels(engine: Engine, path: Path, fmt: str | None = None, since_id: int = 0,
                  kind: str | None = None) -> int:
    """Write labels to ``path`` (format from ``fmt`` or the suffix: .csv, else JSONL)."""
    fmt = fmt or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
    tmp = path.with_name(f".{path.name}.{datetime.now(UTC).strftime('%Y%m%d%H%M%S%f')}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as out:
        count = write_labels(iter_labels(engine, since_id, kind), out, fmt)
    tmp.replace(path)
    return count
