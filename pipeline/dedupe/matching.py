"""Which hashes are indexed, which are queried, and how index hits become ``PhotoMatch`` values.

Pure. A stored photo indexes the pHash of the picture, of its mirror, of its centred 5% and
10% crops, of 14 off-centre crop windows (and the mirrors of all these) and, when it has a
uniform border, of the trimmed picture and its mirror. A query searches with its plain pHash
(and its trimmed one) at the rule's search radius, and with the pHash of its own crop windows
(:data:`QUERY_WINDOW_KINDS`) at the smaller ``window_radius``: a flipped copy is found through a
stored mirror hash, a framed copy through the trimmed hash, a cropped copy through a stored
window near it or one of its windows near the stored picture. Index hits beyond the plain
radius must pass the PDQ check; hits on stored crop windows, hits of query windows and every
other hit out to ``candidate_radius`` must pass the keypoint and correlation check of
pipeline/dedupe/verify.py (``MatchRule``), at most ``max_verifications`` per lookup, best hits
first. Several hits on one stored photo collapse into its best match (exact sha256 first, then
the smallest distance).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.dedupe.bands import hamming, hex_to_int
from pipeline.dedupe.hashes import CROP_WINDOWS, FAMILY, HASH_BITS, QUERY_WINDOWS
from pipeline.dedupe.index import BITS, HashHit, IndexedHash
from pipeline.dedupe.verify import (
    Features,
    VerifyRule,
    decode_thumb,
    features,
    pack_keypoints,
    unpack_keypoints,
    verify,
)
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
"""The kinds each family is queried with at :attr:`MatchRule.search_radius`."""
QUERY_WINDOW_KINDS: dict[str, tuple[str, ...]] = {"phash": tuple(sorted(QUERY_WINDOWS))}
"""The query's own crop windows, searched at :attr:`MatchRule.window_radius` in the same
statement; their hits match only through verification."""
VERIFY_ONLY_KINDS = frozenset({*CROP_WINDOWS, *(f"{k}_mirror" for k in CROP_WINDOWS)})
"""Stored kinds that match only through verification, whatever their distance."""
HASH_CLAUSE_KINDS = frozenset(k for k in INDEXED_KINDS["phash"] if k not in VERIFY_ONLY_KINDS)
"""Stored kinds that may match through the hash clauses alone; any other stored kind (crop
windows, and kinds of earlier versions still in the table, such as the ``phash_w<i><j>``
windows of another geometry) matches only through verification."""


@dataclass(frozen=True)
class QueryHash:
    """One hash a lookup searches with: its kind, value and the radius it is searched at."""

    kind: str
    value: int
    radius: int


@dataclass(frozen=True)
class MatchRule:
    """When a stored photo is the same photo as a query (measured in docs/dedupe.md).

    A match is: an equal sha256; or the ``phash`` family within ``radius`` bits (any query kind
    against any stored kind but the crop windows: plain, mirror, border-trimmed, centred crops);
    or that family within ``verified_radius`` bits *and* the PDQ hashes (plain or mirror) within
    ``pdq_radius`` of 256 bits; or any stored kind, crop windows included, within
    ``candidate_radius`` bits, or one of the query's crop windows within ``window_radius`` bits
    of any stored kind, *and* the thumbnails pass :class:`VerifyRule` (``min_inliers``
    keypoint inliers of a plausible affine fit, high-pass correlation ``min_ncc`` over the
    overlap), for the ``max_verifications`` best such candidates of a lookup. The query's plain
    kinds are searched at :attr:`search_radius`, its windows at ``window_radius``, in one
    statement; the PDQ check and the verification run on the few candidates it returns.
    ``pdq_radius`` < 0 turns the second clause off, ``candidate_radius`` < 0 the third for plain
    query kinds and ``window_radius`` < 0 the query windows.
    """

    radius: int = 2
    verified_radius: int = 4
    pdq_radius: int = 80
    candidate_radius: int = -1
    min_inliers: int = 12
    min_ncc: float = 0.80
    window_radius: int = -1
    max_verifications: int = 8

    @property
    def search_radius(self) -> int:
        """Radius at which the plain query kinds (:data:`QUERY_KINDS`) are searched."""
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

    def needs_verification(self, distance: int, window_query: bool = False) -> bool:
        """Whether a candidate at ``distance`` not accepted otherwise may still be verified
        (``window_query``: the hit is one of the query's crop windows)."""
        return distance <= (self.window_radius if window_query else self.candidate_radius)


@dataclass(frozen=True)
class StoredPhoto:
    """What a match reports about the stored photo it found (and its PDQ hashes, hex, its
    ``thumb`` and its packed keypoints (``verify.pack_keypoints``) for verification)."""

    photo_id: str
    source: str
    account_id: str | None
    label: str | None
    pdq: tuple[str, ...] = ()
    thumb: str | None = None
    keypoints: bytes | None = None


def pdq_distance(query: Mapping[str, str], stored: Sequence[str]) -> int | None:
    """Smallest distance of the query's plain PDQ to a stored PDQ; None when either is missing."""
    if "pdq" not in query or not stored:
        return None
    q = hex_to_int(query["pdq"])
    return min(hamming(q, hex_to_int(v)) for v in stored)


class Verifier:
    """Verification of one query against stored thumbnails, each pair checked at most once.

    The query's features (plain and mirrored) are computed on first use, the plain ones from
    ``keypoints`` when given (the stage has just stored them). A stored photo's keypoints are
    read from its packed value, or computed from its thumbnail when it has none (stored before
    they were kept) or it is unreadable. A stored thumbnail that is missing or unreadable fails
    verification. :attr:`count` is the number of pairs checked so far.
    """

    def __init__(self, query: Mapping[str, str], rule: VerifyRule,
                 keypoints: bytes | None = None) -> None:
        self.rule = rule
        self.count = 0
        self._thumb = query.get("thumb")
        self._keypoints = keypoints
        self._query: dict[bool, Features | None] = {}
        self._done: dict[tuple[str, bool], bool] = {}

    def _query_features(self, mirror: bool) -> Features | None:
        if mirror not in self._query:
            try:
                thumb = decode_thumb(self._thumb) if self._thumb else None
            except ValueError:
                thumb = None
            self._query[mirror] = None if thumb is None else stored_features(
                thumb, None if mirror else self._keypoints, mirror)
        return self._query[mirror]

    def done(self, photo: StoredPhoto, mirror: bool) -> bool:
        """Whether this pair was checked already (:meth:`passes` then costs nothing)."""
        return (photo.photo_id, mirror) in self._done

    def passes(self, photo: StoredPhoto, mirror: bool) -> bool:
        """Whether the query (mirrored when ``mirror``) is ``photo`` by :class:`VerifyRule`."""
        key = (photo.photo_id, mirror)
        if key not in self._done:
            self.count += 1
            q = self._query_features(mirror)
            ok = False
            if q is not None and photo.thumb:
                try:
                    stored: Features | None = stored_features(decode_thumb(photo.thumb),
                                                              photo.keypoints)
                except ValueError:
                    stored = None
                ok = stored is not None and self.rule.passes(verify(q, stored))
            self._done[key] = ok
        return self._done[key]


def keypoints_of(hashes: Mapping[str, str]) -> bytes | None:
    """The packed keypoints (``verify.pack_keypoints``) of the ``thumb`` in ``hashes``, to be
    stored with the photo; None when there is no readable thumbnail."""
    thumb = hashes.get("thumb")
    if not thumb:
        return None
    try:
        return pack_keypoints(features(decode_thumb(thumb)))
    except ValueError:
        return None


def stored_features(thumb: np.ndarray, keypoints: bytes | None, mirror: bool = False
                    ) -> Features:
    """Features of a decoded thumbnail: from its packed ``keypoints`` when they are given and
    readable (never for the mirror), else computed."""
    if keypoints is not None and not mirror:
        try:
            return unpack_keypoints(keypoints, thumb)
        except ValueError:
            pass
    return features(thumb, mirror)


def accepted(
    hits: Iterable[HashHit],
    rule: MatchRule,
    query: Mapping[str, str],
    photos: Mapping[str, StoredPhoto],
    query_kinds: Sequence[str] = (),
    exclude_account: str | None = None,
    keypoints: bytes | None = None,
    verifier: Verifier | None = None,
) -> list[HashHit]:
    """The index hits that match under ``rule``.

    Hits beyond ``radius`` need the PDQ check or verification; hits on stored crop windows and
    hits of the query's windows (``query_kinds[hit.query]`` in :data:`QUERY_WINDOW_KINDS`;
    ``query_kinds`` empty: no window queries) always need verification. The hash clauses are
    applied to every hit first; then the remaining candidates are verified best first
    (distance, photo, kind), skipping a photo already accepted, a photo missing from
    ``photos`` and a photo of ``exclude_account``, each photo at most once per orientation, and
    at most ``rule.max_verifications`` pairs per call (the rest of the candidates are
    dropped). ``keypoints`` are the query's packed keypoints when known; ``verifier`` lets the
    caller count the checks.
    """
    windows = {k for kinds in QUERY_WINDOW_KINDS.values() for k in kinds}
    ordered = sorted(hits, key=lambda h: (h.distance, h.photo_id, h.kind))
    out = []
    done: set[str] = set()
    loose = []
    for hit in ordered:
        photo = photos.get(hit.photo_id)
        window_query = hit.query < len(query_kinds) and query_kinds[hit.query] in windows
        if hit.kind in HASH_CLAUSE_KINDS and not window_query:
            pdq = None
            if hit.distance > rule.radius and photo is not None:
                pdq = pdq_distance(query, photo.pdq)
            if rule.accepts(hit.distance, pdq):
                out.append(hit)
                done.add(hit.photo_id)
                continue
        if photo is not None and rule.needs_verification(hit.distance, window_query):
            loose.append((hit, photo))
    verifier = verifier if verifier is not None else Verifier(query, rule.verify_rule, keypoints)
    for hit, photo in loose:
        if hit.photo_id in done or (exclude_account is not None and photo.source == "account"
                                    and photo.account_id == exclude_account):
            continue
        mirror = hit.kind.endswith("_mirror")
        if not verifier.done(photo, mirror) and verifier.count >= rule.max_verifications:
            continue
        if verifier.passes(photo, mirror):
            out.append(hit)
            done.add(hit.photo_id)
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
    """``{family: [values]}`` of the plain query hashes present in ``hashes`` (families with
    none left out)."""
    out: dict[str, list[int]] = {}
    for family, kinds in QUERY_KINDS.items():
        values = [hex_to_int(hashes[k]) for k in kinds if k in hashes]
        if values:
            out[family] = values
    return out


def query_hashes(hashes: Mapping[str, str], rule: MatchRule) -> dict[str, list[QueryHash]]:
    """``{family: [QueryHash]}``: what one lookup searches with under ``rule`` (the plain query
    kinds at ``rule.search_radius``, then the query's crop windows at ``rule.window_radius``
    when it is >= 0); families with nothing to search left out."""
    out: dict[str, list[QueryHash]] = {}
    for family, kinds in QUERY_KINDS.items():
        values = [QueryHash(k, hex_to_int(hashes[k]), rule.search_radius)
                  for k in kinds if k in hashes]
        if rule.window_radius >= 0:
            values += [QueryHash(k, hex_to_int(hashes[k]), rule.window_radius)
                       for k in QUERY_WINDOW_KINDS.get(family, ()) if k in hashes]
        if values:
            out[family] = values
    return out


def hits_against(family_queries: Sequence[QueryHash], photo_id: str,
                 stored: Iterable[IndexedHash]) -> list[HashHit]:
    """The hits an exact index search with ``family_queries`` (one family) returns on the
    stored hashes ``stored`` of one photo: what the database search computes, for benchmarks
    and tests."""
    out = []
    stored = list(stored)
    for n, q in enumerate(family_queries):
        for h in stored:
            d = hamming(q.value, h.value)
            if d <= q.radius:
                out.append(HashHit(photo_id, h.kind, d, n))
    return out


def transform_of(kind: str) -> Transform:
    return "mirror" if kind.endswith("_mirror") else "plain"


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
