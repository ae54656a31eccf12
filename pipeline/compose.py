"""Composition root: builds the engine and the stages from one Settings object."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from pipeline.settings import Settings
from pipeline.stages import Stage
from pipeline.store.db import make_engine


def build_engine(settings: Settings) -> Engine:
    return make_engine(settings.database.url, settings.database.pool_size)


def build_stages(settings: Settings, engine: Engine) -> list[Stage]:
    """The stages in the order an event walks them: avatar, dedupe, signals, decide."""
    from pipeline.avatars.stage import AvatarStage
    from pipeline.decide.stage import DecideStage
    from pipeline.dedupe.stage import DedupeStage
    from pipeline.signals.stage import SignalStage
    from pipeline.store.images import ImageStore

    avatar = AvatarStage(engine, settings, images=ImageStore(settings.review.image_dir))
    return [
        avatar,
        DedupeStage(engine, settings),
        SignalStage(engine, settings),
        DecideStage(engine, settings, ai_threshold=avatar.detector.threshold),
    ]
