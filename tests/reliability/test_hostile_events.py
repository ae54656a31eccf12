"""Hostile events: fuzzed payloads and raw bytes, and a Kafka stream with 10% poison.

Every input is either processed (a decision) or dead-lettered with a reason code from
``schemas/dead_letter.v1.json``; nothing raises out of validation or the runners, and the valid
events among the poison are all decided at the speed of a clean stream.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.events import InvalidEvent, load_schema, parse_event
from pipeline.types import AccountEvent

from .conftest import (
    REPO_ROOT,
    SECRET,
    assert_exactly_once,
    assert_topic_decisions,
    simulated_events,
    wait_for,
)

CODES = frozenset(load_schema("dead_letter.v1")["properties"]["reason_code"]["enum"])
CREATED = json.loads((REPO_ROOT / "schemas/examples/account.created.v1.json").read_text())
FIELDS = [k for k in load_schema("account.created.v1")["properties"] if k != "event_type"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
hostile_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=60) | \
    st.sampled_from(["\x00", "a\x00b", "\ud800", "\U0010ffff", "‮evil", "' OR 1=1 --",
                     "../../etc/passwd", "%00", "x" * 300, "ｅｘａｍｐｌｅ．ｃｏｍ"])


@st.composite
def event_documents(draw: st.DrawFn) -> dict[str, Any]:
    """An account.created.v1 document with some fields replaced, removed or added."""
    doc: dict[str, Any] = dict(CREATED)
    doc["event_type"] = draw(st.sampled_from(
        ["account.created.v1", "account.created.v1", "profile.updated.v1", "account.deleted.v1"]))
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=4, unique=True)):
        action = draw(st.sampled_from(["text", "json", "drop"]))
        if action == "drop":
            doc.pop(name, None)
        else:
            doc[name] = draw(hostile_text if action == "text" else json_values)
    if draw(st.booleans()):
        doc[draw(st.text(max_size=10))] = draw(json_values)
    return doc


def encode(doc: dict[str, Any], ascii_only: bool) -> bytes:
    return json.dumps(doc, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def check_parse(raw: bytes) -> AccountEvent | None:
    try:
        return parse_event(raw)
    except InvalidEvent as exc:
        assert exc.code in CODES
        return None


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=3000))
def test_raw_bytes_parse_or_refuse_with_a_code(raw: bytes) -> None:
    check_parse(raw)


@settings(max_examples=400, deadline=None)
@given(event_documents(), st.booleans())
def test_fuzzed_documents_parse_or_refuse_with_a_code(doc: dict[str, Any], ascii_only: bool
                                                      ) -> None:
    event = check_parse(encode(doc, ascii_only))
    if event is not None:
        assert event.event_id == doc["event_id"]
        assert event.to_dict()["account_id"] == doc["account_id"]


@pytest.mark.parametrize("raw", [
    b"[" * 100_000, b"{" * 50_000, b'{"a":' * 30_000, b"\xff\xfe\x00", b"\xef\xbb\xbf{}",
    b"null", b"1e999999", b'"' + b"x" * 70_000 + b'"', b"", b" ", json.dumps([CREATED]).encode(),
], ids=lambda r: repr(r[:12]))
def test_pathological_inputs_are_refused_with_a_code(raw: bytes) -> None:
    assert check_parse(raw) is None


@pytest.mark.parametrize("field", ["display_name", "username", "bio", "device_id", "links"])
@pytest.mark.parametrize("bad", ["a\x00b", "x\ud800y", "\udfff"])
def test_text_no_database_can_store_is_refused_at_the_edge(field: str, bad: str) -> None:
    doc = dict(CREATED, **{field: [bad] if field == "links" else bad})
    with pytest.raises(InvalidEvent) as refused:
        parse_event(json.dumps(doc).encode())
    assert refused.value.code == "bad_encoding"


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Any]:
    from pipeline.compose import build_stages
    from pipeline.settings import AvatarSettings, Settings
    from pipeline.store.db import make_engine
    from pipeline.store.migrate import upgrade
    from pipeline.stream.embedded import EmbeddedRunner

    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'fuzz.db'}"
    upgrade(url)
    engine = make_engine(url)
    settings_ = Settings(secret_key=SECRET, avatars=AvatarSettings(
        model_path=tiny_model_dir, connect_timeout_s=0.2, read_timeout_s=0.3))
    yield EmbeddedRunner(engine, build_stages(settings_, engine), batch_size=4)
    engine.dispose()


_runs = itertools.count()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(event_documents().map(lambda d: encode(d, True)),
                          event_documents().map(lambda d: encode(d, False)),
                          st.binary(max_size=200)), min_size=1, max_size=8))
def test_embedded_runner_decides_or_dead_letters_every_fuzzed_record(embedded: Any,
                                                                     records: list[bytes]) -> None:
    from pipeline.store.tables import decisions, dlq_records

    source = f"fuzz-{next(_runs)}"
    report = embedded.run(records, source=source)
    assert report.records == len(records)
    assert set(report.dead_letters) <= CODES
    refused_at_edge = sum(1 for r in records if check_parse(r) is None)
    valid = {e.event_id for r in records if (e := check_parse(r)) is not None}
    assert report.valid == len(records) - refused_at_edge
    with embedded.engine.connect() as conn:
        dead = conn.execute(sa.select(dlq_records.c.reason_code, dlq_records.c.event_id)
                            .where(dlq_records.c.source_topic == source)).all()
        decided = set(conn.execute(sa.select(decisions.c.event_id)
                                   .where(decisions.c.event_id.in_(valid))).scalars())
    assert len(dead) == sum(report.dead_letters.values())
    assert {r.reason_code for r in dead} <= CODES
    late = {r.event_id for r in dead if r.reason_code == "processing_failed"}
    assert decided | late == valid, "a valid event was neither decided nor dead-lettered"


def poison_records(n: int) -> list[bytes]:
    """``n`` hostile records cycling through every way an input can be wrong."""
    kinds: list[Any] = [
        lambda i: b"{not json " + str(i).encode(),
        lambda i: b"\xff\xfe\xfa" + str(i).encode(),
        lambda i: json.dumps(dict(CREATED, event_id=f"p-{i}", bio="x" * 70_000)).encode(),
        lambda i: json.dumps([CREATED, i]).encode(),
        lambda i: json.dumps(dict(CREATED, event_type="account.deleted.v1", event_id=f"p-{i}"))
        .encode(),
        lambda i: json.dumps(dict(CREATED, event_id=f"p-{i}", country="Atlantis")).encode(),
        lambda i: json.dumps({k: v for k, v in CREATED.items() if k != "account_id"}).encode(),
        lambda i: json.dumps(dict(CREATED, event_id=f"p-{i}", occurred_at="yesterday")).encode(),
        lambda i: json.dumps(dict(CREATED, event_id=f"p {i}; DROP TABLE events")).encode(),
        lambda i: b"[" * 50_000,
        lambda i: json.dumps(dict(CREATED, event_id=f"p-{i}", signup_ip="999.1.1.1")).encode(),
        lambda i: b"",
        lambda i: json.dumps(dict(CREATED, event_id=f"p-{i}", display_name="a\x00b")).encode(),
        lambda i: json.dumps(dict(CREATED, event_id=f"p-{i}", username="u\ud800")).encode(),
        lambda i: json.dumps({"event_type": "x", "event_id": "\x00\ud800" + "e" * 300}).encode(),
    ]
    return [kinds[i % len(kinds)](i) for i in range(n)]


@pytest.mark.slow
def test_stream_with_ten_percent_poison_decides_every_valid_event_at_normal_speed(
        shared_services: Any, pipeline_factory: Any) -> None:
    n = 600
    warm = simulated_events(50, seed=51, prefix="warm-")
    clean = simulated_events(n, seed=52, prefix="clean-")
    mixed_valid = simulated_events(n, seed=53, prefix="mixed-")
    poison = poison_records(n // 10)
    pipe = pipeline_factory(shared_services)
    worker = pipe.start_worker()
    pipe.produce_events(warm)
    wait_for(lambda: pipe.decided() >= len(warm), 180, what="warm-up", alive=worker.alive)

    t0 = time.monotonic()
    pipe.produce_events(clean)
    wait_for(lambda: pipe.decided() >= len(warm) + n, 240, what="clean run", alive=worker.alive)
    clean_rate = n / (time.monotonic() - t0)

    records: list[tuple[bytes | None, bytes]] = [
        (d["account_id"].encode(), json.dumps(d).encode()) for d in mixed_valid]
    for i, raw in enumerate(poison):
        key = None if i % 3 else b"\x00\xff" * 400
        records.insert(i * 10 + 5, (key, raw))
    junk = [(b"k", b"\x00not an envelope"), (b"k", b'{"event": 1}'), (b"k", b"[]")]
    t1 = time.monotonic()
    pipe.produce(records)
    pipe.produce(junk, topic=pipe.topics["topic_validated"])
    wait_for(lambda: pipe.decided() >= len(warm) + 2 * n, 240, what="poisoned run",
             alive=worker.alive)
    mixed_rate = n / (time.monotonic() - t1)
    wait_for(lambda: pipe.count("dlq_records") >= len(poison), 60, what="dead letters",
             alive=worker.alive)
    time.sleep(3)
    assert worker.alive(), worker.log()
    all_docs = warm + clean + mixed_valid
    topic = pipe.read_decisions_topic(len(all_docs))
    dlq_topic = pipe.read_dlq_topic(len(poison))
    worker.stop()

    assert_exactly_once(pipe, all_docs)
    assert_topic_decisions(topic, {d["event_id"] for d in all_docs})
    with pipe.engine.connect() as conn:
        dead = conn.execute(sa.text("SELECT reason_code, raw FROM dlq_records")).all()
    events_dead = [r for r in dead if r.reason_code != "processing_failed"]
    assert len(events_dead) == len(poison)
    assert sorted(bytes(r.raw) for r in events_dead) == sorted(poison)
    assert {r.reason_code for r in dead} <= CODES
    assert sorted(bytes(r.raw) for r in dead if r.reason_code == "processing_failed") == \
        sorted(v for _k, v in junk)
    assert len([r for r in dlq_topic if r["source_topic"] == pipe.topics["topic_events"]]) == \
        len(poison)
    print(f"clean {clean_rate:.1f} ev/s, with 10% poison {mixed_rate:.1f} valid ev/s "
          f"(ratio {mixed_rate / clean_rate:.2f}); dead letters by code: "
          f"{dict(Counter(r.reason_code for r in dead))}")
    assert mixed_rate >= 0.5 * clean_rate
