"""The reconcile job makes the cluster state and the latest decisions independent of order.

One simulated stream is pushed through the real signals and decide stages in several valid
orders (each account's events in order, partitions interleaved differently, different batch
sizes), on SQLite and on PostgreSQL. Before a reconcile the partitions may differ (printed);
after it the partition, cluster scores and counters, open review units and the latest decision
of every account are identical, and a second reconcile changes nothing. On PostgreSQL the
reconcile also runs against a live stage and waits for the batches that hold the cluster lock.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections import defaultdict
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.decide.policy import load_policy
from pipeline.decide.stage import DecideStage
from pipeline.events import parse_event
from pipeline.settings import Settings
from pipeline.signals.locks import share_clusters, try_runner
from pipeline.signals.recluster import REVISION_PREFIX, reconcile
from pipeline.signals.stage import SignalStage
from pipeline.store.db import make_engine
from pipeline.store.migrate import upgrade
from pipeline.store.signal_tables import signal_clusters
from pipeline.store.tables import decisions, metadata
from pipeline.types import AvatarResult, Envelope

N_EVENTS = 900


def _envelopes(n: int = N_EVENTS, seed: int = 41) -> list[Envelope]:
    from pipeline.sim.generate import Simulation

    out = []
    for doc in Simulation(int(n * 0.97), 2, seed, avatars=False).events():
        event = parse_event(json.dumps(doc).encode())
        ai = 0.9 if zlib.crc32(event.account_id.encode()) % 4 == 0 else 0.1
        out.append(Envelope(event=event, avatar=AvatarResult(status="scored", score=ai),
                            matches=()))
        if len(out) == n:
            break
    return out


def _orders(envs: list[Envelope]) -> dict[str, list[list[Envelope]]]:
    """Valid consumption orders: per-account order kept, partitions interleaved differently."""
    def batches(seq: list[Envelope], size: int) -> list[list[Envelope]]:
        return [seq[i:i + size] for i in range(0, len(seq), size)]

    def interleaved(parts: int, chunk: int, reverse: bool) -> list[Envelope]:
        queues: dict[int, list[Envelope]] = defaultdict(list)
        for env in envs:
            queues[zlib.crc32(env.event.account_id.encode()) % parts].append(env)
        keys = sorted(queues, reverse=reverse)
        out: list[Envelope] = []
        pos = dict.fromkeys(keys, 0)
        step = {k: chunk * (1 + i) for i, k in enumerate(keys)}
        while any(pos[k] < len(queues[k]) for k in keys):
            for k in keys:
                out.extend(queues[k][pos[k]:pos[k] + step[k]])
                pos[k] += step[k]
        return out

    return {
        "in order, batches of 64": batches(envs, 64),
        "3 partitions, lagging, batches of 200": batches(interleaved(3, 40, False), 200),
        "5 partitions reversed, batches of 17": batches(interleaved(5, 25, True), 17),
    }


def _clear(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())


def _run(engine: Engine, batches: list[list[Envelope]]) -> None:
    settings = Settings()
    signals = SignalStage(engine, settings)
    decide = DecideStage(engine, settings, ai_threshold=0.5)
    for batch in batches:
        decide.process(signals.process(batch))


def _latest(conn: sa.Connection) -> dict[str, tuple[Any, ...]]:
    best: dict[str, tuple[Any, ...]] = {}
    d = decisions
    for r in conn.execute(sa.select(d.c.account_id, d.c.event_time, d.c.decided_at,
                                    d.c.decision_id, d.c.action, d.c.score, d.c.priority,
                                    d.c.reasons)):
        et = r.event_time if r.event_time.tzinfo else r.event_time.replace(tzinfo=UTC)
        da = r.decided_at if r.decided_at.tzinfo else r.decided_at.replace(tzinfo=UTC)
        order = (et, da, r.decision_id)
        if r.account_id not in best or order > best[r.account_id][0]:
            best[r.account_id] = (order, r.action, r.score, r.priority, tuple(r.reasons))
    return {a: v[1:] for a, v in best.items()}


def _state(engine: Engine) -> dict[str, Any]:
    """Cluster partition (as member sets and ids), per-cluster counters/score/binding, open
    review units, latest decision per account."""
    with engine.connect() as conn:
        members: dict[str, set[str]] = defaultdict(set)
        for a, c in conn.execute(sa.text(
                "SELECT account_id, cluster_id FROM signal_accounts WHERE cluster_id IS NOT NULL")):
            members[c].add(a)
        clusters = {
            r.cluster_id: (frozenset(members[r.cluster_id]), r.size, r.ai_faces, r.reused_photos,
                           r.burst_members, r.score, json.dumps(r.binding, sort_keys=True))
            for r in conn.execute(sa.select(signal_clusters))
        }
        units = sorted(tuple(r) for r in conn.execute(sa.text(
            "SELECT queue, subject_type, subject_id, priority, status FROM review_items "
            "WHERE open_key IS NOT NULL")))
        return {
            "partition": frozenset(frozenset(m) for m in members.values()),
            "clusters": clusters,
            "review_units": units,
            "latest": _latest(conn),
        }


def _consistent(engine: Engine) -> None:
    """After a reconcile, every account's latest decision is the policy applied to its stored
    signals with the account's reconciled cluster score and size."""
    policy = load_policy(None)
    with engine.connect() as conn:
        cluster = {r[0]: (r[1], r[2]) for r in conn.execute(sa.text(
            "SELECT a.account_id, c.score, c.size FROM signal_accounts a "
            "JOIN signal_clusters c ON c.cluster_id = a.cluster_id"))}
        latest: dict[str, tuple[Any, ...]] = {}
        d = decisions
        for r in conn.execute(sa.select(d.c.account_id, d.c.event_time, d.c.decided_at,
                                        d.c.decision_id, d.c.action, d.c.reasons,
                                        d.c.evidence)):
            order = (r.event_time.replace(tzinfo=None), r.decided_at.replace(tzinfo=None),
                     r.decision_id)
            if r.account_id not in latest or order > latest[r.account_id][0]:
                latest[r.account_id] = (order, r.action, r.reasons, r.evidence)
    for account, (_o, action, reasons, evidence) in latest.items():
        score, size = cluster.get(account, (0.0, 1))
        verdict = policy.decide({**evidence["signals"], "cluster_score": score,
                                 "cluster_size": size})
        assert (verdict.action, list(verdict.reasons)) == (action, list(reasons)), account


def test_orders_end_identical_after_reconcile_and_reconcile_is_idempotent(
        engine: Engine) -> None:
    envs = _envelopes()
    before: dict[str, dict[str, Any]] = {}
    after: dict[str, dict[str, Any]] = {}
    reports = {}
    for name, batches in _orders(envs).items():
        _clear(engine)
        _run(engine, batches)
        before[name] = _state(engine)
        first = reconcile(engine, Settings())
        after[name] = _state(engine)
        _consistent(engine)
        with engine.connect() as conn:
            n_decisions = conn.execute(sa.text("SELECT count(*) FROM decisions")).scalar_one()
        second = reconcile(engine, Settings())
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM decisions")).scalar_one() \
                == n_decisions, "a second reconcile stored decisions"
        assert second.ran and second.revised == [] and second.clusters_changed == 0
        assert second.accounts_moved == 0 and second.review_opened == 0
        assert second.review_closed == 0 and second.review_updated == 0
        assert _state(engine) == after[name], "a second reconcile changed the state"
        reports[name] = first.summary()
    names = list(before)
    base = after[names[0]]
    assert len(base["partition"]) > 3, "no clusters formed: nothing compared"
    assert any(base["review_units"]), "no review units: nothing compared"
    for name in names[1:]:
        differs = {k for k in base if before[names[0]][k] != before[name][k]}
        same = len(before[names[0]]["partition"] & before[name]["partition"])
        print(f"\n{engine.dialect.name} {name!r} vs {names[0]!r} before reconcile: "
              f"{same} identical clusters of {len(before[names[0]]['partition'])}/"
              f"{len(before[name]['partition'])}; differing: {sorted(differs) or 'nothing'}")
        for key in base:
            assert after[name][key] == base[key], f"{key} differs after reconcile ({name})"
    for name, summary in reports.items():
        print(f"{engine.dialect.name} reconcile after {name!r}: {summary}")


def test_reconcile_waits_for_signal_batches_and_one_runner_at_a_time(
        fresh_database_url: str) -> None:
    upgrade(fresh_database_url)
    engine = make_engine(fresh_database_url)
    try:
        envs = _envelopes(400)
        _run(engine, [envs[i:i + 50] for i in range(0, 200, 50)])
        done: list[Any] = []
        with engine.connect() as held:
            with held.begin():
                share_clusters(held)
                worker = threading.Thread(target=lambda: done.append(reconcile(engine,
                                                                               Settings())))
                worker.start()
                time.sleep(1.0)
                assert not done, "the reconcile ran while a signals batch held the lock"
            worker.join(30)
        assert done and done[0].ran
        with engine.connect() as runner, runner.begin():
            assert try_runner(runner)
            skipped = reconcile(engine, Settings(), only_if_free=True)
        assert not skipped.ran

        stop = threading.Event()
        errors: list[BaseException] = []

        def stream() -> None:
            try:
                rest = envs[200:]
                for i in range(0, len(rest), 20):
                    settings = Settings()
                    batch = SignalStage(engine, settings).process(rest[i:i + 20])
                    DecideStage(engine, settings, ai_threshold=0.5).process(batch)
            except BaseException as exc:  # noqa: BLE001 - reported by the test thread
                errors.append(exc)
            finally:
                stop.set()

        live = threading.Thread(target=stream)
        live.start()
        rounds = 0
        while not stop.is_set():
            assert reconcile(engine, Settings()).ran
            rounds += 1
        live.join()
        assert not errors, errors
        assert rounds >= 1
        with engine.connect() as conn:
            sizes = {r[0]: r[1] for r in conn.execute(sa.text(
                "SELECT cluster_id, size FROM signal_clusters"))}
            counted = {r[0]: r[1] for r in conn.execute(sa.text(
                "SELECT cluster_id, count(*) FROM signal_accounts WHERE cluster_id IS NOT NULL "
                "GROUP BY cluster_id"))}
        assert sizes == counted, "cluster sizes differ from memberships after concurrent runs"
        final = reconcile(engine, Settings())
        concurrent = _state(engine)
        _clear(engine)
        _run(engine, [envs[i:i + 100] for i in range(0, len(envs), 100)])
        reconcile(engine, Settings())
        sequential = _state(engine)
        for key in sequential:
            assert concurrent[key] == sequential[key], f"{key} differs from a sequential run"
        print(f"\nconcurrent: {rounds} reconciles while the stage ran; final {final.summary()}")
    finally:
        engine.dispose()


def test_revised_decisions_have_deterministic_ids(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ids.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        envs = _envelopes(400)
        order = _orders(envs)["5 partitions reversed, batches of 17"]
        _run(engine, order)
        report = reconcile(engine, Settings())
        ids = sorted(d.decision_id for d in report.revised)
        assert all(i.startswith(REVISION_PREFIX) for i in ids)
        _clear(engine)
        _run(engine, order)
        again = reconcile(engine, Settings())
        assert sorted(d.decision_id for d in again.revised) == ids
    finally:
        engine.dispose()


def test_cli_recluster_reports_and_stores_revisions_without_publishing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        _run(engine, _orders(_envelopes(400))["5 partitions reversed, batches of 17"])
        assert main(["recluster", "--db", url, "--no-publish"]) == 0
        first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert main(["recluster", "--db", url, "--no-publish"]) == 0
        second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        with engine.connect() as conn:
            unpublished = conn.execute(sa.text(
                "SELECT count(*) FROM decisions WHERE decision_id LIKE 'rev:%' "
                "AND published_at IS NULL")).scalar_one()
    finally:
        engine.dispose()
    assert first["ran"] and first["accounts"] > 0
    assert unpublished == first["decisions_revised"]
    assert second["decisions_revised"] == 0 and second["clusters_changed"] == 0


def test_a_revision_follows_its_decision_even_when_that_one_committed_after_the_clock_read(
        tmp_path: Path) -> None:
    """A decide batch that commits between the reconcile's clock reading and its read of the
    decisions (the decide stage takes no cluster lock) must not outrank the revision."""
    from datetime import datetime

    url = f"sqlite:///{tmp_path / 'race.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        _run(engine, _orders(_envelopes(400))["5 partitions reversed, batches of 17"])
        stale_clock = datetime(2000, 1, 1, tzinfo=UTC)
        first = reconcile(engine, Settings(), now=stale_clock)
        second = reconcile(engine, Settings())
    finally:
        engine.dispose()
    assert first.revised, "nothing revised: the race was not exercised"
    assert second.revised == [] and second.review_updated == 0, second.summary()


def test_an_account_whose_topic_order_was_overtaken_gets_its_latest_verdict_republished(
        tmp_path: Path) -> None:
    """An older decision published after the account's latest one (a revision of an earlier
    event racing the later event's decision) makes the reconcile re-issue the latest verdict
    once, so the account's last record on the topic is its latest decision again."""
    from datetime import datetime, timedelta

    from pipeline.signals.recluster import mark_published

    url = f"sqlite:///{tmp_path / 'overtaken.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        _run(engine, [_envelopes(400)])
        reconcile(engine, Settings())
        with engine.begin() as conn:
            rows = conn.execute(sa.select(decisions.c.account_id, decisions.c.decision_id)
                                .order_by(decisions.c.event_time)).all()
            by_account: dict[str, list[str]] = defaultdict(list)
            for account, decision_id in rows:
                by_account[account].append(decision_id)
            account, ids = next((a, i) for a, i in sorted(by_account.items()) if len(i) >= 2)
            earlier = datetime.now(UTC) - timedelta(hours=2)
            conn.execute(decisions.update().values(published_at=earlier))
            conn.execute(decisions.update().where(decisions.c.decision_id == ids[0])
                         .values(published_at=earlier + timedelta(hours=1)))
        first = reconcile(engine, Settings())
        assert [d.account_id for d in first.revised] == [account]
        assert first.revised[0].action == _latest_row(engine, account)[0]
        assert reconcile(engine, Settings()).revised == []
        mark_published(engine, [first.revised[0].decision_id])
        assert reconcile(engine, Settings()).revised == []
    finally:
        engine.dispose()


def _latest_row(engine: Engine, account: str) -> tuple[Any, ...]:
    with engine.connect() as conn:
        return _latest(conn)[account]
