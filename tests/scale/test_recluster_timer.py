"""The workers' reconcile timer runs on the real broker: revised decisions reach the topic.

One worker with ``signals.recluster_interval_s`` = 5 s consumes a simulated stream with
campaigns; after it drains, the timer's reconcile leaves the database reconciled (a further
reconcile revises nothing), every revised decision is published, and the last record of every
account on the decisions topic is that account's latest decision in the database.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
import sqlalchemy as sa
from reliability.conftest import simulated_events, wait_for

from scale import invariants as inv

N_EVENTS = 900


@pytest.mark.slow
def test_timer_reconciles_and_publishes_revisions(shared_services: Any,
                                                  pipeline_factory: Any) -> None:
    docs = simulated_events(N_EVENTS, seed=43, prefix="timer-")
    pipe = pipeline_factory(shared_services, UNMASK_SIGNALS__RECLUSTER_INTERVAL_S="5")
    pipe.produce_events(docs)
    worker = pipe.start_worker()
    wait_for(lambda: pipe.count("decisions", "decision_id LIKE 'dec:%' AND published_at IS NOT "
                                "NULL") >= N_EVENTS, 240, alive=worker.alive,
             what="all per-event decisions published")
    def rounds() -> int:
        return int(worker.log_path.read_bytes().count(b"recluster: {"))

    after_drain = rounds()
    wait_for(lambda: rounds() >= after_drain + 2, 90, alive=worker.alive,
             what="a reconcile round that started after the drain")
    wait_for(lambda: pipe.count("decisions", "decision_id LIKE 'rev:%' AND published_at IS NULL")
             == 0, 30, alive=worker.alive, what="revised decisions published")
    worker.stop()
    revised = pipe.count("decisions", "decision_id LIKE 'rev:%'")
    assert pipe.count("decisions", "decision_id LIKE 'rev:%' AND published_at IS NULL") == 0
    records = pipe.read_decisions_topic(N_EVENTS + revised, timeout=60)
    with pipe.engine.connect() as conn:
        stored = {r[0] for r in conn.execute(sa.text(
            "SELECT decision_id FROM decisions WHERE decision_id LIKE 'rev:%'"))}
    assert {r["decision_id"] for r in records if r["decision_id"].startswith("rev:")} == stored
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "recluster", "--no-publish"],
                          env=pipe.env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    again = json.loads(done.stdout.strip().splitlines()[-1])
    assert again["decisions_revised"] == 0 and again["clusters_changed"] == 0, again
    with pipe.engine.connect() as conn:
        state = inv.reconciled_state(conn)
        assert not inv.consistency_errors(conn)
    assert inv.latest_on_topic(records) == state["latest_decisions"]
    print(f"timer: {rounds()} rounds, {revised} revised decisions published, "
          f"{len(state['clusters'])} clusters")
