"""A worker killed with SIGKILL in the middle of a stream, then restarted.

At-least-once delivery replays the uncommitted batches; the idempotency marks must make every
replayed event a no-op, so each of the thousands of events ends with exactly one decision,
one set of window increments, one cluster membership and at most one open review item per
subject, and the output topic carries every decision (repeats only of the same decision_id).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from .conftest import assert_exactly_once, assert_topic_decisions, simulated_events, wait_for

N_EVENTS = 2000


@pytest.mark.slow
def test_kill_9_mid_stream_every_event_has_exactly_one_effect(
        shared_services: Any, pipeline_factory: Any) -> None:
    docs = simulated_events(N_EVENTS, seed=31, prefix="crash-")
    pipe = pipeline_factory(shared_services)
    pipe.produce_events(docs[: N_EVENTS // 2])

    worker = pipe.start_worker()
    wait_for(lambda: pipe.count("decisions") >= N_EVENTS // 6, 180, what="first decisions",
             alive=worker.alive)
    os.killpg(worker.proc.pid, signal.SIGKILL)
    worker.kill()
    killed_at = pipe.count("decisions")
    assert 0 < killed_at < N_EVENTS // 2

    pipe.produce_events(docs[N_EVENTS // 2:])
    second = pipe.start_worker()
    wait_for(lambda: pipe.count("decisions") >= N_EVENTS * 2 // 3, 180, what="more decisions",
             alive=second.alive)
    os.killpg(second.proc.pid, signal.SIGKILL)
    second.kill()

    third = pipe.start_worker()
    started = time.monotonic()
    wait_for(lambda: pipe.decided() >= N_EVENTS, 240, what="all decisions published",
             alive=third.alive)
    topic = pipe.read_decisions_topic(N_EVENTS)
    time.sleep(2)
    assert third.alive(), third.log()
    third.stop()

    counts = assert_exactly_once(pipe, docs)
    duplicates = assert_topic_decisions(topic, {d["event_id"] for d in docs})
    print(f"killed twice (first at {killed_at} decisions); recovery run "
          f"{time.monotonic() - started:.1f}s; {counts}; duplicate decisions on topic: "
          f"{duplicates}")
