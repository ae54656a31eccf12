"""Synthetic ``FaceRecord`` lists for the detector's sampling and fusion tests (no images)."""

from __future__ import annotations

from pathlib import Path

from pipeline.avatars import dataset as ds


def face_records(sizes: dict[str, int]) -> list[ds.FaceRecord]:
    """``n`` records per ``source`` of ``sizes``, labelled fake when the source is ``fake/...``."""
    out: list[ds.FaceRecord] = []
    for source, n in sizes.items():
        label = 1 if source.startswith("fake/") else 0
        for i in range(n):
            name = f"{source.split('/')[1]}_{i}.jpg"
            out.append(ds.FaceRecord(Path(name), label, source, source, 64, 64))
    return out
