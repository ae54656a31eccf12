"""Values that travel between stages.

Plain frozen dataclasses with JSON round-trips, so stages stay pure and tests compare
values. Each stage returns these rather than sending them anywhere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Action = Literal["allow", "review", "challenge", "disable"]
Transform = Literal["plain", "mirror", "exact"]


def _fields_of(value: Any) -> dict[str, Any]:
    """Every field of a dataclass instance by name, values as they are: what
    ``dataclasses.asdict`` gives for fields holding scalars and tuples of scalars, without its
    recursive copy (5-10x cheaper; the decide stage serialises every event's values). Callers
    copy the mutable fields they hand out."""
    names = _FIELD_NAMES.get(type(value))
    if names is None:
        names = _FIELD_NAMES[type(value)] = tuple(f.name for f in dataclasses.fields(value))
    return {name: getattr(value, name) for name in names}


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


@dataclass(frozen=True)
class AccountEvent:
    """A validated account event (account.created.v1 or profile.updated.v1).

    For ``profile.updated.v1`` fields that did not change are ``None``.
    """

    event_type: str
    event_id: str
    occurred_at: datetime
    account_id: str
    display_name: str | None = None
    username: str | None = None
    email_domain: str | None = None
    signup_ip: str | None = None
    device_id: str | None = None
    country: str | None = None
    avatar_url: str | None = None
    bio: str | None = None
    links: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = _fields_of(self)
        out["occurred_at"] = self.occurred_at.isoformat()
        out["links"] = list(self.links) if self.links is not None else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AccountEvent:
        values = dict(data)
        values["occurred_at"] = datetime.fromisoformat(values["occurred_at"])
        if values.get("links") is not None:
            values["links"] = tuple(values["links"])
        return cls(**values)


@dataclass(frozen=True)
class AvatarResult:
    """What the avatar stage learned about one profile picture.

    ``status`` is ``scored`` (decoded and scored), ``absent`` (no avatar in the event) or
    ``refused`` (fetch or decode refused; ``error_code`` says why).
    """

    status: Literal["scored", "absent", "refused"]
    error_code: str | None = None
    sha256: str | None = None
    score: float | None = None
    face_found: bool | None = None
    face_box: tuple[int, int, int, int] | None = None
    eyes: tuple[tuple[float, float], ...] | None = None
    width: int | None = None
    height: int | None = None
    model_version: str | None = None
    hashes: dict[str, str] = field(default_factory=dict)
    latency_ms: float | None = None
    eye_offset: float | None = None
    """Distance of the eyes from the FFHQ/StyleGAN eye spot, fraction of the side (None: no eyes).

    ``eyes`` are eye centres as fractions of width and height; ``face_box`` is in pixels of
    the picture as declared by the file (``width`` x ``height``).
    """
    cnn_score: float | None = field(default=None, compare=False)
    """The CNN's own probability before fusion with the face geometry (``score`` is the fused,
    shipped one). Diagnostic only: not stored in ``avatar_results`` (None on a result read back
    from storage) and not part of equality, so a redelivered result equals the first one."""

    @classmethod
    def absent(cls) -> AvatarResult:
        return cls(status="absent")

    @classmethod
    def refused(cls, code: str) -> AvatarResult:
        return cls(status="refused", error_code=code)

    def to_dict(self) -> dict[str, Any]:
        out = _fields_of(self)
        out["hashes"] = dict(self.hashes)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AvatarResult:
        values = dict(data)
        if values.get("face_box") is not None:
            values["face_box"] = tuple(values["face_box"])
        if values.get("eyes") is not None:
            values["eyes"] = tuple(tuple(e) for e in values["eyes"])
        return cls(**values)


@dataclass(frozen=True)
class PhotoMatch:
    """A stored photo that is a near-duplicate of the avatar being processed."""

    source: Literal["bank", "account"]
    entry_id: str
    distance: int
    transform: Literal["plain", "mirror", "exact"]
    hash_kind: str
    label: str | None = None
    account_id: str | None = None

    @classmethod
    def from_bank(
        cls, entry_id: str, label: str, distance: int, transform: Transform, hash_kind: str
    ) -> PhotoMatch:
        return cls("bank", entry_id, distance, transform, hash_kind, label=label)

    @classmethod
    def from_account(
        cls, account_id: str, distance: int, transform: Transform, hash_kind: str
    ) -> PhotoMatch:
        return cls(
            "account",
            f"account:{account_id}",
            distance,
            transform,
            hash_kind,
            account_id=account_id,
        )

    def to_dict(self) -> dict[str, Any]:
        return _fields_of(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PhotoMatch:
        return cls(**data)


@dataclass(frozen=True)
class ClusterSignal:
    """The cluster an account belongs to after its event, with what binds it."""

    cluster_id: str | None
    cluster_score: float
    size: int
    binding_features: tuple[dict[str, Any], ...] = ()
    account_evidence: tuple[dict[str, Any], ...] = ()

    @classmethod
    def none(cls) -> ClusterSignal:
        return cls(cluster_id=None, cluster_score=0.0, size=1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cluster_id": self.cluster_id,
            "cluster_score": self.cluster_score,
            "size": self.size,
            "binding_features": list(self.binding_features),
            "account_evidence": list(self.account_evidence),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClusterSignal:
        values = dict(data)
        values["binding_features"] = tuple(values.get("binding_features") or ())
        values["account_evidence"] = tuple(values.get("account_evidence") or ())
        return cls(**values)


@dataclass(frozen=True)
class Decision:
    """An enforcement decision (enforcement.decision.v1)."""

    decision_id: str
    event_id: str
    account_id: str
    decided_at: datetime
    action: Action
    score: float
    priority: int
    reasons: tuple[str, ...]
    policy_version: str
    source: Literal["pipeline", "reviewer"] = "pipeline"
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision_type": "enforcement.decision.v1",
            "decision_id": self.decision_id,
            "event_id": self.event_id,
            "account_id": self.account_id,
            "decided_at": self.decided_at.isoformat(),
            "action": self.action,
            "score": self.score,
            "priority": self.priority,
            "reasons": list(self.reasons),
            "policy_version": self.policy_version,
            "source": self.source,
            "evidence": self.evidence,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decision:
        values = {k: v for k, v in data.items() if k != "decision_type"}
        values["decided_at"] = datetime.fromisoformat(values["decided_at"])
        values["reasons"] = tuple(values["reasons"])
        return cls(**values)

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Decision:
        """A stored ``decisions`` row (SQLite returns naive timestamps: they are UTC)."""
        decided_at = row["decided_at"]
        if decided_at.tzinfo is None:
            decided_at = decided_at.replace(tzinfo=UTC)
        return cls(
            decision_id=row["decision_id"], event_id=row["event_id"],
            account_id=row["account_id"], decided_at=decided_at, action=row["action"],
            score=row["score"], priority=row["priority"], reasons=tuple(row["reasons"]),
            policy_version=row["policy_version"], source=row["source"],
            evidence=row["evidence"],
        )


@dataclass(frozen=True)
class Envelope:
    """One event on its way through the stages, carrying each stage's output so far."""

    event: AccountEvent
    avatar: AvatarResult | None = None
    matches: tuple[PhotoMatch, ...] | None = None
    cluster: ClusterSignal | None = None
    decision: Decision | None = None
    decision_is_new: bool = False
    """False when the decision was already stored (a redelivery) and must not be re-counted."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": self.event.to_dict(),
            "avatar": self.avatar.to_dict() if self.avatar else None,
            "matches": [m.to_dict() for m in self.matches] if self.matches is not None else None,
            "cluster": self.cluster.to_dict() if self.cluster else None,
            "decision": self.decision.to_dict() if self.decision else None,
            "decision_is_new": self.decision_is_new,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Envelope:
        return cls(
            event=AccountEvent.from_dict(data["event"]),
            avatar=AvatarResult.from_dict(data["avatar"]) if data.get("avatar") else None,
            matches=(
                tuple(PhotoMatch.from_dict(m) for m in data["matches"])
                if data.get("matches") is not None
                else None
            ),
            cluster=ClusterSignal.from_dict(data["cluster"]) if data.get("cluster") else None,
            decision=Decision.from_dict(data["decision"]) if data.get("decision") else None,
            decision_is_new=bool(data.get("decision_is_new", False)),
        )
