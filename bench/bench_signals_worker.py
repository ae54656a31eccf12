"""Throughput of signals + decide run the way one worker runs them: two agents, two threads.

In ``unmask worker`` the signals and decide stages are separate agents
(``accounts.signals.v1`` between them, pipeline/stream/app.py); each hands its micro-batch to
``asyncio.to_thread``, so decide works on batch N while signals works on batch N+1, and a
PostgreSQL backend executing one stage's statements runs beside the other stage's Python.
``bench/bench_signals.py`` runs the two one after the other for every batch (its quality and
latency figures need that order); this bench measures what the worker's arrangement sustains.

Both arrangements run in the same invocation on the same simulated stream, each on a fresh
PostgreSQL database (``UNMASK_TEST_DATABASE_URL``), alternating ``--rounds`` times:

* ``serial``: for each batch, signals then decide, one thread (bench_signals' way);
* ``worker``: a signals thread and a decide thread joined by a queue of at most
  ``--queue`` batches (the topic between the agents), as in the worker;
* ``kafka``: the real thing. The envelopes (with their avatar/dedupe stand-ins) are put on the
  signals agent's input topic (``avatars.matched.v1``, keyed by account, as the dedupe agent
  sends them) of the real broker as a backlog, then ``unmask worker`` is started with the
  signals and decide agents only (``UNMASK_WORKER__AGENTS=signals,decide``, default batch size)
  and the rate is decisions over the broker time from the first decision to the last on the
  decisions topic. Completion is watched by counting the ``decisions`` rows twice a second (no
  consumer competes with the worker for the cores); the worker process's CPU and its backends'
  are sampled at the first and the last poll. Batches follow the partitions and the 50 ms
  batch window here, so a few decisions may differ from the in-process runs' (reported, not
  failed on); every event must be decided once;
* ``kafka-split``: the same with the two agents in two worker processes
  (``UNMASK_WORKER__AGENTS=signals`` and ``=decide``), each with its own interpreter lock.

Events are parsed and their avatar/dedupe stand-ins (bench_signals.AvatarStandIn) built before
the clock starts; the rate is events over wall time from the first batch to the last decision.
Besides events/s and the worker/serial ratio it reports CPU seconds per stage: the stage
thread's own and its PostgreSQL backends' (each stage has its own engine, and its backends are
known by pid from the pool's connect events), as CPU-microseconds per event, and the whole
machine's busy CPU (``/proc/stat``, which also catches parallel query workers, short-lived
processes no per-pid reading sees). It checks that both arrangements make the same decision
(action and reasons) for every event; ``--dump`` writes each run's decisions and final clusters
(one JSON line per account) for a diff against another tree's.

    .venv/bin/python bench/bench_signals_worker.py --accounts 20000 --days 10 --seed 7 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa  # noqa: E402

from bench.bench_signals import AvatarStandIn, fresh_db  # noqa: E402
from pipeline.decide.stage import DecideStage  # noqa: E402
from pipeline.events import parse_event  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from pipeline.signals.stage import SignalStage  # noqa: E402
from pipeline.sim.generate import Simulation  # noqa: E402
from pipeline.stages import run_stage  # noqa: E402
from pipeline.store.db import make_engine  # noqa: E402
from pipeline.store.migrate import upgrade  # noqa: E402
from pipeline.stream.commands import tune_gc  # noqa: E402
from pipeline.types import Envelope  # noqa: E402

Verdicts = dict[str, tuple[str, tuple[str, ...]]]


class BackendCpu:
    """CPU seconds (``/proc/<pid>/schedstat``) of the PostgreSQL backends an engine's pool has
    opened, found by pid as each connection is made. Zero for a server on another machine."""

    def __init__(self, engine: sa.Engine) -> None:
        self.pids: set[int] = set()

        @sa.event.listens_for(engine, "connect")
        def _record(dbapi_conn: Any, _record: Any) -> None:
            self.pids.add(int(dbapi_conn.get_backend_pid()))

    def seconds(self) -> float:
        total = 0
        for pid in self.pids:
            try:
                total += int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
            except OSError:
                continue
        return total / 1e9


def machine_busy_s() -> float:
    """CPU seconds all cores have spent busy since boot (``/proc/stat``: every field but idle
    and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def build_batches(accounts: int, days: float, seed: int, size: int) -> list[list[Envelope]]:
    """The simulated stream as micro-batches of ``size`` envelopes, avatars stood in."""
    sim = Simulation(accounts, days, seed, avatars=False)
    truth = {r.account_id: r for r in sim.truth()}
    stand_in = AvatarStandIn(seed)
    batches: list[list[Envelope]] = [[]]
    for raw in sim.events():
        ev = parse_event(json.dumps(raw).encode())
        avatar, matches = None, ()
        if ev.event_type == "account.created.v1":
            tr = truth[ev.account_id]
            avatar, matches = stand_in(ev.account_id, tr.avatar_kind, tr.photo_key)
        if len(batches[-1]) >= size:
            batches.append([])
        batches[-1].append(Envelope(event=ev, avatar=avatar, matches=matches))
    return batches


def verdicts(out: list[Envelope], into: Verdicts) -> None:
    for env in out:
        d = env.decision
        if d is not None:
            into[env.event.event_id] = (d.action, tuple(d.reasons))


class Timed:
    """CPU seconds of the calling thread spent in the stage calls it wraps."""

    def __init__(self) -> None:
        self.client = 0.0

    def __call__(self, fn: Callable[[], list[Envelope]]) -> list[Envelope]:
        c0 = time.thread_time()
        try:
            return fn()
        finally:
            self.client += time.thread_time() - c0


def dump(url: str, got: Verdicts, path: Path) -> None:
    """Every account's final cluster (id, score, size, binding) and each event's verdict, one
    sorted JSON line per account."""
    engine = make_engine(url)
    with engine.connect() as conn:
        clusters = {
            r.cluster_id: (round(float(r.score), 4), int(r.size), r.binding)
            for r in conn.execute(
                sa.text("SELECT cluster_id, score, size, binding FROM signal_clusters")
            )
        }
        accounts = dict(
            conn.execute(sa.text("SELECT account_id, cluster_id FROM signal_accounts")).all()
        )
        by_account: dict[str, list[str]] = {}
        for event_id, account_id in conn.execute(
            sa.text("SELECT event_id, account_id FROM signal_results")
        ):
            by_account.setdefault(account_id, []).append(event_id)
    engine.dispose()
    with open(path, "w", encoding="utf-8") as fh:
        for account_id in sorted(accounts):
            cid = accounts[account_id]
            fh.write(
                json.dumps(
                    {
                        "account_id": account_id,
                        "cluster": cid,
                        "cluster_row": clusters.get(cid) if cid else None,
                        "verdicts": [
                            [e, *got.get(e, ("?", ()))] for e in sorted(by_account[account_id])
                        ],
                    },
                    sort_keys=True,
                )
                + "\n"
            )


def run(
    mode: str, batches: list[list[Envelope]], depth: int, dump_to: Path | None = None
) -> dict[str, Any]:
    url, drop = fresh_db("postgres")
    try:
        upgrade(url)
        sig_engine, dec_engine = make_engine(url), make_engine(url)
        sig_cpu, dec_cpu = BackendCpu(sig_engine), BackendCpu(dec_engine)
        settings = Settings()
        signals, decide = SignalStage(sig_engine, settings), DecideStage(dec_engine, settings)
        tune_gc()
        sig_t, dec_t = Timed(), Timed()
        got: Verdicts = {}
        n = sum(len(b) for b in batches)
        s0, d0, m0 = sig_cpu.seconds(), dec_cpu.seconds(), machine_busy_s()
        t0 = time.perf_counter()
        if mode == "serial":
            for b in batches:
                out = sig_t(lambda b=b: run_stage(signals, b))
                verdicts(dec_t(lambda out=out: run_stage(decide, out)), got)
        else:
            handoff: queue.Queue[list[Envelope] | None] = queue.Queue(maxsize=depth)
            failed: list[BaseException] = []

            def produce() -> None:
                try:
                    for b in batches:
                        handoff.put(sig_t(lambda b=b: run_stage(signals, b)))
                except BaseException as exc:
                    failed.append(exc)
                finally:
                    handoff.put(None)

            def consume() -> None:
                try:
                    while (out := handoff.get()) is not None:
                        verdicts(dec_t(lambda out=out: run_stage(decide, out)), got)
                except BaseException as exc:
                    failed.append(exc)
                    while handoff.get() is not None:
                        pass

            threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if failed:
                raise failed[0]
        wall = time.perf_counter() - t0
        machine = machine_busy_s() - m0
        sig_backend, dec_backend = sig_cpu.seconds() - s0, dec_cpu.seconds() - d0
        sig_engine.dispose()
        dec_engine.dispose()
        if dump_to is not None:
            dump(url, got, dump_to)
        return {
            "mode": mode,
            "events": n,
            "wall_s": round(wall, 2),
            "events_per_s": round(n / wall, 1),
            "cpu_s": {
                "signals_client": round(sig_t.client, 2),
                "signals_backends": round(sig_backend, 2),
                "decide_client": round(dec_t.client, 2),
                "decide_backends": round(dec_backend, 2),
                "machine": round(machine, 2),
            },
            "cpu_us_per_event": {
                "signals": round(1e6 * (sig_t.client + sig_backend) / n),
                "decide": round(1e6 * (dec_t.client + dec_backend) / n),
                "machine": round(1e6 * machine / n),
            },
            "verdicts": got,
        }
    finally:
        drop()


def _proc_cpu_s(pid: int) -> float:
    """CPU seconds of process ``pid`` and its live descendants (a worker's stage child process,
    ``worker.process_stages``)."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    family: set[int] = {pid}
    grown = True
    while grown:
        more = {c for c, (parent, _t) in stats.items() if parent in family} - family
        family |= more
        grown = bool(more)
    return sum(stats.get(m, (0, 0))[1] for m in family) / os.sysconf("SC_CLK_TCK")


def run_kafka(
    batches: list[list[Envelope]],
    timeout_s: float,
    split: bool,
    settings_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The ``kafka`` arrangement (module docstring): a backlog on the signals agent's input
    topic, then a signals+decide worker process (``split``: a signals worker and a decide
    worker, two processes), with ``settings_env`` (``UNMASK_...`` settings) in its environment;
    rate from the first to the last decision."""
    from kafka import KafkaProducer

    from bench.harness import (
        WorkerProcess,
        bootstrap,
        create_topics,
        delete_topics,
        read_topic,
        worker_env,
    )

    url, drop = fresh_db("postgres")
    topics = create_topics()
    workers: list[WorkerProcess] = []
    try:
        upgrade(url)
        producer = KafkaProducer(bootstrap_servers=bootstrap().split(","), acks="all", linger_ms=20)
        n = 0
        for batch in batches:
            for env in batch:
                producer.send(
                    topics["topic_matched"],
                    key=env.event.account_id.encode(),
                    value=json.dumps(env.to_dict()).encode(),
                )
                n += 1
        producer.flush(timeout=120)
        producer.close()
        workdir = Path(tempfile.mkdtemp(prefix="bench-signals-kafka-"))
        engine = make_engine(url)
        backends = BackendCpu(engine)
        started = time.time()
        ports: list[int] = []
        for agents in ("signals", "decide") if split else ("signals,decide",):
            ports.append(_free_port())
            env_vars = worker_env(
                url,
                topics,
                {
                    **(settings_env or {}),
                    "UNMASK_WORKER__AGENTS": agents,
                    "UNMASK_METRICS_PORT": str(ports[-1]),
                },
            )
            log = workdir / f"worker-{agents.replace(',', '-')}.log"
            workers.append(WorkerProcess.start(env_vars, log))
        first: tuple[float, float, float, float] | None = None
        last: tuple[float, float, float, float] | None = None
        decided = 0
        count = sa.text("SELECT count(*) FROM decisions")
        pids = sa.text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        while decided < n and time.time() - started < timeout_s:
            if any(w.proc.poll() is not None for w in workers):
                raise RuntimeError(f"a worker exited, see the logs in {workdir}")
            time.sleep(0.5)
            with engine.connect() as conn:
                decided = int(conn.execute(count).scalar_one())
                server = {int(r[0]) for r in conn.execute(pids)}
            backends.pids |= server
            sample = (
                time.time(),
                sum(_proc_cpu_s(w.proc.pid) for w in workers),
                backends.seconds(),
                machine_busy_s(),
            )
            if decided and first is None:
                first = sample
            last = sample
        records = read_topic(topics["topic_decisions"], n, timeout=120)
        stage_s: dict[str, float] = {}
        for port in ports:
            for stage, seconds in _stage_seconds(port).items():
                stage_s[stage] = stage_s.get(stage, 0.0) + seconds
        while workers:
            workers.pop().stop()
        engine.dispose()
    finally:
        for w in workers:
            w.kill()
        delete_topics(topics)
        drop()
    got: Verdicts = {}
    per_event: dict[str, int] = {}
    for r in records:
        d = json.loads(r.value)
        got[d["event_id"]] = (d["action"], tuple(d["reasons"]))
        per_event[d["event_id"]] = per_event.get(d["event_id"], 0) + 1
    stamps = [r.timestamp / 1000 for r in records]
    span = max(stamps) - min(stamps) if stamps else float("nan")
    assert first is not None and last is not None
    polled = last[0] - first[0]
    return {
        "mode": "kafka-split" if split else "kafka",
        "events": n,
        "decided": len(got),
        "decided_more_than_once": sum(1 for c in per_event.values() if c > 1),
        "start_to_first_decision_s": round(min(stamps) - started, 2) if stamps else None,
        "wall_s": round(span, 2),
        "events_per_s": round(len(got) / span, 1),
        "cpu_s": {
            "worker_processes": round(last[1] - first[1], 2),  # with their child processes
            "postgres_backends": round(last[2] - first[2], 2),
            "machine": round(last[3] - first[3], 2),
            "polled_s": round(polled, 2),
        },
        "cpu_us_per_event": {
            "worker_and_backends": round(1e6 * (last[1] - first[1] + last[2] - first[2]) / n),
            "machine": round(1e6 * (last[3] - first[3]) / n),
        },
        "stage_busy_s": {k: round(v, 2) for k, v in sorted(stage_s.items())},
        "verdicts": got,
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stage_seconds(port: int) -> dict[str, float]:
    """``unmask_stage_duration_seconds_sum`` by stage from a worker's metrics endpoint: the wall
    time each stage spent in its calls (against the run's wall time: how busy the stage was)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r'unmask_stage_duration_seconds_sum\{stage="([^"]+)"\} (\S+)', line)
        if match:
            found[match.group(1)] = float(match.group(2))
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=20_000)
    ap.add_argument("--days", type=float, default=10)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--queue", type=int, default=2, help="batches between the two agents")
    ap.add_argument("--rounds", type=int, default=2, help="serial/worker pairs, alternated")
    ap.add_argument(
        "--modes",
        default="serial,worker",
        help="arrangements to run each round, in order (comma list of serial, worker, kafka, "
        "kafka-split)",
    )
    ap.add_argument(
        "--kafka-timeout", type=float, default=300, help="seconds to wait for the kafka run"
    )
    ap.add_argument(
        "--worker-setting",
        action="append",
        default=[],
        metavar="UNMASK_NAME=VALUE",
        help="a setting for the kafka modes' worker processes (repeatable), e.g. "
        "UNMASK_WORKER__BATCH_SIZE=2000",
    )
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--dump",
        type=Path,
        default=None,
        help="write the first run's per-account clusters and verdicts here (JSON lines)",
    )
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    batches = build_batches(args.accounts, args.days, args.seed, args.batch)
    load = [os.getloadavg()[0]]
    runs = []
    for _ in range(args.rounds):
        for mode in modes:
            if mode.startswith("kafka"):
                r = run_kafka(
                    batches,
                    args.kafka_timeout,
                    split=mode == "kafka-split",
                    settings_env=dict(kv.split("=", 1) for kv in args.worker_setting),
                )
            else:
                r = run(mode, batches, args.queue, args.dump if not runs else None)
            load.append(os.getloadavg()[0])
            print(json.dumps({k: v for k, v in r.items() if k != "verdicts"}), flush=True)
            runs.append(r)
    in_process = [r for r in runs if not r["mode"].startswith("kafka")]
    reference = (in_process or runs)[0]["verdicts"]

    def differing(r: dict[str, Any]) -> int:
        ids = reference.keys() | r["verdicts"].keys()
        return sum(1 for eid in ids if r["verdicts"].get(eid) != reference.get(eid))

    differ = sum(differing(r) for r in in_process[1:])
    kafka_differ = [differing(r) for r in runs if r["mode"].startswith("kafka")]
    rate = {
        m: [r["events_per_s"] for r in runs if r["mode"] == m]
        for m in ("serial", "worker", "kafka", "kafka-split")
    }
    per_event = {
        m: [r["cpu_us_per_event"]["signals"] for r in runs if r["mode"] == m]
        for m in ("serial", "worker")
    }
    result = {
        "accounts": args.accounts,
        "days": args.days,
        "seed": args.seed,
        "batch": args.batch,
        "queue": args.queue,
        "events": runs[0]["events"],
        "runs": [{k: v for k, v in r.items() if k != "verdicts"} for r in runs],
        "serial_events_per_s": rate["serial"],
        "worker_events_per_s": rate["worker"],
        "kafka_events_per_s": rate["kafka"],
        "kafka_split_events_per_s": rate["kafka-split"],
        "worker_to_serial": [
            round(w / s, 3) for s, w in zip(rate["serial"], rate["worker"], strict=False)
        ],
        "signals_cpu_us_per_event": per_event,
        "decisions_differing_from_first_run": differ,
        "kafka_decisions_differing_from_first_in_process_run": kafka_differ,
        "load_average_1m": load,
        "cores": os.cpu_count(),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    incomplete = [
        r
        for r in runs
        if r["mode"].startswith("kafka")
        and (r["decided"] != r["events"] or r["decided_more_than_once"])
    ]
    return 1 if differ or incomplete else 0


if __name__ == "__main__":
    raise SystemExit(main())
