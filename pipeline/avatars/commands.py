"""``unmask score``: what the avatar stage thinks of pictures on disk, for analysts.

Local files go through the same safe decoder, face locator and detector as the pipeline, so an
analyst sees exactly what the stage would have stored. One JSON line per image on stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.avatars.decode import DecodedImage, decode_image
from pipeline.avatars.errors import AvatarRefused, count_refusal
from pipeline.avatars.face import HaarFaceLocator, eye_offset
from pipeline.avatars.fetch import read_regular_file
from pipeline.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "score",
        help="score images on disk with the AI-face detector (one JSON line per image)",
        description=(
            "Decode each IMAGE with the pipeline's safe decoder, find the face and eyes, and "
            "score it with the ONNX detector. Prints one JSON object per image: path, score, "
            "ai_generated, face_found, face_box, eyes, eye_offset, model_version (or error). "
            "Exit status 1 when any image was refused."
        ),
    )
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help="detector folder or .onnx file (default: settings, else the shipped model)",
    )
    p.add_argument("--hashes", action="store_true", help="also print the perceptual hashes")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser(
        "train-detector",
        help="train the AI-face detector and export it to ONNX (needs the `train` extra)",
        add_help=False,
    )
    p.add_argument("train_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_train_detector, pass_through=True)

    p = sub.add_parser(
        "quantize-detector",
        help="post-training static INT8 quantisation of the exported detector (needs onnx)",
        add_help=False,
    )
    p.add_argument("train_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_quantize_detector, pass_through=True)


def cmd_train_detector(args: argparse.Namespace, settings: Settings) -> int:
    """Hand the arguments to ``pipeline.avatars.train.main`` (torch is imported only here)."""
    try:
        from pipeline.avatars import train
    except ImportError as error:
        print(
            f"train-detector needs the train extra (pip install -e '.[train]'): {error}",
            file=sys.stderr,
        )
        return 2
    return int(train.main(args.train_args) or 0)


def cmd_quantize_detector(args: argparse.Namespace, settings: Settings) -> int:
    """Hand the arguments to ``pipeline.avatars.quantize.main`` (onnx is imported only here)."""
    try:
        from pipeline.avatars import quantize
    except ImportError as error:
        print(f"quantize-detector needs onnx (pip install -e '.[train]'): {error}", file=sys.stderr)
        return 2
    return int(quantize.main(args.train_args) or 0)


def score_files(
    paths: Sequence[Path],
    settings: Settings,
    *,
    model: Path | None = None,
    with_hashes: bool = False,
) -> list[dict[str, Any]]:
    """One JSON-safe record per path, in order: the stage's view of each local image.

    Decodable images are scored ``settings.avatars.batch_size`` at a time. Refusals are records
    with ``error`` (the refusal code) and ``detail``; they are counted like the stage's.
    """
    from pipeline.avatars.detector import open_detector

    avatars = settings.avatars
    if model is not None:
        avatars = avatars.model_copy(update={"model_path": model})
    detector = open_detector(avatars)
    locator = HaarFaceLocator()
    records: list[dict[str, Any]] = [{"path": str(p)} for p in paths]
    pending: list[tuple[int, bytes, DecodedImage]] = []

    def flush() -> None:
        if not pending:
            return
        cnn = detector.score_batch([d.image for _, _, d in pending])
        findings = [locator.locate(d.image) for _, _, d in pending]
        scores = detector.fuse(cnn, findings, [d.image.size for _, _, d in pending])
        for (index, data, decoded), score, raw, found in zip(
            pending, scores, cnn, findings, strict=True
        ):
            box = None
            if found.face_box is not None:
                box = [round(v * decoded.scale) for v in found.face_box]
            offset = eye_offset(found.eyes)
            record = records[index]
            record.update(
                {
                    "score": round(float(score), 6),
                    "cnn_score": round(float(raw), 6),
                    "ai_generated": bool(score >= detector.threshold),
                    "face_found": found.face_found,
                    "face_box": box,
                    "eyes": [[round(x, 5), round(y, 5)] for x, y in found.eyes],
                    "eye_offset": round(offset, 6) if offset is not None else None,
                    "width": decoded.width,
                    "height": decoded.height,
                    "format": decoded.format,
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "model_version": detector.model_version,
                }
            )
            if with_hashes:
                from pipeline.dedupe.hashes import compute_hashes

                record["hashes"] = compute_hashes(
                    decoded.image, found.face_box, list(found.eyes_px) or None
                )
        pending.clear()

    for index, path in enumerate(paths):
        try:
            data = read_regular_file(path, avatars.max_bytes)
            decoded = decode_image(data, avatars.max_pixels)
        except AvatarRefused as refusal:
            count_refusal(refusal)
            records[index].update({"error": refusal.code, "detail": refusal.detail})
            continue
        pending.append((index, data, decoded))
        if len(pending) >= max(1, avatars.batch_size):
            flush()
    flush()
    return records


def cmd_score(args: argparse.Namespace, settings: Settings) -> int:
    records = score_files(args.images, settings, model=args.model, with_hashes=args.hashes)
    for record in records:
        sys.stdout.write(json.dumps(record) + "\n")
    return 1 if any("error" in r for r in records) else 0
