"""Pure rules of human review: roles, outcomes, labels and the decisions reviewers produce.

No I/O here: the SQL queue, the HTTP app and the Kafka outbox call these functions, so the
rules (who may claim what, which labels an outcome implies, what a reviewer decision looks
like on the wire) are tested without a database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pipeline.types import Action, Decision

Role = Literal["reviewer", "lead", "admin"]
Outcome = Literal["disable", "clear", "escalate"]

ROLES: tuple[Role, ...] = ("reviewer", "lead", "admin")
ROLE_RANK: dict[str, int] = {"reviewer": 0, "lead": 1, "admin": 2}
OUTCOMES: tuple[Outcome, ...] = ("disable", "clear", "escalate")
ACTION_OF: dict[str, Action] = {"disable": "disable", "clear": "allow"}
ESCALATED_QUEUE = "escalated"
"""Pseudo-queue of items escalated to leads (review_items.escalation_level >= 1)."""

AVATAR_LABELS = ("ai", "real", "unsure")
PHOTO_LABELS = ("stolen", "original", "unsure")
AI_SCORE_HINT = 0.5
"""Avatar score at or above which the decision form suggests "ai" as the avatar label."""


class ReviewError(Exception):
    """A refused review action; ``status`` is the HTTP status the API answers with."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ReviewError):
    status = 404


class Forbidden(ReviewError):
    status = 403


class Conflict(ReviewError):
    status = 409


@dataclass(frozen=True)
class Reviewer:
    """A signed-in person; ``role`` decides which queues and actions are open to them."""

    id: int
    username: str
    role: str
    time_zone: str = "UTC"

    @property
    def rank(self) -> int:
        return ROLE_RANK.get(self.role, -1)


def check_role(role: str) -> Role:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    return role


def can_claim(reviewer: Reviewer, queue: str) -> bool:
    """Everyone works the ordinary queues; only leads and admins work escalations."""
    if queue == ESCALATED_QUEUE:
        return reviewer.rank >= ROLE_RANK["lead"]
    return reviewer.rank >= 0


def can_escalate(escalation_level: int) -> bool:
    """Escalation goes one level up, to the leads; an escalated item is decided there."""
    return escalation_level < 1


def suggested_labels(evidence: Mapping[str, Any]) -> tuple[str, str]:
    """(avatar label, photo label) the form preselects from what the pipeline saw."""
    avatar = evidence.get("avatar") or {}
    score = avatar.get("score")
    avatar_label = "unsure"
    if isinstance(score, int | float):
        avatar_label = "ai" if score >= AI_SCORE_HINT else "real"
    photo_label = "stolen" if evidence.get("matches") else "original"
    return avatar_label, photo_label


def labels_for(outcome: str, avatar_label: str | None, photo_label: str | None
               ) -> list[tuple[str, str]]:
    """The (kind, value) label rows one account decision yields.

    The account label follows the outcome (disable: fake, clear: genuine); avatar and photo
    labels are what the reviewer stated, and "unsure" (or nothing) yields no row.
    Raises ValueError for an unknown outcome or label.
    """
    if outcome not in ACTION_OF:
        raise ValueError(f"outcome {outcome!r} yields no labels")
    if avatar_label is not None and avatar_label not in AVATAR_LABELS:
        raise ValueError(f"avatar label must be one of {', '.join(AVATAR_LABELS)}")
    if photo_label is not None and photo_label not in PHOTO_LABELS:
        raise ValueError(f"photo label must be one of {', '.join(PHOTO_LABELS)}")
    rows = [("account", "fake" if outcome == "disable" else "genuine")]
    if avatar_label and avatar_label != "unsure":
        rows.append(("avatar", avatar_label))
    if photo_label and photo_label != "unsure":
        rows.append(("photo", photo_label))
    return rows


def reviewer_decision_id(item_ref: str, audit_id: int, account_id: str | None = None) -> str:
    """Unique id of a reviewer decision: ``rev:<item>:<audit id>`` (``:<account>`` in bulk)."""
    base = f"rev:{item_ref}:{audit_id}"
    return f"{base}:{account_id}" if account_id is not None else base


def reviewer_decision(*, decision_id: str, event_id: str, account_id: str, decided_at: datetime,
                      outcome: str, reviewer: Reviewer, note: str, policy_version: str,
                      pipeline_score: float | None, priority: int,
                      extra: Mapping[str, Any] | None = None) -> Decision:
    """The enforcement decision (source "reviewer") that a human outcome produces."""
    if outcome not in ACTION_OF:
        raise ValueError(f"outcome {outcome!r} is not a decision")
    score = 1.0 if outcome == "disable" else 0.0
    evidence: dict[str, Any] = {
        "reviewer": reviewer.username, "reviewer_role": reviewer.role, "outcome": outcome,
        "note": note, "pipeline_score": pipeline_score, **(extra or {}),
    }
    return Decision(
        decision_id=decision_id, event_id=event_id, account_id=account_id,
        decided_at=decided_at, action=ACTION_OF[outcome], score=score,
        priority=max(0, min(100, priority)), reasons=(f"reviewer_{outcome}",),
        policy_version=policy_version, source="reviewer", evidence=evidence,
    )


def clean_note(note: str | None, limit: int = 2000) -> str:
    """A reviewer's note, stripped and capped at ``limit`` characters."""
    return (note or "").strip()[:limit]
