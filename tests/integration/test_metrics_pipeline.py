"""End to end: real stages process a stream; /metrics, scraped over HTTP, moves as it should.

The embedded runner drives the stages from ``build_stages`` (a tiny real ONNX detector stands in
for the trained model) on SQLite; a health server serves the process registry on a free port.
Counters and histograms are compared before and after a run: consumed and failed records per
topic and code, dead letters per reason, one decision and one event-to-decision observation per
new event, stage timings, avatar and cluster score observations. A replay of the same records
is consumed again but decides nothing new.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from pipeline.compose import build_stages
from pipeline.health import HealthMonitor, HealthServer, database_check
from pipeline.settings import AvatarSettings, Settings
from pipeline.store.db import make_engine
from pipeline.store.migrate import upgrade
from pipeline.store.tables import avatar_results
from pipeline.stream.embedded import EmbeddedRunner
from tests.hostile.tiny_model import VERSION as TINY_MODEL_VERSION
from tests.hostile.tiny_model import write_tiny_detector

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = json.loads((REPO / "schemas/examples/account.created.v1.json").read_text())
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(base: str) -> Samples:
    response = httpx.get(f"{base}/metrics", timeout=10)
    response.raise_for_status()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def make_records(shared_dir: Path, n: int) -> list[bytes]:
    faces = sorted((shared_dir / "data/faces/real").glob("lfw_*"))[:n]
    assert len(faces) == n
    records = []
    for i in range(n):
        network = i < 6
        doc = dict(EXAMPLE, event_id=f"m-{i}", account_id=f"acct-m{i}", username=f"member{i}",
                   occurred_at=f"2026-11-29T10:{i:02d}:00Z",
                   signup_ip="198.51.100.7" if network else f"203.0.{i}.9",
                   device_id="dev-shared" if network else f"dev-{i}",
                   links=["https://outlet.example.net/a"] if network else [],
                   avatar_url=faces[i].as_uri() if i % 3 else None)
        records.append(json.dumps(doc).encode())
    records.append(records[4])
    bad = dict(EXAMPLE, event_id="m-bad", country="Atlantis")
    records += [b"{not json", json.dumps(bad).encode()]
    return records


@pytest.fixture
def pipeline(tmp_path: Path, shared_dir: Path) -> Any:
    settings = Settings(avatars=AvatarSettings(
        file_root=shared_dir / "data" / "faces",
        model_path=write_tiny_detector(tmp_path / "model"),
    ))
    url = f"sqlite:///{tmp_path / 'unmask.db'}"
    upgrade(url)
    engine = make_engine(url)
    monitor = HealthMonitor({"database": database_check(engine)})
    server = HealthServer(monitor, 0, addr="127.0.0.1").start()
    monitor.run_once()
    runner = EmbeddedRunner(engine, build_stages(settings, engine), batch_size=5)
    yield runner, engine, f"http://127.0.0.1:{server.port}"
    server.stop()
    engine.dispose()


def test_a_run_moves_the_counters_and_histograms_it_should(pipeline: Any,
                                                           shared_dir: Path) -> None:
    runner, engine, base = pipeline
    n = 18
    records = make_records(shared_dir, n)
    source = "file:metrics-e2e"

    before = scrape(base)
    report = runner.run(records, source=source)
    after = scrape(base)

    assert sum(report.decisions.values()) == n
    assert delta(before, after, "unmask_events_consumed_total", topic=source) == len(records)
    assert delta(before, after, "unmask_events_failed_total", topic=source, code="bad_json") == 1
    assert delta(before, after, "unmask_events_failed_total", topic=source,
                 code="schema_violation") == 1
    assert delta(before, after, "unmask_dlq_records_total", code="bad_json") == 1
    assert delta(before, after, "unmask_dlq_records_total", code="schema_violation") == 1

    assert delta(before, after, "unmask_decisions_made_total") == n
    for action, count in report.decisions.items():
        assert delta(before, after, "unmask_decisions_made_total", action=action) == count
    assert delta(before, after, "unmask_event_to_decision_seconds_count") == n
    assert delta(before, after, "unmask_event_to_decision_seconds_sum") > 0
    assert delta(before, after, "unmask_event_to_decision_seconds_bucket", le="+Inf") == n

    batches = 4  # 21 records in chunks of 5; the fifth chunk holds only refused records
    for stage in ("dedupe", "decide"):
        assert delta(before, after, "unmask_stage_duration_seconds_count", stage=stage) == batches
    assert delta(before, after, "unmask_avatar_step_duration_seconds_count") > 0

    with engine.connect() as conn:
        scored = conn.execute(sa.select(sa.func.count()).select_from(avatar_results)
                              .where(avatar_results.c.status == "scored")).scalar_one()
    assert 0 < scored <= sum(1 for i in range(n) if i % 3)
    assert delta(before, after, "unmask_avatar_score_ratio_count") == scored
    assert delta(before, after, "unmask_avatar_score_ratio_bucket", le="1.0") == scored
    assert delta(before, after, "unmask_cluster_score_ratio_count") >= n

    assert value(after, "unmask_model_info", version=TINY_MODEL_VERSION) == 1
    assert any(name == "unmask_policy_info" for name, _ in after)
    assert value(after, "unmask_dependency_up", dependency="database") == 1
    assert httpx.get(f"{base}/readyz").status_code == 200

    replay = runner.run(records, source=source)
    again = scrape(base)
    assert sum(replay.decisions.values()) == 0
    assert delta(after, again, "unmask_events_consumed_total", topic=source) == len(records)
    assert delta(after, again, "unmask_decisions_made_total") == 0
    assert delta(after, again, "unmask_event_to_decision_seconds_count") == 0
    assert Counter(report.dead_letters) == {"bad_json": 1, "schema_violation": 1}
