"""Pure helpers that turn stored evidence into what the review page shows.

Times in the reviewer's zone, ages in words, the face box as a fraction of the picture, and a
small bipartite picture of a cluster (accounts on an outer ring, the features they share on an
inner ring) laid out as coordinates for an SVG template. No I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def local_time(value: datetime | None, zone: str) -> str:
    """``YYYY-MM-DD HH:MM:SS TZ`` in ``zone`` (UTC when unknown); empty for None."""
    if value is None:
        return ""
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        tz = ZoneInfo("UTC")
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return aware.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def age_words(seconds: float) -> str:
    """A short age: ``42s``, ``7m``, ``3h 5m``, ``2d 4h``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


@dataclass(frozen=True)
class AvatarView:
    sha256: str | None
    score: float | None
    status: str
    error_code: str | None
    width: int | None
    height: int | None
    face_box: tuple[int, int, int, int] | None
    eyes: tuple[tuple[float, float], ...]
    model_version: str | None


def avatar_view(avatar: Mapping[str, Any] | None) -> AvatarView:
    """The avatar part of an item's evidence, with the face box checked against the picture."""
    a = avatar or {}
    width, height = a.get("width"), a.get("height")
    box = a.get("face_box")
    face_box = None
    if isinstance(box, list | tuple) and len(box) == 4:
        x, y, w, h = (int(v) for v in box)
        if w > 0 and h > 0:
            face_box = (x, y, w, h)
    eyes = tuple((float(e[0]), float(e[1])) for e in a.get("eyes") or () if len(e) == 2)
    if face_box and not (width and height):
        width, height = face_box[0] + face_box[2], face_box[1] + face_box[3]
    return AvatarView(
        sha256=a.get("sha256"), score=a.get("score"), status=a.get("status", "absent"),
        error_code=a.get("error_code"), width=width, height=height, face_box=face_box,
        eyes=eyes, model_version=a.get("model_version"),
    )


@dataclass(frozen=True)
class GraphNode:
    key: str
    label: str
    kind: str
    x: float
    y: float
    highlight: bool = False


@dataclass(frozen=True)
class Graph:
    size: int
    nodes: tuple[GraphNode, ...]
    edges: tuple[tuple[float, float, float, float], ...]
    hidden_accounts: int


def cluster_graph(accounts: Sequence[str], memberships: Iterable[tuple[str, str, str]],
                  subject: str | None = None, size: int = 360, max_accounts: int = 24,
                  max_features: int = 10) -> Graph:
    """Lay out accounts and the features at least two of them share.

    ``memberships`` are (account_id, kind, label) rows. Accounts go on the outer ring (the
    subject first, highlighted), shared features on the inner ring, one edge per membership.
    """
    first = [subject] if subject is not None and subject in accounts else []
    shown = list(dict.fromkeys([*first, *accounts]))
    hidden = max(0, len(shown) - max_accounts)
    shown = shown[:max_accounts]
    shown_set = set(shown)
    by_feature: dict[tuple[str, str], set[str]] = {}
    for account_id, kind, label in memberships:
        if account_id in shown_set:
            by_feature.setdefault((kind, label), set()).add(account_id)
    features = sorted((f for f, m in by_feature.items() if len(m) >= 2),
                      key=lambda f: (-len(by_feature[f]), f))[:max_features]
    c = size / 2
    outer, inner = size * 0.42, size * 0.17
    nodes: list[GraphNode] = []
    pos: dict[str, tuple[float, float]] = {}
    for i, account_id in enumerate(shown):
        angle = 2 * math.pi * i / max(1, len(shown)) - math.pi / 2
        x, y = round(c + outer * math.cos(angle), 1), round(c + outer * math.sin(angle), 1)
        pos[account_id] = (x, y)
        nodes.append(GraphNode(account_id, account_id, "account", x, y, account_id == subject))
    edges: list[tuple[float, float, float, float]] = []
    for j, feature in enumerate(features):
        angle = 2 * math.pi * j / max(1, len(features)) - math.pi / 2
        r = inner if len(features) > 1 else 0.0
        x, y = round(c + r * math.cos(angle), 1), round(c + r * math.sin(angle), 1)
        nodes.append(GraphNode(f"{feature[0]}:{feature[1]}", f"{feature[0]}: {feature[1]}",
                               "feature", x, y))
        for account_id in sorted(by_feature[feature]):
            ax, ay = pos[account_id]
            edges.append((ax, ay, x, y))
    return Graph(size, tuple(nodes), tuple(edges), hidden)
