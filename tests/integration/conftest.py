"""Fixtures that run the real worker process against real Kafka and PostgreSQL.

``pipeline_env`` gives a fresh migrated database, a full set of uniquely named topics and the
environment a worker needs; ``worker_factory`` starts ``unmask worker`` processes in it and
stops (or kills) them at the end of the test. ``engine`` runs a test once on a fresh migrated
PostgreSQL database and once on SQLite (a test module may define its own ``engine``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from pipeline.store.db import make_engine
from pipeline.store.migrate import upgrade
from pipeline.stream.topics import topic_layout

REPO_ROOT = Path(__file__).resolve().parents[2]
TOPICS = topic_layout()


@pytest.fixture(params=["postgres", "sqlite"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated engine on a fresh PostgreSQL database, then on a SQLite file."""
    if request.param == "postgres":
        url = request.getfixturevalue("fresh_database_url")
    else:
        url = f"sqlite:///{tmp_path / 'unmask.db'}"
    upgrade(url)
    eng = make_engine(url)
    yield eng
    eng.dispose()


@pytest.fixture
def pipeline_env(
    fresh_database_url: str, kafka_bootstrap: str, kafka_topics: Any, shared_dir: Path
) -> dict[str, str]:
    from pipeline.store.migrate import upgrade

    upgrade(fresh_database_url)
    names = kafka_topics({base: parts for base, parts in TOPICS.values()})
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNMASK_")}
    env.update(
        {
            "UNMASK_ENVIRONMENT": "test",
            "UNMASK_DATABASE__URL": fresh_database_url,
            "UNMASK_KAFKA__BOOTSTRAP": kafka_bootstrap,
            "UNMASK_KAFKA__CONSUMER_GROUP": f"unmask-test-{uuid.uuid4().hex[:8]}",
            "UNMASK_AVATARS__FILE_ROOT": str(shared_dir),
            "UNMASK_METRICS_PORT": "0",
            "UNMASK_LOG_LEVEL": "INFO",
        }
    )
    for field, (base, _parts) in TOPICS.items():
        env[f"UNMASK_KAFKA__{field.upper()}"] = names[base]
    return env


class Worker:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "worker"],
            env=env,
            cwd=REPO_ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._log.close()

    def stop(self, timeout: float = 30) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Worker]]:
    workers: list[Worker] = []

    def start(env: dict[str, str]) -> Worker:
        worker = Worker(env, tmp_path / f"worker-{len(workers)}.log")
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        if not worker._log.closed:
            worker.stop()


def consume(
    bootstrap: str,
    topic: str,
    expected: int,
    timeout: float = 120.0,
    alive: Callable[[], bool] | None = None,
) -> list[dict[str, Any]]:
    """Read a topic from the beginning until ``expected`` records arrived or time ran out;
    then read on for two more seconds so that surplus (duplicate) records are seen too.

    Every partition is assigned explicitly and read from its beginning with ``poll``: no
    subscription, whose partition assignment and iterator timeouts could leave a partition
    unread for the whole wait."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    settle: float | None = None
    try:
        partitions: set[int] | None = None
        while not partitions and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                time.sleep(0.2)
        assert partitions, f"topic {topic} has no partitions after {timeout} s"
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(json.loads(message.value) for message in batch)
            if len(records) >= expected:
                settle = settle or time.monotonic() + 2.0
                if time.monotonic() >= settle:
                    break
            if alive is not None and not alive():
                break
        if len(records) < expected:
            ends = consumer.end_offsets(assigned)
            positions = {tp.partition: consumer.position(tp) for tp in assigned}
            print(f"consume {topic}: {len(records)} of {expected} records; positions "
                  f"{positions}, end offsets { {tp.partition: o for tp, o in ends.items()} }")
    finally:
        consumer.close()
    return records
