"""PostgreSQL stopped and the Kafka broker restarted under a running worker.

Both run on the suite's private services (``private_services``), so stopping them disturbs no
one else. While the database is down the worker must back off (retries counted, little CPU
used), report not ready on ``/readyz``, and lose nothing; after the broker comes back the
worker must resume by itself. In both cases every event ends with exactly one effect.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from .conftest import (
    assert_exactly_once,
    assert_topic_decisions,
    cpu_seconds,
    http_get,
    metric_value,
    simulated_events,
    wait_for,
)

N_EVENTS = 1000
OUTAGE_S = 25.0
BUSY_LOOP_CPU = 0.25
"""CPU seconds per wall second above which the worker counts as spinning (a busy loop is ~1)."""


def ready(port: int) -> int:
    try:
        return http_get(f"http://127.0.0.1:{port}/readyz")[0]
    except OSError:
        return 0


@pytest.mark.slow
def test_database_outage_backs_off_reports_unready_and_loses_nothing(
        private_services: Any, pipeline_factory: Any) -> None:
    docs = simulated_events(N_EVENTS, seed=41, prefix="pgdown-")
    pipe = pipeline_factory(private_services, UNMASK_DATABASE__RETRY_MAX_SECONDS="4")
    worker = pipe.start_worker()
    port = worker.metrics_port
    pipe.produce_events(docs[: N_EVENTS // 2])
    wait_for(lambda: pipe.count("decisions") >= N_EVENTS // 8, 180, what="first decisions",
             alive=worker.alive)
    wait_for(lambda: ready(port) == 200, 30, what="/readyz 200", alive=worker.alive)
    retries_before = metric_value(port, "unmask_stage_retries_total")

    try:
        private_services.control("stop-postgres")
        stopped = time.monotonic()
        pipe.produce_events(docs[N_EVENTS // 2:])
        unready_after = wait_for(lambda: ready(port) == 503, 20, what="/readyz 503",
                                 alive=worker.alive)
        time.sleep(3)
        cpu0, t0 = cpu_seconds(worker.proc.pid), time.monotonic()
        time.sleep(max(5.0, OUTAGE_S - (time.monotonic() - stopped)))
        cpu_rate = (cpu_seconds(worker.proc.pid) - cpu0) / (time.monotonic() - t0)
        retries_during = metric_value(port, "unmask_stage_retries_total") - retries_before
        body = http_get(f"http://127.0.0.1:{port}/readyz")[1].decode()
        assert worker.alive(), worker.log()
    finally:
        private_services.control("start-postgres")
    down_s = time.monotonic() - stopped

    wait_for(lambda: pipe.decided() >= N_EVENTS, 240, what="all decisions after the outage",
             alive=worker.alive)
    wait_for(lambda: ready(port) == 200, 30, what="/readyz 200 again", alive=worker.alive)
    assert retries_during > 0, "no retries counted while the database was down"
    assert cpu_rate < BUSY_LOOP_CPU, f"worker used {cpu_rate:.2f} CPU s/s during the outage"
    assert '"database"' in body and "not ready" in body
    topic = pipe.read_decisions_topic(N_EVENTS)
    assert worker.alive(), worker.log()
    worker.stop()
    counts = assert_exactly_once(pipe, docs)
    duplicates = assert_topic_decisions(topic, {d["event_id"] for d in docs})
    print(f"database down {down_s:.0f}s: /readyz 503 after {unready_after:.1f}s, "
          f"{retries_during:.0f} retries, worker CPU {cpu_rate:.3f} s/s; {counts}; "
          f"duplicates on topic {duplicates}")


@pytest.mark.slow
def test_broker_restart_worker_resumes_by_itself(private_services: Any,
                                                 pipeline_factory: Any) -> None:
    docs = simulated_events(N_EVENTS, seed=43, prefix="kdown-")
    pipe = pipeline_factory(private_services)
    worker = pipe.start_worker()
    pipe.produce_events(docs[: N_EVENTS // 2])
    wait_for(lambda: pipe.count("decisions") >= N_EVENTS // 8, 180, what="first decisions",
             alive=worker.alive)
    try:
        private_services.control("stop-kafka")
        stopped = time.monotonic()
        time.sleep(10)
        assert worker.alive(), worker.log()
    finally:
        private_services.control("start-kafka")
    down_s = time.monotonic() - stopped
    pipe.produce_events(docs[N_EVENTS // 2:])
    waited = wait_for(lambda: pipe.decided() >= N_EVENTS, 240,
                      what="all decisions after the broker restart", alive=worker.alive)
    topic = pipe.read_decisions_topic(N_EVENTS)
    assert worker.alive(), worker.log()
    worker.stop()
    counts = assert_exactly_once(pipe, docs)
    duplicates = assert_topic_decisions(topic, {d["event_id"] for d in docs})
    print(f"broker down {down_s:.0f}s; all decided {waited:.0f}s after restart; {counts}; "
          f"duplicates on topic {duplicates}")
