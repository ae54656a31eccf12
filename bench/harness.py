"""Shared pieces of the end-to-end benchmarks: fresh databases, topics, worker processes.

Everything runs against the real local services (``eval "$(bash ops/services.sh env)"``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from pipeline.store import db
from pipeline.stream.topics import topic_layout

REPO = Path(__file__).resolve().parents[1]
TOPIC_FIELDS = topic_layout()


def server_url() -> str:
    url = os.environ.get("UNMASK_TEST_DATABASE_URL")
    if not url:
        sys.exit('start the services first: eval "$(bash ops/services.sh env)"')
    return url


def bootstrap() -> str:
    return os.environ.get("UNMASK_TEST_KAFKA_BOOTSTRAP", "127.0.0.1:19092")


def create_database(prefix: str = "unmask_bench") -> str:
    server = make_url(server_url())
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = server.set(database=name).render_as_string(hide_password=False)
    from pipeline.store.migrate import upgrade

    upgrade(url)
    return url


def drop_database(url: str) -> None:
    server = make_url(server_url())
    name = make_url(url).database
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        db.drop_database(admin, str(name))
    finally:
        admin.dispose()


def create_topics() -> dict[str, str]:
    """Uniquely named copies of the pipeline's topics, partitioned as in ops/topics.json."""
    from kafka.admin import KafkaAdminClient

    suffix = uuid.uuid4().hex[:8]
    names = {field: f"{base}.b{suffix}" for field, (base, _) in TOPIC_FIELDS.items()}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap())
    admin.create_topics(
        {
            names[field]: {"num_partitions": parts, "replication_factor": 1}
            for field, (_, parts) in TOPIC_FIELDS.items()
        },
        timeout_ms=30000,
        wait_for_metadata=True,
    )
    admin.close()
    return names


def delete_topics(names: dict[str, str]) -> None:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap())
    admin.delete_topics(list(names.values()), timeout_ms=30000, raise_errors=False)
    admin.close()


def worker_env(
    db_url: str, topics: dict[str, str], extra: dict[str, str] | None = None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNMASK_")}
    env.update(
        {
            "UNMASK_ENVIRONMENT": "test",
            "UNMASK_DATABASE__URL": db_url,
            "UNMASK_KAFKA__BOOTSTRAP": bootstrap(),
            "UNMASK_KAFKA__CONSUMER_GROUP": f"bench-{uuid.uuid4().hex[:8]}",
            "UNMASK_METRICS_PORT": "0",
            "UNMASK_LOG_LEVEL": "WARNING",
        }
    )
    for field, name in topics.items():
        env[f"UNMASK_KAFKA__{field.upper()}"] = name
    env.update(extra or {})
    return env


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]

    @classmethod
    def start(cls, env: dict[str, str], log: Path) -> WorkerProcess:
        fh = open(log, "wb")  # noqa: SIM115 - owned by the child for its lifetime
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "worker"],
            env=env,
            cwd=REPO,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return cls(proc)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def read_topic(topic: str, expected: int, timeout: float) -> list[Any]:
    """Every record of ``topic`` (kafka-python ConsumerRecords) until ``expected`` or timeout."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap(),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=500,
    )
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(out) < expected and time.monotonic() < deadline:
        out.extend(consumer)
    consumer.close()
    return out


def produce_at_rate(path: Path, topic: str, rate: float) -> None:
    """Send a JSONL file's records keyed by account_id at ``rate`` per second (0: at once);
    blocks until the broker acknowledged all of them."""
    from kafka import KafkaProducer

    from pipeline.stream.embedded import read_jsonl
    from pipeline.stream.produce import record_key

    producer = KafkaProducer(bootstrap_servers=bootstrap().split(","), acks="all", linger_ms=5)
    started = time.monotonic()
    for i, raw in enumerate(read_jsonl(str(path))):
        producer.send(topic, key=record_key(raw), value=raw)
        if rate > 0:
            ahead = started + (i + 1) / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    producer.flush(timeout=120)
    producer.close()
