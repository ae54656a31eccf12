"""The real worker process on Kafka and PostgreSQL exposes /metrics, /healthz and /readyz.

After a stream has been processed the scraped counters match what went through, every input
partition this (only) worker owns reports its lag and the lag returns to zero, and the worker's
log lines are JSON. Pointed at a broker that does not answer, the worker stays live but not
ready, and says which dependency is down.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from reliability.conftest import free_port

from tests.hostile.tiny_model import write_tiny_detector
from tests.integration.conftest import REPO_ROOT, consume
from tests.integration.test_metrics_pipeline import Samples, scrape, value

EXAMPLE = json.loads((REPO_ROOT / "schemas/examples/account.created.v1.json").read_text())


def wait_for(what: str, probe: Callable[[], Any], timeout: float, log: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
            if last:
                return last
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})\n{log()}")


def stop_and_wait_for_disconnect(worker: Any, database_url: str) -> None:
    """Stop the worker and wait until its database sessions are gone (the fixture drops the
    database afterwards, and a backend still exiting makes that fail)."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    worker.stop()
    engine = sa.create_engine(database_url, poolclass=NullPool)
    query = sa.text("SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    deadline = time.monotonic() + 15
    with engine.connect() as conn:
        while conn.execute(query).scalar_one() and time.monotonic() < deadline:
            time.sleep(0.2)
    engine.dispose()


def worker_env(pipeline_env: dict[str, str], tmp_path: Path) -> tuple[dict[str, str], str]:
    port = free_port()
    env = dict(pipeline_env, UNMASK_METRICS_PORT=str(port),
               UNMASK_AVATARS__MODEL_PATH=str(write_tiny_detector(tmp_path / "model")))
    return env, f"http://127.0.0.1:{port}"


def test_worker_metrics_follow_the_stream_and_lag_drains(
        pipeline_env: dict[str, str], worker_factory: Any, shared_dir: Path,
        tmp_path: Path) -> None:
    env, base = worker_env(pipeline_env, tmp_path)
    worker = worker_factory(env)
    wait_for("readiness", lambda: httpx.get(f"{base}/readyz").status_code == 200, 90, worker.log)
    assert httpx.get(f"{base}/healthz").status_code == 200

    n = 12
    faces = sorted((shared_dir / "data/faces/real").glob("lfw_*"))[:n]
    lines = [json.dumps(dict(EXAMPLE, event_id=f"w-{i}", account_id=f"acct-w{i}",
                             avatar_url=faces[i].as_uri())) for i in range(n)]
    lines.append("{broken")
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    subprocess.run([sys.executable, "-m", "pipeline.cli", "produce", str(path)], env=env,
                   cwd=REPO_ROOT, check=True, capture_output=True, timeout=60)
    decisions = consume(env["UNMASK_KAFKA__BOOTSTRAP"], env["UNMASK_KAFKA__TOPIC_DECISIONS"], n,
                        alive=worker.alive)
    assert len(decisions) == n, worker.log()

    topic = env["UNMASK_KAFKA__TOPIC_EVENTS"]
    sources = [env[f"UNMASK_KAFKA__TOPIC_{name}"] for name in
               ("EVENTS", "VALIDATED", "SCORED", "MATCHED", "SIGNALS")]

    def drained() -> Samples | None:
        samples = scrape(base)
        lag = {dict(labels)["topic"] + "/" + dict(labels)["partition"]: v
               for (name, labels), v in samples.items() if name == "unmask_consumer_lag_messages"}
        expected = {f"{t}/{p}" for t in sources for p in range(6)}
        if set(lag) == expected and not any(lag.values()):
            return samples
        return None

    samples: Samples = wait_for("lag on every owned partition to drain to 0", drained, 60,
                                worker.log)
    assert value(samples, "unmask_events_consumed_total", topic=topic) == n + 1
    assert value(samples, "unmask_events_failed_total", topic=topic, code="bad_json") == 1
    assert value(samples, "unmask_dlq_records_total", code="bad_json") == 1
    assert value(samples, "unmask_events_produced_total",
                 topic=env["UNMASK_KAFKA__TOPIC_DECISIONS"]) == n
    assert value(samples, "unmask_decisions_made_total") == n
    assert value(samples, "unmask_event_to_decision_seconds_count") == n
    assert value(samples, "unmask_stage_duration_seconds_count", stage="decide") >= 1
    assert value(samples, "unmask_avatar_step_duration_seconds_count", step="fetch") >= 1
    assert value(samples, "unmask_dependency_up", dependency="database") == 1
    assert value(samples, "unmask_dependency_up", dependency="kafka") == 1
    assert any(name == "unmask_model_info" for name, _ in samples)

    stop_and_wait_for_disconnect(worker, env["UNMASK_DATABASE__URL"])
    structured = [json.loads(line) for line in worker.log_path.read_text().splitlines()
                  if line.startswith("{")]
    assert any(r.get("logger") == "pipeline.health" and r.get("level") == "INFO"
               for r in structured), worker.log()


def test_worker_is_live_but_not_ready_while_the_broker_is_unreachable(
        pipeline_env: dict[str, str], worker_factory: Any, tmp_path: Path) -> None:
    env, base = worker_env(pipeline_env, tmp_path)
    env["UNMASK_KAFKA__BOOTSTRAP"] = f"127.0.0.1:{free_port()}"
    worker = worker_factory(env)

    def kafka_checked() -> dict[str, Any] | None:
        response = httpx.get(f"{base}/readyz")
        body = response.json()
        if body["dependencies"]["kafka"]["detail"] == "not checked yet":
            return None
        return {**body, "http": response.status_code}

    body = wait_for("the first kafka check", kafka_checked, 90, worker.log)
    assert body["http"] == 503 and body["down"] == ["kafka"], body
    assert body["dependencies"]["database"]["up"] is True
    assert httpx.get(f"{base}/healthz").status_code == 200
    assert value(scrape(base), "unmask_dependency_up", dependency="kafka") == 0
    stop_and_wait_for_disconnect(worker, env["UNMASK_DATABASE__URL"])
