"""What a pipeline run must leave in the database, whatever order the events were consumed in.

The pipeline's state splits into two kinds:

* **Order-independent** facts, which any valid consumption order (one account's events in
  order, accounts of different partitions interleaved arbitrarily, any micro-batching, any
  redelivery) must leave identical: window counters, account features, idempotency marks, the
  set of events and per-event decision ids, each account's own flags. :class:`Snapshot`
  collects them.
* **Order-dependent while streaming**: links are weighed by how rare a value is *when the later
  account is processed*, so the streamed cluster partition (and cluster scores, burst flags,
  per-event decisions and review items that follow from it) can differ between two valid orders
  (docs/scaling.md). For these the streamed state satisfies a bound that holds for every order,
  :func:`forced_components`: two accounts that would be linked even with the counts at the end
  of the stream must end in the same cluster; and each run is internally consistent
  (:func:`consistency_errors`). After the reconcile job (pipeline/signals/recluster.py) they are
  order-independent too: :func:`reconciled_state` (partition with cluster ids, cluster
  counters, scores and binding, open review units, latest decision per account) must be
  identical between runs, and so must the latest decision per account on the decisions topic
  (:func:`latest_on_topic`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipeline.signals.partition import components

Partition = frozenset[frozenset[str]]


@dataclass(frozen=True)
class Snapshot:
    """The database state that must not depend on consumption order (all as sorted tuples)."""

    counts: tuple[tuple[Any, ...], ...]
    features: tuple[tuple[Any, ...], ...]
    marks: tuple[tuple[str, str], ...]
    events: tuple[tuple[str, str, str], ...]
    decision_ids: tuple[tuple[str, str, str], ...]
    signal_results: tuple[str, ...]
    avatar_results: tuple[tuple[str, str], ...]
    account_flags: tuple[tuple[str, int, bool, bool], ...]
    accounts: tuple[str, ...]
    dlq: int

    def differences(self, other: Snapshot) -> list[str]:
        """Names of the fields that differ, each with a short description of how."""
        out = []
        for name in self.__dataclass_fields__:
            mine, theirs = set(getattr(self, name) if name != "dlq" else [self.dlq]), set(
                getattr(other, name) if name != "dlq" else [other.dlq])
            if mine != theirs:
                out.append(f"{name}: {len(mine - theirs)} only here, {len(theirs - mine)} only "
                           f"there, e.g. {sorted(mine - theirs, key=str)[:2]} / "
                           f"{sorted(theirs - mine, key=str)[:2]}")
        return out


def _rows(conn: Connection, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in conn.execute(sa.text(sql))]


def snapshot(conn: Connection) -> Snapshot:
    return Snapshot(
        counts=tuple(sorted(_rows(conn, "SELECT kind, value, width_s, bucket_s, count "
                                        "FROM signal_counts"))),
        features=tuple(sorted(_rows(conn, "SELECT account_id, kind, value, seen_s "
                                          "FROM signal_account_features"))),
        marks=tuple(sorted(_rows(conn, "SELECT event_id, stage FROM processed_events"))),
        events=tuple(sorted(_rows(conn, "SELECT event_id, account_id, event_type FROM events"))),
        decision_ids=tuple(sorted(_rows(conn, "SELECT decision_id, event_id, account_id "
                                              "FROM decisions WHERE decision_id NOT LIKE "
                                              "'rev:%'"))),
        signal_results=tuple(sorted(r[0] for r in _rows(conn, "SELECT event_id "
                                                              "FROM signal_results"))),
        avatar_results=tuple(sorted(_rows(conn, "SELECT event_id, status FROM avatar_results"))),
        account_flags=tuple(sorted(
            (r[0], int(r[1]), bool(r[2]), bool(r[3])) for r in _rows(
                conn, "SELECT account_id, created_s, ai_face, reused_photo FROM signal_accounts"))),
        accounts=tuple(sorted(r[0] for r in _rows(conn, "SELECT account_id FROM accounts"))),
        dlq=int(conn.execute(sa.text("SELECT count(*) FROM dlq_records")).scalar_one()),
    )


def cluster_partition(conn: Connection) -> Partition:
    """The clusters as sets of accounts (cluster ids depend on merge order; the sets do not)."""
    groups: dict[str, set[str]] = defaultdict(set)
    for account_id, cluster_id in _rows(conn, "SELECT account_id, cluster_id FROM signal_accounts "
                                              "WHERE cluster_id IS NOT NULL"):
        groups[cluster_id].add(account_id)
    return frozenset(frozenset(g) for g in groups.values())


def forced_components(conn: Connection, link_threshold: float, max_partners: int
                      ) -> list[set[str]]:
    """Groups of accounts that every consumption order must put in one cluster.

    A value's weight is ``prior * min(1, sqrt(ref / n)) * min(1, sqrt(max(0.002 * P, 2) / n))``
    (``n`` accounts showing it, ``P`` accounts created in the window; pipeline/signals/score.py).
    A pair is weighed when the later of the two accounts' last events is processed, when ``n``
    is at most its final value and the last factor at least ``sqrt(2 / n)``. So a pair whose
    shared values reach ``link_threshold`` with the final ``n`` and that floor is linked in
    every order, and clusters never split. Photo-match links are left out (they need avatars).
    """
    from pipeline.signals.score import MIN_LINK_WEIGHT, rarity_weight

    totals: dict[tuple[str, str], int] = defaultdict(int)
    for kind, value, n in _rows(conn, "SELECT kind, value, sum(count) FROM signal_counts "
                                      "WHERE width_s = 86400 AND kind <> '_accounts' "
                                      "GROUP BY kind, value"):
        totals[(kind, value)] = int(n)
    holders: dict[tuple[str, str], list[str]] = defaultdict(list)
    for account_id, kind, value in _rows(
            conn, "SELECT account_id, kind, value FROM signal_account_features"):
        holders[(kind, value)].append(account_id)
    evidence: dict[tuple[str, str], float] = defaultdict(float)
    for key, accounts in holders.items():
        n = totals.get(key, 1)
        weight = rarity_weight(key[0], n, population=0)
        if weight < MIN_LINK_WEIGHT or not 1 < n <= max_partners:
            continue
        ordered = sorted(accounts)
        for i, a in enumerate(ordered):
            for b in ordered[i + 1:]:
                evidence[(a, b)] += weight
    return components((a, b) for (a, b), x in evidence.items()
                       if round(x, 3) >= link_threshold)


def unforced_splits(partition: Partition, forced: list[set[str]]) -> list[set[str]]:
    """Forced groups that ``partition`` splits over several clusters (must be empty)."""
    where = {a: cluster for cluster in partition for a in cluster}
    return [g for g in forced if len({where.get(a) for a in g}) != 1 or None in
            {where.get(a) for a in g}]


def consistency_errors(conn: Connection) -> list[str]:
    """Checks that hold inside every run: stored cluster sizes equal memberships, every per-event
    decision applies the policy to exactly the cluster signal the signals stage stored for its
    event, every revised decision (``rev:``) applies it to the signals it records."""
    from pipeline.decide.policy import load_policy
    from pipeline.settings import Settings

    errors = []
    sizes = dict(_rows(conn, "SELECT cluster_id, size FROM signal_clusters"))
    members: dict[str, int] = defaultdict(int)
    for (cid,) in _rows(conn, "SELECT cluster_id FROM signal_accounts "
                              "WHERE cluster_id IS NOT NULL"):
        members[cid] += 1
    if sizes != dict(members):
        errors.append(f"cluster sizes differ from memberships: {len(sizes)} vs {len(members)}")
    policy = load_policy(Settings().decide.policy_path)
    from pipeline.store.signal_tables import signal_results
    from pipeline.store.tables import decisions

    results = signal_results
    stored = dict(conn.execute(sa.select(results.c.event_id, results.c.cluster)).all())
    bad = 0
    d = decisions
    for decision_id, event_id, action, reasons, evidence in conn.execute(
            sa.select(d.c.decision_id, d.c.event_id, d.c.action, d.c.reasons, d.c.evidence)):
        revised = decision_id.startswith("rev:")
        if not revised and evidence.get("cluster") != stored.get(event_id):
            bad += 1
            continue
        verdict = policy.decide(evidence["signals"])
        if verdict.action != action or list(verdict.reasons) != list(reasons):
            bad += 1
    if bad:
        errors.append(f"{bad} decisions disagree with the stored cluster signal or the policy")
    return errors


def _latest_key(event_time: Any, decided_at: Any, decision_id: str) -> tuple[Any, Any, str]:
    from datetime import UTC

    def naive(ts: Any) -> Any:
        return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts

    return (naive(event_time or decided_at), naive(decided_at), decision_id)


def reconciled_state(conn: Connection) -> dict[str, Any]:
    """What a reconcile makes identical between runs: clusters by id (members, size, counters,
    score, binding), open review units (queue, subject, priority, status) and each account's
    latest decision (action, score, priority, reasons; latest by event time, then decision
    time)."""
    from pipeline.store.signal_tables import signal_clusters
    from pipeline.store.tables import decisions

    members: dict[str, set[str]] = defaultdict(set)
    for account_id, cluster_id in _rows(conn, "SELECT account_id, cluster_id FROM signal_accounts "
                                              "WHERE cluster_id IS NOT NULL"):
        members[cluster_id].add(account_id)
    clusters = {
        r.cluster_id: (frozenset(members[r.cluster_id]), r.size, r.ai_faces, r.reused_photos,
                       r.burst_members, r.score, tuple(sorted(str(b) for b in r.binding)))
        for r in conn.execute(sa.select(signal_clusters))
    }
    units = sorted(_rows(conn, "SELECT queue, subject_type, subject_id, priority, status "
                               "FROM review_items WHERE open_key IS NOT NULL"))
    d = decisions
    latest: dict[str, tuple[Any, ...]] = {}
    for r in conn.execute(sa.select(d.c.account_id, d.c.event_time, d.c.decided_at,
                                    d.c.decision_id, d.c.action, d.c.score, d.c.priority,
                                    d.c.reasons)):
        key = _latest_key(r.event_time, r.decided_at, r.decision_id)
        if r.account_id not in latest or key > latest[r.account_id][0]:
            latest[r.account_id] = (key, r.action, r.score, r.priority, tuple(r.reasons))
    return {"clusters": clusters, "review_units": units,
            "latest_decisions": {a: v[1:] for a, v in latest.items()}}


def latest_on_topic(records: Iterable[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """Each account's last decision record on the topic (records of one account share a
    partition, so the topic's order is their order): action, score, priority, reasons."""
    out: dict[str, tuple[Any, ...]] = {}
    for r in records:
        out[r["account_id"]] = (r["action"], r["score"], r["priority"], tuple(r["reasons"]))
    return out
