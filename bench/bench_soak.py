"""Soak benchmark: the real worker at 80% of its measured capacity for a long while.

1. Capacity: the rate the worker *sustains*, measured in this run by a probe (default): events
   are offered at a rising rate (``--probe-start`` events/s, times ``--probe-step`` per step,
   ``--probe-s`` seconds per step); a step is sustained when the worker decided at least 95% of
   what was offered during it and the lag did not grow by more than two seconds' worth of
   events; a step that fails is retried once (after the backlog drains) before the probe stops.
   Capacity is the highest sustained rate. ``--capacity backlog`` instead drains a
   backlog of ``--capacity-events`` at once (that overstates what the worker sustains while it
   also shares the cores with the producer: measured in the first runs, see docs/benchmarks.md).
2. Soak: events are produced at ``--load`` (default 0.8) times that rate, second by second, for
   ``--minutes``; every ``--sample-s`` seconds the worker's resident memory (VmRSS), its CPU
   time, the machine's load average and the lag (events produced but not yet decided, from
   PostgreSQL) are sampled.

Memory is flat when its least-squares slope over the second half of the soak is near zero;
lag is bounded when it does not trend upwards (its maximum over the last third is no higher
than over the first two thirds, plus a small margin). The worker uses the shipped detector
unless ``--model-path`` is given; events carry no avatars unless ``--avatars`` (image work would
measure the detector, which bench_detector does).

    eval "$(bash ops/services.sh env)"
    .venv/bin/python -m bench.bench_soak --minutes 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from bench import harness

REPO = harness.REPO


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    if len(points) < 3:
        return float("nan")
    xs = [t / 60 for t, _ in points]
    ys = [v for _, v in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def event_stream(seed: int, avatars: bool, faces: Path | None) -> Iterator[bytes]:
    from pipeline.sim.generate import Simulation

    n = 0
    while True:
        sim = Simulation(20_000, 7, seed + n, avatars=avatars, faces_dir=faces)
        for doc in sim.events():
            doc["event_id"] = f"s{n}-{doc['event_id']}"
            doc["account_id"] = f"s{n}-{doc['account_id']}"
            yield json.dumps(doc).encode()
        n += 1


def sustained_capacity(args: argparse.Namespace, send: Any, producer: Any, decided: Any,
                       produced: Any) -> tuple[float, list[dict[str, float]]]:
    """Highest offered rate the worker keeps up with for a whole step (see module docstring)."""
    steps: list[dict[str, float]] = []
    best = 0.0
    rate = args.probe_start
    failures = 0
    while failures < 2:
        lag0 = produced() - decided()
        done0 = decided()
        sent0 = produced()
        start = time.monotonic()
        owed = 0.0
        while (now := time.monotonic()) - start < args.probe_s:
            owed += rate
            send(int(owed))
            owed -= int(owed)
            producer.flush()
            time.sleep(max(0.0, 1.0 - (time.monotonic() - now)))
        offered = produced() - sent0
        done = decided() - done0
        lag1 = produced() - decided()
        held = done >= 0.95 * offered and lag1 - lag0 <= 2 * rate
        steps.append({"rate": round(rate, 1), "offered": offered, "decided": done,
                      "lag_start": lag0, "lag_end": lag1, "held": held,
                      "load1": os.getloadavg()[0]})
        print(f"  probe {rate:6.1f} ev/s: offered {offered} decided {done} lag {lag0}->{lag1} "
              f"{'held' if held else 'NOT held'} (load {os.getloadavg()[0]:.1f})", flush=True)
        if held:
            best = rate
            failures = 0
            rate *= args.probe_step
        else:
            failures += 1
            while decided() < produced():
                time.sleep(0.5)
    return best, steps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--load", type=float, default=0.8, help="fraction of measured capacity")
    ap.add_argument("--capacity", choices=["probe", "backlog"], default="probe")
    ap.add_argument("--capacity-events", type=int, default=1500)
    ap.add_argument("--probe-start", type=float, default=20.0)
    ap.add_argument("--probe-step", type=float, default=1.25)
    ap.add_argument("--probe-s", type=float, default=60.0)
    ap.add_argument("--sample-s", type=float, default=5.0)
    ap.add_argument("--model-path", type=Path, default=None)
    ap.add_argument("--avatars", action="store_true")
    ap.add_argument("--seed", type=int, default=77)
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args(argv)

    from kafka import KafkaProducer

    url = harness.create_database("unmask_soak")
    topics = harness.create_topics()
    extra = {"UNMASK_LOG_LEVEL": "WARNING"}
    if args.model_path is not None:
        extra["UNMASK_AVATARS__MODEL_PATH"] = str(args.model_path.resolve())
    faces = REPO.parent / "shared" / "data" / "faces"
    if args.avatars:
        extra["UNMASK_AVATARS__FILE_ROOT"] = str(faces)
    env = harness.worker_env(url, topics, extra)
    log = Path(tempfile.mkdtemp(prefix="unmask-soak-")) / "worker.log"
    engine = sa.create_engine(url, poolclass=NullPool)
    producer = KafkaProducer(bootstrap_servers=harness.bootstrap(), acks="all", linger_ms=5)
    stream = event_stream(args.seed, args.avatars, faces if args.avatars else None)
    produced = 0

    def decided() -> int:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(
                "SELECT count(*) FROM decisions WHERE published_at IS NOT NULL")).scalar_one())

    def send(n: int) -> None:
        nonlocal produced
        for _ in range(n):
            raw = next(stream)
            producer.send(topics["topic_events"], key=json.loads(raw)["account_id"].encode(),
                          value=raw)
        produced += n

    worker = harness.WorkerProcess.start(env, log)
    result: dict[str, Any] = {}
    try:
        send(50)
        producer.flush()
        while decided() < 50:
            if worker.proc.poll() is not None:
                sys.exit(f"worker died; log: {log}")
            time.sleep(0.5)
        if args.capacity == "backlog":
            send(args.capacity_events)
            producer.flush()
            t0 = time.monotonic()
            while decided() < produced:
                time.sleep(0.5)
            capacity = args.capacity_events / (time.monotonic() - t0)
            probe: list[dict[str, float]] = []
        else:
            capacity, probe = sustained_capacity(args, send, producer, decided, lambda: produced)
            drain_start = time.monotonic()
            while decided() < produced and time.monotonic() - drain_start < 300:
                time.sleep(0.5)
        rate = capacity * args.load
        print(f"capacity {capacity:.1f} events/s ({args.capacity}); soaking at {rate:.1f} "
              f"events/s for {args.minutes:g} min", flush=True)

        samples: list[dict[str, float]] = []
        start = time.monotonic()
        next_sample = start
        owed = 0.0
        while (now := time.monotonic()) - start < args.minutes * 60:
            owed += rate * 1.0
            send(int(owed))
            owed -= int(owed)
            producer.flush()
            if now >= next_sample:
                done = decided()
                lag = produced - done
                samples.append({"t": now - start, "rss_mib": rss_mib(worker.proc.pid),
                                "lag": lag, "decided": done, "cpu_s": cpu_s(worker.proc.pid),
                                "load1": os.getloadavg()[0]})
                print(f"  t={now - start:6.0f}s rss={samples[-1]['rss_mib']:.0f}MiB lag={lag} "
                      f"decided={done}", flush=True)
                next_sample += args.sample_s
            if worker.proc.poll() is not None:
                sys.exit(f"worker died during the soak; log: {log}")
            time.sleep(max(0.0, 1.0 - (time.monotonic() - now)))
        drain_start = time.monotonic()
        while decided() < produced and time.monotonic() - drain_start < 300:
            time.sleep(0.5)
        drained_s = time.monotonic() - drain_start

        second_half = [(s["t"], s["rss_mib"]) for s in samples if s["t"] >= args.minutes * 30]
        third = max(1, len(samples) // 3)
        lags = [s["lag"] for s in samples]
        result = {
            "minutes": args.minutes, "load": args.load, "capacity_method": args.capacity,
            "probe_steps": probe,
            "worker_cpu_s_per_s": round(
                (samples[-1]["cpu_s"] - samples[0]["cpu_s"])
                / max(1e-9, samples[-1]["t"] - samples[0]["t"]), 3),
            "load1_mean": round(statistics.fmean(s["load1"] for s in samples), 2),
            "capacity_events_per_s": round(capacity, 1), "soak_rate_events_per_s": round(rate, 1),
            "events": produced, "decided": decided(), "drained_after_s": round(drained_s, 1),
            "rss_mib_start": round(samples[0]["rss_mib"], 1),
            "rss_mib_end": round(samples[-1]["rss_mib"], 1),
            "rss_mib_max": round(max(s["rss_mib"] for s in samples), 1),
            "rss_slope_mib_per_min_second_half": round(slope_per_minute(second_half), 3),
            "lag_max": max(lags), "lag_mean": round(statistics.fmean(lags), 1),
            "decided_per_s_first_third": round(
                (samples[third]["decided"] - samples[0]["decided"])
                / max(1e-9, samples[third]["t"] - samples[0]["t"]), 1),
            "decided_per_s_last_third": round(
                (samples[-1]["decided"] - samples[-third - 1]["decided"])
                / max(1e-9, samples[-1]["t"] - samples[-third - 1]["t"]), 1),
            "lag_max_first_two_thirds": max(lags[:-third] or lags),
            "lag_max_last_third": max(lags[-third:]),
        }
        result["lag_bounded"] = result["lag_max_last_third"] <= max(
            result["lag_max_first_two_thirds"] * 1.5, rate * 10)
        print(json.dumps(result, indent=2))
        if args.json_out:
            args.json_out.write_text(json.dumps({"summary": result, "samples": samples}))
    finally:
        producer.close()
        worker.stop()
        engine.dispose()
        harness.drop_database(url)
        harness.delete_topics(topics)
    return 0 if result.get("decided") == produced else 1


if __name__ == "__main__":
    sys.exit(main())
