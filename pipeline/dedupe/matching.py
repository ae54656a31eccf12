"""Which hashes are indexed, which are queried, and how index hits become ``PhotoMatch`` values.

Pure. Stored photos index every kind of the indexed families (plain and mirror); a query uses
only the plain kinds, so a flipped copy is found through the stored mirror hash and each pair of
photos is compared once per family. Several hits on one stored photo collapse into its best
match (exact sha256 first, then the smallest distance).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pipeline.dedupe.bands import hex_to_int
from pipeline.dedupe.hashes import FAMILY, HASH_BITS, MIRROR_KINDS
from pipeline.dedupe.index import BITS, HashHit, IndexedHash
from pipeline.types import PhotoMatch

INDEXED_FAMILIES = ("phash", "face")
"""Families stored in the index (64-bit pHash of the whole picture and of the aligned face)."""
QUERY_KINDS: dict[str, str] = {"phash": "phash", "face": "face"}
"""The kind each family is queried with."""


@dataclass(frozen=True)
class StoredPhoto:
    """What a match reports about the stored photo it found."""

    photo_id: str
    source: str
    account_id: str | None
    label: str | None


def indexed_hashes(photo_id: str, hashes: Mapping[str, str]) -> list[IndexedHash]:
    """The hashes of one photo that go into the index (unknown or non-64-bit kinds skipped)."""
    out = []
    for kind, value in sorted(hashes.items()):
        family = FAMILY.get(kind)
        if family in INDEXED_FAMILIES and HASH_BITS[kind] == BITS:
            out.append(IndexedHash(photo_id, family, kind, hex_to_int(value)))
    return out


def queries(hashes: Mapping[str, str]) -> dict[str, int]:
    """``{family: value}`` of the query hashes present in ``hashes``."""
    return {
        family: hex_to_int(hashes[kind])
        for family, kind in QUERY_KINDS.items()
        if kind in hashes
    }


def transform_of(kind: str) -> str:
    return "mirror" if kind in MIRROR_KINDS else "plain"


def to_match(photo: StoredPhoto, distance: int, transform: str, hash_kind: str) -> PhotoMatch:
    if photo.source == "bank":
        return PhotoMatch.from_bank(photo.photo_id, photo.label or "", distance, transform,
                                    hash_kind)
    return PhotoMatch.from_account(photo.account_id or "", distance, transform, hash_kind)


def best_matches(
    hits: Iterable[HashHit],
    exact: Iterable[str],
    photos: Mapping[str, StoredPhoto],
    exclude_account: str | None = None,
) -> tuple[PhotoMatch, ...]:
    """One match per stored entry (bank photo or other account), best first.

    ``exact`` are photo ids whose sha256 equals the query's; ``hits`` come from the index.
    Photos of ``exclude_account`` and photos missing from ``photos`` (removed meanwhile) are
    dropped. Order: bank before account, then distance, then entry id.
    """
    best: dict[str, tuple[int, int, PhotoMatch]] = {}

    def offer(photo_id: str, rank: int, distance: int, transform: str, kind: str) -> None:
        photo = photos.get(photo_id)
        if photo is None or (exclude_account is not None and photo.account_id == exclude_account
                             and photo.source == "account"):
            return
        match = to_match(photo, distance, transform, kind)
        current = best.get(match.entry_id)
        if current is None or (rank, distance) < current[:2]:
            best[match.entry_id] = (rank, distance, match)

    for photo_id in exact:
        offer(photo_id, 0, 0, "exact", "sha256")
    for hit in hits:
        offer(hit.photo_id, 1, hit.distance, transform_of(hit.kind), hit.kind)
    ordered = sorted(
        best.values(),
        key=lambda v: (v[2].source != "bank", v[0], v[1], v[2].entry_id),
    )
    return tuple(m for _rank, _d, m in ordered)
