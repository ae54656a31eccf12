"""Composition root: builds the engine and the stages from one Settings object."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from sqlalchemy.engine import Engine

from pipeline.settings import AGENTS, Settings
from pipeline.stages import Stage
from pipeline.store.db import make_engine


def build_engine(settings: Settings) -> Engine:
    return make_engine(settings.database.url, settings.database.pool_size)


def detector_threshold(model_path: Path | None) -> float:
    """The calibrated threshold of the detector a worker would load from ``model_path``
    (``avatars.model_path``), read from its manifest without starting an ONNX session."""
    from pipeline.avatars.manifest import choose, locate

    return choose(*locate(model_path)).threshold


def build_stages(
    settings: Settings, engine: Engine, agents: Collection[str] = AGENTS
) -> list[Stage]:
    """The stages of ``agents`` in the order an event walks them: avatar, dedupe, signals,
    decide (a worker of one pool builds only its own; ``validate`` has no stage)."""
    stages: list[Stage] = []
    threshold: float | None = None
    if "avatar" in agents:
        from pipeline.avatars.detector import open_detector, set_opencv_threads
        from pipeline.avatars.stage import AvatarStage
        from pipeline.store.images import ImageStore

        set_opencv_threads(settings.avatars.opencv_threads)
        avatar = AvatarStage(
            engine,
            settings,
            open_detector(settings.avatars),
            images=ImageStore(settings.review.image_dir),
        )
        threshold = avatar.detector.threshold
        stages.append(avatar)
    if "dedupe" in agents:
        from pipeline.dedupe.stage import DedupeStage

        stages.append(DedupeStage(engine, settings))
    if "signals" in agents:
        from pipeline.signals.stage import SignalStage

        stages.append(SignalStage(engine, settings))
    if "decide" in agents:
        from pipeline.decide.stage import DecideStage

        if threshold is None:
            threshold = detector_threshold(settings.avatars.model_path)
        stages.append(DecideStage(engine, settings, ai_threshold=threshold))
    return stages
