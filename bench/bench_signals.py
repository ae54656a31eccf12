"""Benchmark of the signals and decide stages on a simulated stream: quality, latency, throughput.

Runs ``SignalStage`` then ``DecideStage`` (``pipeline.stages.run_stage``, as the runners do) over
``pipeline.sim`` events in micro-batches against a fresh database (PostgreSQL from
``UNMASK_TEST_DATABASE_URL`` by default, or ``--db sqlite``). A baseline measured in the same
run, on the same database, inserts the same batches as one multi-row ``INSERT`` each into a bare
table (``bench_baseline``: event id + JSON payload); ratios are taken against it.

The avatar and dedupe stages are stood in for from the ground truth: AI faces score >= 0.5 with
probability 0.9, real photos with 0.015; an account showing a photo already seen on another
account gets a reused-photo match to that account. An account counts as flagged at the end of
the first batch after which its cluster scores >= ``--flag-threshold`` (and, in
``threshold_grid``, each of several thresholds: calibrate on one seed, report on another);
latency is in event time (the simulated clock), from its creation and from its latest event
before the flag.

    .venv/bin/python bench/bench_signals.py --accounts 20000 --days 10 --seed 7
    .venv/bin/python bench/bench_signals.py --accounts 5000 --days 3 --batch 1000 --max-span-s 0 \\
        --profile /tmp/signals.txt      # pyinstrument profile of the stages (dev dependency)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.decide.stage import DecideStage  # noqa: E402
from pipeline.events import parse_event  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from pipeline.signals import score as score_module  # noqa: E402
from pipeline.signals.stage import SignalStage  # noqa: E402
from pipeline.sim.generate import Simulation, _h  # noqa: E402
from pipeline.stages import run_stage  # noqa: E402
from pipeline.store.db import drop_database, make_engine  # noqa: E402
from pipeline.store.migrate import upgrade  # noqa: E402
from pipeline.store.signal_tables import signal_accounts  # noqa: E402
from pipeline.stream.commands import tune_gc  # noqa: E402
from pipeline.types import AvatarResult, Envelope, PhotoMatch  # noqa: E402


def fresh_db(kind: str) -> tuple[str, Any]:
    if kind == "sqlite":
        path = Path(f"/tmp/bench_signals_{uuid.uuid4().hex[:8]}.db")
        return f"sqlite:///{path}", lambda: path.unlink(missing_ok=True)
    server = sa.engine.make_url(os.environ["UNMASK_TEST_DATABASE_URL"])
    name = f"unmask_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        try:
            drop_database(admin, name)
        except sa.exc.DBAPIError as exc:
            print(f"could not drop {name}: {exc.orig}", file=sys.stderr)

    return server.set(database=name).render_as_string(hide_password=False), drop


class AvatarStandIn:
    """Avatar + dedupe outputs derived from the ground truth (see module docstring)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.first_holder: dict[str, str] = {}

    def __call__(self, account_id: str, kind: str, photo_key: str) -> tuple[AvatarResult, tuple]:
        if kind == "none" or not photo_key:
            return AvatarResult.absent(), ()
        rng = random.Random(_h(self.seed, "score", account_id))
        p_ai = 0.9 if kind == "ai" else 0.015
        score = rng.uniform(0.5, 1.0) if rng.random() < p_ai else rng.uniform(0.0, 0.5)
        phash = f"{_h('phash', photo_key) % 16**16:016x}"
        holder = self.first_holder.setdefault(photo_key, account_id)
        matches = ()
        if holder != account_id:
            matches = (PhotoMatch.from_account(holder, 2, "plain", "phash"),)
        return AvatarResult(status="scored", score=score, hashes={"phash": phash}), matches


NAT_PREFIXES = tuple(f"172.{56 + i}." for i in range(8)) + ("2607:fb90:",)
"""The simulator's carrier-NAT ranges (thousands of honest accounts share each /24 or /48)."""
GRID = tuple(round(0.3 + 0.05 * i, 2) for i in range(13))
"""Flag thresholds evaluated in every run (calibration: pick on one seed, report on another)."""


def quality(flagged_at: dict[str, tuple[float, float]], campaign: set[str]) -> dict[str, float]:
    flagged = set(flagged_at)
    tp = len(flagged & campaign)
    return {
        "flagged": len(flagged),
        "precision": round(tp / len(flagged), 5) if flagged else 1.0,
        "recall": round(tp / len(campaign), 5) if campaign else 1.0,
        "within_10min_of_event": round(
            sum(1 for a in flagged & campaign if flagged_at[a][0] - flagged_at[a][1] <= 600)
            / max(1, len(campaign)),
            4,
        ),
    }


class ServerCpu:
    """CPU seconds (user + system, from /proc) used so far by the PostgreSQL backends serving
    the bench database: with the client's ``time.process_time()`` it gives a cost per event
    that the other processes on a shared machine move far less than wall-clock rates (a
    backend waiting for the CPU or a lock uses none). Zero when the server is not local."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.pids: set[int] = set()
        self.tick = os.sysconf("SC_CLK_TCK")

    def refresh(self) -> None:
        if self.engine.dialect.name != "postgresql":
            return
        with self.engine.connect() as conn:
            self.pids = {
                int(r[0]) for r in conn.execute(sa.text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND backend_type = 'client backend'"))
            }

    def seconds(self) -> float:
        total = 0
        for pid in self.pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / self.tick


def aggregate_errors(conn: sa.Connection) -> list[str]:
    """Running cluster counters and feature counts that differ from a recount of the members."""
    errors = []
    recount = {
        r[0]: tuple(int(x) for x in r[1:])
        for r in conn.execute(sa.text(
            "SELECT cluster_id, count(*), sum(CASE WHEN ai_face THEN 1 ELSE 0 END), "
            "sum(CASE WHEN reused_photo THEN 1 ELSE 0 END), sum(CASE WHEN burst THEN 1 ELSE 0 END) "
            "FROM signal_accounts WHERE cluster_id IS NOT NULL GROUP BY cluster_id"))
    }
    stored = {
        r[0]: tuple(int(x) for x in r[1:])
        for r in conn.execute(sa.text(
            "SELECT cluster_id, size, ai_faces, reused_photos, burst_members FROM signal_clusters"))
    }
    if recount != stored:
        bad = [c for c in set(recount) | set(stored) if recount.get(c) != stored.get(c)]
        errors.append(f"{len(bad)} clusters' counters differ from their members, e.g. {bad[:3]}")
    features = set(conn.execute(sa.text(
        "SELECT a.cluster_id, f.kind, f.value, count(*) FROM signal_account_features f "
        "JOIN signal_accounts a ON a.account_id = f.account_id "
        "WHERE a.cluster_id IS NOT NULL GROUP BY a.cluster_id, f.kind, f.value")).all())
    kept = set(conn.execute(sa.text(
        "SELECT cluster_id, kind, value, members FROM signal_cluster_features")).all())
    if features != kept:
        errors.append(f"cluster feature counts: {len(features - kept)} missing/wrong, "
                      f"{len(kept - features)} extra")
    return errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=50_000)
    ap.add_argument("--days", type=float, default=30)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument(
        "--max-span-s", type=float, default=300.0,
        help="cut a micro-batch when its events span more event time than this (a live stream's "
        "batches hold what arrived in a moment; 0 = size only, for pure throughput)",
    )
    ap.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    ap.add_argument("--long-window-hours", type=float, default=168.0)
    ap.add_argument("--flag-threshold", type=float, default=None)
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--size-scale", type=float, default=None,
                    help="override pipeline.signals.score.SIZE_SCALE (calibration runs)")
    ap.add_argument("--no-decide", action="store_true", help="run the signals stage only")
    ap.add_argument("--profile", type=Path, default=None, help="pyinstrument HTML of the stages")
    ap.add_argument(
        "--default-gc", action="store_true",
        help="keep Python's collector settings (default: the worker's, pipeline.stream.commands."
        "tune_gc, applied once the stages are built)",
    )
    ap.add_argument(
        "--dump", type=Path, default=None,
        help="write every account's final cluster (id, score, size, flags), flag time and "
        "decision here, as JSON lines sorted by account: diff two runs of one seed to show a "
        "change left the decisions alone",
    )
    args = ap.parse_args()
    load_before = os.getloadavg()
    if args.size_scale is not None:
        score_module.SIZE_SCALE = args.size_scale

    settings = Settings()
    settings.signals.windows_hours = [1.0, 24.0, args.long_window_hours]
    thr = (
        args.flag_threshold if args.flag_threshold is not None else settings.signals.flag_threshold
    )
    sim = Simulation(args.accounts, args.days, args.seed, avatars=False)
    truth = {r.account_id: r for r in sim.truth()}
    url, drop = fresh_db(args.db)
    try:
        upgrade(url)
        engine = make_engine(url)
        stage = SignalStage(engine, settings)
        decide = None if args.no_decide else DecideStage(engine, settings)
        baseline = sa.Table(
            "bench_baseline", sa.MetaData(), sa.Column("event_id", sa.Text, primary_key=True),
            sa.Column("payload", sa.JSON, nullable=False),
        )
        baseline.create(engine)
        if not args.default_gc:
            tune_gc()
        profiler = None
        if args.profile:
            from pyinstrument import Profiler

            profiler = Profiler()
        base_s = decide_s = 0.0
        decided: dict[str, tuple[float, float]] = {}
        stand_in = AvatarStandIn(args.seed)
        created: dict[str, float] = {}
        last_event: dict[str, float] = {}
        flagged_at: dict[str, tuple[float, float]] = {}
        flag_grid: dict[float, dict[str, tuple[float, float]]] = {g: {} for g in GRID}
        seen: dict[str, tuple[int, int]] = {}
        nat: set[str] = set()
        stage_s = 0.0
        n_events = 0
        server = ServerCpu(engine)
        cpu: dict[str, float] = defaultdict(float)
        batch: list[Envelope] = []

        def flush() -> None:
            nonlocal stage_s, n_events, base_s, decide_s
            rows = [{"event_id": e.event.event_id, "payload": e.event.to_dict()} for e in batch]
            t0 = time.perf_counter()
            with engine.begin() as conn:
                conn.execute(baseline.insert(), rows)
            base_s += time.perf_counter() - t0
            server.refresh()
            if profiler is not None:
                profiler.start()
            c0, s0 = time.process_time(), server.seconds()
            t0 = time.perf_counter()
            out = run_stage(stage, batch)
            t1 = time.perf_counter()
            c1, s1 = time.process_time(), server.seconds()
            stage_s += t1 - t0
            cpu["signals_client"] += c1 - c0
            cpu["signals_server"] += s1 - s0
            if decide is not None:
                outd = run_stage(decide, out)
                decide_s += time.perf_counter() - t1
                cpu["decide_client"] += time.process_time() - c1
                cpu["decide_server"] += server.seconds() - s1
            if profiler is not None:
                profiler.stop()
            n_events += len(batch)
            now = max(e.event.occurred_at.timestamp() for e in out)
            if decide is not None:
                for e in outd:
                    d = e.decision
                    if d is not None and d.action in ("disable", "challenge"):
                        t_ev = e.event.occurred_at.timestamp()
                        decided.setdefault(e.event.account_id, (now, t_ev))
            warm: dict[str, tuple[float, int, set[str]]] = {}
            for e in out:
                c = e.cluster
                if c and c.cluster_id and c.cluster_score >= GRID[0]:
                    warm.setdefault(c.cluster_id, (c.cluster_score, c.size, set()))[2].add(
                        e.event.account_id
                    )
            rescan = []
            for cid, (score, size, members) in warm.items():
                level = sum(1 for g in GRID if score >= g)
                seen_level, seen_size = seen.get(cid, (0, 0))
                if level > seen_level or size - seen_size > len(members):
                    rescan.append(cid)
                seen[cid] = (max(level, seen_level), size)
            pairs = [(acc, cid) for cid, (_s, _n, ms) in warm.items() for acc in ms]
            if rescan:
                with engine.connect() as conn:
                    pairs += conn.execute(
                        sa.select(signal_accounts.c.account_id, signal_accounts.c.cluster_id).where(
                            signal_accounts.c.cluster_id.in_(sorted(rescan))
                        )
                    ).all()
            for acc, cid in pairs:
                score = warm[cid][0]
                for g in GRID:
                    if score >= g and acc not in flag_grid[g]:
                        flag_grid[g][acc] = (now, last_event.get(acc, now))
                if score >= thr and acc not in flagged_at:
                    flagged_at[acc] = (now, last_event.get(acc, now))
            batch.clear()

        wall0 = time.perf_counter()
        for raw in sim.events():
            ev = parse_event(json.dumps(raw).encode())
            tr = truth[ev.account_id]
            t = ev.occurred_at.timestamp()
            created.setdefault(ev.account_id, t)
            if ev.signup_ip and ev.signup_ip.startswith(NAT_PREFIXES) and not tr.is_campaign:
                nat.add(ev.account_id)
            last_event[ev.account_id] = t
            if ev.event_type == "account.created.v1":
                avatar, matches = stand_in(ev.account_id, tr.avatar_kind, tr.photo_key)
            else:
                avatar, matches = None, ()
            batch.append(Envelope(event=ev, avatar=avatar, matches=matches))
            span = t - batch[0].event.occurred_at.timestamp()
            if len(batch) >= args.batch or (args.max_span_s and span > args.max_span_s):
                flush()
        if batch:
            flush()
        wall = time.perf_counter() - wall0
        if profiler is not None:
            args.profile.write_text(
                profiler.output_text(show_all=False) if args.profile.suffix == ".txt"
                else profiler.output_html()
            )
        with engine.connect() as conn:
            consistency = aggregate_errors(conn)
            cluster_rows = conn.execute(sa.text(
                "SELECT a.cluster_id, c.score, c.size, a.account_id FROM signal_accounts a "
                "JOIN signal_clusters c ON c.cluster_id = a.cluster_id")).all()
            if args.dump:
                account_rows = conn.execute(sa.text(
                    "SELECT a.account_id, a.created_s, a.ai_face, a.reused_photo, a.burst, "
                    "a.cluster_id, c.score, c.size, c.binding FROM signal_accounts a "
                    "LEFT JOIN signal_clusters c ON c.cluster_id = a.cluster_id "
                    "ORDER BY a.account_id")).all()
                with args.dump.open("w") as out:
                    for r in account_rows:
                        out.write(json.dumps({
                            "account": r[0], "created_s": int(r[1]), "ai_face": bool(r[2]),
                            "reused_photo": bool(r[3]), "burst": bool(r[4]), "cluster": r[5],
                            "score": r[6], "size": r[7], "binding": r[8],
                            "flagged_at": flagged_at.get(r[0]), "acted_at": decided.get(r[0]),
                        }, sort_keys=True) + "\n")
        engine.dispose()
    finally:
        drop()

    campaign = {a for a, r in truth.items() if r.is_campaign}
    flagged = set(flagged_at)
    tp = len(flagged & campaign)
    precision = tp / len(flagged) if flagged else 1.0
    recall = tp / len(campaign) if campaign else 1.0
    lat_created = [flagged_at[a][0] - created[a] for a in flagged & campaign]
    lat_event = [flagged_at[a][0] - flagged_at[a][1] for a in flagged & campaign]
    within_10 = sum(1 for x in lat_event if x <= 600) / len(campaign) if campaign else 1.0
    within_10_created = sum(1 for x in lat_created if x <= 600) / len(campaign) if campaign else 1.0
    per_style: dict[str, dict[str, float]] = {}
    by_style = defaultdict(set)
    for a in campaign:
        by_style[truth[a].style].add(a)
    for style, accs in sorted(by_style.items()):
        got = accs & flagged
        per_style[style] = {
            "accounts": len(accs),
            "recall": round(len(got) / len(accs), 4),
            "within_10min_of_event": round(
                sum(1 for a in got if flagged_at[a][0] - flagged_at[a][1] <= 600) / len(accs), 4
            ),
            "within_10min_of_creation": round(
                sum(1 for a in got if flagged_at[a][0] - created[a] <= 600) / len(accs), 4
            ),
        }
    fp = flagged - campaign
    honest_scores: dict[str, tuple[float, int]] = {}
    tainted = set()
    for cid, score, size, acc in cluster_rows:
        if acc in campaign:
            tainted.add(cid)
        honest_scores[cid] = (float(score), int(size))
    honest = sorted((v for c, v in honest_scores.items() if c not in tainted), reverse=True)
    acted = set(decided)
    acted_tp = len(acted & campaign)
    result = {
        "accounts": args.accounts,
        "days": args.days,
        "seed": args.seed,
        "events": n_events,
        "batch": args.batch,
        "db": args.db,
        "long_window_hours": args.long_window_hours,
        "flag_threshold": thr,
        "size_scale": score_module.SIZE_SCALE,
        "campaign_accounts": len(campaign),
        "flagged": len(flagged),
        "precision": round(precision, 5),
        "recall": round(recall, 5),
        "flagged_within_10min_of_event": round(within_10, 4),
        "flagged_within_10min_of_creation": round(within_10_created, 4),
        "median_latency_s_from_event": round(statistics.median(lat_event), 1)
        if lat_event
        else None,
        "false_positives": len(fp),
        "honest_on_carrier_nat": len(nat),
        "honest_on_carrier_nat_flagged": len(nat & flagged),
        "top_honest_clusters_score_size": honest[:5],
        "campaign_clusters": len(tainted),
        "false_positive_styles": dict(Counter(truth[a].avatar_kind for a in fp)),
        "per_style": per_style,
        "threshold_grid": {str(g): quality(flag_grid[g], campaign) for g in GRID},
        "disabled_or_challenged": {
            "accounts": len(acted),
            "precision": round(acted_tp / len(acted), 5) if acted else None,
            "recall": round(acted_tp / len(campaign), 5) if campaign else None,
            "within_10min_of_event": round(
                sum(1 for a in acted & campaign if decided[a][0] - decided[a][1] <= 600)
                / len(campaign), 4) if campaign else None,
        },
        "stage_seconds": round(stage_s, 2),
        "stage_events_per_s": round(n_events / stage_s, 1),
        "decide_seconds": round(decide_s, 2),
        "signals_and_decide_events_per_s": round(n_events / (stage_s + decide_s), 1),
        "baseline_insert_events_per_s": round(n_events / base_s, 1),
        "ratio_signals_and_decide_to_baseline": round(base_s / (stage_s + decide_s), 4),
        "cpu_seconds": {k: round(v, 2) for k, v in sorted(cpu.items())},
        "signals_and_decide_events_per_cpu_s": round(n_events / sum(cpu.values()), 1)
        if sum(cpu.values())
        else None,
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "wall_seconds": round(wall, 1),
        "gc": "default" if args.default_gc else "worker (tune_gc)",
        "aggregate_errors": consistency,
        "finished": datetime.now().isoformat(timespec="seconds"),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
