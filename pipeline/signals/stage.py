"""The signals stage: features -> rolling windows -> account links -> clusters -> ClusterSignal.

One database transaction per micro-batch, with a fixed number of round trips (plus a few per
cluster the batch touches). Lock order, which keeps concurrent workers free of deadlocks:
counters in key order, then clusters in id order (``SELECT ... FOR UPDATE``), then account rows.
A concurrent merge seen after locking (a cluster vanished, an account got a cluster meanwhile)
rolls back to a savepoint and is re-read; a deadlock or serialization failure reported by
PostgreSQL retries the whole batch.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from pipeline.metrics import CLUSTER_SCORE
from pipeline.settings import Settings
from pipeline.signals import repository as repo
from pipeline.signals.features import Feature, extract, is_ai_face
from pipeline.signals.locks import share_clusters
from pipeline.signals.partition import components
from pipeline.signals.score import (
    INFRA_KINDS,
    MIN_LINK_WEIGHT,
    PHOTO_MATCH_WEIGHT,
    PROMOTED_KINDS,
    ClusterStats,
    concentrated,
    rarity_weight,
    score_parts,
)
from pipeline.signals.windows import DAY_SECONDS, epoch, width_for, window_range
from pipeline.stages import StageUnavailable
from pipeline.store.signal_tables import signal_suspect_counts
from pipeline.types import ClusterSignal, Envelope

MAX_BINDING = 8
POPULATION = ("_accounts", "")
"""Counter of account creations, the population the rarity weights are relative to."""
MAX_EVIDENCE = 10
OPEN_END = 2**62
"""Last bucket of every count read: a window reaches from ``t_end - long window`` to whatever is
stored, not just to ``t_end``. A partition processed behind the others (a lagging or restarted
worker) must count the accounts of partitions processed ahead of it, exactly as ``partners``
finds them, or it misses links a single in-order worker would make (docs/scaling.md)."""
_RETRY_PGCODES = frozenset({"40P01", "40001"})


_FLAG_COUNTERS = (
    ("ai_faces", "ai_face"),
    ("reused_photos", "reused_photo"),
    ("burst_members", "burst"),
)


class _Retry(Exception):
    """A concurrent merge changed what was read; redo the merge phase."""


@dataclass
class _Account:
    account_id: str
    features: set[Feature]
    new_features: dict[Feature, int]
    first_s: int
    last_s: int
    created_s: int | None
    ai_face: bool
    reused: bool
    photo_partners: set[str]
    stored_seen: dict[Feature, int] = field(default_factory=dict)
    was_suspect: bool = False

    def suspect_increments(self) -> Iterable[tuple[Feature, int]]:
        """(value, first sight) to add to the suspect counters for this batch: the new values
        of an account stored as suspect, every value (stored ones at their first sight) of one
        that turns suspect now, nothing otherwise."""
        if self.was_suspect:
            return self.new_features.items()
        if self.ai_face or self.reused:
            return [*self.stored_seen.items(), *self.new_features.items()]
        return ()


def _groups(links: dict[str, dict[str, float]], current: dict[str, str | None]) -> list[set[str]]:
    """Accounts to end up in one cluster: the batch's links, closed over current clusters (two
    accounts of one cluster are in one group even when the batch links neither to the other),
    so every cluster is merged into exactly one survivor."""
    edges = [(a, b) for a, ls in links.items() for b in ls]
    linked = {x for edge in edges for x in edge}
    edges += [(a, "\0" + c) for a in linked if (c := current.get(a))]
    return [{x for x in g if not x.startswith("\0")} for g in components(edges)]


def _pair_evidence(
    acc: _Account, held: list[tuple[Feature, set[str], float]], threshold: float, bonus: float
) -> dict[str, float]:
    """Shared evidence of ``acc`` with every other account that could link with it (evidence
    plus ``bonus`` at least ``threshold``): the sum of the weights of the values both show
    (``held``: value, its holders, its weight), plus the photo-match weight for a reused-photo
    partner.

    Values are visited heaviest first; once the weight left to visit cannot lift an account
    not met yet to ``threshold - bonus``, lighter values (the ones with thousands of holders)
    only add to accounts already met, by a set intersection instead of a loop over their
    holders. The evidence of the accounts kept is then summed again in ``held``'s order, so
    each is the same float as a plain sum over every holder in that order."""
    me = acc.account_id
    if not acc.photo_partners and all(len(o) == 1 and me in o for _f, o, _w in held):
        return {}
    margin = threshold - bonus - 1e-6
    approx = dict.fromkeys(acc.photo_partners, PHOTO_MATCH_WEIGHT)
    rest = sum(w for _f, _others, w in held) + (PHOTO_MATCH_WEIGHT if acc.photo_partners else 0.0)
    for _f, others, w in sorted(held, key=lambda h: -h[2]):
        if rest >= margin:
            for other in others:
                approx[other] = approx.get(other, 0.0) + w
        else:
            for other in approx.keys() & others:
                approx[other] += w
        rest -= w
    approx.pop(acc.account_id, None)
    out: dict[str, float] = {}
    for b, rough in approx.items():
        if rough < margin:
            continue
        x = 0.0
        for _f, others, w in held:
            if b in others:
                x += w
        if b in acc.photo_partners:
            x += PHOTO_MATCH_WEIGHT
        if x + bonus >= threshold:
            out[b] = x
    return out


def _weights(
    keys: Iterable[tuple[str, str]], counts: dict[tuple[str, str], int], population: int
) -> dict[tuple[str, str], float]:
    """:func:`rarity_weight` of every value (count 1 when it has none), computed once per
    (kind, count): most of a batch's values share a kind and a small count."""
    by_count: dict[tuple[str, int], float] = {}
    out: dict[tuple[str, str], float] = {}
    for key in keys:
        memo = (key[0], counts.get(key, 1))
        weight = by_count.get(memo)
        if weight is None:
            weight = by_count[memo] = rarity_weight(memo[0], memo[1], population)
        out[key] = weight
    return out


def _signal_dict(signal: ClusterSignal) -> dict[str, Any]:
    """``signal.to_dict()`` without ``dataclasses.asdict``'s deep copy of the evidence (the
    dicts are serialised at once; 10x cheaper for a thousand results per batch)."""
    return {
        "cluster_id": signal.cluster_id,
        "cluster_score": signal.cluster_score,
        "size": signal.size,
        "binding_features": list(signal.binding_features),
        "account_evidence": list(signal.account_evidence),
    }


def _cluster_id(seed: str) -> str:
    return "cl-" + hashlib.sha256(seed.encode()).hexdigest()[:20]


class SignalStage:
    """Coordinated-cluster signals for each event (stage name ``signals``).

    ``process`` is blocking and idempotent on ``event_id``: a redelivered event changes nothing
    and gets back the ClusterSignal stored the first time. Raises :class:`StageUnavailable`
    when the database keeps failing; nothing of the batch is committed then.
    """

    name = "signals"

    def __init__(self, engine: Engine, settings: Settings, max_attempts: int = 5) -> None:
        self._engine = engine
        self._cfg = settings.signals
        self._secret = settings.secret_key.get_secret_value().encode()
        self._fine_s = int(self._cfg.bucket_minutes * 60)
        self._long_h = max(self._cfg.windows_hours)
        self._min_share = self._cfg.bonus_min_suspect_share
        self._max_attempts = max_attempts

    def process(self, batch: Sequence[Envelope]) -> list[Envelope]:
        if not batch:
            return []
        for attempt in range(self._max_attempts):
            try:
                with self._engine.begin() as conn:
                    signals = self._process(conn, batch)
                break
            except DBAPIError as exc:
                code = getattr(exc.orig, "pgcode", None)
                if code in _RETRY_PGCODES and attempt + 1 < self._max_attempts:
                    time.sleep(0.01 * (attempt + 1))
                    continue
                if code in _RETRY_PGCODES:
                    raise StageUnavailable(
                        f"signals: gave up after {attempt + 1} attempts"
                    ) from exc
                raise
        for signal in signals.values():
            CLUSTER_SCORE.observe(signal.cluster_score)
        return [replace(env, cluster=signals[env.event.event_id]) for env in batch]

    # -- one transaction -----------------------------------------------------------------------

    def _process(self, conn: Connection, batch: Sequence[Envelope]) -> dict[str, ClusterSignal]:
        share_clusters(conn)
        claimed = repo.claim_many(conn, [e.event.event_id for e in batch], self.name)
        fresh: list[Envelope] = []
        seen: set[str] = set()
        for env in batch:
            if env.event.event_id in claimed and env.event.event_id not in seen:
                seen.add(env.event.event_id)
                fresh.append(env)
        out: dict[str, ClusterSignal] = {}
        old = [e.event.event_id for e in batch if e.event.event_id not in claimed]
        if old:
            for event_id, data in repo.load_results(conn, old).items():
                out[event_id] = ClusterSignal.from_dict(data)
            for event_id in old:
                out.setdefault(event_id, ClusterSignal.none())
        if fresh:
            out.update(self._process_fresh(conn, fresh))
        return out

    def _accounts(self, conn: Connection, fresh: list[Envelope]) -> dict[str, _Account]:
        ids = [e.event.account_id for e in fresh]
        stored = repo.load_feature_times(conn, ids)
        was_suspect = repo.suspect_accounts(conn, ids) if self._min_share > 0 else set()
        accounts: dict[str, _Account] = {}
        for env in fresh:
            ev = env.event
            t = epoch(ev.occurred_at)
            acc = accounts.get(ev.account_id)
            if acc is None:
                seen = stored.get(ev.account_id, {})
                acc = _Account(
                    ev.account_id,
                    set(seen),
                    {},
                    t,
                    t,
                    None,
                    False,
                    False,
                    set(),
                    seen,
                    ev.account_id in was_suspect,
                )
                accounts[ev.account_id] = acc
            acc.first_s, acc.last_s = min(acc.first_s, t), max(acc.last_s, t)
            if ev.event_type == "account.created.v1":
                acc.created_s = t if acc.created_s is None else min(acc.created_s, t)
            for feature in extract(ev, env.avatar, self._secret):
                if feature not in acc.features:
                    acc.features.add(feature)
                    acc.new_features[feature] = t
            acc.ai_face |= is_ai_face(env.avatar, self._cfg.ai_face_threshold)
            for match in env.matches or ():
                acc.reused = True
                if (
                    match.source == "account"
                    and match.account_id
                    and match.account_id != ev.account_id
                ):
                    acc.photo_partners.add(match.account_id)
        return accounts

    def _process_fresh(self, conn: Connection, fresh: list[Envelope]) -> dict[str, ClusterSignal]:
        accounts = self._accounts(conn, fresh)
        t_end = max(a.last_s for a in accounts.values())
        long_w = width_for(self._long_h, self._fine_s)
        increments: dict[tuple[str, str, int, int], int] = defaultdict(int)
        suspect_increments: dict[tuple[str, str, int, int], int] = defaultdict(int)
        feature_rows: list[tuple[str, str, str, str, int]] = []
        widths = tuple({self._fine_s, DAY_SECONDS})
        for acc in accounts.values():
            if acc.created_s is not None:
                for width in widths:
                    bucket = acc.created_s - acc.created_s % width
                    increments[(*POPULATION, width, bucket)] += 1
            for f, t in acc.new_features.items():
                for width in widths:
                    increments[(f.kind, f.value, width, t - t % width)] += 1
                feature_rows.append((acc.account_id, f.kind, f.value, f.label, t))
            if self._min_share > 0:
                for f, t in acc.suspect_increments():
                    for width in widths:
                        suspect_increments[(f.kind, f.value, width, t - t % width)] += 1
        repo.add_counts(conn, increments)
        repo.add_counts(conn, suspect_increments, signal_suspect_counts)
        repo.insert_account_features(conn, feature_rows)

        end_dt = datetime.fromtimestamp(t_end, UTC)
        first, _last = window_range(end_dt, self._long_h, long_w)
        all_keys = {(f.kind, f.value) for a in accounts.values() for f in a.features}
        counts = repo.read_counts(conn, all_keys | {POPULATION}, long_w, first, OPEN_END)
        population = counts.get(POPULATION, 1)
        weights = _weights(all_keys, counts, population)
        heavy = [
            k
            for k, w in weights.items()
            if w >= MIN_LINK_WEIGHT and 1 < counts.get(k, 1) <= self._cfg.max_partners
        ]
        since = t_end - int(self._long_h * 3600)
        holders = repo.holders(conn, heavy, since)

        threshold = self._cfg.link_threshold
        bonus = self._cfg.avatar_pair_bonus
        evidence: dict[str, dict[str, float]] = {}
        mine: dict[str, list[tuple[Feature, set[str]]]] = {}
        for acc in accounts.values():
            held = [(f, holders[k]) for f in acc.features if (k := (f.kind, f.value)) in holders]
            evidence[acc.account_id] = _pair_evidence(
                acc,
                [(f, others, weights[(f.kind, f.value)]) for f, others in held],
                threshold,
                bonus,
            )
            mine[acc.account_id] = held
        candidates = {b for ev in evidence.values() for b in ev}
        known = repo.read_accounts(conn, set(accounts) | candidates)

        def suspect(a: str) -> bool:
            row = known.get(a)
            stored = row is not None and bool(row["ai_face"] or row["reused_photo"])
            acc = accounts.get(a)
            return stored or (acc is not None and (acc.ai_face or acc.reused))

        pairs: dict[str, set[str]] = {}
        for a, ev in evidence.items():
            both = {b for b in ev if b in known or b in accounts} if bonus else set()
            pairs[a] = {b for b in both if suspect(b)} if both and suspect(a) else set()
        if self._min_share > 0:
            pairs = self._concentrated_pairs(conn, pairs, mine, counts, width=long_w, first=first)

        links: dict[str, dict[str, float]] = {}
        shared: dict[str, dict[str, list[str]]] = {}
        for a, ev in evidence.items():
            acc = accounts[a]
            both = pairs[a]
            linked = {}
            for b, x in ev.items():
                total = x + (bonus if b in both else 0.0)
                if total >= threshold and (b in known or b in accounts):
                    linked[b] = round(total, 3)
            links[a] = linked
            why: dict[str, list[str]] = {}
            for b in linked:
                why[b] = [f.label for f, others in mine[a] if b in others]
                if b in acc.photo_partners:
                    why[b].append("reused photo")
                if b in both:
                    why[b].append("both avatars AI-generated or reused")
            shared[a] = why

        burst_s = int(self._cfg.burst_minutes * 60)
        account_rows = []
        for acc in accounts.values():
            created = (
                acc.created_s
                if acc.created_s is not None
                else int(known.get(acc.account_id, {}).get("created_s", acc.first_s))
            )
            burst = any(
                abs(self._created(b, known, accounts) - created) <= burst_s
                for b in links[acc.account_id]
            )
            account_rows.append(
                {
                    "account_id": acc.account_id,
                    "created_s": created,
                    "ai_face": acc.ai_face,
                    "reused_photo": acc.reused,
                    "burst": burst,
                    "cluster_id": None,
                }
            )

        clusters, final = self._merge(conn, accounts, links, account_rows, known, weights, t_end)
        out: dict[str, ClusterSignal] = {}
        result_rows = []
        for env in fresh:
            event = env.event
            cid = final.get(event.account_id)
            linked = links[event.account_id]
            evid = (
                tuple(
                    {
                        "account_id": b,
                        "evidence": x,
                        "shared": sorted(set(shared[event.account_id].get(b, ()))),
                    }
                    for b, x in sorted(linked.items(), key=lambda kv: (-kv[1], kv[0]))[
                        :MAX_EVIDENCE
                    ]
                )
                if linked
                else ()
            )
            if cid and cid in clusters:
                row = clusters[cid]
                signal = ClusterSignal(
                    cid, float(row["score"]), int(row["size"]), tuple(row["binding"]), evid
                )
            else:
                signal = ClusterSignal(None, 0.0, 1, (), evid)
            out[event.event_id] = signal
            result_rows.append(
                {
                    "event_id": event.event_id,
                    "account_id": event.account_id,
                    "cluster": _signal_dict(signal),
                    "created_s": epoch(event.occurred_at),
                }
            )
        repo.save_results(conn, result_rows)
        return out

    def _concentrated_pairs(
        self,
        conn: Connection,
        pairs: dict[str, set[str]],
        mine: dict[str, list[tuple[Feature, set[str]]]],
        counts: dict[tuple[str, str], int],
        width: int,
        first: int,
    ) -> dict[str, set[str]]:
        """The suspect pairs (``pairs``: account -> suspect partners) that share a value whose
        holders are suspect often enough (:func:`concentrated`, over the long window the
        weights were read from): only those get the avatar-pair bonus."""
        keys = {
            (f.kind, f.value)
            for a, partners in pairs.items()
            if partners
            for f, others in mine[a]
            if not others.isdisjoint(partners)
        }
        if not keys:
            return pairs
        suspects = repo.read_counts(conn, keys, width, first, OPEN_END, signal_suspect_counts)
        hot = {
            k for k in keys if concentrated(suspects.get(k, 0), counts.get(k, 1), self._min_share)
        }
        out: dict[str, set[str]] = {}
        for a, partners in pairs.items():
            values = [others for f, others in mine[a] if (f.kind, f.value) in hot]
            out[a] = {b for b in partners if any(b in others for others in values)}
        return out

    @staticmethod
    def _created(
        account_id: str, known: dict[str, dict[str, Any]], accounts: dict[str, _Account]
    ) -> int:
        if account_id in known:
            return int(known[account_id]["created_s"])
        acc = accounts[account_id]
        return acc.created_s if acc.created_s is not None else acc.first_s

    # -- merges --------------------------------------------------------------------------------

    def _merge(
        self,
        conn: Connection,
        accounts: dict[str, _Account],
        links: dict[str, dict[str, float]],
        account_rows: list[dict[str, Any]],
        known: dict[str, dict[str, Any]],
        weights: dict[tuple[str, str], float],
        t_end: int,
    ) -> tuple[dict[str, dict[str, Any]], dict[str, str | None]]:
        """Union the linked accounts into clusters and rescore every cluster the batch touches.

        Returns the rescored cluster rows and the final cluster of every involved account.
        """
        involved = set(accounts) | {b for ls in links.values() for b in ls}
        current = {a: known[a]["cluster_id"] if a in known else None for a in involved}
        postgres = conn.dialect.name == "postgresql"
        for _attempt in range(20):
            nested = conn.begin_nested() if postgres else None
            try:
                groups = _groups(links, current)
                result = self._merge_once(
                    conn, current, groups, account_rows, accounts, known, weights, t_end
                )
            except _Retry:
                if nested is not None:
                    nested.rollback()
                    current = repo.cluster_of(conn, involved)
                    current.update({a: None for a in involved if a not in current})
                    continue
                raise
            if nested is not None:
                nested.commit()
            return result
        raise StageUnavailable("signals: cluster merge kept changing under concurrent workers")

    def _merge_once(
        self,
        conn: Connection,
        current: dict[str, str | None],
        groups: list[set[str]],
        account_rows: list[dict[str, Any]],
        accounts: dict[str, _Account],
        known: dict[str, dict[str, Any]],
        weights: dict[tuple[str, str], float],
        t_end: int,
    ) -> tuple[dict[str, dict[str, Any]], dict[str, str | None]]:
        wanted = {c for c in current.values() if c}
        locked = repo.lock_clusters(conn, wanted)
        if set(locked) != wanted:
            raise _Retry()
        repo.upsert_accounts(conn, account_rows)
        final: dict[str, str | None] = dict(current)
        moves: dict[str, str] = {}
        placement: dict[str, str] = {}
        created: dict[str, int] = {}
        for members in groups:
            if len(members) < 2:
                continue
            existing = sorted(
                {c for m in members if (c := current.get(m))},
                key=lambda c: (-int(locked[c]["size"]), c),
            )
            if existing:
                survivor = existing[0]
            else:
                survivor = _cluster_id(min(members))
                created[survivor] = min(
                    accounts[m].first_s if m in accounts else int(known[m]["created_s"])
                    for m in members
                )
            for c in existing[1:]:
                moves[c] = survivor
            for m in members:
                if not current.get(m):
                    placement[m] = survivor
                final[m] = survivor
        for a, c in list(final.items()):
            if c in moves:
                final[a] = moves[c]
        repo.repoint_clusters(conn, moves)
        attached = repo.attach_unclustered(conn, placement)
        if len(attached) != len(placement):
            raise _Retry()

        zero = {"size": 0, "ai_faces": 0, "reused_photos": 0, "burst_members": 0}
        counters: dict[str, dict[str, int]] = {}
        for cid, row in locked.items():
            into = counters.setdefault(moves.get(cid, cid), dict(zero))
            for k in into:
                into[k] += int(row[k])
        for cid in created:
            counters.setdefault(cid, dict(zero))
        new_flags = {r["account_id"]: r for r in account_rows}
        feature_adds: dict[tuple[str, str, str], tuple[str, int]] = {}

        def add_features(cid: str, features: Iterable[Feature]) -> None:
            for f in features:
                key = (cid, f.kind, f.value)
                label, n = feature_adds.get(key, (f.label, 0))
                feature_adds[key] = (label, n + 1)

        partner_features = repo.load_feature_times(conn, [a for a in attached if a not in accounts])
        for a, placed in final.items():
            if not placed:
                continue
            cid = placed
            cnt = counters[cid]
            if a in attached:
                cnt["size"] += 1
                for counter, flag in _FLAG_COUNTERS:
                    cnt[counter] += int(bool(attached[a][flag]))
                add_features(
                    cid, accounts[a].features if a in accounts else partner_features.get(a, {})
                )
            elif a in accounts:
                old = known.get(a)
                for counter, flag in _FLAG_COUNTERS:
                    had = bool(old[flag]) if old is not None else False
                    cnt[counter] += int(had or bool(new_flags[a][flag])) - int(had)
                add_features(cid, accounts[a].new_features)
        repo.merge_cluster_features(conn, moves)
        repo.delete_clusters(conn, moves)
        repo.add_cluster_features(conn, feature_adds)

        touched = sorted(counters)
        created_s = {c: int(r["created_s"]) for c, r in locked.items()}
        created_s.update(created)
        clusters = self._rescore(conn, touched, counters, created_s, t_end, weights)
        return clusters, final

    # -- scores --------------------------------------------------------------------------------

    def _rescore(
        self,
        conn: Connection,
        ids: list[str],
        counters: dict[str, dict[str, int]],
        created_s: dict[str, int],
        t_end: int,
        weights: dict[tuple[str, str], float],
    ) -> dict[str, dict[str, Any]]:
        if not ids:
            return {}
        shared = repo.cluster_binding(conn, ids)
        unknown = {(k, v) for rows in shared.values() for k, v, _l, _n in rows} - set(weights)
        if unknown:
            long_w = width_for(self._long_h, self._fine_s)
            first, _last = window_range(datetime.fromtimestamp(t_end, UTC), self._long_h, long_w)
            counts = repo.read_counts(conn, unknown | {POPULATION}, long_w, first, OPEN_END)
            population = counts.get(POPULATION, 1)
            weights = dict(weights)
            weights.update(_weights(unknown, counts, population))
        rows: list[dict[str, Any]] = []
        for cid in ids:
            cnt = counters[cid]
            scored = [
                (n, round(weights[(k, v)], 3), k, label) for k, v, label, n in shared.get(cid, ())
            ]
            scored.sort(key=lambda b: (-b[0] * b[1], b[2], b[3]))
            binding: list[dict[str, Any]] = [
                {"kind": k, "label": label, "count": n, "weight": w} for n, w, k, label in scored
            ]
            strong = [(n, k) for n, w, k, _label in scored if w >= MIN_LINK_WEIGHT]
            cstats = ClusterStats(
                size=cnt["size"],
                ai_faces=cnt["ai_faces"],
                reused_photos=cnt["reused_photos"],
                burst_members=cnt["burst_members"],
                promoted_max=max((n for n, k in strong if k in PROMOTED_KINDS), default=0),
                infra_max=max((n for n, k in strong if k in INFRA_KINDS), default=0),
            )
            parts = score_parts(cstats)
            rows.append(
                {
                    "cluster_id": cid,
                    **cnt,
                    "score": round(parts.score, 4),
                    "parts": {k: round(v, 4) for k, v in vars(parts).items()},
                    "binding": binding[:MAX_BINDING],
                    "created_s": created_s.get(cid, t_end),
                    "updated_s": t_end,
                }
            )
        repo.save_clusters(conn, rows)
        return {str(r["cluster_id"]): r for r in rows}


def run_retention(engine: Engine, settings: Settings, now_s: int) -> dict[str, int]:
    """Delete signal rows older than ``settings.signals.retention_days`` before ``now_s``."""
    cutoff = now_s - int(settings.signals.retention_days * DAY_SECONDS)
    with engine.begin() as conn:
        return repo.delete_older_than(conn, cutoff)
