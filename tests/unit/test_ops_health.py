"""The health endpoints over real HTTP on localhost, with real (local) dependency checks.

Readiness follows the checks (503 with the failing dependency named), a hanging check counts as
down after its timeout, liveness follows the event-loop beat, and ``/metrics`` serves the
registry. The database checks use SQLite files: one that opens, one whose directory is missing.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from pipeline.health import HealthMonitor, HealthServer, database_check, metrics_asgi_app
from pipeline.store.db import make_engine


def gauge_value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


@pytest.fixture
def server_for() -> object:
    servers: list[HealthServer] = []

    def start(monitor: HealthMonitor, registry: CollectorRegistry = REGISTRY) -> str:
        server = HealthServer(monitor, 0, addr="127.0.0.1", registry=registry).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.port}"

    yield start
    for server in servers:
        server.stop()


def test_readiness_is_503_naming_the_dependency_that_is_down(server_for, tmp_path: Path) -> None:
    up = make_engine(f"sqlite:///{tmp_path / 'ok.db'}")
    down = make_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    monitor = HealthMonitor({"database": database_check(up), "kafka": database_check(down)},
                            timeout_s=2)
    base = server_for(monitor)

    before = httpx.get(f"{base}/readyz")
    assert before.status_code == 503
    assert before.json()["down"] == ["database", "kafka"]
    assert before.json()["dependencies"]["kafka"]["detail"] == "not checked yet"

    monitor.run_once()
    response = httpx.get(f"{base}/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["down"] == ["kafka"]
    assert body["dependencies"]["database"]["up"] is True
    assert "OperationalError" in body["dependencies"]["kafka"]["detail"]
    assert gauge_value("unmask_dependency_up", dependency="database") == 1
    assert gauge_value("unmask_dependency_up", dependency="kafka") == 0

    monitor.checks["kafka"] = database_check(up)
    monitor.run_once()
    ready = httpx.get(f"{base}/readyz")
    assert ready.status_code == 200 and ready.json() == {
        "status": "ready", "down": [], "dependencies": ready.json()["dependencies"]}
    assert gauge_value("unmask_dependency_up", dependency="kafka") == 1


def test_a_hanging_check_is_down_after_the_timeout_and_not_piled_up() -> None:
    release = threading.Event()
    calls = []

    def hangs() -> None:
        calls.append(1)
        release.wait(10)

    monitor = HealthMonitor({"broker": hangs}, timeout_s=0.2)
    started = time.monotonic()
    status = monitor.run_once()
    assert time.monotonic() - started < 2
    assert not status["broker"].up and "timed out" in status["broker"].detail
    second = monitor.run_once()["broker"]
    assert not second.up and "still running" in second.detail
    assert len(calls) == 1
    release.set()
    time.sleep(0.1)
    monitor.checks["broker"] = lambda: None
    assert monitor.run_once()["broker"].up
    monitor.stop()


def test_background_thread_runs_checks_and_tasks_on_its_interval(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    ticks: list[float] = []
    monitor = HealthMonitor({"database": database_check(engine)},
                            tasks={"count": lambda: ticks.append(time.monotonic())},
                            interval_s=0.05, timeout_s=1)
    monitor.start()
    deadline = time.monotonic() + 5
    while len(ticks) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    monitor.stop()
    assert len(ticks) >= 3
    assert monitor.readiness()[0] is True


def test_a_failing_task_does_not_change_readiness() -> None:
    def broken() -> None:
        raise RuntimeError("lag read failed")

    monitor = HealthMonitor({"db": lambda: None}, tasks={"lag": broken}, timeout_s=1)
    monitor.run_once()
    assert monitor.readiness()[0] is True


def test_liveness_follows_the_event_loop_beat(server_for) -> None:
    monitor = HealthMonitor({}, stall_after_s=0.2)
    base = server_for(monitor)
    assert httpx.get(f"{base}/healthz").status_code == 200
    monitor.beat()
    assert httpx.get(f"{base}/healthz").json()["status"] == "alive"
    time.sleep(0.3)
    stalled = httpx.get(f"{base}/healthz")
    assert stalled.status_code == 503 and stalled.json()["status"] == "stalled"
    monitor.beat()
    assert httpx.get(f"{base}/healthz").status_code == 200


def test_metrics_endpoint_serves_the_registry_and_unknown_paths_are_404(server_for) -> None:
    registry = CollectorRegistry()
    counter = Counter("unmask_test_things_total", "Things.", ["kind"], registry=registry)
    counter.labels("a").inc(3)
    base = server_for(HealthMonitor({}), registry)
    text = httpx.get(f"{base}/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {s.name: s.value for s in families["unmask_test_things"].samples}
    assert samples["unmask_test_things_total"] == 3
    assert httpx.get(f"{base}/nope").status_code == 404


def test_metrics_asgi_app_mounts_in_fastapi() -> None:
    from fastapi import FastAPI

    registry = CollectorRegistry()
    Counter("unmask_review_test_total", "Test.", registry=registry).inc()
    app = FastAPI()
    app.mount("/metrics", metrics_asgi_app(registry))

    async def scrape() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://review") as client:
            return await client.get("/metrics/")

    response = asyncio.run(scrape())
    assert response.status_code == 200
    assert "unmask_review_test_total 1.0" in response.text
