"""Scale-out benchmark: 1, 2 and 4 Faust workers in one consumer group on this machine.

For each worker count, in one invocation and over the same simulated events (by default without
avatars, so the avatar stage passes events through and the database-bound stages are what is
measured; ``--avatars`` gives them pictures from the shared faces): a fresh
PostgreSQL database and fresh topics (6 partitions), N ``unmask worker`` processes that join
one group, then the events are produced (as a backlog, or at ``--rate`` events/s) and the
decisions topic is read back. Reported per run: events/s (decisions / time from the first
produce to the last decision), p50/p99 event-to-decision latency (broker timestamps of the
decision minus its input record; with a backlog this is mostly queueing), CPU used by the
workers, by PostgreSQL and by the Kafka broker (share of one core, from /proc), PostgreSQL
deadlocks, and the ratio of events/s to the 1-worker run of the same invocation.

``--avatar-workers K ...`` adds, after each all-agents run of N workers, runs of N main workers
(every agent but avatar, ``--agents validate,dedupe,signals,decide``) beside K avatar-only
workers (``--agents avatar``, their own consumer group), with the CPU of each pool reported
apart; use it with ``--avatars``.

    eval "$(bash ops/services.sh env)"
    .venv/bin/python bench/bench_scale.py --accounts 3000 --workers 1 2 4
    .venv/bin/python bench/bench_scale.py --avatars --accounts 600 --workers 1 --avatar-workers 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.harness import (  # noqa: E402
    WorkerProcess,
    bootstrap,
    create_database,
    create_topics,
    delete_topics,
    drop_database,
    percentile,
    produce_at_rate,
    read_topic,
    worker_env,
)

MAIN_AGENTS = "validate,dedupe,signals,decide"


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pids_named(pattern: str) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if pattern in cmd:
                out.append(int(entry.name))
    return out


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return float(sum(values) - idle), float(sum(values))


class CpuSampler:
    """CPU seconds used by groups of processes between ``start`` and ``stop`` (processes that
    appear meanwhile, like new PostgreSQL backends, are picked up at each ``sample``)."""

    def __init__(self, groups: dict[str, Any]) -> None:
        self.groups = groups
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.owner: dict[int, str] = {}

    def sample(self) -> None:
        for name, find in self.groups.items():
            for pid in find():
                used = cpu_seconds(pid)
                self.first.setdefault(pid, used)
                self.owner[pid] = name
                if used:
                    self.last[pid] = used

    def used(self) -> dict[str, float]:
        out = {name: 0.0 for name in self.groups}
        for pid, name in self.owner.items():
            out[name] += max(0.0, self.last.get(pid, 0.0) - self.first[pid])
        return out


def detector_file(model_path: str | None) -> str:
    """``<version>/<onnx file>`` of the detector the workers load (the manifest's choice)."""
    from pipeline.compose import SHIPPED_MODEL_DIR

    path = Path(model_path) if model_path else SHIPPED_MODEL_DIR
    folder = path.parent if path.suffix == ".onnx" else path
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return "unknown"
    chosen = path.name if path.suffix == ".onnx" else manifest.get("model_file", "detector.onnx")
    return f"{manifest.get('version', '?')}/{chosen}"


def write_events(path: Path, accounts: int, seed: int, faces: Path | None) -> int:
    from pipeline.sim.generate import Simulation

    n = 0
    sim = Simulation(
        accounts,
        2.0,
        seed,
        avatars=faces is not None,
        faces_dir=faces,
        avatar_dir=path.parent / "avatars" if faces else None,
    )
    with open(path, "w", encoding="utf-8") as fh:
        for event in sim.events():
            fh.write(json.dumps(event) + "\n")
            n += 1
    return n


def wait_for_group(group: str, members: int, timeout: float = 120) -> float:
    """Seconds until the consumer group is Stable with ``members`` members."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap())
    started = time.monotonic()
    try:
        while time.monotonic() - started < timeout:
            desc = admin.describe_groups([group])[group]
            if desc["group_state"] == "Stable" and len(desc["members"]) == members:
                return time.monotonic() - started
            time.sleep(1)
    finally:
        admin.close()
    raise TimeoutError(f"group {group} did not reach {members} stable members")


def run(
    events: Path,
    n: int,
    workers: int,
    rate: float,
    workdir: Path,
    kafka_pid: int | None,
    faces: Path | None,
    avatar_workers: int = 0,
) -> dict[str, Any]:
    """One run: ``workers`` workers running every agent (``avatar_workers`` 0), or ``workers``
    main workers without the avatar agent beside ``avatar_workers`` avatar-only workers."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    url = create_database()
    topics = create_topics()
    env = worker_env(url, topics, {"UNMASK_LOG_LEVEL": "WARNING"})
    if faces is not None:
        env["UNMASK_AVATARS__FILE_ROOT"] = str(faces)
        env["UNMASK_AVATARS__EXTRA_FILE_ROOTS"] = json.dumps([str((workdir / "avatars").resolve())])
    tiny = workdir / "tiny-model"
    if "UNMASK_AVATARS__MODEL_PATH" in os.environ:
        env["UNMASK_AVATARS__MODEL_PATH"] = os.environ["UNMASK_AVATARS__MODEL_PATH"]
    elif not (REPO / "pipeline/avatars/model/detector.onnx").is_file():
        sys.path.insert(0, str(REPO / "tests"))
        from hostile.tiny_model import write_tiny_detector

        env["UNMASK_AVATARS__MODEL_PATH"] = str(write_tiny_detector(tiny))
    from pipeline.settings import parse_agents, worker_group

    tag = f"w{workers}a{avatar_workers}"
    detector = detector_file(env.get("UNMASK_AVATARS__MODEL_PATH"))
    main_env = dict(env, UNMASK_WORKER__AGENTS=MAIN_AGENTS if avatar_workers else "all")
    avatar_env = dict(env, UNMASK_WORKER__AGENTS="avatar")
    procs = [WorkerProcess.start(main_env, workdir / f"{tag}-{i}.log") for i in range(workers)]
    pool = [
        WorkerProcess.start(avatar_env, workdir / f"{tag}-avatar-{i}.log")
        for i in range(avatar_workers)
    ]
    main_pids = {p.proc.pid for p in procs}
    avatar_pids = {p.proc.pid for p in pool}
    sampler = CpuSampler(
        {
            "workers": lambda: [p for p in main_pids if Path(f"/proc/{p}").exists()],
            "avatar_workers": lambda: [p for p in avatar_pids if Path(f"/proc/{p}").exists()],
            "postgres": lambda: pids_named("postgres"),
            "kafka": lambda: [kafka_pid] if kafka_pid else [],
        }
    )
    group = env["UNMASK_KAFKA__CONSUMER_GROUP"]
    try:
        join_s = wait_for_group(
            worker_group(group, parse_agents(main_env["UNMASK_WORKER__AGENTS"])), workers
        )
        if avatar_workers:
            join_s = max(join_s, wait_for_group(worker_group(group, ("avatar",)), avatar_workers))
        time.sleep(2)
        sampler.sample()
        busy0, total0 = machine_busy()
        started = time.time()
        produce_at_rate(events, topics["topic_events"], rate)
        decisions = read_topic(topics["topic_decisions"], n, timeout=900)
        sampler.sample()
        busy1, total1 = machine_busy()
        finished = max(r.timestamp for r in decisions) / 1000 if decisions else time.time()
        inputs = read_topic(topics["topic_events"], n, timeout=60)
    finally:
        for p in procs + pool:
            p.stop()
    engine = sa.create_engine(url, poolclass=NullPool)
    with engine.connect() as conn:
        deadlocks = int(
            conn.execute(
                sa.text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
            ).scalar_one()
        )
    engine.dispose()
    sent = {json.loads(r.value)["event_id"]: r.timestamp for r in inputs}
    seen: set[str] = set()
    latencies = []
    for r in decisions:
        event_id = json.loads(r.value)["event_id"]
        if event_id in sent and event_id not in seen:
            seen.add(event_id)
            latencies.append((r.timestamp - sent[event_id]) / 1000)
    delete_topics(topics)
    drop_database(url)
    wall = max(1e-9, finished - started)
    cpu = sampler.used()
    ncpu = os.cpu_count() or 1
    return {
        "workers": workers,
        "avatar_workers": avatar_workers,
        "decisions": len(seen),
        "join_s": round(join_s, 1),
        "events_per_s": round(len(seen) / wall, 1),
        "p50_s": round(percentile(latencies, 0.5), 2),
        "p99_s": round(percentile(latencies, 0.99), 2),
        "cpu_cores_workers": round(cpu["workers"] / wall, 2),
        "cpu_cores_avatar_workers": round(cpu["avatar_workers"] / wall, 2),
        "cpu_s_per_event_workers": round(
            (cpu["workers"] + cpu["avatar_workers"]) / max(1, len(seen)), 4
        ),
        "cpu_cores_postgres_all": round(cpu["postgres"] / wall, 2),
        "cpu_cores_kafka": round(cpu["kafka"] / wall, 2),
        "machine_busy_share": round((busy1 - busy0) / max(1.0, total1 - total0), 2),
        "machine_cores": ncpu,
        "deadlocks": deadlocks,
        "detector": detector,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--accounts", type=int, default=3000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="produce at this many events/s (0: all at once, a backlog)",
    )
    parser.add_argument(
        "--avatar-workers",
        type=int,
        nargs="*",
        default=[],
        help="after each all-agents run, runs of the same number of main workers (no avatar "
        "agent) beside this many avatar-only workers",
    )
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--avatars",
        action="store_true",
        help="events carry avatars from the shared faces (the avatar stage works)",
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="unmask-scale-"))
    events = workdir / "events.jsonl"
    faces = None
    if args.avatars:
        from pipeline.stream.demo import shared_faces_dir

        faces = shared_faces_dir()
    n = write_events(events, args.accounts, args.seed, faces)
    (workdir / "avatars").mkdir(exist_ok=True)
    kafka = pids_named("kafka.Kafka")
    results = []
    plan = [(w, a) for w in args.workers for a in [0, *[k for k in args.avatar_workers if k > 0]]]
    for workers, avatar_workers in plan:
        load = os.getloadavg()[0]
        result = run(
            events,
            n,
            workers,
            args.rate,
            workdir,
            kafka[0] if kafka else None,
            faces,
            avatar_workers,
        )
        result["load_avg_1m_before"] = round(load, 1)
        results.append(result)
        base = results[0]["events_per_s"]
        result["ratio_to_first"] = round(result["events_per_s"] / base, 2) if base else None
        print(
            json.dumps({"events": n, "avatars": args.avatars, "rate": args.rate, **result}),
            flush=True,
        )


if __name__ == "__main__":
    main()
