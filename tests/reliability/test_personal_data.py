"""Personal data at rest, and the retention job.

After a real worker run (avatars included) no text or JSON column of any table holds a raw
signup address, device id or email domain from the input: they are stored as keyed hashes.
(``dlq_records.raw`` is bytea and keeps refused records verbatim by design: documented in
docs/reliability.md.) The retention job deletes raw events, marks, old window buckets and dead
letters past their age and nothing younger.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from pipeline.retention import run_retention
from pipeline.settings import Settings
from pipeline.store.db import make_engine
from pipeline.store.migrate import upgrade

from .conftest import REPO_ROOT, assert_exactly_once, simulated_events, wait_for

TEXT_TYPES = ("text", "character varying", "json", "jsonb", "character")


@pytest.mark.slow
def test_no_raw_personal_data_in_any_text_column_after_a_run(
        shared_services: Any, pipeline_factory: Any, shared_dir: Path, tmp_path: Path) -> None:
    avatar_dir = tmp_path / "edited"
    docs = simulated_events(240, seed=61, prefix="pii-", avatars=True,
                            faces_dir=shared_dir / "data" / "faces", avatar_dir=avatar_dir)
    assert sum(1 for d in docs if d.get("avatar_url")) > 100
    pipe = pipeline_factory(shared_services,
                            UNMASK_AVATARS__EXTRA_FILE_ROOTS=json.dumps([str(avatar_dir)]))
    worker = pipe.start_worker()
    pipe.produce_events(docs)
    wait_for(lambda: pipe.decided() >= len(docs), 240, what="decisions", alive=worker.alive)
    worker.stop()
    counts = assert_exactly_once(pipe, docs, with_avatars=True)
    assert pipe.count("avatar_results", "status = 'scored'") > 100

    secrets = {d[k] for d in docs for k in ("signup_ip", "device_id", "email_domain")
               if d.get(k)}
    with pipe.engine.connect() as conn:
        columns = conn.execute(sa.text(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND data_type = ANY(:types)"),
            {"types": list(TEXT_TYPES)}).all()
        assert len(columns) > 40
        leaks = []
        usernames = {d["username"] for d in docs if d.get("username")}
        seen_usernames = 0
        for table, column in columns:
            values = conn.execute(sa.text(
                f'SELECT "{column}"::text FROM "{table}" WHERE "{column}" IS NOT NULL')).scalars()
            blob = "\n".join(values)
            leaks += [(table, column, s) for s in secrets if s in blob]
            seen_usernames += sum(1 for u in usernames if u in blob)
    assert seen_usernames >= len(usernames), "the scan does not see stored text"
    assert leaks == [], leaks[:10]
    print(f"scanned {len(columns)} text/json columns for {len(secrets)} raw values; {counts}")


def _seed(engine: sa.Engine, now: datetime) -> None:
    old, young = now - timedelta(days=40), now - timedelta(days=5)
    old_s, young_s = int(old.timestamp()), int(young.timestamp())
    with engine.begin() as conn:
        for tag, at, at_s in (("old", old, old_s), ("young", young, young_s)):
            conn.execute(sa.text(
                "INSERT INTO events (event_id, account_id, event_type, occurred_at, received_at,"
                " payload) VALUES (:e, 'a', 'account.created.v1', :t, :t, :p)"),
                {"e": f"e-{tag}", "t": at, "p": json.dumps({"event_id": f"e-{tag}"})})
            for stage in ("signals", "decide"):
                conn.execute(sa.text("INSERT INTO processed_events VALUES (:e, :s, :t)"),
                             {"e": f"e-{tag}", "s": stage, "t": at})
            conn.execute(sa.text(
                "INSERT INTO dlq_records (reason_code, detail, raw, source_topic, source_partition,"
                " source_offset, failed_at) VALUES ('bad_json', 'x', :raw, 't', 0, :o, :t)"),
                {"raw": b"{raw", "o": at_s, "t": at})
            for width in (600, 86400):
                conn.execute(sa.text(
                    "INSERT INTO signal_counts VALUES ('device', :v, :w, :b, 1)"),
                    {"v": tag, "w": width, "b": at_s - at_s % width})
            conn.execute(sa.text("INSERT INTO signal_results VALUES (:e, 'a', '{}', :s)"),
                         {"e": f"e-{tag}", "s": at_s})


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_retention_deletes_what_is_past_its_age_and_nothing_younger(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = (f"sqlite:///{tmp_path / 'r.db'}" if backend == "sqlite"
           else request.getfixturevalue("fresh_database_url"))
    upgrade(url)
    engine = make_engine(url)
    now = datetime.now(UTC)
    _seed(engine, now)
    settings = Settings()
    assert settings.signals.retention_days == 30
    deleted = run_retention(engine, settings, now=now)
    assert deleted["events"] == 1 and deleted["processed_events"] == 2
    assert deleted["dlq_records"] == 1 and deleted["signal_counts"] == 2
    assert deleted["signal_results"] == 1
    with engine.connect() as conn:
        def left(sql: str) -> list[Any]:
            return sorted(conn.execute(sa.text(sql)).scalars())

        assert left("SELECT event_id FROM events") == ["e-young"]
        assert left("SELECT event_id FROM processed_events") == ["e-young", "e-young"]
        assert len(left("SELECT id FROM dlq_records")) == 1
        assert left("SELECT value FROM signal_counts") == ["young", "young"]
        assert left("SELECT event_id FROM signal_results") == ["e-young"]
    assert set(run_retention(engine, settings, now=now).values()) == {0}
    assert run_retention(engine, settings, now=now, older_than_days=1)["events"] == 1
    engine.dispose()


def test_retention_command_runs_against_the_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    upgrade(url)
    engine = make_engine(url)
    _seed(engine, datetime.now(UTC))
    engine.dispose()
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "retention", "run", "--db", url,
         "--older-than-days", "10"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        check=True)
    deleted = json.loads(out.stdout.strip().splitlines()[-1])["deleted"]
    assert deleted["events"] == 1 and deleted["dlq_records"] == 1
