"""The hash index role (``HashIndex``) and its in-process implementation.

The index stores 64-bit hashes of photos by family (``phash``, ``face``) and answers: which
stored hashes of this family lie within ``radius`` bits of these query hashes? Every
implementation gives the same answers (tests/unit/test_dedupe_index_contract.py runs one
suite against all of them); they differ only in where the hashes live. Pure: no I/O here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from pipeline.dedupe.bands import BandPlan, hamming

BITS = 64
"""Bit length of every indexed hash."""
BANDS = 3
"""Bands per hash in every index; fixed by the schema (columns b0..b2)."""


def plan_for(radius: int) -> BandPlan:
    """The band plan of the index for search radius ``radius``."""
    return BandPlan(bits=BITS, bands=BANDS, radius=radius)


@dataclass(frozen=True)
class IndexedHash:
    """One stored hash: the photo it belongs to, its family and kind, and its value."""

    photo_id: str
    family: str
    kind: str
    value: int


@dataclass(frozen=True)
class HashHit:
    """A stored hash within the radius of query number ``query`` (its position in the call)."""

    photo_id: str
    kind: str
    distance: int
    query: int


class HashIndex(Protocol):
    """Near-duplicate search over 64-bit hashes.

    Contract (all implementations): ``add`` is idempotent on ``(photo_id, kind)`` and returns
    how many hashes were new; after ``add`` returns, ``search`` sees the hashes. ``search``
    returns every stored hash of ``family`` within ``radius`` bits of a query (exact recall, no
    false hits), sorted by (query, distance, photo_id, kind); ``radius`` may not exceed the
    radius the index was built for. ``remove`` deletes every hash of a photo and returns how
    many. Calls are blocking; storage failures raise the backend's error.
    """

    radius: int

    def add(self, hashes: Sequence[IndexedHash]) -> int: ...

    def search(self, family: str, queries: Sequence[int], radius: int | None = None
               ) -> list[HashHit]: ...

    def remove(self, photo_id: str) -> int: ...

    def count(self) -> int: ...


def sort_hits(hits: Iterable[HashHit]) -> list[HashHit]:
    return sorted(hits, key=lambda h: (h.query, h.distance, h.photo_id, h.kind))


def check_radius(index_radius: int, radius: int | None) -> int:
    r = index_radius if radius is None else radius
    if not 0 <= r <= index_radius:
        raise ValueError(f"radius {r} outside 0..{index_radius} of this index")
    return r


class InMemoryHashIndex:
    """Multi-index hashing in dictionaries (one per band): the embedded and test implementation.

    Not thread-safe; one process only. Memory grows with every stored hash.
    """

    def __init__(self, radius: int) -> None:
        self.radius = radius
        self._plan = plan_for(radius)
        self._values: dict[tuple[str, str], tuple[str, int]] = {}
        self._bands: list[dict[tuple[str, int], set[tuple[str, str]]]] = [
            defaultdict(set) for _ in range(BANDS)
        ]

    def add(self, hashes: Sequence[IndexedHash]) -> int:
        added = 0
        for h in hashes:
            key = (h.photo_id, h.kind)
            if key in self._values:
                continue
            self._values[key] = (h.family, h.value)
            for i, band in enumerate(self._plan.split(h.value)):
                self._bands[i][(h.family, band)].add(key)
            added += 1
        return added

    def search(self, family: str, queries: Sequence[int], radius: int | None = None
               ) -> list[HashHit]:
        r = check_radius(self.radius, radius)
        hits = []
        for position, q in enumerate(queries):
            seen: set[tuple[str, str]] = set()
            for i, values in enumerate(self._plan.probes(q)):
                for v in values:
                    seen.update(self._bands[i].get((family, v), ()))
            for photo_id, kind in seen:
                d = hamming(q, self._values[(photo_id, kind)][1])
                if d <= r:
                    hits.append(HashHit(photo_id, kind, d, position))
        return sort_hits(hits)

    def remove(self, photo_id: str) -> int:
        keys = [k for k in self._values if k[0] == photo_id]
        for key in keys:
            family, value = self._values.pop(key)
            for i, band in enumerate(self._plan.split(value)):
                bucket = self._bands[i].get((family, band))
                if bucket is not None:
                    bucket.discard(key)
        return len(keys)

    def count(self) -> int:
        return len(self._values)
