"""The reconcile job: rebuild the cluster state from order-independent facts, then fix decisions.

The streaming stage clusters incrementally, so its partition depends on the order partitions were
consumed in (docs/scaling.md). :func:`reconcile` recomputes the partition of every stored account
from what every order leaves identical (account features and flags, final window counters, stored
photo matches; ``pipeline.signals.partition``), rewrites the cluster tables with deterministic ids
(``cl-`` + hash of the smallest member, as the stage names new clusters) and the stage's own
scoring, and then, for every account whose latest decision the reconciled cluster signal changes,
stores a revised decision (the policy applied to the latest decision's signals with the
reconciled cluster score and size) and makes the open review units match: one per cluster or
account that the latest verdicts send to a queue. Everything happens in one transaction that
holds the cluster lock exclusively (``pipeline.signals.locks``). Running it twice in a row
changes nothing the second time.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipeline import metrics
from pipeline.decide.policy import Policy, load_policy
from pipeline.settings import Settings
from pipeline.signals import repository as repo
from pipeline.signals.locks import own_clusters, try_runner
from pipeline.signals.partition import (
    Holding,
    LinkRule,
    burst_members,
    components,
    links,
    pair_evidence,
    weighing_times,
)
from pipeline.signals.score import concentrated, rarity_weight
from pipeline.signals.stage import MAX_EVIDENCE, POPULATION, SignalStage, _cluster_id
from pipeline.signals.windows import width_for, window_range
from pipeline.store.db import insert_ignore
from pipeline.store.signal_tables import (
    signal_account_features,
    signal_accounts,
    signal_cluster_features,
    signal_clusters,
    signal_suspect_counts,
)
from pipeline.store.tables import accounts, decisions, review_items
from pipeline.types import ClusterSignal, Decision

REVISION_PREFIX = "rev:"
"""Decision ids of revised decisions start with this (``rev:<hash>``)."""
SUPERSEDED = "superseded"
"""Status of a pending review unit closed by a reconcile (its subject no longer needs review)."""
_CHUNK = 2000
_AFTER = timedelta(microseconds=1)
"""A revision is decided after the decision it revises even when that one was committed by a
decide batch later than this run's clock reading (the decide stage takes no cluster lock)."""


@dataclass
class ReconcileReport:
    """What one reconcile did."""

    ran: bool
    accounts: int = 0
    clusters: int = 0
    clusters_changed: int = 0
    accounts_moved: int = 0
    revised: list[Decision] = field(default_factory=list)
    review_opened: int = 0
    review_updated: int = 0
    review_closed: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "ran": self.ran,
            "accounts": self.accounts,
            "clusters": self.clusters,
            "clusters_changed": self.clusters_changed,
            "accounts_moved": self.accounts_moved,
            "decisions_revised": len(self.revised),
            "review_opened": self.review_opened,
            "review_updated": self.review_updated,
            "review_closed": self.review_closed,
            "seconds": round(self.seconds, 3),
        }


def reconcile(
    engine: Engine,
    settings: Settings,
    policy: Policy | None = None,
    only_if_free: bool = False,
    now: datetime | None = None,
) -> ReconcileReport:
    """Re-cluster every stored account and apply the effects, in one transaction.

    With ``only_if_free`` (the workers' timer) it returns ``ran=False`` at once when another
    session is already reconciling. Blocks until the signals batches in flight commit; signals
    batches started meanwhile wait for it. Database errors propagate (nothing is committed).
    """
    started = time.monotonic()
    policy = policy or load_policy(settings.decide.policy_path)
    now = now or datetime.now(UTC)
    with engine.begin() as conn:
        if only_if_free and not try_runner(conn):
            return ReconcileReport(ran=False)
        own_clusters(conn)
        report = _Reconcile(conn, engine, settings, policy, now).run()
    report.seconds = time.monotonic() - started
    metrics.RECLUSTER_SECONDS.observe(report.seconds)
    metrics.RECLUSTER_CLUSTERS_CHANGED.inc(report.clusters_changed)
    metrics.RECLUSTER_DECISIONS_REVISED.inc(len(report.revised))
    return report


def unpublished_revisions(engine: Engine, limit: int = 5000) -> list[Decision]:
    """Revised decisions not yet marked published (a crash between store and publish leaves
    some; the workers' timer sends them on its next round)."""
    d = decisions
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(d)
            .where(d.c.decision_id.like(REVISION_PREFIX + "%"), d.c.published_at.is_(None))
            .order_by(d.c.decided_at, d.c.decision_id)
            .limit(limit)
        ).mappings()
        return [Decision.from_row(r) for r in rows]


def mark_published(engine: Engine, decision_ids: Sequence[str]) -> None:
    """Record that these revised decisions reached the decisions topic."""
    if not decision_ids:
        return
    with engine.begin() as conn:
        conn.execute(
            decisions.update()
            .where(decisions.c.decision_id.in_(list(decision_ids)))
            .where(decisions.c.published_at.is_(None))
            .values(published_at=datetime.now(UTC))
        )


def _utc(ts: datetime | None) -> datetime | None:
    if ts is not None and ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    return ts


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


class _Reconcile:
    def __init__(
        self, conn: Connection, engine: Engine, settings: Settings, policy: Policy, now: datetime
    ) -> None:
        self.conn = conn
        self.settings = settings
        self.policy = policy
        self.now = now
        cfg = settings.signals
        self.long_h = max(cfg.windows_hours)
        self.fine_w = int(cfg.bucket_minutes * 60)
        self.long_w = width_for(self.long_h, self.fine_w)
        self.rule = LinkRule(
            link_threshold=cfg.link_threshold,
            avatar_pair_bonus=cfg.avatar_pair_bonus,
            max_partners=cfg.max_partners,
            long_window_s=int(self.long_h * 3600),
            burst_s=int(cfg.burst_minutes * 60),
            bonus_min_suspect_share=cfg.bonus_min_suspect_share,
        )
        self.stage = SignalStage(engine, settings)
        self.counts: dict[tuple[int, int], dict[tuple[str, str], int]] = {}
        self.suspects: dict[tuple[int, int], dict[tuple[str, str], int]] = {}

    # -- window counts -------------------------------------------------------------------------

    def _window(self, t: int) -> tuple[int, int]:
        """The stage's long window (same first bucket), ending at the fine bucket holding ``t``
        instead of at whatever is stored: read at the fine width, it counts what an in-order
        stream had counted when it reached ``t`` (a day-bucket end would count up to a day of
        later sign-ups and weigh values lighter than any stream did)."""
        first, _last = window_range(datetime.fromtimestamp(t, UTC), self.long_h, self.long_w)
        return first, t - t % self.fine_w

    def _load_counts(self, needs: dict[tuple[str, str], set[int]]) -> None:
        """Read, through the stage's repository, the final counts of each value over every
        window it will be weighed in (one query per distinct window), and its suspect counts
        when the avatar-pair bonus depends on them."""
        by_window: dict[tuple[int, int], set[tuple[str, str]]] = defaultdict(set)
        for key, times in needs.items():
            for t in times:
                window = self._window(t)
                if key not in self.counts.get(window, {}):
                    by_window[window].add(key)
        for (first, last), keys in sorted(by_window.items()):
            got = repo.read_counts(self.conn, keys | {POPULATION}, self.fine_w, first, last)
            into = self.counts.setdefault((first, last), {})
            into.update({k: got.get(k, 1) for k in keys | {POPULATION}})
            if self.rule.bonus_min_suspect_share > 0:
                sus = repo.read_counts(
                    self.conn, keys, self.fine_w, first, last, signal_suspect_counts
                )
                self.suspects.setdefault((first, last), {}).update(
                    {k: sus.get(k, 0) for k in keys}
                )

    def weight_at(self, key: tuple[str, str], t: int) -> tuple[float, int]:
        window = self.counts[self._window(t)]
        n = window.get(key, 1)
        return rarity_weight(key[0], n, window.get(POPULATION, 1)), n

    def concentrated_at(self, key: tuple[str, str], t: int) -> bool:
        window = self._window(t)
        return concentrated(
            self.suspects[window].get(key, 0),
            self.counts[window].get(key, 1),
            self.rule.bonus_min_suspect_share,
        )

    # -- the run -------------------------------------------------------------------------------

    def run(self) -> ReconcileReport:
        conn = self.conn
        sa_rows = conn.execute(
            sa.select(
                signal_accounts.c.account_id,
                signal_accounts.c.created_s,
                signal_accounts.c.ai_face,
                signal_accounts.c.reused_photo,
                signal_accounts.c.burst,
                signal_accounts.c.cluster_id,
            )
        ).all()
        known = {r.account_id: r for r in sa_rows}
        f = signal_account_features
        holdings = [
            Holding(r.account_id, r.kind, r.value, r.label, int(r.seen_s))
            for r in conn.execute(sa.select(f.c.account_id, f.c.kind, f.c.value, f.c.label,
                                            f.c.seen_s))
            if r.account_id in known
        ]
        self._load_counts(weighing_times(holdings))
        photo = self._photo_pairs(known)
        evidence = pair_evidence(
            holdings,
            self.weight_at,
            self.rule,
            photo,
            self.concentrated_at if self.rule.bonus_min_suspect_share > 0 else None,
        )

        def suspect(a: str) -> bool:
            row = known.get(a)
            return row is not None and bool(row.ai_face or row.reused_photo)

        linked = links(evidence, suspect, self.rule)
        groups = components(linked)
        cluster_of = {a: _cluster_id(min(g)) for g in groups for a in g}
        created = {a: int(r.created_s) for a, r in known.items()}
        burst = burst_members(linked, created, self.rule.burst_s)

        old_groups: dict[str, set[str]] = defaultdict(set)
        for a, r in known.items():
            if r.cluster_id:
                old_groups[r.cluster_id].add(a)
        old = {frozenset(g) for g in old_groups.values()}
        new = {frozenset(g) for g in groups}
        report = ReconcileReport(ran=True, accounts=len(known), clusters=len(groups))
        report.clusters_changed = len(new - old) + len(old - new)

        moved = [
            {"a": a, "c": cluster_of.get(a), "b": a in burst}
            for a, r in sorted(known.items())
            if r.cluster_id != cluster_of.get(a) or bool(r.burst) != (a in burst)
        ]
        report.accounts_moved = sum(
            1 for m in moved if known[str(m["a"])].cluster_id != m["c"]
        )
        clusters = self._write_clusters(known, holdings, groups, cluster_of, burst, moved)
        self._effects(known, cluster_of, clusters, linked, report)
        return report

    def _photo_pairs(self, known: dict[str, Any]) -> set[tuple[str, str]]:
        """Reused-photo pairs between stored accounts, from the matches recorded with the
        decisions of accounts flagged ``reused_photo`` (either direction links the pair)."""
        reused = sorted(a for a, r in known.items() if r.reused_photo)
        pairs: set[tuple[str, str]] = set()
        for part in _chunks(reused):
            rows = self.conn.execute(
                sa.select(decisions.c.account_id, decisions.c.evidence).where(
                    decisions.c.account_id.in_(list(part))
                )
            )
            for account_id, evidence in rows:
                for m in (evidence or {}).get("matches") or ():
                    other = m.get("account_id")
                    ok = m.get("source") == "account" and other and other != account_id
                    if ok and other in known:
                        pairs.add((min(account_id, other), max(account_id, other)))
        return pairs

    # -- cluster tables ------------------------------------------------------------------------

    def _write_clusters(
        self,
        known: dict[str, Any],
        holdings: list[Holding],
        groups: list[set[str]],
        cluster_of: dict[str, str],
        burst: set[str],
        moved: list[dict[str, Any]],
    ) -> dict[str, dict[str, Any]]:
        conn = self.conn
        t = signal_accounts
        if moved:
            conn.execute(
                t.update()
                .where(t.c.account_id == sa.bindparam("a"))
                .values(cluster_id=sa.bindparam("c"), burst=sa.bindparam("b")),
                moved,
            )
        conn.execute(signal_cluster_features.delete())
        conn.execute(signal_clusters.delete())
        if not groups:
            return {}

        features: dict[tuple[str, str, str], tuple[str, int]] = {}
        last_s: dict[str, int] = {}
        for h in holdings:
            cid = cluster_of.get(h.account_id)
            if cid is None:
                continue
            key = (cid, h.kind, h.value)
            label, n = features.get(key, (h.label, 0))
            features[key] = (min(label, h.label), n + 1)
            last_s[cid] = max(last_s.get(cid, 0), h.seen_s)
        repo.add_cluster_features(conn, features)

        counters: dict[str, dict[str, int]] = {}
        created_s: dict[str, int] = {}
        for g in groups:
            cid = cluster_of[min(g)]
            rows = [known[a] for a in g]
            counters[cid] = {
                "size": len(g),
                "ai_faces": sum(bool(r.ai_face) for r in rows),
                "reused_photos": sum(bool(r.reused_photo) for r in rows),
                "burst_members": sum(a in burst for a in g),
            }
            created_s[cid] = min(int(r.created_s) for r in rows)
            last_s[cid] = max(last_s.get(cid, 0), max(int(r.created_s) for r in rows))

        binding_keys: dict[str, set[tuple[str, str]]] = defaultdict(set)
        needs: dict[tuple[str, str], set[int]] = defaultdict(set)
        for (cid, kind, value), (_label, n) in features.items():
            if n >= 2:
                binding_keys[cid].add((kind, value))
                needs[(kind, value)].add(last_s[cid])
        self._load_counts(needs)

        by_window: dict[tuple[int, int], list[str]] = defaultdict(list)
        for cid in sorted(counters):
            by_window[self._window(last_s[cid])].append(cid)
        out: dict[str, dict[str, Any]] = {}
        for _window, ids in sorted(by_window.items()):
            t_end = max(last_s[c] for c in ids)
            weights = {
                k: self.weight_at(k, last_s[c])[0] for c in ids for k in binding_keys[c]
            }
            out.update(
                self.stage._rescore(conn, ids, counters, created_s, t_end, weights)
            )
        return out

    # -- decisions and review units ------------------------------------------------------------

    def _latest(self, account_ids: Sequence[str]) -> dict[str, Any]:
        """Each account's latest decision (by its event's time, then decision time), with
        ``overtaken`` set when an older decision of the account was published after it (a
        revision of an earlier event published while the later event's decision was in
        flight): the topic's last record for the account is then not its latest decision."""
        best: dict[str, Any] = {}
        published: dict[str, datetime] = {}
        for part in _chunks(sorted(account_ids)):
            rows = self.conn.execute(
                sa.select(decisions).where(decisions.c.account_id.in_(list(part)))
            ).mappings()
            for r in rows:
                account = r["account_id"]
                decided = _utc(r["decided_at"])
                order = (_utc(r["event_time"]) or decided, decided, r["decision_id"])
                cur = best.get(account)
                if cur is None or order > cur[0]:
                    best[account] = (order, dict(r))
                sent = _utc(r["published_at"])
                if sent is not None and (account not in published or sent > published[account]):
                    published[account] = sent
        out = {}
        for account, (_o, row) in best.items():
            sent = _utc(row["published_at"])
            row["overtaken"] = sent is not None and published[account] > sent
            out[account] = row
        return out

    def _effects(
        self,
        known: dict[str, Any],
        cluster_of: dict[str, str],
        clusters: dict[str, dict[str, Any]],
        linked: dict[tuple[str, str], tuple[float, list[str]]],
        report: ReconcileReport,
    ) -> None:
        conn = self.conn
        per_account: dict[str, list[tuple[str, float, list[str]]]] = defaultdict(list)
        for (a, b), (x, shared) in linked.items():
            per_account[a].append((b, x, shared))
            per_account[b].append((a, x, shared))
        latest = self._latest(list(known))
        revised: list[dict[str, Any]] = []
        units: dict[str, dict[str, Any]] = {}
        account_updates: list[dict[str, Any]] = []
        current_accounts = {
            r.account_id: r
            for part in _chunks(sorted(known))
            for r in conn.execute(
                sa.select(accounts.c.account_id, accounts.c.cluster_id,
                          accounts.c.last_action, accounts.c.last_score)
                .where(accounts.c.account_id.in_(list(part)))
            )
        }
        for a in sorted(latest):
            row = latest[a]
            evidence = dict(row["evidence"] or {})
            if row["source"] != "pipeline" or "signals" not in evidence:
                continue
            cid = cluster_of.get(a)
            evid = tuple(
                {"account_id": b, "evidence": x, "shared": shared}
                for b, x, shared in sorted(per_account.get(a, ()), key=lambda e: (-e[1], e[0]))[
                    :MAX_EVIDENCE
                ]
            )
            if cid is not None:
                c = clusters[cid]
                signal = ClusterSignal(
                    cid, float(c["score"]), int(c["size"]), tuple(c["binding"]), evid
                )
            else:
                signal = ClusterSignal(None, 0.0, 1, (), evid)
            signals = dict(evidence["signals"])
            signals["cluster_score"] = signal.cluster_score if cid else 0.0
            signals["cluster_size"] = signal.size if cid else 1
            verdict = self.policy.decide(signals)
            same = (
                verdict.action == row["action"]
                and verdict.score == row["score"]
                and verdict.priority == row["priority"]
                and list(verdict.reasons) == list(row["reasons"])
            )
            decision_id = row["decision_id"]
            if not same or row["overtaken"]:
                evidence.update(
                    cluster=signal.to_dict(),
                    signals=signals,
                    rules=list(verdict.rule_ids),
                    revision_of=row["decision_id"],
                )
                digest = hashlib.sha256(
                    json.dumps([a, row["decision_id"], evidence], sort_keys=True,
                               default=str).encode()
                ).hexdigest()[:32]
                decision_id = REVISION_PREFIX + digest
                revised.append(
                    {
                        "decision_id": decision_id,
                        "event_id": row["event_id"],
                        "account_id": a,
                        "decided_at": max(
                            self.now, (_utc(row["decided_at"]) or self.now) + _AFTER
                        ),
                        "event_time": row["event_time"],
                        "action": verdict.action,
                        "score": verdict.score,
                        "priority": verdict.priority,
                        "reasons": list(verdict.reasons),
                        "policy_version": self.policy.version,
                        "source": "pipeline",
                        "evidence": evidence,
                    }
                )
            stored = current_accounts.get(a)
            if stored is not None and (
                stored.cluster_id != cid
                or stored.last_action != verdict.action
                or stored.last_score != verdict.score
            ):
                account_updates.append(
                    {"a": a, "c": cid, "act": verdict.action, "s": verdict.score,
                     "u": self.now}
                )
            if verdict.queue is None:
                continue
            if cid is not None and verdict.queue == "clusters":
                subject_type, subject_id = "cluster", cid
            else:
                subject_type, subject_id = "account", a
            key = f"{subject_type}:{subject_id}"
            unit = {
                "queue": verdict.queue,
                "subject_type": subject_type,
                "subject_id": subject_id,
                "open_key": key,
                "priority": verdict.priority,
                "decision_id": decision_id,
                "evidence": {
                    **evidence,
                    "reasons": list(verdict.reasons),
                    "account_id": a,
                    "decision_id": decision_id,
                    "policy_version": self.policy.version,
                },
                "members": {a},
            }
            if key in units:
                prev = units[key]
                chosen = unit if unit["priority"] > prev["priority"] else prev
                unit = {**chosen, "members": prev["members"] | {a}}
            units[key] = unit

        if revised:
            insert_ignore(conn, decisions, revised, ["decision_id"])
            report.revised = [Decision.from_row(r) for r in revised]
        if account_updates:
            t = accounts
            conn.execute(
                t.update()
                .where(t.c.account_id == sa.bindparam("a"))
                .values(cluster_id=sa.bindparam("c"), last_action=sa.bindparam("act"),
                        last_score=sa.bindparam("s"), updated_at=sa.bindparam("u")),
                account_updates,
            )
        self._review_units(known, units, report)

    def _review_units(
        self, known: dict[str, Any], units: dict[str, dict[str, Any]], report: ReconcileReport
    ) -> None:
        """Make the open review units of the window's subjects exactly ``units``: pending ones
        are updated or closed (``superseded``), missing ones opened. Units a reviewer holds
        (claimed or escalated) are left as they are."""
        conn = self.conn
        ri = review_items
        open_rows = [
            dict(r)
            for r in conn.execute(
                sa.select(ri).where(ri.c.open_key.isnot(None)).with_for_update()
            ).mappings()
            if r["subject_type"] == "cluster" or r["subject_id"] in known
        ]
        by_key = {r["open_key"]: r for r in open_rows}
        opened_at: dict[str, datetime] = {}
        for r in open_rows:
            account = (r["evidence"] or {}).get("account_id")
            created = _utc(r["created_at"]) or self.now
            if account and created < opened_at.get(account, self.now):
                opened_at[account] = created
        for key in sorted(set(by_key) - set(units)):
            r = by_key[key]
            if r["status"] == "pending" and r["escalation_level"] == 0:
                conn.execute(
                    ri.update()
                    .where(ri.c.id == r["id"])
                    .values(status=SUPERSEDED, open_key=None, updated_at=self.now)
                )
                report.review_closed += 1
        for key in sorted(units):
            u = units[key]
            found = by_key.get(key)
            if found is None:
                created = min(
                    (opened_at[m] for m in u["members"] if m in opened_at), default=self.now
                )
                conn.execute(
                    ri.insert().values(
                        queue=u["queue"], subject_type=u["subject_type"],
                        subject_id=u["subject_id"], open_key=key, priority=u["priority"],
                        status="pending", evidence=u["evidence"], decision_id=u["decision_id"],
                        created_at=created, updated_at=self.now,
                    )
                )
                report.review_opened += 1
            elif found["status"] == "pending" and found["escalation_level"] == 0 and (
                found["priority"] != u["priority"]
                or found["queue"] != u["queue"]
                or found["decision_id"] != u["decision_id"]
            ):
                conn.execute(
                    ri.update()
                    .where(ri.c.id == found["id"])
                    .values(queue=u["queue"], priority=u["priority"], evidence=u["evidence"],
                            decision_id=u["decision_id"], updated_at=self.now)
                )
                report.review_updated += 1
