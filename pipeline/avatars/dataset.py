"""The labelled face set in ``shared/data/faces`` and how it is split by source.

Pure (csv, Pillow): used by training, by evaluation and by the accuracy test, so all three agree
on which files belong to which source and which sources are held out. A *source* is the label
plus the file-name prefix (``fake/bhk``, ``real/lfw``): each prefix is one scrape of one upstream
repository (see ``faces/SOURCES.md``). Held-out sources never appear in training or calibration.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from pipeline.imaging import side_size

DEFAULT_HOLDOUT: tuple[str, ...] = (
    "fake/bhk",
    "real/lfw",
    "real/celeba",
    "real/amfd",
)
MAX_CACHED_SIDE = 384


@dataclass(frozen=True)
class FaceRecord:
    """One labelled image: ``path`` is absolute; ``label`` is 1 for AI-generated, 0 for real."""

    path: Path
    label: int
    source: str
    generator: str
    width: int
    height: int


def shared_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The shared folder: ``explicit``, else ``$UNMASK_SHARED_DIR``, else ``<repo>/../shared``."""
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get("UNMASK_SHARED_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared"


def faces_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``<shared>/data/faces``."""
    return shared_dir(explicit) / "data" / "faces"


def source_of(relative_file: str) -> str:
    """``fake/bhkcv_f12.jpg`` -> ``fake/bhkcv``."""
    folder, name = relative_file.split("/", 1)
    return f"{folder}/{name.split('_', 1)[0]}"


def read_manifest(root: Path) -> list[FaceRecord]:
    """Parse ``MANIFEST.csv`` under ``root``; raises ValueError on an unknown label."""
    records: list[FaceRecord] = []
    with (root / "MANIFEST.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["label"] not in ("fake", "real"):
                raise ValueError(f"unknown label {row['label']!r} for {row['file']}")
            records.append(
                FaceRecord(
                    path=root / row["file"],
                    label=1 if row["label"] == "fake" else 0,
                    source=source_of(row["file"]),
                    generator=row["generator"] or "real",
                    width=int(row["width"]),
                    height=int(row["height"]),
                )
            )
    return records


def stable_key(record: FaceRecord, salt: str) -> str:
    """A seedable, order-free sort key (sha256 of salt and file name)."""
    return hashlib.sha256(f"{salt}:{record.path.name}".encode()).hexdigest()


@dataclass(frozen=True)
class Split:
    """Train / validation (same sources, other images) / test (held-out sources only)."""

    train: list[FaceRecord]
    val: list[FaceRecord]
    test: list[FaceRecord]
    holdout: tuple[str, ...]


def split_by_source(
    records: Sequence[FaceRecord],
    holdout: Iterable[str] = DEFAULT_HOLDOUT,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> Split:
    """Put every record of a held-out source in ``test``; split the rest per source.

    The validation part takes ``val_fraction`` of each remaining source (at least one image),
    chosen by a seeded hash, so the split does not depend on file order.
    """
    held = tuple(sorted(set(holdout)))
    unknown = set(held) - {r.source for r in records}
    if unknown:
        raise ValueError(f"held-out sources not in the data: {sorted(unknown)}")
    test = [r for r in records if r.source in held]
    by_source: dict[str, list[FaceRecord]] = {}
    for record in records:
        if record.source not in held:
            by_source.setdefault(record.source, []).append(record)
    train: list[FaceRecord] = []
    val: list[FaceRecord] = []
    for source in sorted(by_source):
        items = sorted(by_source[source], key=lambda r: stable_key(r, f"val{seed}"))
        n_val = max(1, round(len(items) * val_fraction))
        val.extend(items[:n_val])
        train.extend(items[n_val:])
    return Split(train=train, val=val, test=test, holdout=held)


def model_split(
    training: Mapping[str, Any],
    shared: str | os.PathLike[str] | None = None,
    holdout: Iterable[str] | None = None,
) -> Split:
    """The split a model was trained with, from its manifest's ``training`` block (held-out
    sources and seed), over the faces under ``shared`` (see :func:`faces_dir`); ``holdout``
    replaces the held-out sources (scoring an older model on a newer model's set)."""
    return split_by_source(
        read_manifest(faces_dir(shared)),
        training["holdout_sources"] if holdout is None else holdout,
        seed=int(training["seed"]),
    )


def counts(records: Iterable[FaceRecord]) -> dict[str, int]:
    """Number of images per source, sorted by source name."""
    return dict(sorted(Counter(r.source for r in records).items()))


def sampling_weights(
    records: Sequence[FaceRecord], shares: dict[str, float] | None = None
) -> list[float]:
    """Each class gets half the mass; inside a class each source gets mass ~ sqrt(its size),
    except the sources in ``shares``, which get exactly that fraction of their class's mass
    (the sqrt rule splits what is left). Raises ValueError for an unknown source or shares of
    one class summing to 1 or more."""
    shares = dict(shares or {})
    sizes = counts(records)
    unknown = set(shares) - set(sizes)
    if unknown:
        raise ValueError(f"--source-share names sources not in training: {sorted(unknown)}")
    label_of = {r.source: r.label for r in records}
    fixed = {label: sum(v for k, v in shares.items() if label_of[k] == label) for label in (0, 1)}
    if any(v >= 1.0 or v < 0.0 for v in fixed.values()):
        raise ValueError(f"source shares per class must sum to [0, 1): {fixed}")
    free_mass = {
        label: sum(
            math.sqrt(n) for s, n in sizes.items() if label_of[s] == label and s not in shares
        )
        for label in (0, 1)
    }
    weights: list[float] = []
    for r in records:
        if r.source in shares:
            weights.append(shares[r.source] / sizes[r.source])
        else:
            share = (1.0 - fixed[r.label]) * math.sqrt(sizes[r.source]) / free_mass[r.label]
            weights.append(share / sizes[r.source])
    return weights


def parse_shares(text: str) -> dict[str, float]:
    """``fake/bhkcv=0.33,real/utk=0.2`` -> {source: share}."""
    out: dict[str, float] = {}
    for item in (part for part in text.split(",") if part):
        source, _, value = item.partition("=")
        out[source.strip()] = float(value)
    return out


def deterministic_sample(
    records: Sequence[FaceRecord], per_label: int, salt: str = "sample"
) -> list[FaceRecord]:
    """Up to ``per_label`` records of each label, picked by a stable hash (same every run)."""
    picked: list[FaceRecord] = []
    for label in (0, 1):
        pool = sorted((r for r in records if r.label == label), key=lambda r: stable_key(r, salt))
        picked.extend(pool[:per_label])
    return picked


def load_image(path: Path, max_side: int | None = None) -> Image.Image:
    """Decode to RGB; optionally shrink (bilinear) so the longer side is at most ``max_side``."""
    with Image.open(path) as opened:
        if max_side is not None and opened.format == "JPEG":
            opened.draft("RGB", (max_side, max_side))
        image = opened.convert("RGB")
    return image if max_side is None else shrunk(image, max_side)


def shrunk(image: Image.Image, max_side: int) -> Image.Image:
    """``image`` shrunk (bilinear) so the longer side is at most ``max_side``; never enlarged."""
    if max(image.size) <= max_side:
        return image
    return image.resize(
        side_size(image.size, max_side), Image.Resampling.BILINEAR, reducing_gap=3.0
    )
