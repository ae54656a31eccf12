"""The embedded runner with the decide stage on SQLite and on real PostgreSQL.

Valid events get one decision each, invalid ones one dead-letter row with a reason, and a
second run over the same records changes nothing (idempotent on event_id / source offset).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from pipeline.decide.stage import DecideStage
from pipeline.settings import Settings
from pipeline.store.db import make_engine
from pipeline.store.migrate import upgrade
from pipeline.store.tables import accounts, decisions, dlq_records, events, review_items
from pipeline.stream.embedded import EmbeddedRunner
from pipeline.types import Decision

EXAMPLE = json.loads(
    (Path(__file__).resolve().parents[2] / "schemas/examples/account.created.v1.json").read_text()
)


def records() -> list[bytes]:
    out = []
    for i in range(20):
        doc = dict(EXAMPLE, event_id=f"evt-{i}", account_id=f"acct-{i}", username=f"user{i}")
        out.append(json.dumps(doc).encode())
    out.append(out[3])  # the same event delivered twice
    out += [
        b"not json",
        b'{"event_type": "account.deleted.v1"}',
        json.dumps(dict(EXAMPLE, event_id="evt-bad", country="Spain")).encode(),
    ]
    return out


def count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def run_twice(url: str) -> None:
    upgrade(url)
    engine = make_engine(url)
    runner = EmbeddedRunner(engine, [DecideStage(engine, Settings())], batch_size=8)
    seen: list[Decision] = []
    report = runner.run(records(), source="test", on_decision=seen.append)
    assert report.records == 24 and report.valid == 20 + 1
    assert report.dead_letters == {"bad_json": 1, "unknown_event_type": 1, "schema_violation": 1}
    assert len(seen) == 20 and len({d.decision_id for d in seen}) == 20
    assert report.replayed == 1
    assert count(engine, decisions) == 20
    assert count(engine, events) == 20
    assert count(engine, accounts) == 20
    assert count(engine, dlq_records) == 3
    with engine.connect() as conn:
        reasons = set(conn.execute(sa.select(dlq_records.c.reason_code)).scalars())
        raw = conn.execute(
            sa.select(dlq_records.c.raw).where(dlq_records.c.reason_code == "bad_json")
        ).scalar_one()
        published = conn.execute(
            sa.select(sa.func.count())
            .select_from(decisions)
            .where(decisions.c.published_at.is_not(None))
        ).scalar_one()
    assert reasons == {"bad_json", "unknown_event_type", "schema_violation"}
    with engine.connect() as conn:
        payloads = list(conn.execute(sa.select(events.c.payload)).scalars())
    assert all(p["signup_ip"].startswith("hmac:") for p in payloads)
    assert all(
        p["device_id"].startswith("hmac:") and p["email_domain"].startswith("hmac:")
        for p in payloads
    )
    assert EXAMPLE["signup_ip"] not in json.dumps(payloads)
    assert raw == b"not json"
    assert published == 20

    again: list[Decision] = []
    report2 = runner.run(records(), source="test", on_decision=again.append)
    assert again == []
    assert report2.replayed == 21
    assert count(engine, decisions) == 20
    assert count(engine, dlq_records) == 3
    assert count(engine, review_items) == 0
    engine.dispose()


def test_embedded_runner_on_sqlite(tmp_path: Path) -> None:
    run_twice(f"sqlite:///{tmp_path / 'x.db'}")


@pytest.mark.postgres
def test_embedded_runner_on_postgres(fresh_database_url: str) -> None:
    run_twice(fresh_database_url)


def test_flagged_accounts_open_one_review_item_per_subject(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    upgrade(url)
    engine = make_engine(url)
    from pipeline.decide.policy import parse_policy

    policy = parse_policy("""
version: test-1
rules:
  - {id: all, when: [], action: review, priority: 10, reason: "everyone is reviewed"}
""")
    runner = EmbeddedRunner(engine, [DecideStage(engine, Settings(), policy)], batch_size=8)
    recs = records()[:5]
    runner.run(recs, source="t")
    with engine.connect() as conn:
        rows = conn.execute(sa.select(review_items)).mappings().all()
    assert len(rows) == 5
    assert {r["open_key"] for r in rows} == {f"account:acct-{i}" for i in range(5)}
    assert all(r["queue"] == "accounts" and r["status"] == "pending" for r in rows)
    assert rows[0]["evidence"]["policy_version"] == "test-1"
    engine.dispose()


def test_duplicate_inside_one_batch_is_published_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    upgrade(url)
    engine = make_engine(url)
    runner = EmbeddedRunner(engine, [DecideStage(engine, Settings())], batch_size=64)
    recs = records()[:4]
    seen: list[Decision] = []
    report = runner.run([recs[0], recs[1], recs[1], recs[2], recs[1]], on_decision=seen.append)
    assert sorted(d.event_id for d in seen) == ["evt-0", "evt-1", "evt-2"]
    assert report.decisions.total() == 3
    assert report.replayed == 2
    engine.dispose()
