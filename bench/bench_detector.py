"""Throughput, latency and memory of the avatar detector on CPU: decode + preprocess + score.

Reads real avatar files (JPEG and PNG bytes from ``shared/data/faces``, held in memory so disk is
not measured), then times, on onnxruntime's CPU provider:
  * baseline: decode + preprocess only (no model), one core;
  * batch 32 with intra-op threads = 1 (per-core throughput) and = 2, with the default model
    file of the manifest (``model_file``), and the score alone of both the fp32 and the default
    file;
  * single-image latency p50/p99 (intra-op threads = 1);
and the process's peak RSS. Face detection is not included. Writes (replaces) its own section in
``docs/benchmarks.md`` when ``--write`` is given.

    .venv/bin/python bench/bench_detector.py --write
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.avatars import dataset as ds  # noqa: E402
from pipeline.avatars.detector import FP32_MODEL_FILE, OnnxDetector  # noqa: E402
from pipeline.avatars.preprocess import PreprocessSpec, preprocess_batch  # noqa: E402

START = "<!-- bench_detector:start -->"
END = "<!-- bench_detector:end -->"


def load_bytes(n: int) -> list[bytes]:
    """``n`` files picked by a stable hash across all sources (mixed sizes and formats)."""
    records = ds.read_manifest(ds.faces_dir())
    picked = sorted(records, key=lambda r: ds.stable_key(r, "bench"))[:n]
    return [r.path.read_bytes() for r in picked]


def decode(blob: bytes) -> Image.Image:
    with Image.open(io.BytesIO(blob)) as image:
        return image.convert("RGB")


def rate(run_once: Callable[[], int], min_seconds: float) -> tuple[float, float]:
    """(images per wall second, images per process-CPU second) of ``run_once``, repeated.

    The CPU-time rate is the per-core rate that other load on the shared cores cannot dilute.
    """
    run_once()
    done, started, cpu_started = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < min_seconds:
        done += run_once()
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    return done / wall, done / max(cpu, 1e-9)


def batches(blobs: Sequence[bytes], size: int) -> list[Sequence[bytes]]:
    return [blobs[i : i + size] for i in range(0, len(blobs) - size + 1, size)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--seconds", type=float, default=4.0, help="per throughput measurement")
    parser.add_argument("--latency-runs", type=int, default=300)
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args(argv)

    blobs = load_bytes(args.images)
    one = OnnxDetector(prefer_gpu=False, intra_op_threads=1)
    two = OnnxDetector(prefer_gpu=False, intra_op_threads=2)
    fp32 = OnnxDetector(prefer_gpu=False, intra_op_threads=1, model_file=FP32_MODEL_FILE)
    spec: PreprocessSpec = one.spec
    groups = batches(blobs, 32)

    def baseline() -> int:
        for group in groups:
            preprocess_batch([decode(b) for b in group], spec)
        return len(groups) * 32

    def full(detector: OnnxDetector) -> Callable[[], int]:
        def run() -> int:
            for group in groups:
                detector.score_batch([decode(b) for b in group])
            return len(groups) * 32

        return run

    def score_only(detector: OnnxDetector, arrays: list[np.ndarray]) -> Callable[[], int]:
        def run() -> int:
            for array in arrays:
                detector.score_array(array)
            return len(arrays) * 32

        return run

    arrays = [preprocess_batch([decode(b) for b in g], spec) for g in groups]
    base = rate(baseline, args.seconds)
    t1 = rate(full(one), args.seconds)
    t2 = rate(full(two), args.seconds)
    s1 = rate(score_only(one, arrays), args.seconds)
    s32 = rate(score_only(fp32, arrays), args.seconds)

    latencies, cpu_latencies = [], []
    for i in range(args.latency_runs):
        blob = blobs[i % len(blobs)]
        started, cpu_started = time.perf_counter(), time.process_time()
        one.score_batch([decode(blob)])
        latencies.append((time.perf_counter() - started) * 1000.0)
        cpu_latencies.append((time.process_time() - cpu_started) * 1000.0)
    p50, p99 = np.percentile(latencies, [50, 99])
    c50, c99 = np.percentile(cpu_latencies, [50, 99])
    load = os.getloadavg()[0]
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    model_mb = (REPO / "pipeline/avatars/model" / one.model_file).stat().st_size / 1e6

    lines = [
        START,
        "## Avatar detector (decode + preprocess + ONNX score, CPU)",
        "",
        f"Command: `.venv/bin/python bench/bench_detector.py --write` "
        f"(model `{one.model_version}`, file `{one.model_file}` {model_mb:.1f} MB, "
        f"input {spec.input_size}px; "
        f"{len(blobs)} avatars from `shared/data/faces` held in memory; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores shared; "
        "face detection not included).",
        "",
        "| measurement | wall img/s | img/s per CPU-second | target | ratio to baseline (CPU) |",
        "|---|---|---|---|---|",
        f"| baseline: decode + preprocess only | {base[0]:.0f} | {base[1]:.0f} | | 1.00 |",
        f"| score only (preprocessed), batch 32, 1 thread, fp32 `{fp32.model_file}` "
        f"| {s32[0]:.0f} | {s32[1]:.0f} | | {s32[1] / base[1]:.2f} |",
        f"| score only (preprocessed), batch 32, 1 thread, `{one.model_file}` | {s1[0]:.0f} "
        f"| {s1[1]:.0f} | | {s1[1] / base[1]:.2f} |",
        f"| decode + preprocess + score, batch 32, intra-op 1 thread | {t1[0]:.0f} | "
        f"{t1[1]:.0f} | >= 100 per core | {t1[1] / base[1]:.2f} |",
        f"| decode + preprocess + score, batch 32, intra-op 2 threads | {t2[0]:.0f} | "
        f"{t2[1]:.0f} | | {t2[1] / base[1]:.2f} |",
        "",
        f"Single image, decode + preprocess + score, 1 thread: wall p50 {p50:.1f} ms, "
        f"p99 {p99:.1f} ms; CPU time p50 {c50:.1f} ms, p99 {c99:.1f} ms (target p99 <= 30 ms). "
        f"Peak RSS of the bench process with both sessions loaded: {rss_mb:.0f} MB "
        f"(target <= 1024 MB per worker). Load average during the run: {load:.1f} on "
        f"{os.cpu_count()} cores.",
        "",
        "Wall-clock rates move with the load that other work puts on the two shared cores; "
        "the per-CPU-second column (process CPU time) is the per-core rate that load cannot "
        "dilute, and the ratio column compares it with the decode baseline of the same run.",
        END,
    ]
    section = "\n".join(lines)
    print(section)
    if args.write:
        path = REPO / "docs" / "benchmarks.md"
        text = path.read_text() if path.exists() else "# Benchmarks\n"
        if START in text and END in text:
            head, rest = text.split(START, 1)
            text = head + section + rest.split(END, 1)[1]
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
