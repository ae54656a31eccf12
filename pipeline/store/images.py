"""Content-addressed store of image bytes (avatars fetched by the pipeline, bank photos).

The review page shows images only from here, never from the account's own URL: a URL can change
after the pipeline looked at it, can track the reviewer, and can serve something else to them.
Files live at ``<root>/<sha[:2]>/<sha>``; writes are atomic (temporary file, then rename), so a
reader never sees half an image and two writers of the same bytes do not conflict.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def is_sha256(value: str) -> bool:
    """True for a lower-case hex SHA-256 digest (the only keys the store accepts)."""
    return bool(_SHA256.match(value))


class ImageStore:
    """Image bytes keyed by their SHA-256. Blocking file I/O; safe for concurrent writers."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_for(self, sha256: str) -> Path:
        """Where the bytes of ``sha256`` live; raises ValueError for a malformed key."""
        if not is_sha256(sha256):
            raise ValueError("not a sha256 hex digest")
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        """Store ``data`` (idempotent) and return its sha256."""
        sha = hashlib.sha256(data).hexdigest()
        path = self.path_for(sha)
        if path.exists():
            return sha
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return sha

    def get(self, sha256: str) -> bytes | None:
        """The stored bytes, or None when absent (or the key is malformed)."""
        if not is_sha256(sha256):
            return None
        try:
            return self.path_for(sha256).read_bytes()
        except FileNotFoundError:
            return None

    def has(self, sha256: str) -> bool:
        return is_sha256(sha256) and self.path_for(sha256).is_file()
