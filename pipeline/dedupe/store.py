"""Stored photos in the database: account avatars, the bank of known stolen photos, lookups.

Thin I/O over ``photos`` and ``photo_hashes`` (pipeline/store/dedupe_tables.py). The stage,
the ``unmask bank``/``unmask match`` commands and the review app all go through here, so a bank
entry added by a reviewer is matched exactly like one added from the command line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from PIL import Image
from sqlalchemy.engine import Connection, Engine

from pipeline.dedupe.hashes import compute_hashes
from pipeline.dedupe.index import HashHit
from pipeline.dedupe.matching import (
    MatchRule,
    StoredPhoto,
    Verifier,
    accepted,
    best_matches,
    indexed_hashes,
    keypoints_of,
    query_hashes,
)
from pipeline.dedupe.sql_index import add_in, search_radii
from pipeline.store.db import insert_ignore, pg_execute_prepared
from pipeline.store.dedupe_tables import photo_hashes, photos
from pipeline.types import PhotoMatch


@dataclass(frozen=True)
class BankEntry:
    """A known stolen photo and where it came from."""

    photo_id: str
    label: str
    origin: str | None
    added_by: str | None
    added_at: datetime
    sha256: str | None
    filename: str | None
    hashes: int = 0


def account_photo_id(event_id: str) -> str:
    return f"event:{event_id}"


def store_account_photo(conn: Connection, radius: int, account_id: str, event_id: str,
                        sha256: str | None, hashes: Mapping[str, str],
                        keypoints: bytes | None = None) -> bool:
    """Store an account's avatar and its hashes in the caller's transaction, idempotently.

    ``keypoints`` are the thumbnail's packed keypoints when the caller has them (computed from
    the ``thumb`` otherwise). Returns False when the photo of ``event_id`` was already stored
    (nothing is written).
    """
    photo_id = account_photo_id(event_id)
    row = {"photo_id": photo_id, "source": "account", "account_id": account_id,
           "event_id": event_id, "sha256": sha256, "created_at": datetime.now(UTC),
           "pdq": hashes.get("pdq"), "pdq_mirror": hashes.get("pdq_mirror"),
           "thumb": hashes.get("thumb"),
           "keypoints": keypoints if keypoints is not None else keypoints_of(hashes)}
    if insert_ignore(conn, photos, row, ["photo_id"]) == 0:
        return False
    add_in(conn, radius, indexed_hashes(photo_id, hashes))
    return True


def find_matches(conn: Connection, radius: int, hashes: Mapping[str, str],
                 sha256: str | None = None, exclude_account: str | None = None,
                 rule: MatchRule | None = None, keypoints: bytes | None = None,
                 verifier: Verifier | None = None) -> tuple[PhotoMatch, ...]:
    """Bank entries and other accounts' avatars that are near-duplicates of ``hashes``.

    ``rule`` decides what is near (default: pHash within ``radius``, no PDQ clause). An equal
    ``sha256`` matches exactly (distance 0) whatever the hashes say. One index statement per
    family (the query's plain kinds and its crop windows, each at its radius), one read of the
    candidate photos, then ``accepted``. ``keypoints``: the query's packed keypoints when known
    (saves computing them if a candidate needs verification); ``verifier`` lets the caller
    count verifications. Reads only.
    """
    rule = rule if rule is not None else MatchRule(radius=radius, pdq_radius=-1)
    hits: list[HashHit] = []
    kinds: list[str] = []
    for family, values in query_hashes(hashes, rule).items():
        found = search_radii(conn, family, [(q.value, q.radius) for q in values])
        hits.extend(dataclasses.replace(h, query=h.query + len(kinds)) for h in found)
        kinds.extend(q.kind for q in values)
    ids = sorted({h.photo_id for h in hits})
    if not ids and not sha256:
        return ()
    stored, exact = read_photos(conn, ids, sha256)
    hits = accepted(hits, rule, hashes, stored, kinds, exclude_account, keypoints, verifier)
    return best_matches(hits, exact, stored, exclude_account=exclude_account)


_PG_PHOTOS = "unmask_dedupe_photos"
_PG_PHOTOS_PREPARE = (
    f"PREPARE {_PG_PHOTOS}(text[], text) AS "
    "SELECT photo_id, source, account_id, label, pdq, pdq_mirror, thumb, keypoints, "
    "sha256 IS NOT DISTINCT FROM $2 FROM photos WHERE photo_id = ANY($1) OR sha256 = $2"
)


def read_photos(conn: Connection, ids: Sequence[str], sha256: str | None
                ) -> tuple[dict[str, StoredPhoto], list[str]]:
    """The stored photos ``ids`` and every photo whose sha256 equals ``sha256``, in one round
    trip: ``({photo_id: StoredPhoto}, [ids of the equal-sha256 photos])``.

    On PostgreSQL a server-side prepared statement taking an array (prepared once per session,
    like the index search); elsewhere the SQLAlchemy statement.
    """
    if conn.dialect.name == "postgresql":
        rows = pg_execute_prepared(conn, _PG_PHOTOS, _PG_PHOTOS_PREPARE,
                                   f"EXECUTE {_PG_PHOTOS}(%s, %s)", (list(ids), sha256))
    else:
        c = photos.c
        where: sa.ColumnElement[bool] = c.photo_id.in_(list(ids))
        if sha256:
            where = sa.or_(where, c.sha256 == sha256)
        rows = [tuple(r) for r in conn.execute(
            sa.select(c.photo_id, c.source, c.account_id, c.label, c.pdq, c.pdq_mirror, c.thumb,
                      c.keypoints, sa.and_(c.sha256.is_not(None), c.sha256 == sha256))
            .where(where))]
    stored: dict[str, StoredPhoto] = {}
    exact: list[str] = []
    for photo_id, source, account_id, label, pdq, pdq_mirror, thumb, keypoints, same in rows:
        stored[photo_id] = StoredPhoto(photo_id, source, account_id, label,
                                       tuple(v for v in (pdq, pdq_mirror) if v), thumb,
                                       None if keypoints is None else bytes(keypoints))
        if sha256 and same:
            exact.append(photo_id)
    return stored, sorted(exact)


def hash_image_bytes(data: bytes, max_pixels: int) -> tuple[str, dict[str, str]]:
    """sha256 of ``data`` and the hashes of the picture it decodes to.

    Raises ``ValueError`` (or the avatar decoder's ``AvatarRefused``) when ``data`` is not an
    acceptable image.
    """
    image = decode_bytes(data, max_pixels)
    return hashlib.sha256(data).hexdigest(), compute_hashes(image)


def decode_bytes(data: bytes, max_pixels: int) -> Image.Image:
    """An upright RGB picture from untrusted bytes, via the avatar stage's hardened decoder."""
    try:
        from pipeline.avatars.decode import decode_image
    except ImportError:  # TODO(#4): drop once pipeline/avatars/decode.py is always present
        return _decode_with_pillow(data, max_pixels)
    return decode_image(data, max_pixels=max_pixels).image


def _decode_with_pillow(data: bytes, max_pixels: int) -> Image.Image:
    from PIL import ImageOps

    with Image.open(io.BytesIO(data)) as image:
        if image.width * image.height > max_pixels:
            raise ValueError(f"{image.width}x{image.height} exceeds {max_pixels} pixels")
        image.load()
        return ImageOps.exif_transpose(image).convert("RGB")


def add_bank_photo(engine: Engine, radius: int, image_bytes: bytes, label: str,
                   added_by: str | None, origin: str | None = None,
                   filename: str | None = None, max_pixels: int = 40_000_000) -> BankEntry:
    """Add a confirmed stolen photo to the bank (the review app and ``unmask bank add`` call this).

    Idempotent on the image bytes: a photo already in the bank returns its existing entry.
    Raises ``ValueError``/``AvatarRefused`` when the bytes are not an acceptable image.
    """
    sha256, hashes = hash_image_bytes(image_bytes, max_pixels)
    return add_bank_hashes(engine, radius, sha256, hashes, label, added_by, origin, filename)


def add_bank_hashes(engine: Engine, radius: int, sha256: str, hashes: Mapping[str, str],
                    label: str, added_by: str | None, origin: str | None = None,
                    filename: str | None = None) -> BankEntry:
    """Add an already hashed photo to the bank; idempotent on ``sha256``."""
    with engine.begin() as conn:
        existing = conn.execute(
            sa.select(photos).where(photos.c.source == "bank", photos.c.sha256 == sha256)
        ).first()
        if existing is not None:
            return _entry(existing._mapping, 0)
        photo_id = f"bank:{uuid.uuid4().hex[:16]}"
        row: dict[str, Any] = {
            "photo_id": photo_id, "source": "bank", "label": label,
            "origin": origin, "added_by": added_by, "filename": filename, "sha256": sha256,
            "created_at": datetime.now(UTC), "pdq": hashes.get("pdq"),
            "pdq_mirror": hashes.get("pdq_mirror"), "thumb": hashes.get("thumb"),
            "keypoints": keypoints_of(hashes),
        }
        conn.execute(photos.insert().values(**row))
        added = add_in(conn, radius, indexed_hashes(photo_id, hashes))
        return _entry(row, added)


def list_bank(engine: Engine) -> list[BankEntry]:
    """Every bank entry, oldest first, with its number of indexed hashes."""
    counts = (
        sa.select(photo_hashes.c.photo_id, sa.func.count().label("n"))
        .group_by(photo_hashes.c.photo_id).subquery()
    )
    stmt = (
        sa.select(photos, sa.func.coalesce(counts.c.n, 0).label("n"))
        .outerjoin(counts, counts.c.photo_id == photos.c.photo_id)
        .where(photos.c.source == "bank")
        .order_by(photos.c.created_at, photos.c.photo_id)
    )
    with engine.connect() as conn:
        return [_entry(r._mapping, int(r.n)) for r in conn.execute(stmt)]


def remove_bank_photo(engine: Engine, photo_id: str) -> bool:
    """Remove a bank entry and its hashes; False when there is no such entry."""
    with engine.begin() as conn:
        gone = conn.execute(
            photos.delete().where(photos.c.photo_id == photo_id, photos.c.source == "bank")
        ).rowcount
        if not gone:
            return False
        conn.execute(photo_hashes.delete().where(photo_hashes.c.photo_id == photo_id))
        return True


def _entry(row: Mapping[Any, Any], hashes: int) -> BankEntry:
    added_at = row["created_at"]
    if added_at.tzinfo is None:
        added_at = added_at.replace(tzinfo=UTC)
    return BankEntry(
        photo_id=row["photo_id"], label=row["label"] or "", origin=row["origin"],
        added_by=row["added_by"], added_at=added_at, sha256=row["sha256"],
        filename=row["filename"], hashes=hashes,
    )

