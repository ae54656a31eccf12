"""An avatar-only worker pool beside a worker running every other agent, on the real broker.

One worker runs ``--agents avatar`` (settings ``worker.agents=avatar``), another every agent but
avatar; each joins its own consumer group. A stream with avatars (simulated, pictures from the
shared faces via file://) must come out with exactly one published decision per event, the
avatars scored by the avatar pool alone: only its group committed offsets on the validated topic,
only it consumed that topic and loaded the detector, and the main group never read it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from reliability.conftest import (
    TOPICS,
    assert_exactly_once,
    assert_topic_decisions,
    free_port,
    metric_value,
    simulated_events,
    wait_for,
)

from pipeline.settings import worker_group

N_EVENTS = 160
MAIN_AGENTS = ("validate", "dedupe", "signals", "decide")
DETECTOR_LOADED = b"avatar detector "


def committed(bootstrap: str, group: str, topics: dict[str, str]) -> dict[str, int]:
    """Committed offsets of ``group`` on the pipeline's ``topics``, summed per topic (empty when
    the group committed none)."""
    from pipeline.stream.monitoring import KafkaProbe

    probe = KafkaProbe(bootstrap)
    try:
        _end, done, _start = probe.offsets(
            group, [(topics[fld], p) for fld, (_base, parts) in TOPICS.items()
                    for p in range(parts)])
    finally:
        probe.close()
    out: dict[str, int] = {}
    for (topic, _partition), offset in done.items():
        out[topic] = out.get(topic, 0) + offset
    return out


@pytest.mark.slow
def test_avatar_pool_scores_every_avatar_and_main_pool_never_loads_the_detector(
        shared_services: Any, pipeline_factory: Any, shared_dir: Path, tmp_path: Path) -> None:
    avatar_dir = tmp_path / "edited"
    docs = simulated_events(N_EVENTS, seed=71, prefix="pool-", avatars=True,
                            faces_dir=shared_dir / "data" / "faces", avatar_dir=avatar_dir)
    with_avatar = sum(1 for d in docs if d.get("avatar_url"))
    assert with_avatar > N_EVENTS // 2
    pipe = pipeline_factory(shared_services,
                            UNMASK_AVATARS__EXTRA_FILE_ROOTS=json.dumps([str(avatar_dir)]))
    avatar_port, main_port = free_port(), free_port()
    avatars = pipe.start_worker(UNMASK_WORKER__AGENTS="avatar",
                                UNMASK_METRICS_PORT=str(avatar_port))
    main = pipe.start_worker(UNMASK_WORKER__AGENTS=",".join(MAIN_AGENTS),
                             UNMASK_METRICS_PORT=str(main_port))
    pipe.produce_events(docs)

    def both_alive() -> bool:
        return bool(avatars.alive() and main.alive())

    wait_for(lambda: pipe.decided() >= N_EVENTS, 300, what="decisions", alive=both_alive)
    validated = pipe.topics["topic_validated"]
    assert metric_value(avatar_port, "unmask_events_consumed_total", {"topic": validated}) \
        == N_EVENTS
    assert metric_value(main_port, "unmask_events_consumed_total", {"topic": validated}) == 0
    assert metric_value(avatar_port, "unmask_events_consumed_total",
                        {"topic": pipe.topics["topic_events"]}) == 0
    avatars.stop()
    main.stop()

    counts = assert_exactly_once(pipe, docs, with_avatars=True)
    assert pipe.count("avatar_results", "status = 'scored'") > N_EVENTS // 3
    records = pipe.read_decisions_topic(N_EVENTS)
    assert_topic_decisions(records, {d["event_id"] for d in docs})

    group = pipe.env["UNMASK_KAFKA__CONSUMER_GROUP"]
    bootstrap = shared_services.bootstrap
    avatar_offsets = committed(bootstrap, worker_group(group, ("avatar",)), pipe.topics)
    main_offsets = committed(bootstrap, worker_group(group, MAIN_AGENTS), pipe.topics)
    assert avatar_offsets == {validated: N_EVENTS}, avatar_offsets
    assert validated not in main_offsets, main_offsets
    assert main_offsets.get(pipe.topics["topic_events"]) == N_EVENTS, main_offsets
    assert main_offsets.get(pipe.topics["topic_scored"]) == N_EVENTS, main_offsets
    assert committed(bootstrap, group, pipe.topics) == {}, "a worker joined the all-agents group"

    assert DETECTOR_LOADED in avatars.log_path.read_bytes(), avatars.log()
    assert DETECTOR_LOADED not in main.log_path.read_bytes(), main.log()
    print(f"avatar pool: {with_avatar} avatars, {counts}")
