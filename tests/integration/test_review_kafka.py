"""Reviewer decisions reach the Kafka decision topic through the outbox, outage or not."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import jsonschema
import pytest
import sqlalchemy as sa
from kafka import KafkaConsumer

from pipeline.review.model import Reviewer
from pipeline.review.outbox import DecisionOutbox, KafkaDecisionSink, unpublished_count
from pipeline.review.sample import seed_items
from pipeline.review.service import ReviewService
from pipeline.settings import Settings
from pipeline.store.db import make_engine
from pipeline.store.migrate import upgrade
from pipeline.store.tables import decisions

REPO = Path(__file__).resolve().parents[2]


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _read(bootstrap: str, topic: str, expected: int, timeout: float = 60) -> list[dict]:  # type: ignore[type-arg]
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None, consumer_timeout_ms=500)
    out: list[dict] = []  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(out) < expected:
            for message in consumer:
                doc = json.loads(message.value)
                doc["_key"] = message.key.decode()
                out.append(doc)
        time.sleep(1.0)
        for message in consumer:
            out.append(json.loads(message.value))
    finally:
        consumer.close()
    return out


def test_reviewer_decision_reaches_topic_after_kafka_outage(
        fresh_database_url: str, kafka_bootstrap: str, kafka_topics) -> None:  # type: ignore[no-untyped-def]
    topic = kafka_topics({"enforcement.decisions": 3})["enforcement.decisions"]
    upgrade(fresh_database_url)
    settings = Settings(database={"url": fresh_database_url})
    engine = make_engine(fresh_database_url)
    seed_items(engine, 2)
    service = ReviewService(engine, settings)
    alice = Reviewer(1, "alice", "reviewer")
    first = service.claim(alice, "accounts")
    assert first is not None
    decided = service.decide(alice, first, "disable", "bot farm", "ai", "original")

    with pytest.raises(Exception):  # noqa: B017 - any client error: the broker is unreachable
        dead = KafkaDecisionSink(f"127.0.0.1:{_dead_port()}", topic, timeout_s=2)
        DecisionOutbox(engine, dead).publish_once()
    assert unpublished_count(engine) == 1

    second = service.claim(alice, "accounts")
    assert second is not None
    cleared = service.decide(alice, second, "clear")
    sink = KafkaDecisionSink(kafka_bootstrap, topic)
    try:
        assert DecisionOutbox(engine, sink).drain() == 2
        assert DecisionOutbox(engine, sink).drain() == 0
    finally:
        sink.close()
    assert unpublished_count(engine) == 0

    schema = json.loads((REPO / "schemas" / "enforcement.decision.v1.json").read_text())
    records = _read(kafka_bootstrap, topic, 2)
    assert len(records) == 2
    by_id = {r["decision_id"]: r for r in records}
    assert set(by_id) == {decided.decision_ids[0], cleared.decision_ids[0]}
    for record in records:
        key = record.pop("_key")
        assert key == record["account_id"]
        jsonschema.validate(record, schema)
        assert record["source"] == "reviewer"
    assert by_id[decided.decision_ids[0]]["action"] == "disable"
    assert by_id[decided.decision_ids[0]]["evidence"]["note"] == "bot farm"
    assert by_id[cleared.decision_ids[0]]["action"] == "allow"
    with engine.connect() as conn:
        published = conn.execute(sa.select(decisions.c.published_at)
                                 .where(decisions.c.source == "reviewer")).scalars().all()
    assert len(published) == 2 and all(p is not None for p in published)


def test_publisher_thread_sends_decisions_as_they_are_made(
        fresh_database_url: str, kafka_bootstrap: str, kafka_topics) -> None:  # type: ignore[no-untyped-def]
    from pipeline.review.outbox import OutboxPublisher

    topic = kafka_topics({"enforcement.decisions": 1})["enforcement.decisions"]
    upgrade(fresh_database_url)
    engine = make_engine(fresh_database_url)
    seed_items(engine, 1)
    service = ReviewService(engine, Settings(database={"url": fresh_database_url}))
    publisher = OutboxPublisher(engine, kafka_bootstrap, topic, interval_s=30.0)
    publisher.start()
    try:
        lead = Reviewer(2, "lena", "lead")
        item = service.claim(lead, "accounts")
        assert item is not None
        result = service.decide(lead, item, "clear", "honest account")
        publisher.wake()
        records = _read(kafka_bootstrap, topic, 1, timeout=30)
    finally:
        publisher.stop()
        publisher.join(timeout=30)
    assert [r["decision_id"] for r in records] == list(result.decision_ids)
    assert records[0]["evidence"]["reviewer_role"] == "lead"
    assert unpublished_count(engine) == 0
