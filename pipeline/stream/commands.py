"""Subcommands of the stream: worker, produce, migrate, replay, demo, services."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.settings import AGENTS, REPO_ROOT, Settings, parse_agents, worker_group

if TYPE_CHECKING:
    from pipeline.stages import Stage

GC_THRESHOLDS = (50_000, 20, 20)
"""Collector thresholds of a worker (Python's default: 700, 10, 10). A batch of a thousand events
allocates millions of short-lived objects, nearly none in cycles; at the default the collector
ran ~3,600 times in a 21,000-event signals+decide bench, 2.5 CPU-seconds of ~19 (bench/
bench_signals.py, docs/benchmarks.md)."""


def tune_gc() -> None:
    """Once start-up is done: move what exists now (modules, settings, stages, the policy) out of
    the collector's sight (``gc.freeze``) and collect young objects less often
    (:data:`GC_THRESHOLDS`). Cyclic garbage is still collected, in larger steps."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("worker", help="run the Faust worker (Kafka in, decisions out)")
    p.add_argument(
        "--agents",
        default=None,
        help="comma list of the agents to run among validate, avatar, dedupe, signals, decide "
        "(default: settings.worker.agents, all); a subset joins the group <group>.<agents>",
    )
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("produce", help="send a JSONL file of events to the input topic")
    p.add_argument("file", type=Path)
    p.add_argument("--topic", default=None, help="default: settings.kafka.topic_events")
    p.set_defaults(func=cmd_produce)

    p = sub.add_parser("migrate", help="upgrade the database schema to the newest version")
    p.add_argument("--db", default=None, help="SQLAlchemy URL (default: settings)")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("replay", help="run the pipeline in-process over a JSONL file of events")
    p.add_argument("file", type=Path)
    p.add_argument("--db", default=None, help="SQLAlchemy URL (default: settings, SQLite)")
    p.add_argument(
        "--decisions-out",
        type=Path,
        default=None,
        help="write each account's latest decision here, one JSON line per account",
    )
    p.add_argument(
        "--file-root",
        type=Path,
        default=None,
        help="directory below which file:// avatar URLs may be read",
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("demo", help="generate a stream with an influence network and replay it")
    p.add_argument("--accounts", type=int, default=3000)
    p.add_argument("--days", type=float, default=2)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--db", default=None, help="default: a fresh SQLite file in a temp dir")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--serve", action="store_true", help="then serve the review page on it")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("services", help="start, stop or show the local Kafka and PostgreSQL")
    p.add_argument("action", choices=["start", "stop", "status", "env"])
    p.set_defaults(func=cmd_services)


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    import faust

    from pipeline.compose import build_engine, build_stages
    from pipeline.health import HealthMonitor, HealthServer, database_check
    from pipeline.stream.app import create_app
    from pipeline.stream.monitoring import KafkaProbe, LagMonitor, watch_app
    from pipeline.stream.stage_process import ProcessStage

    try:
        agents = parse_agents(args.agents) if args.agents else settings.worker.agent_names
    except ValueError as exc:
        print(f"unmask worker: {exc}", file=sys.stderr)
        return 2
    engine = build_engine(settings)
    in_process = [a for a in agents if a not in settings.worker.process_stage_names]
    children = [
        ProcessStage(settings, a) for a in agents if a in settings.worker.process_stage_names
    ]
    for child in children:
        child.start()
    by_name: dict[str, Stage] = {s.name: s for s in build_stages(settings, engine, in_process)}
    by_name.update((c.name, c) for c in children)
    stages = [by_name[a] for a in agents if a in by_name]
    app = create_app(settings, engine, stages, agents)
    k = settings.kafka
    group = worker_group(k.consumer_group, agents)
    logging.getLogger(__name__).info("worker agents %s, consumer group %s", ",".join(agents), group)
    probe = KafkaProbe(k.bootstrap)
    sources = [k.topic_events, k.topic_validated, k.topic_scored, k.topic_matched, k.topic_signals]
    lag = LagMonitor(
        probe,
        group,
        [topic for agent, topic in zip(AGENTS, sources, strict=True) if agent in agents],
    )
    monitor = HealthMonitor(
        {"database": database_check(engine), "kafka": probe.check},
        tasks={"consumer_lag": lag.refresh},
    )
    watch_app(app, monitor, lag)
    if settings.metrics_port:
        HealthServer(monitor, settings.metrics_port).start()
    monitor.start()
    worker = faust.Worker(
        app, loglevel=settings.log_level.lower(), quiet=True, override_logging=False
    )
    tune_gc()
    try:
        worker.execute_from_commandline()
    finally:
        for child in children:
            child.close()
    return 0


def cmd_produce(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.stream.produce import produce_file

    count = produce_file(
        args.file, settings.kafka.bootstrap, args.topic or settings.kafka.topic_events
    )
    print(json.dumps({"produced": count, "topic": args.topic or settings.kafka.topic_events}))
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.store.migrate import upgrade

    upgrade(args.db or settings.database.url)
    return 0


def _replay(
    path: Path, settings: Settings, db: str | None, out: Path | None, batch_size: int
) -> dict[str, object]:
    from tqdm import tqdm

    from pipeline.compose import build_stages
    from pipeline.store.db import make_engine
    from pipeline.store.migrate import upgrade
    from pipeline.stream.embedded import EmbeddedRunner, decision_line, read_jsonl

    url = db or settings.database.url
    upgrade(url)
    engine = make_engine(url)
    runner = EmbeddedRunner(engine, build_stages(settings, engine), batch_size=batch_size)
    total = sum(1 for _ in read_jsonl(str(path)))
    with tqdm(total=total, unit="event", file=sys.stderr, disable=None) as bar:
        report = runner.run(read_jsonl(str(path)), source=f"file:{path.name}", progress=bar.update)
    if out is not None:
        with open(out, "w", encoding="utf-8") as fh:
            for decision in report.latest.values():
                fh.write(decision_line(decision) + "\n")
    engine.dispose()
    return report.summary()


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    if args.file_root is not None:
        settings.avatars.file_root = args.file_root.resolve()
    summary = _replay(args.file, settings, args.db, args.decisions_out, args.batch_size)
    print(json.dumps(summary))
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.stream.demo import run_demo

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="unmask-demo-"))
    return run_demo(settings, workdir, args.accounts, args.days, args.seed, args.db, args.serve)


def cmd_services(args: argparse.Namespace, settings: Settings) -> int:
    script = REPO_ROOT / "ops" / "services.sh"
    return subprocess.call(["bash", str(script), args.action], env=os.environ.copy())
