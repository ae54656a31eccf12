"""The retention job: personal and bulky data is kept only as long as it is useful.

Raw events (``events``), idempotency marks (``processed_events``), dead letters (``dlq_records``,
which hold refused records' raw bytes) and the signals stage's old window buckets, account
features and per-event results are deleted once older than ``settings.signals.retention_days``.
Decisions, accounts, clusters, review items and the audit trail stay: they are the record of
what was decided and why.

Deleting a processed mark is safe once it is older than any redelivery can be: Kafka keeps
records for days (``log.retention.hours``), retention is measured in weeks.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from pipeline.settings import Settings
from pipeline.store.tables import dlq_records, events, processed_events


def run_retention(engine: Engine, settings: Settings, now: datetime | None = None,
                  older_than_days: float | None = None) -> dict[str, int]:
    """Delete rows older than ``older_than_days`` (default ``settings.signals.retention_days``)
    before ``now``; returns rows deleted per table. Blocking; one transaction per store, so a
    failure leaves each store either untouched or done. Idempotent."""
    from pipeline.signals.stage import run_retention as signals_retention

    now = now or datetime.now(UTC)
    days = settings.signals.retention_days if older_than_days is None else older_than_days
    cutoff = now - timedelta(days=days)
    deleted: dict[str, int] = {}
    with engine.begin() as conn:
        for name, stmt in (
            ("events", events.delete().where(events.c.received_at < cutoff)),
            ("processed_events",
             processed_events.delete().where(processed_events.c.processed_at < cutoff)),
            ("dlq_records", dlq_records.delete().where(dlq_records.c.failed_at < cutoff)),
        ):
            deleted[name] = int(conn.execute(stmt).rowcount or 0)
    signals_settings = settings.model_copy(deep=True)
    signals_settings.signals.retention_days = days
    for name, count in signals_retention(engine, signals_settings, int(now.timestamp())).items():
        deleted[f"signal_{name}"] = count
    return deleted
