"""The decide stage's batched ``accounts`` upsert equals one upsert per event in batch order.

Events of one account inside one batch are folded into one row; this checks the fold against
the same events decided one per batch (the old per-event path), on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from pipeline.decide.stage import DecideStage
from pipeline.settings import Settings
from pipeline.store.db import make_engine
from pipeline.store.migrate import upgrade
from pipeline.store.tables import accounts, decisions, events
from pipeline.types import AccountEvent, AvatarResult, ClusterSignal, Envelope

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _events() -> list[Envelope]:
    def at(i: int) -> datetime:
        return T0 + timedelta(seconds=i)

    created = "account.created.v1"
    updated = "profile.updated.v1"
    scored = AvatarResult(status="scored", score=0.9, sha256="a" * 64)
    scored_no_sha = AvatarResult(status="scored", score=0.2)
    return [
        Envelope(
            AccountEvent(created, "e1", at(1), "acct-a", "Ann 1", "ann1", country="DE"),
            avatar=scored,
        ),
        Envelope(AccountEvent(updated, "e2", at(2), "acct-a", display_name="Ann 2")),
        Envelope(
            AccountEvent(updated, "e3", at(3), "acct-a", avatar_url="file:///x.png"),
            avatar=scored_no_sha,
            cluster=ClusterSignal("cl-1", 0.7, 3),
        ),
        Envelope(AccountEvent(updated, "e4", at(4), "acct-b", username="bee")),
        Envelope(AccountEvent(created, "e5", at(5), "acct-b", "Bee", "bee2", country="FR")),
        Envelope(AccountEvent(created, "e6", at(6), "acct-c", "Cee", "cee")),
        Envelope(AccountEvent(updated, "e7", at(7), "acct-c", country="NL")),
    ]


def _accounts_after(url: str, batches: Callable[[list[Envelope]], list[list[Envelope]]]) -> dict:
    upgrade(url)
    engine = make_engine(url)
    stage = DecideStage(engine, Settings())
    for batch in batches(_events()):
        stage.process(batch)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(accounts).order_by(accounts.c.account_id)).mappings().all()
        n_events = conn.execute(sa.select(sa.func.count()).select_from(events)).scalar_one()
        n_decisions = conn.execute(sa.select(sa.func.count()).select_from(decisions)).scalar_one()
    engine.dispose()
    assert n_events == n_decisions == len(_events())
    return {
        r["account_id"]: {k: _naive(v) for k, v in r.items() if k != "updated_at"} for r in rows
    }


def _naive(value: object) -> object:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def _check(url_one: str, url_batch: str) -> None:
    one = _accounts_after(url_one, lambda evs: [[e] for e in evs])
    batched = _accounts_after(url_batch, lambda evs: [evs[:2], evs[2:]])
    assert batched == one
    a = batched["acct-a"]
    assert a["display_name"] == "Ann 2" and a["username"] == "ann1" and a["country"] == "DE"
    assert a["avatar_sha256"] is None and a["avatar_score"] == pytest.approx(0.2)
    assert a["cluster_id"] == "cl-1" and a["created_at"] is not None
    assert batched["acct-b"]["created_at"] is None
    assert batched["acct-b"]["username"] == "bee2"
    assert batched["acct-c"]["country"] == "NL"


def test_batched_account_rows_equal_per_event_upserts_sqlite(tmp_path: Path) -> None:
    _check(f"sqlite:///{tmp_path / 'one.db'}", f"sqlite:///{tmp_path / 'batch.db'}")


@pytest.mark.postgres
def test_batched_account_rows_equal_per_event_upserts_postgres(
    fresh_database_url: str, tmp_path: Path
) -> None:
    _check(f"sqlite:///{tmp_path / 'one.db'}", fresh_database_url)
