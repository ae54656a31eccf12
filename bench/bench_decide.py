"""Decide-stage throughput on PostgreSQL, against a bare multi-row insert of the same events.

eval "$(bash ops/services.sh env)"
.venv/bin/python bench/bench_decide.py --accounts 4000 --batch 200
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa  # noqa: E402

from bench.harness import create_database, drop_database  # noqa: E402
from pipeline.decide.stage import DecideStage  # noqa: E402
from pipeline.events import parse_event  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from pipeline.sim.generate import Simulation  # noqa: E402
from pipeline.store.db import make_engine  # noqa: E402
from pipeline.types import AvatarResult, ClusterSignal, Envelope  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args()
    envs = [
        Envelope(
            parse_event(json.dumps(e).encode()), AvatarResult.absent(), (), ClusterSignal.none()
        )
        for e in Simulation(args.accounts, 1, 3, avatars=False).events()
    ]
    batches = [envs[i : i + args.batch] for i in range(0, len(envs), args.batch)]
    url = create_database()
    engine = make_engine(url)
    bare = sa.Table(
        "bare", sa.MetaData(), sa.Column("event_id", sa.String), sa.Column("doc", sa.JSON)
    )
    bare.create(engine)
    started = time.perf_counter()
    for batch in batches:
        with engine.begin() as conn:
            conn.execute(
                bare.insert(),
                [{"event_id": e.event.event_id, "doc": e.event.to_dict()} for e in batch],
            )
    baseline = len(envs) / (time.perf_counter() - started)
    stage = DecideStage(engine, Settings())
    started = time.perf_counter()
    for batch in batches:
        stage.process(batch)
    decide = len(envs) / (time.perf_counter() - started)
    engine.dispose()
    drop_database(url)
    print(
        json.dumps(
            {
                "events": len(envs),
                "batch": args.batch,
                "load": os.getloadavg()[0],
                "bare_insert_events_per_s": round(baseline),
                "decide_events_per_s": round(decide),
                "ratio": round(decide / baseline, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
