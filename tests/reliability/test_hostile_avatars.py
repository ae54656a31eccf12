"""Hostile images and URLs through the real worker (Kafka in, PostgreSQL and decisions out).

The avatar engineer's tests cover the fetcher and decoder one call at a time
(tests/unit/test_avatar_*, tests/integration/test_avatar_*). Here the same made-here corpus,
served by the misbehaving loopback server, arrives as ``avatar_url`` of account events on the
input topic: each avatar is refused with its code in ``avatar_results.error_code``, counted in
``unmask_avatar_errors_total``, every event still gets its decision, and the worker stays alive
with its resident memory bounded.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hostile import corpus
from hostile.server import HostileServer, hostile_server

from .conftest import REPO_ROOT, metric_value, rss_kib, wait_for

CREATED = json.loads((REPO_ROOT / "schemas/examples/account.created.v1.json").read_text())
RSS_GROWTH_LIMIT_KIB = 200 * 1024
"""A decoded bomb would need gigabytes; a bounded worker grows by far less than this."""


@pytest.fixture
def server(shared_dir: Path) -> Iterator[HostileServer]:
    with hostile_server() as srv:
        srv.drip_interval = 0.5
        srv.files.update({
            "photo.jpg": (shared_dir / "data/faces/fake/rvf_002KDWZBHU.jpg").read_bytes(),
            "frames.gif": corpus.gif_frames(1000),
            "truncated.jpg": corpus.truncated_jpeg(),
            "bomb.png": corpus.png_bomb(),
            "huge-header.jpg": corpus.jpeg_claiming(30_000, 30_000),
            "svg.jpg": corpus.SVG_AS_JPEG,
            "html.jpg": corpus.HTML_AS_JPEG,
            "empty.jpg": b"",
        })
        yield srv


def hostile_urls(base: str, port: int, big_file: Path) -> list[tuple[str, str]]:
    """(avatar_url, expected avatar_results.error_code)."""
    return [
        (f"{base}/file/truncated.jpg", "truncated"),
        (f"{base}/file/bomb.png", "too_many_pixels"),
        (f"{base}/file/huge-header.jpg", "too_many_pixels"),
        (f"{base}/file/svg.jpg", "not_an_image"),
        (f"{base}/file/html.jpg", "not_an_image"),
        (f"{base}/file/empty.jpg", "empty"),
        (f"{base}/big-chunked", "too_large"),
        (f"{base}/big-declared", "too_large"),
        (big_file.as_uri(), "too_large"),
        (f"{base}/drip-body", "timeout"),
        (f"{base}/drip-headers", "timeout"),
        (f"http://localhost:{port}/file/photo.jpg", "private_address"),
        ("http://169.254.169.254/latest/meta-data/iam/", "private_address"),
        ("http://10.0.0.8/a.jpg", "private_address"),
        ("http://192.168.1.20/a.jpg", "private_address"),
        ("file:///etc/passwd", "file_outside_root"),
        (f"{base}/redirect?to=http://169.254.169.254/latest/meta-data/", "private_address"),
        (f"{base}/redirect?to=http://localhost:{port}/file/photo.jpg", "private_address"),
        (f"{base}/redirect?to=http://10.0.0.8/a.jpg", "private_address"),
        (f"{base}/redirect?to=file:///etc/passwd", "scheme_not_allowed"),
        (f"{base}/chain/9/photo.jpg", "too_many_redirects"),
        ("http://evil.example.org/a.jpg", "host_not_allowed"),
        ("gopher://127.0.0.1:70/_", "scheme_not_allowed"),
    ]


def event(i: int, url: str | None) -> dict[str, Any]:
    return dict(CREATED, event_id=f"hav-{i}", account_id=f"hav-acct-{i}", username=f"hav{i}",
                avatar_url=url)


@pytest.mark.slow
def test_hostile_avatars_are_refused_with_codes_counted_and_the_worker_stays_bounded(
        shared_services: Any, pipeline_factory: Any, server: HostileServer, shared_dir: Path,
        tmp_path: Path) -> None:
    big_dir = tmp_path / "big"
    big_dir.mkdir()
    big_file = corpus.write_big_file(big_dir / "fifty-megabytes.jpg")
    port = server.server_address[1]
    pipe = pipeline_factory(
        shared_services,
        UNMASK_AVATARS__ALLOWED_HOSTS=json.dumps(
            ["127.0.0.1", "localhost", "169.254.169.254", "10.0.0.8", "192.168.1.20"]),
        UNMASK_AVATARS__ALLOW_PRIVATE_HOSTS=json.dumps(["127.0.0.1"]),
        UNMASK_AVATARS__EXTRA_FILE_ROOTS=json.dumps([str(big_dir)]),
        UNMASK_AVATARS__CONNECT_TIMEOUT_S="1.0",
        UNMASK_AVATARS__READ_TIMEOUT_S="2.0",
        UNMASK_AVATARS__MAX_BYTES="1000000",
    )
    worker = pipe.start_worker()
    faces = sorted((shared_dir / "data/faces/real").glob("lfw_*.jpg"))[:12]
    warm = [event(1000 + i, p.as_uri()) for i, p in enumerate(faces)]
    warm.append(event(1100, f"{server.base}/file/photo.jpg"))
    warm.append(event(1101, f"{server.base}/file/frames.gif"))
    pipe.produce_events(warm)
    wait_for(lambda: pipe.decided() >= len(warm), 180, what="warm-up", alive=worker.alive)
    rss_before = rss_kib(worker.proc.pid)
    mport = worker.metrics_port
    expected = hostile_urls(server.base, port, big_file)
    codes = Counter(code for _u, code in expected)
    before = {c: metric_value(mport, "unmask_avatar_errors_total", {"code": c}) for c in codes}

    rounds = 3
    docs = [event(r * 100 + i, url) for r in range(rounds) for i, (url, _c) in enumerate(expected)]
    pipe.produce_events(docs)
    peak = rss_before
    def done() -> bool:
        nonlocal peak
        peak = max(peak, rss_kib(worker.proc.pid))
        return pipe.decided() >= len(warm) + len(docs)
    wait_for(done, 240, what="decisions for hostile avatars", alive=worker.alive)
    rss_after = rss_kib(worker.proc.pid)
    after = {c: metric_value(mport, "unmask_avatar_errors_total", {"code": c}) for c in codes}
    assert worker.alive(), worker.log()
    worker.stop()

    with pipe.engine.connect() as conn:
        stored = {r.event_id: (r.status, r.error_code) for r in conn.execute(sa.text(
            "SELECT event_id, status, error_code FROM avatar_results"))}
        warm_status = [stored[d["event_id"]][0] for d in warm]
    assert warm_status.count("scored") == len(warm)
    wrong = [(url, stored.get(f"hav-{r * 100 + i}"), code) for r in range(rounds)
             for i, (url, code) in enumerate(expected)
             if stored.get(f"hav-{r * 100 + i}") != ("refused", code)]
    assert wrong == []
    assert {c: after[c] - before[c] for c in codes} == {c: n * rounds for c, n in codes.items()}
    growth = peak - rss_before
    print(f"RSS before {rss_before // 1024} MiB, peak {peak // 1024} MiB, after "
          f"{rss_after // 1024} MiB; refusals: {dict(codes)} x{rounds}")
    assert growth < RSS_GROWTH_LIMIT_KIB, f"worker grew {growth // 1024} MiB"
