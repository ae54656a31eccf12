"""How the committed detector holds up when the pictures change the way other scrapes differ.

unmask is judged on other scrapes at other resolutions and encodings than ``../shared/data``.
Those are not here, so this report does the next best thing on the held-out sources: it shows
every picture again after one named change (another codec, a harsher JPEG, a tiny or a large
avatar, a tighter crop, greyscale) and scores the whole avatar path as served (face step, CNN,
fusion at the manifest's coefficients). Two rows change one class only: if the model had
learned "small, soft pictures are fake" or "large, sharp ones are real" from the folder, upscaled
fakes or downscaled reals would break it. It is a report: nothing here picks or tunes a model.

``python -m pipeline.avatars.stress [--split val] [--only NAME ...]`` prints a Markdown table
(and ``--out`` writes the JSON).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from pipeline.avatars import dataset as ds
from pipeline.avatars import evaluate as ev
from pipeline.avatars.face import HaarFaceLocator
from pipeline.avatars.fusion import Fusion, feature_matrix
from pipeline.avatars.manifest import choose
from pipeline.avatars.preprocess import PreprocessSpec
from pipeline.imaging import reencoded, side_size


def _side(image: Image.Image, side: int, resample: Image.Resampling) -> Image.Image:
    return image.convert("RGB").resize(side_size(image.size, side), resample)


def _crop(image: Image.Image, share: float) -> Image.Image:
    w, h = image.size
    cw, ch = round(w * share), round(h * share)
    left, top = (w - cw) // 2, (h - ch) // 2
    return image.convert("RGB").crop((left, top, left + cw, top + ch))


@dataclass(frozen=True)
class Change:
    """One named change of a picture, applied to ``applies_to`` ("both", "fake" or "real")."""

    name: str
    what: str
    apply: Callable[[Image.Image], Image.Image]
    applies_to: str = "both"

    def shown(self, image: Image.Image, label: int) -> Image.Image:
        wanted = self.applies_to == "both" or self.applies_to == ("fake" if label else "real")
        return self.apply(image) if wanted else image


CHANGES: tuple[Change, ...] = (
    Change("as_stored", "the files as they are", lambda im: im.convert("RGB")),
    Change(
        "webp_q80", "re-encoded as WebP quality 80", lambda im: reencoded(im, "WEBP", quality=80)
    ),
    Change(
        "jpeg_q50", "re-encoded as JPEG quality 50", lambda im: reencoded(im, "JPEG", quality=50)
    ),
    Change(
        "side_96",
        "shrunk to 96 px (longest side), JPEG q85",
        lambda im: reencoded(_side(im, 96, Image.Resampling.LANCZOS), "JPEG", quality=85),
    ),
    Change(
        "side_512",
        "enlarged to 512 px (longest side, bicubic), JPEG q90",
        lambda im: reencoded(_side(im, 512, Image.Resampling.BICUBIC), "JPEG", quality=90),
    ),
    Change("crop_80", "centre crop of 80% of each side", lambda im: _crop(im, 0.8)),
    Change("grey", "greyscale", lambda im: ImageOps.grayscale(im).convert("RGB")),
    Change(
        "fakes_512",
        "fakes only enlarged to 512 px, JPEG q90; reals as stored",
        lambda im: reencoded(_side(im, 512, Image.Resampling.BICUBIC), "JPEG", quality=90),
        "fake",
    ),
    Change(
        "reals_128",
        "reals only shrunk to 128 px, JPEG q75; fakes as stored",
        lambda im: reencoded(_side(im, 128, Image.Resampling.BILINEAR), "JPEG", quality=75),
        "real",
    ),
)


def stress_report(
    scorer: ev.OnnxScorer,
    locator: HaarFaceLocator,
    records: Sequence[ds.FaceRecord],
    fusion: Fusion | None,
    changes: Sequence[Change] = CHANGES,
) -> dict[str, dict[str, float]]:
    """Per change: fused and CNN-only ROC AUC and TPR @ 1% FPR over ``records``, and the share
    of each class whose face was found."""
    images = [ds.load_image(r.path) for r in records]
    labels = np.array([r.label for r in records])
    out: dict[str, dict[str, float]] = {}
    for change in changes:
        shown = [change.shown(im, int(y)) for im, y in zip(images, labels, strict=True)]
        cnn, geo = ev.image_features(scorer, locator, shown)
        fused = cnn if fusion is None else fusion.probabilities(feature_matrix(cnn, geo))
        out[change.name] = {
            "auc": ev.roc_auc(labels, fused),
            "tpr_at_1pct_fpr": ev.tpr_at_fpr(labels, fused),
            "cnn_auc": ev.roc_auc(labels, cnn),
            "cnn_tpr_at_1pct_fpr": ev.tpr_at_fpr(labels, cnn),
            "face_found_fake": float(geo[labels == 1, 0].mean()),
            "face_found_real": float(geo[labels == 0, 0].mean()),
        }
    return out


def markdown(report: dict[str, dict[str, float]], changes: Sequence[Change] = CHANGES) -> str:
    """The report as one Markdown table, rows in ``changes`` order."""
    what = {c.name: c.what for c in changes}
    lines = [
        "| change | fused AUC | fused TPR @ 1% FPR | CNN AUC | CNN TPR @ 1% FPR "
        "| face found, fakes / reals |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in report.items():
        lines.append(
            f"| `{name}`: {what.get(name, '')} | {row['auc']:.4f} | "
            f"{100 * row['tpr_at_1pct_fpr']:.1f}% | {row['cnn_auc']:.4f} | "
            f"{100 * row['cnn_tpr_at_1pct_fpr']:.1f}% | "
            f"{100 * row['face_found_fake']:.0f}% / {100 * row['face_found_real']:.0f}% |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Score the committed model's held-out (or validation) sources under every change."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.avatars.stress")
    parser.add_argument("--model-dir", type=Path, default=ev.MODEL_DIR)
    parser.add_argument("--shared-dir", default=None)
    parser.add_argument("--split", choices=("test", "val"), default="test")
    parser.add_argument("--only", nargs="+", choices=[c.name for c in CHANGES], default=None)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    choice = choose(args.model_dir)
    manifest, model_file = choice.manifest, choice.model_file
    split = ds.model_split(manifest["training"], args.shared_dir)
    changes = [c for c in CHANGES if args.only is None or c.name in args.only]
    report = stress_report(
        ev.OnnxScorer(args.model_dir / model_file, PreprocessSpec.from_manifest(manifest)),
        HaarFaceLocator(),
        split.test if args.split == "test" else split.val,
        Fusion.of_model(manifest),
        changes,
    )
    if args.out is not None:
        summary = {"version": manifest.get("version"), "model_file": model_file}
        args.out.write_text(json.dumps({**summary, "split": args.split, "rows": report}) + "\n")
    print(markdown(report, changes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
