"""Which parts of the detector to keep in float when quantising it (mixed precision).

Static INT8 quantisation moves the detector's scores away from the fp32 file's: with every
convolution quantised the mean gap between the two files' logits on the validation images was
0.44, and the held-out AUC lost 0.002. The error is spread over the network, so no single layer
explains it; :func:`scan` measures it per unit (the stem, each numbered block, the head
convolution) and keeps units in float, most helpful first, while the scoring time stays within a
budget. Everything here is label-free and reads validation images only: the criterion is
fidelity to the fp32 file (:func:`mean_abs_logit_gap`), not accuracy, so the choice cannot be
fitted to any test labels.

Run through ``unmask quantize-detector --scan-float-units`` (``quantize.main``); the chosen
``--keep-float`` patterns then go to the ordinary quantisation command. Needs ``onnx`` (the
``train`` extra).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from pipeline.avatars import evaluate as ev
from pipeline.avatars.detector import _session_options
from pipeline.avatars.fusion import logit
from pipeline.avatars.preprocess import PreprocessSpec, preprocess_batch

CONTAINERS: tuple[str, ...] = ("blocks",)
"""Modules whose numbered children are units of their own (``/inner/blocks/blocks.3/...``)."""


def float_units(names: Sequence[str], containers: Sequence[str] = CONTAINERS) -> list[str]:
    """The units of a graph exported by ``train.py`` (node names ``/inner/<module>/...``), in
    graph order: a numbered child of a container (``blocks.3``), else the top-level module
    (``stem``, ``head``). Nodes outside any module (``/Sigmoid``) belong to no unit. Pure."""
    units: list[str] = []
    for name in names:
        path = name.split("/")[1:-1]
        if len(path) < 2:
            continue
        unit = path[2] if path[1] in containers and len(path) >= 3 else path[1]
        if unit not in units:
            units.append(unit)
    return units


def body_names(fp32_path: Path) -> list[str]:
    """Names of the quantisable nodes of ``fp32_path`` outside the float head, in graph order."""
    from pipeline.avatars.quantize import _nodes, head_nodes

    head = set(head_nodes(fp32_path))
    return [n for n, op in _nodes(fp32_path) if n and op != "Constant" and n not in head]


def unit_pattern(unit: str) -> str:
    """The ``--keep-float`` substring that matches exactly the nodes of ``unit``."""
    return f"/{unit}/"


def _already_float(unit: str, names: Sequence[str], keep_float: Sequence[str]) -> bool:
    """Whether every node of ``unit`` is matched by one of the ``keep_float`` patterns."""
    own = [n for n in names if unit_pattern(unit) in n]
    return bool(own) and all(any(p in n for p in keep_float) for n in own)


def mean_abs_logit_gap(reference: np.ndarray, other: np.ndarray) -> float:
    """Mean absolute difference of the logits of two probability vectors (clipped to
    [1e-7, 1 - 1e-7]): how far a quantised file's scores sit from the fp32 file's. Pure."""
    return float(np.mean(np.abs(logit(reference, 1e-7) - logit(other, 1e-7))))


def greedy_order(gains: dict[str, float]) -> list[str]:
    """Units that narrowed the gap on their own (gain > 0), largest gain first. Pure."""
    return [u for u, g in sorted(gains.items(), key=lambda kv: (-kv[1], kv[0])) if g > 0]


def longest_within(costs: Sequence[float], budget: float) -> int:
    """How many of the first prefixes stay within ``budget`` (extra ms per image, one cost per
    prefix length 1, 2, ...): the count before the first prefix over it. Pure."""
    count = 0
    for cost in costs:
        if cost > budget:
            break
        count += 1
    return count


def ms_per_image(paths: Sequence[Path], batch: np.ndarray, rounds: int = 15) -> list[float]:
    """CPU milliseconds per image of one ``batch`` through each file (one thread, as a worker
    runs it), interleaved round by round so load changes hit every file alike; the minimum over
    ``rounds``."""
    sessions = []
    for path in paths:
        session = ort.InferenceSession(
            str(path), _session_options(1), providers=["CPUExecutionProvider"]
        )
        feed = {session.get_inputs()[0].name: batch}
        session.run(None, feed)
        sessions.append((session, feed))
    best = [float("inf")] * len(sessions)
    for _ in range(rounds):
        for i, (session, feed) in enumerate(sessions):
            start = time.process_time()
            session.run(None, feed)
            best[i] = min(best[i], time.process_time() - start)
    return [b / len(batch) * 1e3 for b in best]


def scan(
    fp32_path: Path,
    calibration: Sequence[np.ndarray],
    images: Sequence[Any],
    spec: PreprocessSpec,
    *,
    keep_float: Sequence[str] = (),
    budget_ms: float = 0.8,
    units: Sequence[str] | None = None,
    input_name: str = "image",
    quantize_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Single-unit sensitivities and the greedy mixed-precision choice for ``fp32_path``.

    The base recipe keeps ``keep_float`` (plus the head) float. Each unit (``units``, default
    every unit of the graph not already kept) is kept float on top of it alone and scored on
    ``images`` (PIL images, e.g. the validation split clean and degraded); its gain is how much
    it narrows :func:`mean_abs_logit_gap` to the fp32 file. Units with a gain are then added
    most helpful first, and each prefix is quantised, scored and timed against the base
    (:func:`ms_per_image`, batch 32); the choice is the longest prefix costing at most
    ``budget_ms`` more per image. ``quantize_options`` go to ``quantize_model`` (method,
    percentile). Writes only temporary files.
    """
    from pipeline.avatars.quantize import quantize_model

    options = dict(quantize_options or {})
    names = body_names(fp32_path)
    if units is None:
        units = [u for u in float_units(names) if not _already_float(u, names, keep_float)]
    reference = ev.OnnxScorer(fp32_path, spec).score(images)
    timing_batch = preprocess_batch(list(images[:32]), spec)
    with tempfile.TemporaryDirectory(prefix="unmask-precision-") as tmp:
        work = Path(tmp)

        def build(extra: Sequence[str], label: str) -> tuple[Path, float]:
            path = work / f"{label}.onnx"
            patterns = list(keep_float) + [unit_pattern(u) for u in extra]
            quantize_model(fp32_path, path, calibration, input_name, keep_float=patterns, **options)
            return path, mean_abs_logit_gap(reference, ev.OnnxScorer(path, spec).score(images))

        base_path, base_gap = build([], "base")
        gains = {u: base_gap - build([u], f"unit-{u}")[1] for u in units}
        order = greedy_order(gains)
        prefixes: list[dict[str, Any]] = []
        chosen = 0
        for k in range(1, len(order) + 1):
            path, gap = build(order[:k], f"prefix-{k}")
            base_ms, ms = ms_per_image([base_path, path], timing_batch)
            extra_ms = ms - base_ms
            prefixes.append(
                {"units": order[:k], "gap": gap, "ms": ms, "base_ms": base_ms, "extra_ms": extra_ms}
            )
            chosen = longest_within([p["extra_ms"] for p in prefixes], budget_ms)
            if chosen < k:
                break
    keep = list(keep_float) + [unit_pattern(u) for u in order[:chosen]]
    return {
        "base": {"keep_float": list(keep_float), "gap": base_gap},
        "unit_gains": gains,
        "order": order,
        "prefixes": prefixes,
        "budget_ms": budget_ms,
        "chosen_keep_float": keep,
        "chosen_gap": prefixes[chosen - 1]["gap"] if chosen else base_gap,
        "images": len(images),
    }
