"""Transactional outbox: reviewer decisions reach the Kafka decision topic, none are lost.

A reviewer action writes its ``decisions`` rows (``source='reviewer'``, ``published_at`` NULL) in
the same transaction as the queue change. ``DecisionOutbox.publish_once`` then locks a batch of
unpublished rows (``FOR UPDATE SKIP LOCKED``, so several publishers never send one row twice at
the same time), sends them, waits for the broker's acknowledgement and only then marks them
published. If Kafka is down the send raises, the transaction rolls back and the rows are sent in
a later round: delivery is at least once, and ``decision_id`` lets consumers drop repeats.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline import metrics
from pipeline.store.tables import decisions
from pipeline.types import Decision

log = logging.getLogger(__name__)


class DecisionSink(Protocol):
    """Where decisions go. ``send_all`` blocks until every record is acknowledged, else raises."""

    def send_all(self, records: Sequence[tuple[bytes, bytes]]) -> None: ...

    def close(self) -> None: ...


class KafkaDecisionSink:
    """kafka-python producer to one topic, key = account_id, acks from all in-sync replicas."""

    def __init__(self, bootstrap: str, topic: str, timeout_s: float = 15.0) -> None:
        from kafka import KafkaProducer

        self.topic = topic
        self.timeout_s = timeout_s
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap.split(","), acks="all", linger_ms=5, retries=3,
            request_timeout_ms=int(timeout_s * 1000), max_block_ms=int(timeout_s * 1000),
        )

    def send_all(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        futures = [self._producer.send(self.topic, key=k, value=v) for k, v in records]
        self._producer.flush(timeout=self.timeout_s)
        for future in futures:
            future.get(timeout=self.timeout_s)

    def close(self) -> None:
        self._producer.close(timeout=5)


class DecisionOutbox:
    """Sends unpublished reviewer decisions through a sink, marking them published after."""

    def __init__(self, engine: Engine, sink: DecisionSink, batch_size: int = 500) -> None:
        self.engine = engine
        self.sink = sink
        self.batch_size = batch_size

    def publish_once(self) -> int:
        """Send one batch; returns how many were published. Raises when the sink fails."""
        d = decisions.c
        with self.engine.begin() as conn:
            rows = conn.execute(
                sa.select(decisions).where(d.source == "reviewer", d.published_at.is_(None))
                .order_by(d.decided_at, d.decision_id).limit(self.batch_size)
                .with_for_update(skip_locked=True)
            ).all()
            if not rows:
                return 0
            records = [
                (row.account_id.encode(), json.dumps(Decision.from_row(row._mapping).to_dict(),
                                                     sort_keys=True).encode())
                for row in rows
            ]
            self.sink.send_all(records)
            conn.execute(decisions.update()
                         .where(d.decision_id.in_([r.decision_id for r in rows]))
                         .values(published_at=datetime.now(UTC)))
        metrics.REVIEW_DECISIONS_PUBLISHED.inc(len(rows))
        return len(rows)

    def drain(self) -> int:
        """Publish until nothing is left; returns the total."""
        total = 0
        while (n := self.publish_once()) > 0:
            total += n
        return total


def unpublished_count(engine: Engine) -> int:
    d = decisions.c
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(decisions)
                                .where(d.source == "reviewer", d.published_at.is_(None))
                                ).scalar_one())


class OutboxPublisher(threading.Thread):
    """Background thread of ``unmask review``: drains the outbox every ``interval_s`` or when
    woken (after a decision). Survives Kafka and database outages by retrying next round."""

    def __init__(self, engine: Engine, bootstrap: str, topic: str, interval_s: float) -> None:
        super().__init__(name="review-outbox", daemon=True)
        self.engine = engine
        self.bootstrap = bootstrap
        self.topic = topic
        self.interval_s = interval_s
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._sink: KafkaDecisionSink | None = None

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                if self._sink is None:
                    self._sink = KafkaDecisionSink(self.bootstrap, self.topic)
                DecisionOutbox(self.engine, self._sink).drain()
            except Exception as exc:
                metrics.REVIEW_OUTBOX_FAILURES.inc()
                log.warning("outbox round failed, will retry: %s", exc)
                if self._sink is not None:
                    try:
                        self._sink.close()
                    finally:
                        self._sink = None
            self._wake.wait(self.interval_s)
            self._wake.clear()
        if self._sink is not None:
            self._sink.close()
