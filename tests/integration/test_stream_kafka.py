"""The whole pipeline under Faust on the real broker and PostgreSQL.

Valid, invalid and duplicated events go in through ``unmask produce``; out come exactly one
schema-valid decision per valid event (on the topic and in PostgreSQL), scored avatars, and one
dead letter per refused record with its reason code and raw bytes.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from pipeline.events import validate
from pipeline.store.db import make_engine
from pipeline.store.tables import avatar_results, decisions, dlq_records
from tests.integration.conftest import REPO_ROOT, consume

EXAMPLE = json.loads((REPO_ROOT / "schemas/examples/account.created.v1.json").read_text())


def make_events(shared_dir: Path, n: int) -> list[dict[str, Any]]:
    reals = sorted((shared_dir / "data/faces/real").glob("lfw_*"))[:n]
    events = []
    for i in range(n):
        doc = dict(
            EXAMPLE,
            event_id=f"kt-{i}",
            account_id=f"acct-k{i}",
            username=f"user{i}",
            occurred_at=f"2026-11-29T10:{i // 60:02d}:{i % 60:02d}Z",
            signup_ip=f"198.51.100.{i % 250}",
        )
        doc["avatar_url"] = reals[i].as_uri() if i % 2 == 0 else None
        events.append(doc)
    return events


def test_events_flow_from_kafka_to_postgres_and_decision_topic(
    pipeline_env: dict[str, str], worker_factory: Any, shared_dir: Path, tmp_path: Path
) -> None:
    n = 30
    events = make_events(shared_dir, n)
    lines = [json.dumps(e) for e in events]
    lines.append(lines[5])  # duplicate delivery
    lines.append("{this is not json")  # bad_json
    lines.append(json.dumps(dict(EXAMPLE, event_id="kt-bad", country="Atlantis")))  # schema
    lines.append(json.dumps({"event_type": "account.deleted.v1", "event_id": "x"}))  # unknown
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")

    worker = worker_factory(pipeline_env)
    produced = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "produce", str(path)],
        env=pipeline_env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(produced.stdout.strip().splitlines()[-1])["produced"] == n + 4

    env = pipeline_env
    got = consume(
        env["UNMASK_KAFKA__BOOTSTRAP"], env["UNMASK_KAFKA__TOPIC_DECISIONS"], n, alive=worker.alive
    )
    assert worker.alive(), worker.log()
    assert len(got) == n, worker.log()
    assert {d["event_id"] for d in got} == {f"kt-{i}" for i in range(n)}
    for decision in got:
        validate("enforcement.decision.v1", decision)
        assert decision["policy_version"]

    dead = consume(env["UNMASK_KAFKA__BOOTSTRAP"], env["UNMASK_KAFKA__TOPIC_DLQ"], 3)
    assert sorted(d["reason_code"] for d in dead) == [
        "bad_json",
        "schema_violation",
        "unknown_event_type",
    ]
    for record in dead:
        validate("dead_letter.v1", record)
    assert b"{this is not json" in [base64.b64decode(d["raw_b64"]) for d in dead]

    engine = make_engine(env["UNMASK_DATABASE__URL"])
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(decisions)).scalar_one() == n
        unpublished = conn.execute(
            sa.select(sa.func.count())
            .select_from(decisions)
            .where(decisions.c.published_at.is_(None))
        ).scalar_one()
        assert unpublished == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(dlq_records)).scalar_one() == 3
        rows = conn.execute(sa.select(avatar_results.c.status, avatar_results.c.score)).all()
    engine.dispose()
    statuses = sorted(r.status for r in rows)
    assert statuses.count("scored") == n // 2, statuses
    assert statuses.count("absent") == n - n // 2
    assert all(0.0 <= r.score <= 1.0 for r in rows if r.status == "scored")


def edited_copy(src: Path, dest: Path, mirror: bool = False) -> Path:
    """The photo resized to 80% and re-encoded as JPEG q70 (and mirrored when asked)."""
    from PIL import Image, ImageOps

    with Image.open(src) as im:
        out = im.convert("RGB").resize((int(im.width * 0.8), int(im.height * 0.8)))
        if mirror:
            out = ImageOps.mirror(out)
        out.save(dest, "JPEG", quality=70)
    return dest


def test_reposted_and_banked_photos_are_caught_through_kafka(
    pipeline_env: dict[str, str], worker_factory: Any, shared_dir: Path, tmp_path: Path
) -> None:
    from pipeline.dedupe.store import add_bank_photo
    from pipeline.settings import Settings

    reals = sorted((shared_dir / "data/faces/real").glob("lfw_*"))
    original, banked = reals[100], reals[101]
    engine = make_engine(pipeline_env["UNMASK_DATABASE__URL"])
    add_bank_photo(
        engine, Settings().dedupe.radius, banked.read_bytes(), "stolen: test model", added_by="test"
    )
    reposted = edited_copy(original, tmp_path / "reposted.jpg")
    mirrored = edited_copy(banked, tmp_path / "mirrored.jpg", mirror=True)
    env = dict(pipeline_env, UNMASK_AVATARS__EXTRA_FILE_ROOTS=json.dumps([str(tmp_path)]))
    posts = [("acct-orig", original), ("acct-repost", reposted), ("acct-banked", mirrored)]
    lines = []
    for i, (account, path) in enumerate(posts):
        doc = dict(
            EXAMPLE,
            event_id=f"dup-{i}",
            account_id=account,
            username=f"u{i}",
            occurred_at=f"2026-11-29T11:00:{i:02d}Z",
            signup_ip=f"192.0.2.{i + 1}",
            device_id=f"dev-{i}",
            avatar_url=path.resolve().as_uri(),
        )
        lines.append(json.dumps(doc))
    events_path = tmp_path / "dups.jsonl"
    # the original is decided before the repost is produced, so the repost can only match it
    events_path.write_text(lines[0] + "\n")
    worker = worker_factory(env)
    cli = [sys.executable, "-m", "pipeline.cli", "produce"]
    subprocess.run([*cli, str(events_path)], env=env, cwd=REPO_ROOT, check=True, timeout=60)
    first = consume(
        env["UNMASK_KAFKA__BOOTSTRAP"], env["UNMASK_KAFKA__TOPIC_DECISIONS"], 1, alive=worker.alive
    )
    assert len(first) == 1, worker.log()
    events_path.write_text("\n".join(lines[1:]) + "\n")
    subprocess.run([*cli, str(events_path)], env=env, cwd=REPO_ROOT, check=True, timeout=60)
    got = consume(
        env["UNMASK_KAFKA__BOOTSTRAP"], env["UNMASK_KAFKA__TOPIC_DECISIONS"], 3, alive=worker.alive
    )
    by_account = {d["account_id"]: d for d in got}
    assert set(by_account) == {"acct-orig", "acct-repost", "acct-banked"}, worker.log()

    assert by_account["acct-orig"]["evidence"]["matches"] == []
    repost = by_account["acct-repost"]["evidence"]["matches"]
    assert [m["account_id"] for m in repost if m["source"] == "account"] == ["acct-orig"]
    banked_matches = by_account["acct-banked"]["evidence"]["matches"]
    bank = [m for m in banked_matches if m["source"] == "bank"]
    assert bank and bank[0]["label"] == "stolen: test model"
    assert bank[0]["transform"] == "mirror"
    assert by_account["acct-banked"]["action"] in ("challenge", "disable")
    assert any("stolen" in r for r in by_account["acct-banked"]["reasons"])
    engine.dispose()
