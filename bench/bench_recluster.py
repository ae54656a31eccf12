"""Benchmark of the reconcile job (pipeline/signals/recluster.py) against the streaming stages.

Pushes ``pipeline.sim`` events (no avatars; one account in four stands in as an AI face) through
``SignalStage`` + ``DecideStage`` in micro-batches on a fresh database (PostgreSQL from
``UNMASK_TEST_DATABASE_URL``, or ``--db sqlite``), then runs the reconcile twice. The baseline,
measured in the same run, is the streaming time of the same events; the reconcile is reported
in seconds and as a ratio to it (the cluster lock is held, and the stream paused, for that long).

    .venv/bin/python bench/bench_recluster.py --accounts 5000 --days 3 --seed 7
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
import zlib
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    from pipeline.decide.stage import DecideStage
    from pipeline.events import parse_event
    from pipeline.settings import Settings
    from pipeline.signals.recluster import reconcile
    from pipeline.signals.stage import SignalStage
    from pipeline.sim.generate import Simulation
    from pipeline.store.db import drop_database, make_engine
    from pipeline.store.migrate import upgrade
    from pipeline.types import AvatarResult, Envelope

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=5000)
    ap.add_argument("--days", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    args = ap.parse_args()

    admin = None
    if args.db == "postgres":
        server = sa.engine.make_url(os.environ["UNMASK_TEST_DATABASE_URL"])
        name = f"unmask_bench_rc_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = server.set(database=name).render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{tempfile.mkdtemp()}/recluster.db"
    try:
        upgrade(url)
        engine = make_engine(url)
        settings = Settings()
        envs = []
        for doc in Simulation(args.accounts, args.days, args.seed, avatars=False).events():
            event = parse_event(json.dumps(doc).encode())
            ai = 0.9 if zlib.crc32(event.account_id.encode()) % 4 == 0 else 0.1
            envs.append(Envelope(event=event, avatar=AvatarResult(status="scored", score=ai),
                                 matches=()))
        signals, decide = SignalStage(engine, settings), DecideStage(engine, settings, None, 0.5)
        started = time.perf_counter()
        for i in range(0, len(envs), args.batch):
            decide.process(signals.process(envs[i:i + args.batch]))
        stream_s = time.perf_counter() - started
        first = reconcile(engine, settings)
        second = reconcile(engine, settings)
        engine.dispose()
        print(json.dumps({
            "db": args.db, "events": len(envs), "accounts": first.accounts,
            "stream_s": round(stream_s, 2), "reconcile_s": round(first.seconds, 2),
            "second_reconcile_s": round(second.seconds, 2),
            "reconcile_to_stream": round(first.seconds / stream_s, 3),
            "first": first.summary(), "second_revised": len(second.revised),
            "load": os.getloadavg()[0],
        }))
    finally:
        if admin is not None:
            drop_database(admin, name)
            admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
