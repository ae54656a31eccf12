"""Reviewer accounts: Argon2id password hashes, creation, sign-in, CSRF tokens.

Passwords are hashed with argon2-cffi (Argon2id, its recommended parameters) and re-hashed on
sign-in when those parameters change. A sign-in for an unknown user still verifies against a
dummy hash, so response time does not reveal which user names exist.
"""

from __future__ import annotations

import hmac
import re
import secrets
import threading
import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.engine import Connection, Engine

from pipeline.review import audit
from pipeline.review.model import Reviewer, check_role
from pipeline.store.review_tables import reviewers

_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
MIN_PASSWORD = 10
_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def check_time_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc
    return name


def create_reviewer(engine: Engine, username: str, password: str, role: str,
                    time_zone: str = "UTC", created_by: str = "cli") -> Reviewer:
    """Create an account (audited); raises ValueError for a bad name, role, zone or short password
    and when the user name is taken."""
    if not _USERNAME.match(username):
        raise ValueError("user name: 2-64 characters of a-z 0-9 . _ -, starting alphanumeric")
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"password must have at least {MIN_PASSWORD} characters")
    check_role(role)
    check_time_zone(time_zone)
    with engine.begin() as conn:
        if conn.execute(sa.select(reviewers.c.id).where(reviewers.c.username == username)).first():
            raise ValueError(f"reviewer {username!r} exists")
        rid = conn.execute(reviewers.insert().values(
            username=username, password_hash=hash_password(password), role=role,
            time_zone=time_zone, active=True, created_at=datetime.now(UTC), created_by=created_by,
        ).returning(reviewers.c.id)).scalar_one()
        audit.record(conn, created_by, "reviewer_add", subject=f"reviewer:{username}",
                     detail={"role": role, "time_zone": time_zone})
    return Reviewer(int(rid), username, role, time_zone)


def authenticate(engine: Engine, username: str, password: str) -> Reviewer | None:
    """The active reviewer with this name and password, else None (timing kept similar)."""
    with engine.begin() as conn:
        row = conn.execute(sa.select(reviewers).where(reviewers.c.username == username)
                           ).mappings().first()
        if row is None or not row["active"]:
            verify_password(_DUMMY_HASH, password)
            return None
        if not verify_password(row["password_hash"], password):
            return None
        if _hasher.check_needs_rehash(row["password_hash"]):
            conn.execute(reviewers.update().where(reviewers.c.id == row["id"])
                         .values(password_hash=hash_password(password)))
        return Reviewer(row["id"], row["username"], row["role"], row["time_zone"])


def load_reviewer(conn: Connection, reviewer_id: int) -> Reviewer | None:
    """The active reviewer with this id (role and zone as stored now), else None."""
    row = conn.execute(sa.select(reviewers).where(reviewers.c.id == reviewer_id)).mappings().first()
    if row is None or not row["active"]:
        return None
    return Reviewer(row["id"], row["username"], row["role"], row["time_zone"])


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_matches(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison; a missing token on either side never matches."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


class LoginThrottle:
    """Refuses sign-in for a user name after ``limit`` failures within ``window_s`` seconds.

    Per process and in memory (a restart forgets it); failures are audited regardless.
    """

    def __init__(self, limit: int = 5, window_s: float = 900.0, max_names: int = 10_000) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_names = max_names
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def blocked(self, username: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            recent = [t for t in self._failures.get(username, ()) if now - t < self.window_s]
            if recent:
                self._failures[username] = recent
            else:
                self._failures.pop(username, None)
            return len(recent) >= self.limit

    def record(self, username: str, ok: bool, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            if ok:
                self._failures.pop(username, None)
                return
            if len(self._failures) >= self.max_names and username not in self._failures:
                self._failures.clear()
            self._failures.setdefault(username, []).append(now)
