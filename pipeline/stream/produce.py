"""Send a JSONL file of events to Kafka with kafka-python, keyed by account_id."""

from __future__ import annotations

import json
from pathlib import Path

from kafka import KafkaProducer

from pipeline.stream.embedded import read_jsonl


def record_key(raw: bytes) -> bytes | None:
    """The account_id of a record when it parses, so one account stays on one partition."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    account_id = doc.get("account_id") if isinstance(doc, dict) else None
    return account_id.encode() if isinstance(account_id, str) else None


def produce_file(path: Path, bootstrap: str, topic: str) -> int:
    """Send every non-blank line of ``path``; blocks until the broker acknowledged all of them."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap.split(","), acks="all", linger_ms=5, max_request_size=2_000_000
    )
    count = 0
    try:
        for raw in read_jsonl(str(path)):
            producer.send(topic, key=record_key(raw), value=raw)
            count += 1
        producer.flush()
    finally:
        producer.close()
    return count
