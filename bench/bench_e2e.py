"""End-to-end benchmark: events/s and event-to-decision latency through Kafka and PostgreSQL.

The same simulated events are run twice in one invocation:
  1. baseline: the embedded runner (same stages, in-process, no Kafka) on a fresh PostgreSQL db;
  2. the real path: ``unmask produce`` -> Faust worker(s) -> PostgreSQL + decisions topic.
Latency is the broker timestamp of the decision record minus that of its input record; the
throughput of the real path is reported as a ratio to the baseline measured in the same run.

    eval "$(bash ops/services.sh env)"
    .venv/bin/python bench/bench_e2e.py --accounts 2000 --workers 1 [--no-avatars]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (  # noqa: E402
    WorkerProcess,
    create_database,
    create_topics,
    delete_topics,
    drop_database,
    percentile,
    produce_at_rate,
    read_topic,
    worker_env,
)


def write_events(path: Path, accounts: int, avatars: bool, seed: int) -> tuple[int, Path | None]:
    from pipeline.sim.generate import Simulation
    from pipeline.stream.demo import shared_faces_dir

    faces = shared_faces_dir() if avatars else None
    sim = Simulation(
        accounts,
        1.0,
        seed,
        avatars=faces is not None,
        faces_dir=faces,
        avatar_dir=path.parent / "avatars" if faces else None,
    )
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for event in sim.events():
            fh.write(json.dumps(event) + "\n")
            n += 1
    return n, faces


def baseline(events: Path, faces: Path | None, avatar_dir: Path) -> float:
    from pipeline.compose import build_stages
    from pipeline.settings import Settings
    from pipeline.store.db import make_engine
    from pipeline.stream.embedded import EmbeddedRunner, read_jsonl

    url = create_database()
    settings = Settings()
    settings.database.url = url
    if faces:
        settings.avatars.file_root = faces
        settings.avatars.extra_file_roots = [avatar_dir]
    engine = make_engine(url)
    runner = EmbeddedRunner(engine, build_stages(settings, engine), batch_size=64)
    started = time.perf_counter()
    report = runner.run(read_jsonl(str(events)), source="bench")
    elapsed = time.perf_counter() - started
    engine.dispose()
    drop_database(url)
    return report.valid / elapsed


def kafka_run(
    events: Path,
    n: int,
    workers: int,
    faces: Path | None,
    avatar_dir: Path,
    workdir: Path,
    rate: float,
) -> dict[str, float]:
    url = create_database()
    topics = create_topics()
    extra = {}
    if faces:
        extra = {
            "UNMASK_AVATARS__FILE_ROOT": str(faces),
            "UNMASK_AVATARS__EXTRA_FILE_ROOTS": json.dumps([str(avatar_dir)]),
        }
    env = worker_env(url, topics, extra)
    procs = [WorkerProcess.start(env, workdir / f"worker{i}.log") for i in range(workers)]
    try:
        time.sleep(8)  # let the group form before the clock starts
        started = time.time()
        produce_at_rate(events, topics["topic_events"], rate)
        decisions = read_topic(topics["topic_decisions"], n, timeout=600)
        finished = max(r.timestamp for r in decisions) / 1000 if decisions else time.time()
        inputs = read_topic(topics["topic_events"], n, timeout=60)
    finally:
        for p in procs:
            p.stop()
    sent = {json.loads(r.value)["event_id"]: r.timestamp for r in inputs}
    latencies = [
        (r.timestamp - sent[json.loads(r.value)["event_id"]]) / 1000
        for r in decisions
        if json.loads(r.value)["event_id"] in sent
    ]
    delete_topics(topics)
    drop_database(url)
    return {
        "decisions": len(decisions),
        "events_per_s": len(decisions) / max(1e-9, finished - started),
        "p50_s": percentile(latencies, 0.5),
        "p99_s": percentile(latencies, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--no-avatars", action="store_true")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="events/s to produce at (0: all at once, measures capacity)",
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="unmask-bench-"))
    events = workdir / "events.jsonl"
    n, faces = write_events(events, args.accounts, not args.no_avatars, args.seed)
    avatar_dir = (workdir / "avatars").resolve()
    avatar_dir.mkdir(exist_ok=True)
    base = baseline(events, faces, avatar_dir)
    real = kafka_run(events, n, args.workers, faces, avatar_dir, workdir, args.rate)
    result = {
        "events": n,
        "avatars": faces is not None,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "embedded_events_per_s": round(base, 1),
        **{k: round(v, 4) for k, v in real.items()},
        "ratio_to_embedded": round(real["events_per_s"] / base, 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
