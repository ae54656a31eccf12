"""Stored photos in the database: account avatars, the bank of known stolen photos, lookups.

Thin I/O over ``photos`` and ``photo_hashes`` (pipeline/store/dedupe_tables.py). The stage,
the ``unmask bank``/``unmask match`` commands and the review app all go through here, so a bank
entry added by a reviewer is matched exactly like one added from the command line.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from PIL import Image
from sqlalchemy.engine import Connection, Engine

from pipeline.dedupe.hashes import compute_hashes
from pipeline.dedupe.matching import (
    MatchRule,
    StoredPhoto,
    accepted,
    best_matches,
    indexed_hashes,
    queries,
)
from pipeline.dedupe.sql_index import add_in, search_in
from pipeline.store.db import insert_ignore
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
                        sha256: str | None, hashes: Mapping[str, str]) -> bool:
    """Store an account's avatar and its hashes in the caller's transaction, idempotently.

    Returns False when the photo of ``event_id`` was already stored (nothing is written).
    """
    photo_id = account_photo_id(event_id)
    row = {"photo_id": photo_id, "source": "account", "account_id": account_id,
           "event_id": event_id, "sha256": sha256, "created_at": datetime.now(UTC),
           "pdq": hashes.get("pdq"), "pdq_mirror": hashes.get("pdq_mirror"),
           "thumb": hashes.get("thumb")}
    if insert_ignore(conn, photos, row, ["photo_id"]) == 0:
        return False
    add_in(conn, radius, indexed_hashes(photo_id, hashes))
    return True


def find_matches(conn: Connection, radius: int, hashes: Mapping[str, str],
                 sha256: str | None = None, exclude_account: str | None = None,
                 rule: MatchRule | None = None) -> tuple[PhotoMatch, ...]:
    """Bank entries and other accounts' avatars that are near-duplicates of ``hashes``.

    ``rule`` decides what is near (default: pHash within ``radius``, no PDQ clause). An equal
    ``sha256`` matches exactly (distance 0) whatever the hashes say. Reads only.
    """
    rule = rule if rule is not None else MatchRule(radius=radius, pdq_radius=-1)
    hits = []
    for family, values in queries(hashes).items():
        hits.extend(search_in(conn, rule.search_radius, family, values))
    exact: list[str] = []
    if sha256:
        exact = list(conn.execute(sa.select(photos.c.photo_id).where(photos.c.sha256 == sha256))
                     .scalars())
    ids = {h.photo_id for h in hits} | set(exact)
    if not ids:
        return ()
    stored = {
        r.photo_id: StoredPhoto(r.photo_id, r.source, r.account_id, r.label,
                                tuple(v for v in (r.pdq, r.pdq_mirror) if v), r.thumb)
        for r in conn.execute(
            sa.select(photos.c.photo_id, photos.c.source, photos.c.account_id, photos.c.label,
                      photos.c.pdq, photos.c.pdq_mirror, photos.c.thumb)
            .where(photos.c.photo_id.in_(sorted(ids)))
        )
    }
    hits = accepted(hits, rule, hashes, stored)
    return best_matches(hits, exact, stored, exclude_account=exclude_account)


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

