"""The dedupe stage: near-duplicate lookup of each scored avatar, then storing its hashes.

For each envelope with a scored avatar and hashes, the avatar is first stored in the index
(once per ``event_id``: the photo row is keyed by it) and committed, then looked up against the
bank and every other account's stored avatars. Writing before reading is what keeps concurrent
workers correct: of two accounts that post the same photo at the same moment, the one whose
lookup runs second always sees the other's committed row, so no match is lost. A redelivered
event writes nothing and reads again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from sqlalchemy.engine import Engine

from pipeline.dedupe.matching import MatchRule, keypoints_of
from pipeline.dedupe.store import find_matches, store_account_photo
from pipeline.metrics import PHOTO_MATCHES
from pipeline.settings import Settings
from pipeline.types import Envelope


def match_rule(settings: Settings) -> MatchRule:
    """The matching rule configured in ``settings.dedupe``."""
    d = settings.dedupe
    return MatchRule(radius=d.radius, verified_radius=d.verified_radius, pdq_radius=d.pdq_radius,
                     candidate_radius=d.candidate_radius, min_inliers=d.min_inliers,
                     min_ncc=d.min_ncc, window_radius=d.window_radius,
                     max_verifications=d.max_verifications)


class DedupeStage:
    """``Stage`` "dedupe": sets ``envelope.matches`` (``()`` when there is no scored avatar).

    Blocking; idempotent on ``event_id``; database failures raise (the writes of the batch are
    one transaction, so nothing of a failed batch is half-stored).
    """

    name = "dedupe"

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.radius = settings.dedupe.radius
        self.rule = match_rule(settings)

    def process(self, batch: Sequence[Envelope]) -> list[Envelope]:
        todo = [
            i for i, env in enumerate(batch)
            if env.avatar is not None and env.avatar.status == "scored" and env.avatar.hashes
        ]
        new: set[int] = set()
        keypoints: dict[int, bytes | None] = {}
        with self.engine.begin() as conn:
            for i in todo:
                env = batch[i]
                assert env.avatar is not None
                keypoints[i] = keypoints_of(env.avatar.hashes)
                if store_account_photo(conn, self.radius, env.event.account_id,
                                       env.event.event_id, env.avatar.sha256, env.avatar.hashes,
                                       keypoints[i]):
                    new.add(i)
        out = [dataclasses.replace(env, matches=()) for env in batch]
        with self.engine.connect() as conn:
            for i in todo:
                env = batch[i]
                assert env.avatar is not None
                matches = find_matches(conn, self.radius, env.avatar.hashes, env.avatar.sha256,
                                       exclude_account=env.event.account_id, rule=self.rule,
                                       keypoints=keypoints[i])
                for m in matches if i in new else ():
                    PHOTO_MATCHES.labels(source=m.source).inc()
                out[i] = dataclasses.replace(env, matches=matches)
        return out
