"""The avatar stage: fetch, decode, face, score and hash the profile pictures of a micro-batch.

For each envelope it adds an :class:`~pipeline.types.AvatarResult` and stores one
``avatar_results`` row keyed by ``event_id``. I/O (fetch) runs in a small thread pool; the
detector sees every decoded picture of the batch in one ``score_batch`` call (micro-batching).
A redelivered event gets its stored result back without being fetched or scored again.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import cv2
import sqlalchemy as sa
from PIL import Image
from sqlalchemy.engine import Engine

from pipeline.avatars.decode import DecodedImage, decode_image
from pipeline.avatars.errors import AvatarRefused, count_refusal
from pipeline.avatars.face import FaceFinding, HaarFaceLocator, eye_offset
from pipeline.avatars.fetch import AvatarFetcher, Fetched
from pipeline.metrics import AVATAR_SCORE, AVATAR_STEP_SECONDS, MODEL_INFO
from pipeline.settings import Settings
from pipeline.store.db import insert_ignore
from pipeline.store.tables import avatar_results
from pipeline.types import AvatarResult, Envelope

log = logging.getLogger(__name__)

Hasher = Callable[..., dict[str, str]]
"""``hasher(image, face_box, eyes) -> {kind: hex}`` (``pipeline.dedupe.hashes.compute_hashes``)."""


class Detector(Protocol):
    """What the stage needs of the AI-face detector (``pipeline.avatars.detector.OnnxDetector``).

    ``score_batch`` is blocking, returns one CNN probability in [0, 1] per image in input order;
    ``fuse`` turns those, with the face findings and the sizes they were measured on, into the
    shipped probabilities (the identity when the model has no fusion block).
    """

    @property
    def model_version(self) -> str: ...

    @property
    def threshold(self) -> float: ...

    def score_batch(self, images: Sequence[Image.Image]) -> list[float]: ...

    def fuse(
        self,
        cnn_scores: Sequence[float],
        findings: Sequence[FaceFinding],
        sizes: Sequence[tuple[int, int]],
    ) -> list[float]: ...


class ImageSink(Protocol):
    """Where scored avatars' bytes are kept for reviewers (``pipeline.store.images.ImageStore``).

    ``put`` stores the bytes idempotently (blocking) and returns their sha256.
    """

    def put(self, data: bytes) -> str: ...


def load_detector(model_path: Path | None) -> Detector:
    """The ONNX detector at ``model_path`` (its folder or its ``.onnx`` file), else the shipped one.

    Raises FileNotFoundError when the model or its ``manifest.json`` is missing.
    """
    from pipeline.avatars.detector import DEFAULT_MODEL_DIR, OnnxDetector

    if model_path is None:
        return OnnxDetector(DEFAULT_MODEL_DIR)
    folder = model_path.parent if model_path.suffix == ".onnx" else model_path
    return OnnxDetector(folder)


@dataclass
class Prepared:
    """An avatar that was fetched, decoded and searched for a face, on its way to the detector."""

    fetched: Fetched
    decoded: DecodedImage
    seconds: float
    finding: FaceFinding | None = None


def read_avatar(
    fetcher: AvatarFetcher, url: str, max_pixels: int
) -> tuple[Fetched, DecodedImage, float, float]:
    """Fetch and decode one avatar: ``(fetched, decoded, fetch_seconds, decode_seconds)``.

    Raises :class:`AvatarRefused` for anything the fetch or the decoder refuses; an unexpected
    exception from a library on hostile bytes is turned into ``fetch_failed`` /
    ``decode_failed`` (and logged), so one avatar can never poison the batch.
    """
    t0 = time.perf_counter()
    try:
        fetched = fetcher.fetch(url)
    except AvatarRefused:
        raise
    except Exception as error:  # noqa: BLE001 - hostile input must not crash the worker
        log.exception("unexpected error fetching an avatar")
        raise AvatarRefused("fetch_failed", f"{type(error).__name__}") from error
    t1 = time.perf_counter()
    try:
        decoded = decode_image(fetched.data, max_pixels)
    except AvatarRefused:
        raise
    except Exception as error:  # noqa: BLE001 - hostile input must not crash the worker
        log.exception("unexpected error decoding an avatar")
        raise AvatarRefused("decode_failed", f"{type(error).__name__}") from error
    return fetched, decoded, t1 - t0, time.perf_counter() - t1


def _result_from_row(row: Any) -> AvatarResult:
    m = row._mapping
    eyes = m["eyes"]
    return AvatarResult(
        status=m["status"],
        error_code=m["error_code"],
        sha256=m["sha256"],
        score=m["score"],
        face_found=m["face_found"],
        face_box=tuple(m["face_box"]) if m["face_box"] is not None else None,
        eyes=tuple(tuple(e) for e in eyes) if eyes is not None else None,
        width=m["width"],
        height=m["height"],
        model_version=m["model_version"],
        hashes=dict(m["hashes"] or {}),
        latency_ms=m["latency_ms"],
        eye_offset=m["eye_offset"],
    )


def _row(event_id: str, account_id: str, result: AvatarResult, now: datetime) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "account_id": account_id,
        "status": result.status,
        "error_code": result.error_code,
        "sha256": result.sha256,
        "score": result.score,
        "face_found": result.face_found,
        "face_box": list(result.face_box) if result.face_box is not None else None,
        "eyes": [list(e) for e in result.eyes] if result.eyes is not None else None,
        "model_version": result.model_version,
        "hashes": dict(result.hashes),
        "latency_ms": result.latency_ms,
        "created_at": now,
        "width": result.width,
        "height": result.height,
        "eye_offset": result.eye_offset,
    }


class AvatarStage:
    """Stage ``avatar``: one :class:`AvatarResult` per envelope, persisted in ``avatar_results``.

    Contract (see :class:`pipeline.stages.Stage`): ``process`` blocks (network, CPU, database);
    returns one envelope per input, in order; is idempotent on ``event_id`` (a stored result is
    returned as stored, nothing is fetched or scored again); refused avatars are results
    (``status="refused"``, ``error_code``), never exceptions; a database failure raises and
    nothing of the batch is stored. Thread-safe: the Faust agent may call it from worker threads.

    ``detector`` defaults to the ONNX model of ``settings.avatars.model_path``; ``hasher`` to
    ``pipeline.dedupe.hashes.compute_hashes``; ``fetcher`` to an :class:`AvatarFetcher` over
    ``settings.avatars``. With ``images``, the bytes of every scored avatar are stored there
    (before its row, so a stored result never points at missing bytes).
    """

    name = "avatar"

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        detector: Detector | None = None,
        *,
        hasher: Hasher | None = None,
        fetcher: AvatarFetcher | None = None,
        locator: HaarFaceLocator | None = None,
        images: ImageSink | None = None,
    ) -> None:
        self._engine = engine
        self._settings = settings.avatars
        self._detector = (
            detector if detector is not None else load_detector(self._settings.model_path)
        )
        if hasher is None:
            from pipeline.dedupe.hashes import compute_hashes

            hasher = compute_hashes
        self._hasher = hasher
        self._fetcher = fetcher or AvatarFetcher(self._settings)
        self._locator = locator or HaarFaceLocator()
        self._images = images
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, self._settings.fetch_workers), thread_name_prefix="avatar-fetch"
        )
        MODEL_INFO.info(
            {
                "version": self._detector.model_version,
                "threshold": f"{self._detector.threshold:.6f}",
            }
        )

    @property
    def detector(self) -> Detector:
        return self._detector

    def close(self) -> None:
        """Stop the fetch threads (waits for running fetches, which are deadline-bounded)."""
        self._pool.shutdown(wait=True)
        self._fetcher.close()

    def process(self, batch: Sequence[Envelope]) -> list[Envelope]:
        if not batch:
            return []
        ids = list(dict.fromkeys(env.event.event_id for env in batch))
        results = self._stored(ids)
        todo: dict[str, Envelope] = {}
        for env in batch:
            if env.event.event_id not in results:
                todo.setdefault(env.event.event_id, env)
        if todo:
            fresh = self._compute(list(todo.values()))
            results.update(self._persist(todo, fresh))
        return [replace(env, avatar=results[env.event.event_id]) for env in batch]

    # -- computing ---------------------------------------------------------------------------

    def _prepare(self, url: str) -> Prepared:
        """Fetch, decode and locate the face of one avatar (runs in the pool; I/O, then CPU)."""
        fetched, decoded, fetch_s, decode_s = read_avatar(
            self._fetcher, url, self._settings.max_pixels
        )
        AVATAR_STEP_SECONDS.labels(step="fetch").observe(fetch_s)
        AVATAR_STEP_SECONDS.labels(step="decode").observe(decode_s)
        t0 = time.perf_counter()
        try:
            finding = self._locator.locate(decoded.image)
        except cv2.error:
            log.exception("face search failed on a decoded avatar")
            finding = FaceFinding.none()
        face_s = time.perf_counter() - t0
        AVATAR_STEP_SECONDS.labels(step="face").observe(face_s)
        return Prepared(fetched, decoded, fetch_s + decode_s + face_s, finding)

    def _compute(self, envelopes: list[Envelope]) -> dict[str, AvatarResult]:
        out: dict[str, AvatarResult] = {}
        futures = {}
        for env in envelopes:
            url = env.event.avatar_url
            if not url:
                out[env.event.event_id] = AvatarResult.absent()
                continue
            futures[env.event.event_id] = self._pool.submit(self._prepare, url)
        prepared: dict[str, Prepared] = {}
        for event_id, future in futures.items():
            try:
                prepared[event_id] = future.result()
            except AvatarRefused as refusal:
                count_refusal(refusal)
                log.info("avatar of %s refused: %s", event_id, refusal)
                out[event_id] = AvatarResult.refused(refusal.code)
        items = list(prepared.values())
        cnn, score_s = self._score([p.decoded.image for p in items])
        t0 = time.perf_counter()
        scores = self._detector.fuse(
            cnn,
            [p.finding or FaceFinding.none() for p in items],
            [p.decoded.image.size for p in items],
        )
        score_s += time.perf_counter() - t0
        share = score_s / len(prepared) if prepared else 0.0
        for (event_id, item), score, raw in zip(prepared.items(), scores, cnn, strict=True):
            out[event_id] = self._scored(item, score, raw, share)
            if self._images is not None:
                self._images.put(item.fetched.data)
        return out

    def _score(self, images: list[Image.Image]) -> tuple[list[float], float]:
        """Scores and seconds spent: one ``score_batch`` call per ``batch_size`` images."""
        scores: list[float] = []
        t0 = time.perf_counter()
        size = max(1, self._settings.batch_size)
        for start in range(0, len(images), size):
            chunk = images[start : start + size]
            c0 = time.perf_counter()
            got = self._detector.score_batch(chunk)
            AVATAR_STEP_SECONDS.labels(step="score").observe(time.perf_counter() - c0)
            if len(got) != len(chunk):
                raise RuntimeError(f"detector returned {len(got)} scores for {len(chunk)} images")
            scores.extend(float(s) for s in got)
        return scores, time.perf_counter() - t0

    def _scored(
        self, item: Prepared, score: float, cnn_score: float, score_share_s: float
    ) -> AvatarResult:
        decoded, finding = item.decoded, item.finding or FaceFinding.none()
        t0 = time.perf_counter()
        try:
            hashes = self._hasher(decoded.image, finding.face_box, list(finding.eyes_px) or None)
        except ValueError as error:
            log.warning("hashing failed on a decoded avatar: %s", error)
            hashes = {}
        hash_s = time.perf_counter() - t0
        AVATAR_STEP_SECONDS.labels(step="hash").observe(hash_s)
        AVATAR_SCORE.observe(score)
        box = None
        if finding.face_box is not None:
            box = tuple(round(v * decoded.scale) for v in finding.face_box)
        eyes = tuple((round(x, 5), round(y, 5)) for x, y in finding.eyes)
        offset = eye_offset(finding.eyes)
        return AvatarResult(
            status="scored",
            sha256=hashlib.sha256(item.fetched.data).hexdigest(),
            score=score,
            face_found=finding.face_found,
            face_box=box,  # type: ignore[arg-type]
            eyes=eyes,
            width=decoded.width,
            height=decoded.height,
            model_version=self._detector.model_version,
            hashes=hashes,
            latency_ms=round((item.seconds + score_share_s + hash_s) * 1000.0, 3),
            eye_offset=round(offset, 6) if offset is not None else None,
            cnn_score=cnn_score,
        )

    # -- storage -----------------------------------------------------------------------------

    def _stored(self, event_ids: list[str]) -> dict[str, AvatarResult]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(avatar_results).where(avatar_results.c.event_id.in_(event_ids))
            ).fetchall()
        return {row._mapping["event_id"]: _result_from_row(row) for row in rows}

    def _persist(
        self, envelopes: dict[str, Envelope], results: dict[str, AvatarResult]
    ) -> dict[str, AvatarResult]:
        """Insert the new rows; where another worker stored one first, return the stored one."""
        now = datetime.now(UTC)
        rows = [
            _row(event_id, env.event.account_id, results[event_id], now)
            for event_id, env in envelopes.items()
        ]
        with self._engine.begin() as conn:
            inserted = insert_ignore(conn, avatar_results, rows, ["event_id"])
        if inserted != len(rows):
            results = {**results, **self._stored(list(envelopes))}
        return results
