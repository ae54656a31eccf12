"""A worker that runs both signals and decide runs them as one agent, on the real broker.

Its events skip the ``accounts.signals.v1`` hop (signals then decide on each micro-batch of
``avatars.matched.v1``), and its decide agent still drains ``accounts.signals.v1``, which then
carries only what signals-only workers (or an older version of the worker) sent there.
"""

from __future__ import annotations

from typing import Any

import pytest
from reliability.conftest import (
    assert_exactly_once,
    assert_topic_decisions,
    forward_backlog,
    free_port,
    metric_value,
    simulated_events,
    wait_for,
)

N_EVENTS = 600


def records_on(pipe: Any, topic: str) -> int:
    """Records ever written to ``topic`` (sum of its partitions' end offsets)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=pipe.services.bootstrap)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return int(sum(consumer.end_offsets(parts).values()))
    finally:
        consumer.close()


@pytest.mark.slow
def test_signals_and_decide_in_one_worker_skip_the_signals_topic(
    shared_services: Any, pipeline_factory: Any
) -> None:
    docs = simulated_events(N_EVENTS, seed=91, prefix="fused-")
    pipe = pipeline_factory(shared_services)
    forward_backlog(pipe, docs, "validate,avatar,dedupe", "topic_matched")

    port = free_port()
    worker = pipe.start_worker(
        UNMASK_WORKER__AGENTS="signals,decide", UNMASK_METRICS_PORT=str(port)
    )
    wait_for(lambda: pipe.decided() >= N_EVENTS, 180, what="decisions", alive=worker.alive)
    matched = pipe.topics["topic_matched"]
    assert metric_value(port, "unmask_events_consumed_total", {"topic": matched}) == N_EVENTS
    assert metric_value(port, "unmask_stage_batch_messages_sum", {"stage": "decide"}) == N_EVENTS
    worker.stop()
    assert records_on(pipe, pipe.topics["topic_signals"]) == 0
    assert_exactly_once(pipe, docs)
    assert_topic_decisions(pipe.read_decisions_topic(N_EVENTS), {d["event_id"] for d in docs})


@pytest.mark.slow
def test_the_decide_agent_of_a_fused_worker_drains_the_signals_topic(
    shared_services: Any, pipeline_factory: Any
) -> None:
    docs = simulated_events(N_EVENTS, seed=92, prefix="drain-")
    pipe = pipeline_factory(shared_services)
    forward_backlog(pipe, docs, "validate,avatar,dedupe,signals", "topic_signals")
    assert pipe.decided() == 0

    port = free_port()
    worker = pipe.start_worker(
        UNMASK_WORKER__AGENTS="signals,decide",
        UNMASK_METRICS_PORT=str(port),
        UNMASK_KAFKA__TOPIC_MATCHED=pipe.topics["topic_matched"] + ".empty",
    )
    wait_for(lambda: pipe.decided() >= N_EVENTS, 180, what="decisions", alive=worker.alive)
    signals = pipe.topics["topic_signals"]
    assert metric_value(port, "unmask_events_consumed_total", {"topic": signals}) == N_EVENTS
    worker.stop()
    assert_exactly_once(pipe, docs)
