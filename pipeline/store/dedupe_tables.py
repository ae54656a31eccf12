"""Tables of the dedupe stage: stored photos (bank entries and account avatars) and their hashes.

``photo_hashes`` is the multi-index hashing table: each 64-bit hash is split into three bands
(``b0``..``b2``, see pipeline/dedupe/bands.py), each band indexed with its family, so a search is
a few exact index probes followed by a popcount. Works on PostgreSQL and SQLite.
"""

from __future__ import annotations

import sqlalchemy as sa

from pipeline.store.tables import UTCDateTime, metadata

photos = sa.Table(
    "photos",
    metadata,
    sa.Column("photo_id", sa.String(200), primary_key=True),
    sa.Column("source", sa.String(8), nullable=False),
    sa.Column("account_id", sa.String(128), index=True),
    sa.Column("event_id", sa.String(128), unique=True),
    sa.Column("label", sa.String(200)),
    sa.Column("origin", sa.String(500)),
    sa.Column("added_by", sa.String(128)),
    sa.Column("filename", sa.String(500)),
    sa.Column("sha256", sa.String(64), index=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("pdq", sa.String(64)),
    sa.Column("pdq_mirror", sa.String(64)),
    sa.Column("thumb", sa.Text),
    sa.Column("keypoints", sa.LargeBinary),
)
"""``pdq``/``pdq_mirror``: the photo's 256-bit PDQ hashes (hex), read to verify index candidates
that are near but not within the plain pHash radius (pipeline/dedupe/matching.py,
``MatchRule``); NULL for photos stored before they were kept. ``thumb``: the photo's 128x128
grayscale JPEG, base64 (about 5 kB; pipeline/dedupe/verify.py), read to verify loose
candidates by keypoints and correlation; NULL for photos stored before it was kept (they match
only through the hash clauses). ``keypoints``: the thumbnail's ORB keypoints and descriptors
(``verify.pack_keypoints``, about 8 kB), so a verification does not recompute the stored side;
NULL for photos stored before they were kept (computed from the thumbnail when needed)."""

photo_hashes = sa.Table(
    "photo_hashes",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("photo_id", sa.String(200), nullable=False),
    sa.Column("family", sa.String(16), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("value", sa.BigInteger, nullable=False),
    sa.Column("b0", sa.Integer, nullable=False),
    sa.Column("b1", sa.Integer, nullable=False),
    sa.Column("b2", sa.Integer, nullable=False),
    sa.UniqueConstraint("photo_id", "kind", name="uq_photo_hashes_photo_kind"),
    sa.Index("ix_photo_hashes_b0", "family", "b0"),
    sa.Index("ix_photo_hashes_b1", "family", "b1"),
    sa.Index("ix_photo_hashes_b2", "family", "b2"),
)
