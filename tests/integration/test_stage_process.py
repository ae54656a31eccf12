"""A stage in a child process of the worker (``pipeline.stream.stage_process``): the same
envelopes and stored effects as the stage in the worker's own thread, and failures that come
back as the exceptions the agent retries (transient) or dead-letters (the rest)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from reliability.conftest import free_port
from sqlalchemy.engine import Engine

from pipeline.settings import REPO_ROOT, Settings
from pipeline.signals.stage import SignalStage
from pipeline.stages import StageUnavailable
from pipeline.store.signal_tables import signal_accounts, signal_counts
from pipeline.stream.stage_process import ChildStageError, ProcessStage
from pipeline.types import AccountEvent, AvatarResult, Envelope

T0 = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)


def _env(i: int, device: str) -> Envelope:
    event = AccountEvent(
        event_type="account.created.v1",
        event_id=f"evt-{i}",
        occurred_at=T0 + timedelta(minutes=i),
        account_id=f"acct-{i}",
        display_name=f"Person {i}",
        username=f"user_{i}",
        email_domain="mail.example.org",
        signup_ip=f"203.0.113.{i % 250}",
        device_id=device,
        country="US",
        bio="",
        links=("https://outlet.example.net/story",) if i % 2 else (),
    )
    return Envelope(event=event, avatar=AvatarResult(status="scored", score=0.9), matches=())


def _settings(url: str) -> Settings:
    return Settings(database={"url": url}, log_level="WARNING")


@pytest.fixture
def child(engine: Engine) -> Iterator[ProcessStage]:
    stage = ProcessStage(_settings(engine.url.render_as_string(hide_password=False)), "signals")
    yield stage
    stage.close()


def test_child_stage_gives_and_stores_what_the_stage_gives(
    engine: Engine, child: ProcessStage
) -> None:
    batch = [_env(i, device=f"emu-{i % 3}") for i in range(12)]
    out = child.process(batch)
    assert [e.event for e in out] == [e.event for e in batch]
    assert all(e.cluster is not None for e in out)
    assert out[-1].cluster is not None and out[-1].cluster.cluster_id is not None
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(signal_accounts)).scalar() == 12
        counted = conn.execute(sa.select(sa.func.sum(signal_counts.c.count))).scalar()
    # a redelivery to the stage in this process returns what the child stored, unchanged
    assert SignalStage(engine, Settings()).process(batch) == out
    assert child.process(batch) == out
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.sum(signal_counts.c.count))).scalar() == counted


def test_a_stage_error_comes_back_as_child_stage_error(child: ProcessStage) -> None:
    broken = Envelope(event=None)  # type: ignore[arg-type]
    with pytest.raises(ChildStageError, match="AttributeError"):
        child.process([broken])
    assert child.process([_env(1, "emu-x")])[0].cluster is not None


def test_a_database_outage_comes_back_as_stage_unavailable() -> None:
    url = f"postgresql+psycopg2://nobody:none@127.0.0.1:{free_port()}/none"  # nothing listens
    stage = ProcessStage(_settings(url), "signals")
    try:
        with pytest.raises(StageUnavailable, match="OperationalError"):
            stage.process([_env(1, "emu-y")])
    finally:
        stage.close()


def test_a_dead_child_is_unavailable_then_replaced(child: ProcessStage) -> None:
    child.start()
    pool = child._pool
    assert pool is not None
    (pid,) = list(pool._processes)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(StageUnavailable, match="child process ended"):
        child.process([_env(2, "emu-z")])
    assert child.process([_env(2, "emu-z")])[0].cluster is not None
    assert child._pool is not None and pid not in child._pool._processes


def test_the_child_ends_when_its_worker_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(
        "import sys, time\n"
        "from pipeline.settings import Settings\n"
        "from pipeline.stream.stage_process import ProcessStage\n"
        "if __name__ == '__main__':\n"
        f"    url = 'sqlite:///{tmp_path}/w.db'\n"
        "    s = ProcessStage(Settings(database={'url': url}), 'signals')\n"
        "    s.start()\n"
        "    print(*s._pool._processes, flush=True)\n"
        "    time.sleep(120)\n"
    )
    worker = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, cwd=REPO_ROOT, text=True
    )
    try:
        assert worker.stdout is not None
        child = int(worker.stdout.readline())
        os.kill(child, 0)  # alive
    finally:
        worker.kill()
        worker.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the child outlived its killed worker by 20 s")
