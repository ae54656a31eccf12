"""Workers joining and leaving one consumer group while events flow give the same answers.

The same simulated stream (ordinary sign-ups plus campaigns, so clusters form) runs twice on the
real broker and PostgreSQL: (a) through one worker, (b) through a group that starts with two
workers, gains a third, loses one to SIGTERM and one to ``kill -9``, while events are still being
produced. After both drain:

* the order-independent state is identical (window counters, account features, idempotency
  marks, events, per-event decision ids, per-account flags, dead letters: ``invariants.Snapshot``);
* every decision on the output topic is in the database with the same content, every event has
  one, and repeats carry the same content;
* in each run every decision is the policy applied to exactly the cluster signal stored for its
  event, cluster sizes equal memberships, and every group of accounts that any consumption order
  must cluster together is in one cluster.

The streamed cluster partition (and what follows from it: burst flags, scores, per-event
decisions, review items) depends on the interleaving of partitions, even between two
single-worker runs; it is reported, not required equal. Then ``unmask recluster`` (the reconcile
job, pipeline/signals/recluster.py) runs on each database and publishes its revised decisions,
and the following must be EXACTLY equal between the two runs: the cluster partition with its
cluster ids, each cluster's counters, score and binding features, the open review units, the
latest decision of every account in the database and the latest decision of every account on
the decisions topic; a second ``unmask recluster`` revises nothing. docs/scaling.md explains
what is identical and what may differ.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from typing import Any

import pytest
from reliability.conftest import assert_exactly_once, simulated_events, wait_for

from scale import invariants as inv

N_EVENTS = 1800


def _drain(pipe: Any, alive: Any, timeout: float = 200) -> list[dict[str, Any]]:
    wait_for(lambda: pipe.decided() >= N_EVENTS, timeout, alive=alive,
             what=f"all decisions published (have {pipe.decided()} at the start)")
    return pipe.read_decisions_topic(N_EVENTS, timeout=60)


def _check_topic(pipe: Any, records: list[dict[str, Any]], ids: set[str]) -> int:
    """Topic decisions match the stored ones; returns how many records were repeats."""
    import sqlalchemy as sa

    from pipeline.store.tables import decisions

    with pipe.engine.connect() as conn:
        stored = {r.decision_id: (r.event_id, r.action, list(r.reasons), r.score) for r in
                  conn.execute(sa.select(decisions.c.decision_id, decisions.c.event_id,
                                         decisions.c.action, decisions.c.reasons,
                                         decisions.c.score))}
    by_id: dict[str, set[tuple[Any, ...]]] = defaultdict(set)
    for r in records:
        by_id[r["decision_id"]].add((r["event_id"], r["action"], tuple(r["reasons"]), r["score"]))
    assert {e for e, *_ in stored.values()} == ids
    assert set(by_id) == set(stored), "topic and database disagree on which decisions exist"
    for decision_id, copies in by_id.items():
        assert len(copies) == 1, f"repeats of {decision_id} differ: {copies}"
        event_id, action, reasons, score = stored[decision_id]
        assert copies == {(event_id, action, tuple(reasons), score)}, decision_id
    return len(records) - len(by_id)


def _state(pipe: Any) -> tuple[inv.Snapshot, inv.Partition, dict[str, tuple[str, tuple[str, ...]]],
                               int]:
    import sqlalchemy as sa

    from pipeline.settings import Settings

    cfg = Settings().signals
    with pipe.engine.connect() as conn:
        snap = inv.snapshot(conn)
        partition = inv.cluster_partition(conn)
        forced = inv.forced_components(conn, cfg.link_threshold, cfg.max_partners)
        assert not inv.unforced_splits(partition, forced), "accounts every order links were split"
        assert not inv.consistency_errors(conn)
        decided = {r[0]: (r[1], tuple(r[2])) for r in conn.execute(
            sa.text("SELECT event_id, action, reasons FROM decisions"))}
        deadlocks = int(conn.execute(sa.text(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        )).scalar_one())
    return snap, partition, decided, deadlocks


def _recluster(pipe: Any) -> dict[str, Any]:
    """``unmask recluster`` with the run's settings (database, broker, topics); its summary."""
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "recluster"], env=pipe.env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


def _reconciled(pipe: Any, published_before: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Reconcile twice (the second must change nothing); the reconciled state, with the latest
    decision of every account as read back from the decisions topic."""
    first = _recluster(pipe)
    second = _recluster(pipe)
    assert first["ran"] and second["ran"], (first, second)
    assert second["decisions_revised"] == 0 and second["clusters_changed"] == 0, second
    assert second["published"] == 0 and second["accounts_moved"] == 0, second
    assert second["review_opened"] == second["review_closed"] == 0, second
    import sqlalchemy as sa

    with pipe.engine.connect() as conn:
        state = inv.reconciled_state(conn)
        assert not inv.consistency_errors(conn)
        revisions = int(conn.execute(sa.text(
            "SELECT count(*) FROM decisions WHERE decision_id LIKE 'rev:%' "
            "AND published_at IS NOT NULL")).scalar_one())
    assert revisions == first["decisions_revised"] == first["published"], first
    records = pipe.read_decisions_topic(published_before + revisions, timeout=60)
    state["latest_on_topic"] = inv.latest_on_topic(records)
    return state, first


@pytest.mark.slow
def test_group_with_joins_sigterm_and_kill_9_matches_one_worker(
        shared_services: Any, pipeline_factory: Any) -> None:
    docs = simulated_events(N_EVENTS, seed=41, prefix="scale-")
    ids = {d["event_id"] for d in docs}
    started = time.monotonic()

    no_timer = {"UNMASK_SIGNALS__RECLUSTER_INTERVAL_S": "0"}
    single = pipeline_factory(shared_services, **no_timer)
    single.produce_events(docs)
    one = single.start_worker()
    single_topic = _drain(single, one.alive)
    one.stop()
    single_s = time.monotonic() - started
    print(f"single worker drained in {single_s:.0f}s", flush=True)

    group = pipeline_factory(shared_services, **no_timer)
    third = len(docs) // 3
    group.produce_events(docs[:third])
    w0 = group.start_worker(UNMASK_METRICS_PORT="0")
    w1 = group.start_worker(UNMASK_METRICS_PORT="0")
    wait_for(lambda: group.count("decisions") >= third // 3, 120, what="first decisions",
             alive=w0.alive)
    w2 = group.start_worker(UNMASK_METRICS_PORT="0")
    group.produce_events(docs[third:2 * third])
    wait_for(lambda: group.count("decisions") >= third, 120, what="decisions after a join",
             alive=w2.alive)
    w0.stop()
    at_sigterm = group.count("decisions")
    group.produce_events(docs[2 * third:])
    wait_for(lambda: group.count("decisions") >= at_sigterm + third // 3, 120,
             what="decisions after a graceful leave", alive=w1.alive)
    os.killpg(w1.proc.pid, signal.SIGKILL)
    w1.kill()
    at_kill = group.count("decisions")
    assert at_kill < N_EVENTS, "the stream drained before the kill; nothing was tested"
    group_topic = _drain(group, w2.alive)
    assert w2.alive(), w2.log()
    w2.stop()

    assert_exactly_once(single, docs)
    assert_exactly_once(group, docs)
    repeats = (_check_topic(single, single_topic, ids), _check_topic(group, group_topic, ids))
    a, b = _state(single), _state(group)
    assert a[0].differences(b[0]) == []
    assert len(a[0].counts) > 0 and len(a[1]) > 0, "no windows or clusters: nothing compared"
    assert b[3] <= N_EVENTS // 200, f"{b[3]} deadlocks: lock order is not holding"
    same_clusters = len(a[1] & b[1])
    same_decisions = sum(a[2][e] == b[2][e] for e in ids)
    print(f"single worker {single_s:.0f}s; group: SIGTERM at {at_sigterm}, kill -9 at {at_kill} "
          f"decisions; topic repeats {repeats}; streamed clusters identical {same_clusters} of "
          f"{len(a[1])}/{len(b[1])}; per-event decisions identical {same_decisions}/{N_EVENTS}; "
          f"deadlocks {a[3]}/{b[3]}", flush=True)

    from pipeline.settings import Settings

    cfg = Settings().signals
    ra, sa_ = _reconciled(single, len(single_topic))
    rb, sb = _reconciled(group, len(group_topic))
    print(f"reconcile single: {sa_}; group: {sb}", flush=True)
    assert len(ra["clusters"]) > 0, "no clusters: nothing reconciled"
    assert sa_["decisions_revised"] + sb["decisions_revised"] > 0, "no decision was revised"
    assert set(ra["latest_on_topic"]) == {d["account_id"] for d in docs}
    for key in ("clusters", "review_units", "latest_decisions", "latest_on_topic"):
        assert ra[key] == rb[key], f"{key} differ after reconcile"
    assert ra["latest_on_topic"] == ra["latest_decisions"]
    with single.engine.connect() as conn:
        assert inv.snapshot(conn).differences(a[0]) == [], "reconcile changed order-free state"
        partition = inv.cluster_partition(conn)
        forced = inv.forced_components(conn, cfg.link_threshold, cfg.max_partners)
    assert not inv.unforced_splits(partition, forced), "reconcile split a forced group"
    print(f"after reconcile: {len(ra['clusters'])} clusters, {len(ra['review_units'])} open "
          f"review units, {len(ra['latest_decisions'])} latest decisions identical; total "
          f"{time.monotonic() - started:.0f}s")
