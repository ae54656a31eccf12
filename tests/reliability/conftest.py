"""Harness of the reliability suite: pipelines on real services, faults, and exactly-once checks.

Tests that break a service (stop PostgreSQL, restart the broker) do it to a *private* Kafka and
PostgreSQL started here with ``ops/services.sh`` on free ports and a temporary state directory,
never to the shared servers other test runs use. Everything else runs on the shared services.

Fixtures:
    tiny_model_dir      a real (tiny) ONNX detector, so the worker needs no trained model.
    shared_services     the servers of ``UNMASK_TEST_DATABASE_URL`` and
                        ``UNMASK_TEST_KAFKA_BOOTSTRAP``.
    private_services    a private Kafka + PostgreSQL that tests may stop and start (stopped at the
                        end of the session whatever happened).
    pipeline_factory    ``pipeline_factory(services, **env)`` -> :class:`Pipeline`: a fresh migrated
                        database, a full set of unique topics and the worker environment; workers
                        it starts are stopped, databases and topics dropped after the test.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICES = REPO_ROOT / "ops" / "services.sh"
SECRET = "reliability-suite-secret"


def _load_integration_harness() -> Any:
    spec = importlib.util.spec_from_file_location(
        "unmask_integration_harness", REPO_ROOT / "tests" / "integration" / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_harness = _load_integration_harness()
Worker = _harness.Worker
consume = _harness.consume
TOPICS: dict[str, tuple[str, int]] = _harness.TOPICS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.25,
             what: str = "condition", alive: Callable[[], bool] | None = None) -> float:
    """Poll ``predicate`` until true; returns the seconds waited, fails the test on timeout."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if alive is not None and not alive():
            pytest.fail(f"worker died while waiting for {what}")
        if time.monotonic() - start > timeout:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------- processes

def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    """Resident set size of process ``pid`` in KiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def http_get(url: str, timeout: float = 3.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def metric_value(port: int, name: str, labels: dict[str, str] | None = None) -> float:
    """Sum of the samples of ``name`` (matching ``labels``) on the worker's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    _status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    total = 0.0
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v
                                           for k, v in (labels or {}).items()):
                total += sample.value
    return total


# ---------------------------------------------------------------- services

@dataclass
class Services:
    server_url: str
    """SQLAlchemy URL of a database on the server (fresh databases are created beside it)."""
    bootstrap: str
    control_env: dict[str, str] | None = None
    """Environment that points ``ops/services.sh`` at these services; None: not ours to stop."""

    def control(self, action: str, timeout: float = 180) -> None:
        """Run ``ops/services.sh <action>`` on these (private) services."""
        assert self.control_env is not None, "refusing to stop the shared services"
        subprocess.run(["bash", str(SERVICES), action], env=self.control_env, check=True,
                       timeout=timeout, capture_output=True)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hostile.tiny_model import write_tiny_detector

    return write_tiny_detector(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def shared_services(pg_server_url: str, kafka_bootstrap: str) -> Services:
    return Services(pg_server_url, kafka_bootstrap)


@pytest.fixture(scope="session")
def private_services(pg_server_url: str, kafka_bootstrap: str) -> Iterator[Services]:
    """A Kafka broker and PostgreSQL cluster of our own (same scripts as the shared ones)."""
    state = Path(tempfile.mkdtemp(prefix="unmask-reliability-"))
    state.chmod(0o755)
    shared_state = Path(os.environ.get("UNMASK_SERVICES_DIR") or REPO_ROOT / ".services")
    lib = shared_state / "kafka" / "lib"
    if (lib / ".complete").is_file():
        (state / "kafka").mkdir()
        (state / "kafka" / "lib").symlink_to(lib.resolve())
    pg_port, kafka_port, controller_port = free_port(), free_port(), free_port()
    env = dict(os.environ, UNMASK_SERVICES_DIR=str(state), UNMASK_PG_PORT=str(pg_port),
               UNMASK_KAFKA_PORT=str(kafka_port), UNMASK_KAFKA_CONTROLLER_PORT=str(controller_port),
               UNMASK_KAFKA_HEAP="384m")
    services = Services(
        f"postgresql+psycopg2://unmask:unmask@127.0.0.1:{pg_port}/unmask_test",
        f"127.0.0.1:{kafka_port}", env)
    try:
        services.control("start", timeout=300)
        yield services
    finally:
        subprocess.run(["bash", str(SERVICES), "stop"], env=env, timeout=180, check=False,
                       capture_output=True)
        shutil.rmtree(state, ignore_errors=True)


# ---------------------------------------------------------------- pipelines

@dataclass
class Pipeline:
    services: Services
    database_url: str
    topics: dict[str, str]
    env: dict[str, str]
    workdir: Path
    workers: list[Any] = field(default_factory=list)
    _engine: sa.Engine | None = None

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = sa.create_engine(self.database_url, poolclass=NullPool)
        return self._engine

    def start_worker(self, **extra_env: str) -> Any:
        env = dict(self.env, **extra_env)
        worker = Worker(env, self.workdir / f"worker-{len(self.workers)}.log")
        worker.metrics_port = int(env["UNMASK_METRICS_PORT"])
        self.workers.append(worker)
        return worker

    def produce(self, records: Iterable[tuple[bytes | None, bytes]], topic: str | None = None,
                bootstrap: str | None = None) -> int:
        """Send ``(key, value)`` records; blocks until the broker acknowledged all of them."""
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=bootstrap or self.services.bootstrap,
                                 acks="all", linger_ms=5, max_request_size=2_000_000)
        count = 0
        try:
            for key, value in records:
                producer.send(topic or self.topics["topic_events"], key=key, value=value)
                count += 1
            producer.flush(timeout=60)
        finally:
            producer.close()
        return count

    def produce_events(self, docs: Sequence[dict[str, Any]]) -> int:
        return self.produce((d["account_id"].encode(), json.dumps(d).encode()) for d in docs)

    def scalar(self, sql: str, **params: Any) -> Any:
        try:
            with self.engine.connect() as conn:
                return conn.execute(sa.text(sql), params).scalar()
        except sa.exc.OperationalError:
            return None

    def count(self, table: str, where: str = "true") -> int:
        return int(self.scalar(f"SELECT count(*) FROM {table} WHERE {where}") or 0)  # noqa: S608

    def decided(self) -> int:
        return self.count("decisions", "published_at IS NOT NULL")

    def read_decisions_topic(self, expected: int, timeout: float = 60) -> list[dict[str, Any]]:
        return consume(self.services.bootstrap, self.topics["topic_decisions"], expected,
                       timeout=timeout)

    def read_dlq_topic(self, expected: int, timeout: float = 60) -> list[dict[str, Any]]:
        return consume(self.services.bootstrap, self.topics["topic_dlq"], expected,
                       timeout=timeout)


def _create_database(server_url: str) -> str:
    server = make_url(server_url)
    name = f"unmask_r_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return server.set(database=name).render_as_string(hide_password=False)


def _drop_database(server_url: str, url: str) -> None:
    from pipeline.store.db import drop_database

    admin = sa.create_engine(make_url(server_url), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        drop_database(admin, str(make_url(url).database))
    finally:
        admin.dispose()


@pytest.fixture
def pipeline_factory(tmp_path: Path, shared_dir: Path, tiny_model_dir: Path
                     ) -> Iterator[Callable[..., Pipeline]]:
    from kafka.admin import KafkaAdminClient

    from pipeline.store.migrate import upgrade

    made: list[Pipeline] = []

    def make(services: Services, **extra_env: str) -> Pipeline:
        url = _create_database(services.server_url)
        upgrade(url)
        suffix = uuid.uuid4().hex[:10]
        topics = {fld: f"{base}.r{suffix}" for fld, (base, _parts) in TOPICS.items()}
        admin = KafkaAdminClient(bootstrap_servers=services.bootstrap, client_id="unmask-rel")
        try:
            admin.create_topics({topics[fld]: {"num_partitions": parts, "replication_factor": 1}
                                 for fld, (_base, parts) in TOPICS.items()},
                                timeout_ms=30000, wait_for_metadata=True)
        finally:
            admin.close()
        env = {k: v for k, v in os.environ.items() if not k.startswith("UNMASK_")}
        env.update({
            "UNMASK_ENVIRONMENT": "test",
            "UNMASK_SECRET_KEY": SECRET,
            "UNMASK_DATABASE__URL": url,
            "UNMASK_KAFKA__BOOTSTRAP": services.bootstrap,
            "UNMASK_KAFKA__CONSUMER_GROUP": f"unmask-rel-{suffix}",
            "UNMASK_AVATARS__FILE_ROOT": str(shared_dir),
            "UNMASK_AVATARS__MODEL_PATH": str(tiny_model_dir),
            "UNMASK_METRICS_PORT": str(free_port()),
            "UNMASK_LOG_LEVEL": "INFO",
        })
        env.update({f"UNMASK_KAFKA__{fld.upper()}": name for fld, name in topics.items()})
        env.update(extra_env)
        pipe = Pipeline(services, url, topics, env, tmp_path)
        made.append(pipe)
        return pipe

    yield make
    for pipe in made:
        for worker in pipe.workers:
            if not worker._log.closed:
                worker.stop()
        if pipe._engine is not None:
            pipe._engine.dispose()
        try:
            _drop_database(pipe.services.server_url, pipe.database_url)
            admin = KafkaAdminClient(bootstrap_servers=pipe.services.bootstrap,
                                     client_id="unmask-rel")
            admin.delete_topics(list(pipe.topics.values()), timeout_ms=30000, raise_errors=False)
            admin.close()
        except Exception:  # noqa: BLE001 - cleanup of a service a test may have broken
            pass


def forward_backlog(pipe: Pipeline, docs: Sequence[dict[str, Any]], agents: str,
                    topic_field: str, timeout: float = 180) -> None:
    """Produce ``docs`` and run an upstream worker with ``agents`` until it forwarded every one
    to the topic of ``topic_field`` (its ``unmask_events_produced_total``), then stop it: a
    backlog for the next worker to start on."""
    port = free_port()
    upstream = pipe.start_worker(UNMASK_WORKER__AGENTS=agents, UNMASK_METRICS_PORT=str(port))
    pipe.produce_events(docs)
    topic = pipe.topics[topic_field]

    def forwarded() -> bool:
        try:
            return metric_value(port, "unmask_events_produced_total",
                                {"topic": topic}) >= len(docs)
        except OSError:
            return False

    wait_for(forwarded, timeout, what=f"the backlog on {topic}", alive=upstream.alive)
    upstream.stop()


# ---------------------------------------------------------------- events

def simulated_events(n_events: int, seed: int, prefix: str = "",
                     **sim_args: Any) -> list[dict[str, Any]]:
    """The first ``n_events`` events of a simulated stream (ids prefixed to keep runs apart)."""
    from pipeline.sim.generate import Simulation

    sim_args.setdefault("avatars", False)
    out = []
    for doc in Simulation(max(50, int(n_events * 0.97)), 2, seed, **sim_args).events():
        if prefix:
            doc = dict(doc, event_id=prefix + doc["event_id"],
                       account_id=prefix + doc["account_id"])
        out.append(doc)
        if len(out) == n_events:
            break
    return out


def expected_signal_state(docs: Sequence[dict[str, Any]], secret: str = SECRET,
                          bucket_minutes: int = 10
                          ) -> tuple[Counter[tuple[str, str, int, int]], set[tuple[str, str, str]]]:
    """The window counters and account features that one pass over ``docs`` must leave (events
    without avatars, one account.created.v1 per account), computed with the stage's own pure
    feature extraction: one count per new (account, feature) and one population count per
    created account, at the fine and the one-day widths."""
    from pipeline.events import parse_event
    from pipeline.signals.features import extract
    from pipeline.signals.stage import POPULATION
    from pipeline.signals.windows import DAY_SECONDS, epoch

    fine = bucket_minutes * 60
    seen: dict[str, set[tuple[str, str]]] = defaultdict(set)
    counts: Counter[tuple[str, str, int, int]] = Counter()
    for doc in docs:
        ev = parse_event(json.dumps(doc).encode())
        t = epoch(ev.occurred_at)
        if ev.event_type == "account.created.v1":
            for width in {fine, DAY_SECONDS}:
                counts[(*POPULATION, width, t - t % width)] += 1
        for f in extract(ev, None, secret.encode()):
            if (f.kind, f.value) in seen[ev.account_id]:
                continue
            seen[ev.account_id].add((f.kind, f.value))
            for width in {fine, DAY_SECONDS}:
                counts[(f.kind, f.value, width, t - t % width)] += 1
    features = {(acc, kind, value) for acc, kv in seen.items() for kind, value in kv}
    return counts, features


def assert_exactly_once(pipe: Pipeline, docs: Sequence[dict[str, Any]],
                        with_avatars: bool = False) -> dict[str, int]:
    """Every event of ``docs`` had exactly one effect in every table; returns a few counts."""
    ids = {d["event_id"] for d in docs}
    n = len(ids)
    with pipe.engine.connect() as conn:
        def rows(sql: str) -> list[Any]:
            return list(conn.execute(sa.text(sql)).all())

        dec = rows("SELECT event_id, decision_id, published_at FROM decisions")
        assert len(dec) == n, f"{len(dec)} decision rows for {n} events"
        assert {r.event_id for r in dec} == ids
        assert all(r.decision_id == f"dec:{r.event_id}" for r in dec)
        assert all(r.published_at is not None for r in dec), "decision never published"
        for stage in ("signals", "decide"):
            marks = [r[0] for r in rows(
                f"SELECT event_id FROM processed_events WHERE stage = '{stage}'")]  # noqa: S608
            assert len(marks) == n and set(marks) == ids, stage
        avatar_ids = [r[0] for r in rows("SELECT event_id FROM avatar_results")]
        assert len(avatar_ids) == n and set(avatar_ids) == ids
        scored = rows("SELECT event_id FROM avatar_results WHERE status = 'scored'")
        photos = rows("SELECT event_id FROM photos WHERE source = 'account'")
        assert sorted(r[0] for r in photos) == sorted(r[0] for r in scored)
        assert sorted(r[0] for r in rows("SELECT event_id FROM signal_results")) == sorted(ids)
        assert sorted(r[0] for r in rows("SELECT event_id FROM events")) == sorted(ids)
        stored_counts = Counter({(r.kind, r.value, r.width_s, r.bucket_s): r.count for r in rows(
            "SELECT kind, value, width_s, bucket_s, count FROM signal_counts")})
        stored_features = {(r.account_id, r.kind, r.value) for r in rows(
            "SELECT account_id, kind, value FROM signal_account_features")}
        if not with_avatars:
            want_counts, want_features = expected_signal_state(docs)
            assert stored_features == want_features
            assert stored_counts == want_counts
        else:
            by_width: Counter[int] = Counter()
            for (kind, _v, width, _b), c in stored_counts.items():
                if kind != "_accounts":
                    by_width[width] += c
            assert set(by_width.values()) == {len(stored_features)}
        members = Counter(r[0] for r in rows(
            "SELECT cluster_id FROM signal_accounts WHERE cluster_id IS NOT NULL"))
        clusters = {r.cluster_id: r.size
                    for r in rows("SELECT cluster_id, size FROM signal_clusters")}
        assert dict(members) == clusters, "cluster sizes differ from their memberships"
        assert sorted(r[0] for r in rows("SELECT account_id FROM signal_accounts")) == sorted(
            {d["account_id"] for d in docs})
        items = rows("SELECT subject_type, subject_id, status, decision_id FROM review_items")
        open_subjects = Counter((r.subject_type, r.subject_id) for r in items
                                if r.status == "pending")
        assert all(c == 1 for c in open_subjects.values()), "two open items for one subject"
        dec_ids = {r.decision_id for r in dec}
        assert all(r.decision_id in dec_ids for r in items)
    return {"decisions": len(dec), "review_items": len(items), "clusters": len(clusters),
            "window_rows": len(stored_counts)}


def assert_topic_decisions(records: list[dict[str, Any]], ids: set[str]) -> int:
    """Every event has a decision on the topic; duplicates only repeat the same decision.
    Returns the number of duplicate records."""
    by_event: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_event[r["event_id"]].append(r)
    assert set(by_event) == ids, f"missing on topic: {len(ids - set(by_event))}"
    for event_id, copies in by_event.items():
        assert {c["decision_id"] for c in copies} == {f"dec:{event_id}"}
        assert len({(c["action"], c["score"]) for c in copies}) == 1
    return len(records) - len(by_event)
