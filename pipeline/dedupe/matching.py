"""Which hashes are indexed, which are queried, and how index hits become ``PhotoMatch`` values.

Pure. A stored photo indexes the pHash of the picture, of its mirror, of its centred 5% and
10% crops (and their mirrors) and, when it has a uniform border, of the trimmed picture and its
mirror; a query uses its plain pHash (and its trimmed one), so a flipped copy is found through a
stored mirror hash, a framed copy through the trimmed hash, and a cropped copy comes closer to
a stored crop. Index hits beyond the plain radius must pass the PDQ check; hits on the
off-centre crop windows (``phash_w*``), and every hit out to the loose candidate radius, must
pass the keypoint and correlation check of pipeline/dedupe/verify.py (``MatchRule``).
Several hits on one stored photo collapse into its best match (exact sha256 first, then the
smallest distance).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from pipeline.dedupe.bands import hamming, hex_to_int
from pipeline.dedupe.hashes import CROP_WINDOWS, FAMILY, HASH_BITS, MIRROR_KINDS
from pipeline.dedupe.index import BITS, HashHit, IndexedHash
from pipeline.dedupe.verify import Features, VerifyRule, decode_thumb, features, verify
from pipeline.types import PhotoMatch, Transform

INDEXED_KINDS: dict[str, tuple[str, ...]] = {
    "phash": (
        "phash",
        "phash_mirror",
        "phash_trim",
        "phash_trim_mirror",
        "phash_crop5",
        "phash_crop10",
        "phash_crop5_mirror",
        "phash_crop10_mirror",
        *sorted(CROP_WINDOWS),
        *sorted(f"{k}_mirror" for k in CROP_WINDOWS),
    ),
}
"""Kinds stored in the index, by family. The eye-aligned ``face`` hash is computed but not
indexed: measured, it adds false matches and little recall (docs/dedupe.md)."""
INDEXED_FAMILIES = tuple(INDEXED_KINDS)
QUERY_KINDS: dict[str, tuple[str, ...]] = {"phash": ("phash", "phash_trim")}
"""The kinds each family is queried with (all in one search)."""
VERIFY_ONLY_KINDS = frozenset({*CROP_WINDOWS, *(f"{k}_mirror" for k in CROP_WINDOWS)})
"""Stored kinds that match only through verification, whatever their distance."""


@dataclass(frozen=True)
class MatchRule:
    """When a stored photo is the same photo as a query (measured in docs/dedupe.md).

    A match is: an equal sha256; or the ``phash`` family within ``radius`` bits (any query kind
    against any stored kind but the crop windows: plain, mirror, border-trimmed, centred crops);
    or that family within ``verified_radius`` bits *and* the PDQ hashes (plain or mirror) within
    ``pdq_radius`` of 256 bits; or any stored kind, crop windows included, within
    ``candidate_radius`` bits *and* the thumbnails pass :class:`VerifyRule` (``min_inliers``
    keypoint inliers of a plausible affine fit, high-pass correlation ``min_ncc`` over the
    overlap). The index is searched at :attr:`search_radius`; the PDQ check and the
    verification run on the few candidates it returns. ``pdq_radius`` < 0 turns the second
    clause off, ``candidate_radius`` < 0 the third.
    """

    radius: int = 2
    verified_radius: int = 4
    pdq_radius: int = 80
    candidate_radius: int = -1
    min_inliers: int = 12
    min_ncc: float = 0.80

    @property
    def search_radius(self) -> int:
        r = max(self.radius, self.verified_radius) if self.pdq_radius >= 0 else self.radius
        return max(r, self.candidate_radius)

    @property
    def verify_rule(self) -> VerifyRule:
        return VerifyRule(self.min_inliers, self.min_ncc)

    def accepts(self, distance: int, pdq_distance: int | None) -> bool:
        """Whether a candidate at pHash ``distance`` (and PDQ distance, None if unknown) matches
        without verification (only for kinds outside :data:`VERIFY_ONLY_KINDS`)."""
        if distance <= self.radius:
            return True
        return (
            distance <= self.verified_radius
            and pdq_distance is not None
            and pdq_distance <= self.pdq_radius
        )

    def needs_verification(self, distance: int) -> bool:
        """Whether a candidate at ``distance`` not accepted otherwise may still be verified."""
        return distance <= self.candidate_radius


@dataclass(frozen=True)
class StoredPhoto:
    """What a match reports about the stored photo it found (and its PDQ hashes, hex, and its
    ``thumb`` for verification)."""

    photo_id: str
    source: str
    account_id: str | None
    label: str | None
    pdq: tuple[str, ...] = ()
    thumb: str | None = None


def pdq_distance(query: Mapping[str, str], stored: Sequence[str]) -> int | None:
    """Smallest distance of the query's plain PDQ to a stored PDQ; None when either is missing."""
    if "pdq" not in query or not stored:
        return None
    q = hex_to_int(query["pdq"])
    return min(hamming(q, hex_to_int(v)) for v in stored)


class Verifier:
    """Verification of one query against stored thumbnails, each pair checked at most once.

    The query's features (plain and mirrored) are computed on first use. A stored thumbnail
    that is missing or unreadable fails verification.
    """

    def __init__(self, query: Mapping[str, str], rule: VerifyRule) -> None:
        self.rule = rule
        self._thumb = query.get("thumb")
        self._query: dict[bool, Features | None] = {}
        self._done: dict[tuple[str, bool], bool] = {}

    def _query_features(self, mirror: bool) -> Features | None:
        if mirror not in self._query:
            try:
                thumb = decode_thumb(self._thumb) if self._thumb else None
            except ValueError:
                thumb = None
            self._query[mirror] = None if thumb is None else features(thumb, mirror)
        return self._query[mirror]

    def passes(self, photo: StoredPhoto, mirror: bool) -> bool:
        """Whether the query (mirrored when ``mirror``) is ``photo`` by :class:`VerifyRule`."""
        key = (photo.photo_id, mirror)
        if key not in self._done:
            q = self._query_features(mirror)
            ok = False
            if q is not None and photo.thumb:
                try:
                    stored = features(decode_thumb(photo.thumb))
                except ValueError:
                    stored = None
                ok = stored is not None and self.rule.passes(verify(q, stored))
            self._done[key] = ok
        return self._done[key]


def accepted(
    hits: Iterable[HashHit],
    rule: MatchRule,
    query: Mapping[str, str],
    photos: Mapping[str, StoredPhoto],
) -> list[HashHit]:
    """The index hits that match under ``rule`` (hits beyond ``radius`` need the PDQ check or
    verification; crop-window hits always need verification). Best hits are tried first, and
    a photo is verified at most once per orientation."""
    out = []
    verifier = Verifier(query, rule.verify_rule)
    for hit in sorted(hits, key=lambda h: (h.distance, h.photo_id, h.kind)):
        photo = photos.get(hit.photo_id)
        if hit.kind not in VERIFY_ONLY_KINDS:
            pdq = None
            if hit.distance > rule.radius and photo is not None:
                pdq = pdq_distance(query, photo.pdq)
            if rule.accepts(hit.distance, pdq):
                out.append(hit)
                continue
        if (photo is not None and rule.needs_verification(hit.distance)
                and verifier.passes(photo, hit.kind in MIRROR_KINDS)):
            out.append(hit)
    return out


def indexed_hashes(photo_id: str, hashes: Mapping[str, str]) -> list[IndexedHash]:
    """The hashes of one photo that go into the index (unknown or non-64-bit kinds skipped)."""
    out = []
    for kind, value in sorted(hashes.items()):
        family = FAMILY.get(kind)
        if family is not None and kind in INDEXED_KINDS.get(family, ()) and HASH_BITS[kind] == BITS:
            out.append(IndexedHash(photo_id, family, kind, hex_to_int(value)))
    return out


def queries(hashes: Mapping[str, str]) -> dict[str, list[int]]:
    """``{family: [values]}`` of the query hashes present in ``hashes`` (families with none
    left out)."""
    out: dict[str, list[int]] = {}
    for family, kinds in QUERY_KINDS.items():
        values = [hex_to_int(hashes[k]) for k in kinds if k in hashes]
        if values:
            out[family] = values
    return out


def transform_of(kind: str) -> Transform:
    return "mirror" if kind in MIRROR_KINDS else "plain"


def to_match(photo: StoredPhoto, distance: int, transform: Transform, hash_kind: str) -> PhotoMatch:
    if photo.source == "bank":
        return PhotoMatch.from_bank(
            photo.photo_id, photo.label or "", distance, transform, hash_kind
        )
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

    def offer(photo_id: str, rank: int, distance: int, transform: Transform, kind: str) -> None:
        photo = photos.get(photo_id)
        if photo is None or (
            exclude_account is not None
            and photo.account_id == exclude_account
            and photo.source == "account"
        ):
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
