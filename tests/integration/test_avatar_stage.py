"""The avatar stage end to end on SQLite and PostgreSQL: real fetches from a loopback server and
from ``file://`` under the shared data, real decoding, Haar face, a tiny real ONNX detector and
the real perceptual hashes. Scored, absent and refused rows are stored once; a redelivered batch
gets the stored results back without fetching or scoring again.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from hostile import corpus
from hostile.server import HostileServer, hostile_server
from hostile.tiny_model import VERSION, write_tiny_detector
from PIL import Image
from prometheus_client import REGISTRY

from pipeline.avatars.detector import OnnxDetector
from pipeline.avatars.face import FaceFinding
from pipeline.avatars.stage import AvatarStage
from pipeline.settings import AvatarSettings, Settings
from pipeline.store.db import make_engine
from pipeline.store.migrate import upgrade
from pipeline.store.tables import avatar_results
from pipeline.types import AccountEvent, AvatarResult, Envelope

PHOTO = "real/lfw_real_1001.jpg"
FAKE = "fake/rvf_002KDWZBHU.jpg"


class CountingDetector:
    """The real ONNX detector, counting how often and with how many images it is called."""

    def __init__(self, inner: OnnxDetector) -> None:
        self.inner = inner
        self.calls: list[int] = []

    @property
    def model_version(self) -> str:
        return self.inner.model_version

    @property
    def threshold(self) -> float:
        return self.inner.threshold

    def score_batch(self, images: Sequence[Image.Image]) -> list[float]:
        self.calls.append(len(images))
        return self.inner.score_batch(images)

    def fuse(
        self,
        cnn_scores: Sequence[float],
        findings: Sequence[FaceFinding],
        sizes: Sequence[tuple[int, int]],
    ) -> list[float]:
        return self.inner.fuse(cnn_scores, findings, sizes)


@pytest.fixture(scope="module")
def server(shared_dir: Path) -> Iterator[HostileServer]:
    faces = shared_dir / "data" / "faces"
    with hostile_server() as srv:
        srv.files.update(
            {
                "photo.jpg": (faces / FAKE).read_bytes(),
                "noise.jpg": corpus.encode(corpus.noise_image(128), "JPEG"),
                "frames.gif": corpus.gif_frames(1000),
                "truncated.jpg": corpus.truncated_jpeg(),
                "bomb.png": corpus.png_bomb(),
                "huge-header.jpg": corpus.jpeg_claiming(30_000, 30_000),
                "svg.jpg": corpus.SVG_AS_JPEG,
                "html.jpg": corpus.HTML_AS_JPEG,
                "empty.jpg": b"",
                "bitmap.jpg": corpus.encode(corpus.noise_image(16), "BMP"),
            }
        )
        yield srv


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_detector(tmp_path_factory.mktemp("model"))


def make_settings(shared_dir: Path, model_dir: Path) -> Settings:
    return Settings(
        avatars=AvatarSettings(
            allowed_hosts=["127.0.0.1", "169.254.169.254", "10.0.0.8", "192.168.1.20"],
            allow_private_hosts=["127.0.0.1"],
            file_root=shared_dir / "data" / "faces",
            connect_timeout_s=1.0,
            read_timeout_s=1.5,
            max_bytes=1_000_000,
            max_redirects=3,
            model_path=model_dir,
            fetch_workers=8,
        )
    )


def event(n: int, url: str | None) -> Envelope:
    return Envelope(
        AccountEvent(
            event_type="account.created.v1",
            event_id=f"evt-{n:03d}",
            occurred_at=datetime(2026, 11, 29, 12, 0, tzinfo=UTC),
            account_id=f"acct-{n:03d}",
            avatar_url=url,
        )
    )


def errors(code: str) -> float:
    return REGISTRY.get_sample_value("unmask_avatar_errors_total", {"code": code}) or 0.0


def run_suite(url: str, server: HostileServer, shared_dir: Path, model_dir: Path) -> None:
    upgrade(url)
    engine = make_engine(url)
    settings = make_settings(shared_dir, model_dir)
    faces = shared_dir / "data" / "faces"
    base = server.base
    expected: list[tuple[str | None, str, str | None]] = [
        (None, "absent", None),
        ((faces / PHOTO).as_uri(), "scored", None),
        (f"{base}/file/photo.jpg", "scored", None),
        (f"{base}/chain/2/photo.jpg", "scored", None),
        (f"{base}/file/noise.jpg", "scored", None),
        (f"{base}/file/frames.gif", "scored", None),
        (f"{base}/file/truncated.jpg", "refused", "truncated"),
        (f"{base}/file/bomb.png", "refused", "too_many_pixels"),
        (f"{base}/file/huge-header.jpg", "refused", "too_many_pixels"),
        (f"{base}/file/svg.jpg", "refused", "not_an_image"),
        (f"{base}/file/html.jpg", "refused", "not_an_image"),
        (f"{base}/file/empty.jpg", "refused", "empty"),
        (f"{base}/file/bitmap.jpg", "refused", "format_not_allowed"),
        (f"{base}/big-chunked", "refused", "too_large"),
        (f"{base}/drip-body", "refused", "timeout"),
        (f"{base}/status/500", "refused", "http_status"),
        (f"{base}/file/missing.jpg", "refused", "not_found"),
        (f"{base}/chain/9/photo.jpg", "refused", "too_many_redirects"),
        (
            f"{base}/redirect?to=http://169.254.169.254/latest/meta-data/",
            "refused",
            "private_address",
        ),
        (f"{base}/redirect?to=http://evil.example.org/a.jpg", "refused", "host_not_allowed"),
        ("http://169.254.169.254/latest/meta-data/", "refused", "private_address"),
        ("http://10.0.0.8/a.jpg", "refused", "private_address"),
        ("http://192.168.1.20/a.jpg", "refused", "private_address"),
        ("file:///etc/passwd", "refused", "file_outside_root"),
        ((faces / "../../../../etc/passwd").as_uri(), "refused", "file_outside_root"),
        ("ftp://127.0.0.1/a.jpg", "refused", "scheme_not_allowed"),
    ]
    batch = [event(i, u) for i, (u, _, _) in enumerate(expected)]
    batch.append(batch[2])
    codes = {c for _, _, c in expected if c}
    want = {c: sum(1 for _, _, x in expected if x == c) for c in codes}
    before = {c: errors(c) for c in codes}

    detector = CountingDetector(OnnxDetector(model_dir, prefer_gpu=False))
    stage = AvatarStage(engine, settings, detector)
    try:
        out = stage.process(batch)
    finally:
        stage.close()

    assert [e.event for e in out] == [e.event for e in batch]
    for env, (u, status, code) in zip(out, expected, strict=False):
        assert env.avatar is not None
        assert (env.avatar.status, env.avatar.error_code) == (status, code), u
    assert out[-1].avatar == out[2].avatar
    for code, count in want.items():
        assert errors(code) - before[code] == count, code

    scored = [e.avatar for e in out[: len(expected)] if e.avatar and e.avatar.status == "scored"]
    assert detector.calls == [len(scored)]
    photo = out[1].avatar
    assert photo is not None and photo.face_found and photo.eyes and len(photo.eyes) == 2
    assert photo.sha256 == hashlib.sha256((faces / PHOTO).read_bytes()).hexdigest()
    image = Image.open(faces / PHOTO).convert("RGB")
    assert photo.score == pytest.approx(detector.inner.score_batch([image])[0], abs=1e-5)
    assert photo.model_version == VERSION
    assert {"phash", "pdq", "face"} <= set(photo.hashes)
    assert photo.eye_offset is not None and photo.eye_offset > 0.03
    assert (photo.width, photo.height) == image.size
    fake = out[2].avatar
    assert fake is not None and fake.eye_offset is not None and fake.eye_offset < 0.03
    assert out[3].avatar is not None and out[3].avatar.sha256 == fake.sha256
    noise = out[4].avatar
    assert noise is not None and noise.face_found is False and noise.eye_offset is None
    assert "face" not in noise.hashes and "phash" in noise.hashes
    gif = out[5].avatar
    assert gif is not None and (gif.width, gif.height) == (32, 32)

    with engine.connect() as conn:
        rows = conn.execute(sa.select(avatar_results)).fetchall()
    assert len(rows) == len(expected)
    stored = {r._mapping["event_id"]: r._mapping for r in rows}
    assert stored["evt-000"]["status"] == "absent"
    assert stored["evt-001"]["eye_offset"] == photo.eye_offset
    assert stored["evt-007"]["error_code"] == "too_many_pixels"

    hits = sum(server.hits.values())
    counts = {c: errors(c) for c in codes}
    again_detector = CountingDetector(detector.inner)
    again = AvatarStage(engine, settings, again_detector)
    try:
        redelivered = again.process(batch)
    finally:
        again.close()
    assert [e.avatar for e in redelivered] == [e.avatar for e in out]
    assert again_detector.calls == []
    assert sum(server.hits.values()) == hits
    assert {c: errors(c) for c in codes} == counts
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(avatar_results)).scalar() == len(
            expected
        )
    engine.dispose()


def test_stage_on_sqlite(
    tmp_path: Path, server: HostileServer, shared_dir: Path, model_dir: Path
) -> None:
    run_suite(f"sqlite:///{tmp_path / 'stage.db'}", server, shared_dir, model_dir)


@pytest.mark.postgres
def test_stage_on_postgres(
    fresh_database_url: str, server: HostileServer, shared_dir: Path, model_dir: Path
) -> None:
    run_suite(fresh_database_url, server, shared_dir, model_dir)


def test_detector_loaded_from_settings_and_failures_store_nothing(
    tmp_path: Path, shared_dir: Path, model_dir: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'fail.db'}"
    upgrade(url)
    engine = make_engine(url)
    settings = make_settings(shared_dir, model_dir)
    stage = AvatarStage(engine, settings)
    assert stage.detector.model_version == VERSION
    stage.close()

    class BrokenDetector(CountingDetector):
        def score_batch(self, images: Sequence[Image.Image]) -> list[float]:
            raise RuntimeError("onnxruntime session died")

    broken = AvatarStage(
        engine, settings, BrokenDetector(OnnxDetector(model_dir, prefer_gpu=False))
    )
    batch = [event(1, (shared_dir / "data" / "faces" / PHOTO).as_uri()), event(2, None)]
    with pytest.raises(RuntimeError):
        broken.process(batch)
    broken.close()
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(avatar_results)).scalar() == 0
    assert AvatarResult.from_dict(AvatarResult.refused("timeout").to_dict()).error_code == "timeout"
    engine.dispose()


def test_scored_bytes_go_to_the_image_sink(
    tmp_path: Path, shared_dir: Path, model_dir: Path
) -> None:
    class Sink:
        def __init__(self) -> None:
            self.stored: dict[str, bytes] = {}

        def put(self, data: bytes) -> str:
            sha = hashlib.sha256(data).hexdigest()
            self.stored[sha] = data
            return sha

    url = f"sqlite:///{tmp_path / 'sink.db'}"
    upgrade(url)
    engine = make_engine(url)
    sink = Sink()
    stage = AvatarStage(engine, make_settings(shared_dir, model_dir), images=sink)
    photo = shared_dir / "data" / "faces" / PHOTO
    try:
        out = stage.process(
            [event(1, photo.as_uri()), event(2, None), event(3, "file:///etc/passwd")]
        )
    finally:
        stage.close()
    assert [e.avatar.status for e in out if e.avatar] == ["scored", "absent", "refused"]
    assert sink.stored == {hashlib.sha256(photo.read_bytes()).hexdigest(): photo.read_bytes()}
    engine.dispose()


def concurrent_workers(url: str, shared_dir: Path, model_dir: Path) -> None:
    upgrade(url)
    engine = make_engine(url)
    settings = make_settings(shared_dir, model_dir)
    faces = shared_dir / "data" / "faces"
    urls = [(faces / name).as_uri() for name in (PHOTO, FAKE, "real/celeba_000001.jpg")]
    batch = [event(i, u) for i, u in enumerate([*urls, None, "file:///etc/passwd"])]
    detector = OnnxDetector(model_dir, prefer_gpu=False)
    stages = [AvatarStage(engine, settings, detector) for _ in range(2)]
    barrier = threading.Barrier(2)
    outputs: list[list[Envelope]] = [[], []]

    def work(i: int) -> None:
        barrier.wait()
        outputs[i] = stages[i].process(batch)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for stage in stages:
        stage.close()
    assert outputs[0] and [e.avatar for e in outputs[0]] == [e.avatar for e in outputs[1]]
    with engine.connect() as conn:
        rows = conn.execute(sa.select(avatar_results.c.event_id)).fetchall()
    assert sorted(r[0] for r in rows) == sorted(e.event.event_id for e in batch)
    engine.dispose()


def test_two_workers_on_one_batch_store_one_row_each_sqlite(
    tmp_path: Path, shared_dir: Path, model_dir: Path
) -> None:
    concurrent_workers(f"sqlite:///{tmp_path / 'two.db'}", shared_dir, model_dir)


@pytest.mark.postgres
def test_two_workers_on_one_batch_store_one_row_each_postgres(
    fresh_database_url: str, shared_dir: Path, model_dir: Path
) -> None:
    concurrent_workers(fresh_database_url, shared_dir, model_dir)
