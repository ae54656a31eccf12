"""What reviewers do, as transactions: claim, release, escalate, decide, bulk-decide a cluster.

Each action commits in one transaction with its audit row and its feedback: the reviewer's
enforcement decisions (``decisions`` rows with ``source='reviewer'`` and ``published_at`` NULL,
the outbox that ``pipeline.review.outbox`` sends to Kafka), the label rows for retraining, and
the accounts' last action. Confirmed stolen photos go to the dedupe bank right after the commit
(``pipeline.dedupe.store.add_bank_hashes``, idempotent on the photo's sha256).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping

from pipeline import metrics
from pipeline.review import audit
from pipeline.review import queue as q
from pipeline.review.model import (
    ACTION_OF,
    ROLE_RANK,
    Conflict,
    Forbidden,
    NotFound,
    Reviewer,
    ReviewError,
    can_claim,
    can_escalate,
    clean_note,
    labels_for,
    reviewer_decision,
    reviewer_decision_id,
)
from pipeline.settings import Settings
from pipeline.store.review_tables import review_labels
from pipeline.store.tables import accounts, decisions, review_items

log = logging.getLogger(__name__)
MAX_BULK_ACCOUNTS = 5000
"""Largest cluster a bulk decision covers in one transaction."""


@dataclass(frozen=True)
class DecideResult:
    item_id: int | None
    outcome: str
    decision_ids: tuple[str, ...] = ()
    closed_items: tuple[int, ...] = ()
    labels: int = 0
    bank_entries: tuple[str, ...] = field(default_factory=tuple)


class ReviewService:
    """Reviewer actions over an Engine; every method is blocking and commits on its own.

    Refusals raise ``ReviewError`` subclasses (NotFound, Forbidden, Conflict) carrying the HTTP
    status; database failures propagate and nothing is committed.
    """

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.lease_seconds = settings.review.lease_seconds

    # Queue -------------------------------------------------------------------------------
    def claim(self, reviewer: Reviewer, queue: str) -> int | None:
        """Lease the next item of ``queue``; None when nothing is claimable."""
        if not can_claim(reviewer, queue):
            raise Forbidden(f"queue {queue!r} is for leads")
        with self.engine.begin() as conn:
            return q.claim_next_audited(conn, queue, reviewer, self.lease_seconds)

    def release(self, reviewer: Reviewer, item_id: int) -> None:
        with self.engine.begin() as conn:
            item = q.lock_item(conn, item_id)
            q.release(conn, item, reviewer)
            audit.record(conn, reviewer, "release", item_id=item_id, subject=_subject(item),
                         detail={"queue": item["queue"]})

    def escalate(self, reviewer: Reviewer, item_id: int, note: str | None) -> None:
        with self.engine.begin() as conn:
            item = q.lock_item(conn, item_id)
            q.require_lease(item, reviewer)
            if not can_escalate(item["escalation_level"]):
                raise Conflict("this item is already escalated: decide it")
            q.escalate(conn, item, reviewer)
            audit.record(conn, reviewer, "escalate", item_id=item_id, subject=_subject(item),
                         detail={"queue": item["queue"], "note": clean_note(note),
                                 "to_level": item["escalation_level"] + 1})
        metrics.REVIEW_DECISIONS.labels("escalate", reviewer.role).inc()

    # Decisions -----------------------------------------------------------------------------
    def decide(self, reviewer: Reviewer, item_id: int, outcome: str, note: str | None = None,
               avatar_label: str | None = None, photo_label: str | None = None) -> DecideResult:
        """Decide a claimed item: ``disable`` or ``clear`` (``escalate`` is forwarded).

        A cluster item decides every member account of the cluster at once.
        """
        if outcome == "escalate":
            self.escalate(reviewer, item_id, note)
            return DecideResult(item_id, outcome)
        if outcome not in ACTION_OF:
            raise ReviewError(f"unknown outcome {outcome!r}")
        labels_for(outcome, avatar_label, photo_label)
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            item = q.lock_item(conn, item_id)
            q.require_lease(item, reviewer)
            evidence = dict(item["evidence"] or {})
            subject_account = evidence.get("account_id") or (
                item["subject_id"] if item["subject_type"] == "account" else None)
            if item["subject_type"] == "cluster":
                members = self._members(conn, item["subject_id"], subject_account)
            else:
                members = [item["subject_id"]]
            result = self._decide_accounts(
                conn, reviewer, item, members, subject_account, evidence, outcome,
                clean_note(note), avatar_label, photo_label, now)
        self._after_decision(reviewer, outcome, [item], now)
        return self._bank(reviewer, result, evidence, photo_label)

    def decide_cluster(self, reviewer: Reviewer, cluster_id: str, outcome: str,
                       note: str | None = None) -> DecideResult:
        """Bulk-decide every member account of a cluster without claiming (leads and admins)."""
        if reviewer.rank < ROLE_RANK["lead"]:
            raise Forbidden("bulk decisions without a claimed item are for leads")
        if outcome not in ACTION_OF:
            raise ReviewError(f"bulk outcome must be one of {', '.join(ACTION_OF)}")
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            members = self._members(conn, cluster_id, None)
            if not members:
                raise NotFound(f"cluster {cluster_id!r} has no known accounts")
            item = conn.execute(sa.select(review_items).where(
                review_items.c.open_key == f"cluster:{cluster_id}").with_for_update()
            ).mappings().first()
            evidence = dict(item["evidence"] or {}) if item else {}
            result = self._decide_accounts(conn, reviewer, item, members, None, evidence,
                                           outcome, clean_note(note), None, None, now,
                                           cluster_id=cluster_id)
        self._after_decision(reviewer, outcome, [item] if item else [], now)
        return result

    def _decide_accounts(self, conn: Connection, reviewer: Reviewer, item: RowMapping | None,
                         members: Sequence[str], subject_account: str | None,
                         evidence: dict[str, Any], outcome: str, note: str,
                         avatar_label: str | None, photo_label: str | None, now: datetime,
                         cluster_id: str | None = None) -> DecideResult:
        item_id = int(item["id"]) if item else None
        bulk = len(members) > 1 or (item is not None and item["subject_type"] == "cluster")
        audit_id = audit.record(
            conn, reviewer, "decide_cluster" if bulk else "decide", item_id=item_id,
            subject=_subject(item) if item else f"cluster:{cluster_id}", now=now,
            detail={"outcome": outcome, "note": note, "accounts": list(members[:200]),
                    "account_count": len(members), "avatar_label": avatar_label,
                    "photo_label": photo_label},
        )
        ref = str(item_id) if item_id is not None else f"cluster:{cluster_id}"
        previous = self._pipeline_decisions(conn, members, item)
        policy_version = str(evidence.get("policy_version") or "reviewer")
        decision_ids: list[str] = []
        label_rows: list[dict[str, Any]] = []
        avatars = self._avatars(conn, members)
        for account_id in members:
            did = reviewer_decision_id(ref, audit_id, account_id if bulk else None)
            event_id, score, priority = previous.get(account_id, (f"review:{ref}", None, 50))
            decision = reviewer_decision(
                decision_id=did, event_id=event_id, account_id=account_id, decided_at=now,
                outcome=outcome, reviewer=reviewer, note=note, policy_version=policy_version,
                pipeline_score=score, priority=priority,
                extra={"review_item_id": item_id, "audit_id": audit_id,
                       "cluster_id": cluster_id or (item["subject_id"] if item is not None
                                                    and item["subject_type"] == "cluster"
                                                    else None)},
            )
            conn.execute(decisions.insert().values(
                decision_id=did, event_id=event_id, account_id=account_id, decided_at=now,
                event_time=None, action=decision.action, score=decision.score,
                priority=decision.priority, reasons=list(decision.reasons),
                policy_version=policy_version, source="reviewer", evidence=decision.evidence,
                published_at=None,
            ))
            decision_ids.append(did)
            is_subject = account_id == subject_account
            for kind, value in labels_for(outcome, avatar_label if is_subject else None,
                                          photo_label if is_subject else None):
                label_rows.append(_label_row(kind, value, account_id, avatars.get(account_id),
                                             item_id, did, reviewer, evidence if is_subject
                                             else {}, now))
        if label_rows:
            conn.execute(review_labels.insert(), label_rows)
        conn.execute(accounts.update().where(accounts.c.account_id.in_(list(members)))
                     .values(last_action=ACTION_OF[outcome], updated_at=now))
        by_account = dict(zip(members, decision_ids, strict=True))
        closing: list[tuple[int, str]] = []
        if item is not None:
            closing.append((int(item["id"]), decision_ids[0]))
        if bulk:
            closing += [(int(r["id"]), by_account.get(r["subject_id"], decision_ids[0]))
                        for r in q.open_items_for_accounts(conn, members)
                        if item is None or r["id"] != item["id"]]
        for close_id, did in closing:
            q.close(conn, [close_id], outcome, reviewer, did, now)
        to_close = [c for c, _ in closing]
        return DecideResult(item_id, outcome, tuple(decision_ids), tuple(to_close),
                            len(label_rows))

    def _after_decision(self, reviewer: Reviewer, outcome: str, items: Sequence[RowMapping],
                        now: datetime) -> None:
        metrics.REVIEW_DECISIONS.labels(outcome, reviewer.role).inc()
        for item in items:
            metrics.REVIEW_TIME_TO_DECISION.labels(item["queue"]).observe(
                max(0.0, (now - q.aware(item["created_at"])).total_seconds()))

    def _bank(self, reviewer: Reviewer, result: DecideResult, evidence: dict[str, Any],
              photo_label: str | None) -> DecideResult:
        """Add a confirmed stolen avatar to the dedupe bank (after the decision committed)."""
        avatar = evidence.get("avatar") or {}
        if photo_label != "stolen" or not avatar.get("sha256") or not avatar.get("hashes"):
            return result
        from pipeline.dedupe.store import add_bank_hashes

        origin = f"review item {result.item_id} (account {evidence.get('account_id')})"
        try:
            entry = add_bank_hashes(
                self.engine, self.settings.dedupe.radius, avatar["sha256"], avatar["hashes"],
                label=f"reviewer-confirmed stolen photo (item {result.item_id})",
                added_by=reviewer.username, origin=origin)
        except Exception:
            log.exception("adding the stolen photo of item %s to the bank failed", result.item_id)
            with self.engine.begin() as conn:
                audit.record(conn, reviewer, "bank_add_failed", item_id=result.item_id,
                             subject=f"photo:{avatar['sha256']}")
            return result
        with self.engine.begin() as conn:
            audit.record(conn, reviewer, "bank_add", item_id=result.item_id,
                         subject=f"photo:{avatar['sha256']}",
                         detail={"photo_id": entry.photo_id, "hashes": entry.hashes})
        return DecideResult(result.item_id, result.outcome, result.decision_ids,
                            result.closed_items, result.labels, (entry.photo_id,))

    @staticmethod
    def _members(conn: Connection, cluster_id: str, subject_account: str | None) -> list[str]:
        rows = conn.execute(
            sa.select(accounts.c.account_id).where(accounts.c.cluster_id == cluster_id)
            .order_by(accounts.c.account_id).limit(MAX_BULK_ACCOUNTS)
        ).scalars().all()
        members = list(rows)
        if subject_account and subject_account not in members:
            members.insert(0, subject_account)
        return members

    @staticmethod
    def _pipeline_decisions(conn: Connection, members: Sequence[str], item: RowMapping | None
                            ) -> dict[str, tuple[str, float | None, int]]:
        """Per account: (event id, score, priority) of its latest pipeline decision."""
        d = decisions.c
        out: dict[str, tuple[str, float | None, int]] = {}
        rows = conn.execute(
            sa.select(d.account_id, d.event_id, d.score, d.priority, d.decision_id)
            .where(d.account_id.in_(list(members)), d.source == "pipeline")
            .order_by(d.decided_at)
        )
        preferred = item["decision_id"] if item is not None else None
        pinned: set[str] = set()
        for r in rows:
            if r.account_id in pinned:
                continue
            out[r.account_id] = (r.event_id, r.score, r.priority)
            if r.decision_id == preferred:
                pinned.add(r.account_id)
        return out

    @staticmethod
    def _avatars(conn: Connection, members: Sequence[str]) -> dict[str, str | None]:
        rows = conn.execute(sa.select(accounts.c.account_id, accounts.c.avatar_sha256)
                            .where(accounts.c.account_id.in_(list(members))))
        return {r.account_id: r.avatar_sha256 for r in rows}


def _subject(item: RowMapping) -> str:
    return f"{item['subject_type']}:{item['subject_id']}"


def _label_row(kind: str, value: str, account_id: str, avatar_sha256: str | None,
               item_id: int | None, decision_id: str, reviewer: Reviewer,
               evidence: dict[str, Any], now: datetime) -> dict[str, Any]:
    avatar = evidence.get("avatar") or {}
    detail = {
        "avatar_score": avatar.get("score"), "model_version": avatar.get("model_version"),
        "hashes": avatar.get("hashes") or {}, "face_box": avatar.get("face_box"),
        "matches": evidence.get("matches") or [], "reasons": evidence.get("reasons") or [],
        "policy_version": evidence.get("policy_version"), "reviewer_role": reviewer.role,
    }
    return {
        "created_at": now, "kind": kind, "value": value, "account_id": account_id,
        "avatar_sha256": avatar.get("sha256") or avatar_sha256, "item_id": item_id,
        "decision_id": decision_id, "reviewer": reviewer.username, "detail": detail,
    }
