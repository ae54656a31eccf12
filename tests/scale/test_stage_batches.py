"""A worker behind a backlog takes micro-batches up to ``worker.batch_size``, on the real broker.

A first worker (validate, avatar, dedupe) turns a stream into a backlog on the topic that the
signals agent reads, then stops. A second worker (signals, decide) started on that backlog must
decide every event once and, as its ``unmask_stage_batch_messages`` histogram shows, take batches
larger than the old fixed 200 and never larger than the configured maximum.
"""

from __future__ import annotations

from typing import Any

import pytest
from reliability.conftest import (
    assert_exactly_once,
    forward_backlog,
    free_port,
    metric_value,
    simulated_events,
    wait_for,
)

N_EVENTS = 1500
BATCH = 700
BATCHES = "unmask_stage_batch_messages"


def batches(port: int, stage: str, le: str | None = None) -> float:
    if le is None:
        return metric_value(port, f"{BATCHES}_count", {"stage": stage})
    return metric_value(port, f"{BATCHES}_bucket", {"stage": stage, "le": le})


@pytest.mark.slow
def test_backlogged_agents_take_batches_up_to_the_configured_size(
        shared_services: Any, pipeline_factory: Any) -> None:
    docs = simulated_events(N_EVENTS, seed=83, prefix="batch-")
    pipe = pipeline_factory(shared_services)
    forward_backlog(pipe, docs, "validate,avatar,dedupe", "topic_matched")

    port = free_port()
    downstream = pipe.start_worker(UNMASK_WORKER__AGENTS="signals,decide",
                                   UNMASK_WORKER__BATCH_SIZE=str(BATCH),
                                   UNMASK_METRICS_PORT=str(port))
    wait_for(lambda: pipe.decided() >= N_EVENTS, 180, what="decisions", alive=downstream.alive)
    for stage in ("signals", "decide"):
        taken = batches(port, stage)
        assert taken >= 1
        assert batches(port, stage, "1000.0") == taken, f"{stage}: a batch above the maximum"
        assert batches(port, stage, "200.0") < taken, f"{stage}: no batch above 200"
    assert metric_value(port, f"{BATCHES}_sum", {"stage": "signals"}) == N_EVENTS
    downstream.stop()
    assert_exactly_once(pipe, docs)
