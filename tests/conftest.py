"""Session fixtures for the real services that ``ops/services.sh`` starts.

Integration tests talk to a real PostgreSQL and a real Kafka broker, never mocks. Each test
gets its own database or topics, named uniquely, so tests (and engineers sharing one server)
do not see each other's data. The fixtures skip only when the service's environment variable
is absent; CI (``ops/test.sh``) always sets them, so there a dead service is a failure.

Fixtures:
    shared_dir           Path to the read-only shared data (``UNMASK_SHARED_DIR``, else
                         ``<repo>/../shared``).
    pg_server_url        SQLAlchemy URL of the test database (``UNMASK_TEST_DATABASE_URL``).
    fresh_database_url   SQLAlchemy URL of a new, empty database, dropped after the test.
    kafka_bootstrap      ``host:port`` of the test broker (``UNMASK_TEST_KAFKA_BOOTSTRAP``).
    kafka_topics         factory: ``kafka_topics({"base": partitions, ...})`` creates uniquely
                         named topics and returns ``{"base": "actual.name"}``; deleted after.

Tests that use the PostgreSQL or Kafka fixtures are marked ``postgres`` / ``kafka``
automatically, so ``-m "not kafka"`` selects around them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

TopicFactory = Callable[[Mapping[str, int]], dict[str, str]]

_POSTGRES_FIXTURES = frozenset({"pg_server_url", "fresh_database_url"})
_KAFKA_FIXTURES = frozenset({"kafka_bootstrap", "kafka_topics"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & _POSTGRES_FIXTURES:
            item.add_marker(pytest.mark.postgres)
        if used & _KAFKA_FIXTURES:
            item.add_marker(pytest.mark.kafka)


def _unique_suffix() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared data directory; fails (not skips) when it is missing."""
    path = Path(os.environ.get("UNMASK_SHARED_DIR") or REPO_ROOT.parent / "shared").resolve()
    if not path.is_dir():
        pytest.fail(f"shared data directory {path} not found; set UNMASK_SHARED_DIR")
    return path


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """URL of the test database on the real server; skips when UNMASK_TEST_DATABASE_URL is unset."""
    url = os.environ.get("UNMASK_TEST_DATABASE_URL")
    if not url:
        pytest.skip("UNMASK_TEST_DATABASE_URL not set (start services: ops/services.sh start)")
    return url


@pytest.fixture
def fresh_database_url(pg_server_url: str) -> Iterator[str]:
    """Create an empty database named ``unmask_t_<random>`` and drop it (WITH FORCE) afterwards.

    The role in ``pg_server_url`` needs CREATEDB; the new database is owned by it.
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    from pipeline.store.db import drop_database

    server = make_url(pg_server_url)
    name = f"unmask_t_{_unique_suffix()}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        try:
            drop_database(admin, name)
        finally:
            admin.dispose()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """``host:port`` of the real broker; skips when UNMASK_TEST_KAFKA_BOOTSTRAP is unset."""
    bootstrap = os.environ.get("UNMASK_TEST_KAFKA_BOOTSTRAP")
    if not bootstrap:
        pytest.skip("UNMASK_TEST_KAFKA_BOOTSTRAP not set (start services: ops/services.sh start)")
    return bootstrap


@pytest.fixture
def kafka_topics(kafka_bootstrap: str) -> Iterator[TopicFactory]:
    """Factory creating uniquely named topics, all deleted when the test ends.

    ``kafka_topics({"accounts.events": 6})`` returns
    ``{"accounts.events": "accounts.events.t<hex>"}`` once every partition has a leader
    (blocking). Raises the broker's error if creation fails.
    """
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="unmask-tests")
    created: list[str] = []

    def create(partitions_by_base: Mapping[str, int]) -> dict[str, str]:
        suffix = _unique_suffix()
        names = {base: f"{base}.t{suffix}" for base in partitions_by_base}
        admin.create_topics(
            {
                names[base]: {"num_partitions": count, "replication_factor": 1}
                for base, count in partitions_by_base.items()
            },
            timeout_ms=30000,
            wait_for_metadata=True,
        )
        created.extend(names.values())
        return names

    try:
        yield create
    finally:
        try:
            if created:
                admin.delete_topics(created, timeout_ms=30000, raise_errors=False)
        finally:
            admin.close()
