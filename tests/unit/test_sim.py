"""The simulator: deterministic for a seed, schema-valid, sorted, with consistent ground truth."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.events import parse_event
from pipeline.sim.generate import Simulation, generate


def test_same_seed_same_stream_and_other_seed_differs() -> None:
    a = list(generate(600, 3, seed=5, avatars=False))
    b = list(generate(600, 3, seed=5, avatars=False))
    c = list(generate(600, 3, seed=6, avatars=False))
    assert a == b
    assert a != c


def test_events_are_schema_valid_sorted_and_match_truth() -> None:
    sim = Simulation(1500, 4, seed=3, avatars=False)
    events = list(sim.events())
    truth = {r.account_id: r for r in sim.truth()}
    assert len(truth) == 1500
    times = [parse_event(json.dumps(e).encode()).occurred_at for e in events]
    assert times == sorted(times)
    assert {e["account_id"] for e in events} == set(truth)
    created = [e for e in events if e["event_type"] == "account.created.v1"]
    assert len(created) == 1500
    campaign = [r for r in truth.values() if r.is_campaign]
    assert campaign and {r.style for r in campaign} == {"burst", "stealth", "stolen"}
    outlets = {c.outlet for c in sim.campaigns}
    late = [e for e in events if e["event_type"] == "profile.updated.v1"
            and truth[e["account_id"]].is_campaign]
    assert late and all(any(o in link for o in outlets) for e in late for link in e["links"])


def test_avatars_point_into_shared_faces(shared_dir: Path, tmp_path: Path) -> None:
    faces = shared_dir / "data" / "faces"
    sim = Simulation(400, 2, seed=2, faces_dir=faces, avatar_dir=tmp_path / "edited")
    truth = {r.account_id: r for r in sim.truth()}
    for e in sim.events():
        if e["event_type"] != "account.created.v1":
            continue
        kind = truth[e["account_id"]].avatar_kind
        url = e["avatar_url"]
        if kind == "none":
            assert url is None
        elif kind == "ai":
            assert url.startswith("file://") and "/fake/" in url
        elif kind == "real":
            assert "/real/" in url
        else:
            assert "/real/" in url or str(tmp_path / "edited") in url
        if url:
            assert Path(url.removeprefix("file://")).is_file()


def test_simulate_command_writes_events_and_truth(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    out, truth = tmp_path / "events.jsonl", tmp_path / "truth.csv"
    rc = main(["simulate", "--accounts", "300", "--days", "2", "--seed", "9", "--out", str(out),
               "--truth", str(truth), "--no-avatars"])
    assert rc == 0
    lines = out.read_text().splitlines()
    assert len(lines) >= 300
    parse_event(lines[0].encode())
    with open(truth, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 300
    assert {"account_id", "is_campaign", "campaign_id", "style"} <= set(rows[0])
