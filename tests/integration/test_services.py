"""The local services are the ones the pipeline is built for.

Checks that ops/services.sh gives a Kafka 3.9 broker both client libraries can use
(kafka-python for admin and tools, aiokafka under Faust, including consumer-group offset
commits with the classic group protocol) and a PostgreSQL >= 15 on which each test can have a
database of its own.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import NullPool

TopicFactory = Callable[[Mapping[str, int]], dict[str, str]]

# Kafka's metadata.version feature level 21 is 3.9-IV0, the newest a 3.9 broker supports;
# 3.8 stops at 20 and 4.x goes beyond 21.
KAFKA_3_9_METADATA_LEVEL = 21


def _messages(n: int) -> list[tuple[bytes, bytes]]:
    return [(f"account-{i % 7}".encode(), f"payload-{i}".encode()) for i in range(n)]


def test_kafka_broker_is_3_9_single_node(kafka_bootstrap: str) -> None:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        cluster = admin.describe_cluster()
        features = admin.describe_features()
        inferred = admin.get_broker_version_data(cluster["brokers"][0]["broker_id"])
    finally:
        admin.close()
    assert len(cluster["brokers"]) == 1
    assert cluster["controller_id"] == cluster["brokers"][0]["broker_id"]
    assert features["metadata.version"]["supported"][1] == KAFKA_3_9_METADATA_LEVEL
    assert str(inferred) == "<BrokerVersionData 3.9>"


def test_pipeline_topics_exist_with_defined_partitions(kafka_bootstrap: str) -> None:
    import json
    from pathlib import Path

    from kafka.admin import KafkaAdminClient

    spec = json.loads((Path(__file__).parents[2] / "ops" / "topics.json").read_text())
    wanted = {t["name"]: t["partitions"] for t in spec["topics"]}
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        described = admin.describe_topics(sorted(wanted))
    finally:
        admin.close()
    assert {t["name"]: len(t["partitions"]) for t in described} == wanted
    assert wanted["accounts.events"] == 6 and wanted["accounts.dlq"] == 1


def test_kafka_python_round_trip_with_group_commit(
    kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    topic = kafka_topics({"roundtrip": 3})["roundtrip"]
    sent = _messages(30)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        metas = [producer.send(topic, key=k, value=v).get(timeout=30) for k, v in sent]
    finally:
        producer.close()
    partition_of_key: dict[bytes, set[int]] = {}
    for (key, _), meta in zip(sent, metas, strict=True):
        partition_of_key.setdefault(key, set()).add(meta.partition)
    assert all(len(parts) == 1 for parts in partition_of_key.values())

    group = f"unmask-test-{uuid.uuid4().hex[:8]}"
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    received: list[tuple[bytes, bytes, int]] = []
    try:
        deadline = time.monotonic() + 60
        while len(received) < len(sent) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                received += [(r.key, r.value, r.partition) for r in records]
        consumer.commit()
        committed = {p: consumer.committed(TopicPartition(topic, p)) for p in range(3)}
    finally:
        consumer.close()

    assert sorted((k, v) for k, v, _ in received) == sorted(sent)
    assert all({p} == partition_of_key[k] for k, _, p in received)
    per_partition = {p: sum(1 for *_, q in received if q == p) for p in range(3)}
    assert committed == per_partition


def test_aiokafka_round_trip_resumes_from_committed_offset(
    kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition

    topic = kafka_topics({"faust-client": 2})["faust-client"]
    group = f"unmask-test-{uuid.uuid4().hex[:8]}"

    async def produce(messages: list[tuple[bytes, bytes]]) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for key, value in messages:
                await producer.send_and_wait(topic, value=value, key=key)
        finally:
            await producer.stop()

    async def consume(expected: int) -> tuple[list[tuple[bytes, bytes]], dict[int, int | None]]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        got: list[tuple[bytes, bytes]] = []
        try:
            deadline = time.monotonic() + 60
            while len(got) < expected and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    got += [(r.key, r.value) for r in records if r.key and r.value]
            await consumer.commit()
            committed = {p: await consumer.committed(TopicPartition(topic, p)) for p in range(2)}
        finally:
            await consumer.stop()
        return got, committed

    async def scenario() -> None:
        first = _messages(10)
        await produce(first)
        got, committed = await consume(len(first))
        assert sorted(got) == sorted(first)
        assert sum(v or 0 for v in committed.values()) == len(first)

        second = [(k, v + b"-later") for k, v in _messages(6)]
        await produce(second)
        got, committed = await consume(len(second))
        assert sorted(got) == sorted(second)
        assert sum(v or 0 for v in committed.values()) == len(first) + len(second)

    asyncio.run(asyncio.wait_for(scenario(), timeout=120))


def test_postgres_is_15_or_newer(pg_server_url: str) -> None:
    engine = create_engine(pg_server_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            version = int(conn.execute(text("SHOW server_version_num")).scalar_one())
            database = conn.execute(text("SELECT current_database()")).scalar_one()
    finally:
        engine.dispose()
    assert version >= 150000
    assert database == make_url(pg_server_url).database


def test_fresh_database_is_isolated_and_owned(pg_server_url: str, fresh_database_url: str) -> None:
    fresh = make_url(fresh_database_url)
    assert fresh.database != make_url(pg_server_url).database
    table = f"isolation_probe_{uuid.uuid4().hex[:8]}"

    engine = create_engine(fresh, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            assert conn.execute(text("SELECT current_database()")).scalar_one() == fresh.database
            user_tables = conn.execute(
                text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            ).scalar_one()
            assert user_tables == 0
            conn.execute(text(f"CREATE TABLE {table} (id int PRIMARY KEY)"))
            conn.execute(text(f"INSERT INTO {table} VALUES (1)"))
    finally:
        engine.dispose()

    server = create_engine(pg_server_url, poolclass=NullPool)
    try:
        with server.connect() as conn:
            visible = conn.execute(
                text("SELECT count(*) FROM pg_tables WHERE tablename = :t"), {"t": table}
            ).scalar_one()
            exists = conn.execute(
                text("SELECT count(*) FROM pg_database WHERE datname = :d"), {"d": fresh.database}
            ).scalar_one()
    finally:
        server.dispose()
    assert visible == 0
    assert exists == 1


@pytest.fixture
def drop_witness(pg_server_url: str) -> Iterator[dict[str, Any]]:
    """Set up before and torn down after ``fresh_database_url``: checks the database is gone.

    The test leaves a connection open in ``witness["held"]`` so the drop has to force it.
    """
    witness: dict[str, Any] = {}
    yield witness
    held: Connection | None = witness.get("held")
    if held is not None:
        held.invalidate()
        held.engine.dispose()
    server = create_engine(pg_server_url, poolclass=NullPool)
    try:
        with server.connect() as conn:
            left = conn.execute(
                text("SELECT count(*) FROM pg_database WHERE datname = :d"), {"d": witness["name"]}
            ).scalar_one()
    finally:
        server.dispose()
    assert left == 0, f"database {witness['name']} still exists after the test"


def test_fresh_database_is_dropped_even_with_open_connections(
    drop_witness: dict[str, Any], fresh_database_url: str
) -> None:
    drop_witness["name"] = make_url(fresh_database_url).database
    held = create_engine(fresh_database_url, poolclass=NullPool).connect()
    drop_witness["held"] = held
    assert held.execute(text("SELECT 1")).scalar_one() == 1
