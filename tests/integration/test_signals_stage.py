"""The signals stage on real PostgreSQL and SQLite: idempotency, merges, concurrency, retention."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.settings import Settings
from pipeline.signals.stage import SignalStage, run_retention
from pipeline.store.db import make_engine
from pipeline.store.migrate import upgrade
from pipeline.store.signal_tables import (
    signal_account_features,
    signal_accounts,
    signal_cluster_features,
    signal_clusters,
    signal_counts,
)
from pipeline.types import AccountEvent, AvatarResult, Envelope

T0 = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)


def _env(account: str, minutes: float = 0, *, device: str | None = None,
         ip: str = "198.51.100.9", links: tuple[str, ...] = (), ai: float | None = None,
         event_type: str = "account.created.v1", suffix: str = "c") -> Envelope:
    created = event_type == "account.created.v1"
    event = AccountEvent(
        event_type=event_type, event_id=f"evt-{account}-{suffix}",
        occurred_at=T0 + timedelta(minutes=minutes), account_id=account,
        display_name=f"Person {account}" if created else None,
        username=f"user_{account}" if created else None,
        email_domain=f"{account}-mail.example.org" if created else None,
        signup_ip=ip if created else None,
        device_id=(device or f"dev-{account}") if created else None,
        country="US" if created else None, bio="" if created else None, links=links,
    )
    avatar = AvatarResult(status="scored", score=ai) if ai is not None else None
    return Envelope(event=event, avatar=avatar, matches=())


def _stage(engine: Engine) -> SignalStage:
    return SignalStage(engine, Settings())


def test_shared_device_and_range_link_accounts(engine: Engine) -> None:
    stage = _stage(engine)
    out = stage.process([_env("a1", 0, device="emu-1", ip="203.0.113.5", ai=0.9),
                         _env("a2", 1, device="emu-1", ip="203.0.113.6", ai=0.9)])
    assert out[0].cluster is not None and out[1].cluster is not None
    assert out[1].cluster.cluster_id is not None
    assert out[0].cluster.cluster_id == out[1].cluster.cluster_id
    assert out[1].cluster.size == 2
    kinds = {b["kind"] for b in out[1].cluster.binding_features}
    assert {"device", "ip24"} <= kinds
    labels = " ".join(b["label"] for b in out[1].cluster.binding_features)
    assert "emu-1" not in labels and "203.0.113" not in labels
    assert out[1].cluster.account_evidence[0]["account_id"] == "a1"


def test_redelivery_has_one_effect_and_same_signal(engine: Engine) -> None:
    stage = _stage(engine)
    batch = [_env("b1", 0, device="emu-2", ip="203.0.113.5"),
             _env("b2", 1, device="emu-2", ip="203.0.113.7")]
    first = stage.process(batch)
    with engine.connect() as conn:
        counts_before = conn.execute(sa.select(sa.func.sum(signal_counts.c.count))).scalar()
    again = stage.process(batch + [batch[0]])
    assert [e.cluster for e in again[:2]] == [e.cluster for e in first]
    assert again[2].cluster == first[0].cluster
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.sum(signal_counts.c.count))).scalar() == counts_before


def test_new_account_joins_two_clusters(engine: Engine) -> None:
    stage = _stage(engine)
    left = stage.process([_env("l1", 0, device="dev-L", ip="192.0.2.1", ai=0.9),
                          _env("l2", 1, device="dev-L", ip="192.0.2.2", ai=0.9)])
    right = stage.process([_env("r1", 2, device="dev-R", ip="198.18.0.1", ai=0.9),
                           _env("r2", 3, device="dev-R", ip="198.18.0.2", ai=0.9)])
    assert left[1].cluster.cluster_id != right[1].cluster.cluster_id  # type: ignore[union-attr]
    bridge = stage.process([_env("x", 4, device="dev-L", ip="192.0.2.9", ai=0.9,
                                 links=("https://fresh-outlet.com/a",))])
    assert bridge[0].cluster is not None and bridge[0].cluster.size == 3
    bridge2 = stage.process([_env("y", 5, device="dev-R", ip="198.18.0.9", ai=0.9,
                                  links=("https://fresh-outlet.com/b",))])
    assert bridge2[0].cluster is not None
    assert bridge2[0].cluster.size == 6
    with engine.connect() as conn:
        ids = conn.execute(sa.select(signal_accounts.c.cluster_id).distinct()
                           .where(signal_accounts.c.cluster_id.is_not(None))).scalars().all()
        assert len(ids) == 1
        assert conn.execute(sa.select(sa.func.count()).select_from(signal_clusters)).scalar() == 1


def test_update_adding_a_link_joins_existing_infrastructure(engine: Engine) -> None:
    stage = _stage(engine)
    stage.process([_env("u1", 0, device="dev-1", ip="192.0.2.1", links=("https://outlet-z.com/",)),
                   _env("u2", 1, device="dev-2", ip="192.0.2.2")])
    alone = stage.process([_env("u3", 2, device="dev-3", ip="198.18.7.3")])
    assert alone[0].cluster.cluster_id is None  # type: ignore[union-attr]
    update = _env("u2", 30, links=("https://www.outlet-z.com/x",),
                  event_type="profile.updated.v1", suffix="u")
    out = stage.process([update])
    assert out[0].cluster is not None and out[0].cluster.cluster_id is not None
    assert out[0].cluster.size == 2


def test_one_shared_outlet_links_only_suspicious_avatars(engine: Engine) -> None:
    """A lone shared fresh link domain (2.0) is below the link threshold; two AI-face avatars
    sharing it pass it (avatar pair bonus)."""
    stage = _stage(engine)
    out = stage.process([_env("alpha", 0, ip="192.0.2.1", links=("https://lone.com/a",), ai=0.1),
                         _env("bravo9x", 1, ip="198.18.0.1", links=("https://lone.com/b",),
                              ai=0.1)])
    assert out[1].cluster is not None and out[1].cluster.cluster_id is None
    out = stage.process([_env("carol", 2, ip="203.0.113.1", links=("https://other.com/a",),
                              ai=0.95),
                         _env("delta7y", 3, ip="198.51.100.1", links=("https://other.com/b",),
                              ai=0.95)])
    assert out[1].cluster is not None and out[1].cluster.cluster_id is not None
    shared = out[1].cluster.account_evidence[0]["shared"]
    assert "other.com" in shared and "both avatars AI-generated or reused" in shared


def test_nat_address_alone_does_not_link(engine: Engine) -> None:
    stage = _stage(engine)
    crowd = [_env(f"n{i}", i * 0.01, ip=f"172.56.0.{i % 250 + 1}") for i in range(300)]
    out = stage.process(crowd)
    assert all(e.cluster is not None and e.cluster.cluster_id is None for e in out[-50:])


def test_retention_deletes_old_buckets(engine: Engine) -> None:
    stage = _stage(engine)
    stage.process([_env("o1", 0), _env("o2", 60 * 24 * 40)])
    now_s = int((T0 + timedelta(days=40)).timestamp())
    deleted = run_retention(engine, Settings(), now_s)
    assert deleted["counts"] > 0 and deleted["features"] > 0
    with engine.connect() as conn:
        oldest = conn.execute(sa.select(sa.func.min(signal_counts.c.bucket_s))).scalar()
    assert oldest >= now_s - 30 * 86400


def test_concurrent_merges_give_one_cluster(fresh_database_url: str) -> None:
    upgrade(fresh_database_url)
    engine = make_engine(fresh_database_url, pool_size=4)
    stage = _stage(engine)
    p_site, q_site = "https://p-outlet.com/", "https://q-outlet.com/"
    stage.process([_env("p1", 0, device="dev-P", links=(p_site,)),
                   _env("p2", 1, device="dev-P", links=(p_site,)),
                   _env("q1", 2, device="dev-Q", links=(q_site,)),
                   _env("q2", 3, device="dev-Q", links=(q_site,))])
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def work(batch: list[Envelope]) -> None:
        try:
            barrier.wait(timeout=10)
            SignalStage(engine, Settings()).process(batch)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    waves = []
    for i in range(6):
        a = [_env(f"s{i}", 10 + i, links=(p_site, q_site))]
        b = [_env(f"t{i}", 10 + i, links=(q_site, p_site))]
        threads = [threading.Thread(target=work, args=(x,)) for x in (a, b)]
        for t in threads:
            t.start()
        waves.append(threads)
        for t in threads:
            t.join(timeout=60)
            assert not t.is_alive(), "worker hung (deadlock?)"
    assert not errors, errors
    with engine.connect() as conn:
        ids = conn.execute(sa.select(signal_accounts.c.cluster_id).distinct()
                           .where(signal_accounts.c.cluster_id.is_not(None))).scalars().all()
        clusters = conn.execute(sa.select(signal_clusters.c.size)).scalars().all()
    assert len(ids) == 1
    assert clusters == [16]
    engine.dispose()


def _recounted(engine: Engine) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]],
                                        set[tuple[str, str, str, int]],
                                        set[tuple[str, str, str, int]]]:
    with engine.connect() as conn:
        members: dict[str, list[int]] = {}
        for cid, ai, reused, burst in conn.execute(sa.select(
                signal_accounts.c.cluster_id, signal_accounts.c.ai_face,
                signal_accounts.c.reused_photo, signal_accounts.c.burst)
                .where(signal_accounts.c.cluster_id.is_not(None))):
            row = members.setdefault(cid, [0, 0, 0, 0])
            for i, flag in enumerate((True, ai, reused, burst)):
                row[i] += int(bool(flag))
        c = signal_clusters
        stored = {r[0]: tuple(r[1:]) for r in conn.execute(sa.select(
            c.c.cluster_id, c.c.size, c.c.ai_faces, c.c.reused_photos, c.c.burst_members))}
        f, a = signal_account_features, signal_accounts
        recount = {tuple(r) for r in conn.execute(
            sa.select(a.c.cluster_id, f.c.kind, f.c.value, sa.func.count())
            .select_from(f.join(a, a.c.account_id == f.c.account_id))
            .where(a.c.cluster_id.is_not(None)).group_by(a.c.cluster_id, f.c.kind, f.c.value))}
        cf = signal_cluster_features
        kept = {tuple(r) for r in conn.execute(
            sa.select(cf.c.cluster_id, cf.c.kind, cf.c.value, cf.c.members))}
    return {k: tuple(v) for k, v in members.items()}, stored, recount, kept


def test_running_cluster_counts_equal_a_recount_of_members(engine: Engine) -> None:
    """Joins, merges of clusters, profile updates and late flags keep the running counters and
    per-cluster feature counts equal to a recount from the member rows."""
    stage = _stage(engine)
    rng = random.Random(5)
    envs = []
    for i in range(160):
        group = rng.randrange(12)
        envs.append(_env(f"m{i}", i, device=f"dev-{group}" if rng.random() < 0.7 else None,
                         ip=f"10.{group}.{rng.randrange(2)}.{i % 200 + 1}",
                         links=(f"https://site{group // 3}.example/",) if rng.random() < 0.3
                         else (), ai=rng.random()))
    for i in range(0, 160, 7):
        envs.append(_env(f"m{i}", 200 + i, links=(f"https://bridge{i % 3}.example/",),
                         event_type="profile.updated.v1", suffix="u", ai=0.95))
    envs.sort(key=lambda e: e.event.occurred_at)
    for start in range(0, len(envs), 13):
        stage.process(envs[start:start + 13])
    members, stored, recount, kept = _recounted(engine)
    assert len(stored) >= 3
    assert members == stored
    assert recount == kept


def test_one_batch_reaching_a_cluster_through_two_members_merges_once(engine: Engine) -> None:
    """Two unrelated links of one batch reach cluster X through different members, each together
    with a bigger cluster: X, Y and Z must end as one cluster (not X merged twice)."""
    stage = _stage(engine)
    stage.process([_env("x1", 0, device="DX", ip="10.1.1.1", ai=0.9),
                   _env("x2", 1, device="DX", ip="10.2.2.2", ai=0.9)])
    stage.process([_env(f"y{i}", 2 + i, device="DY", ip=f"10.3.{i}.1", ai=0.9) for i in range(3)])
    stage.process([_env(f"z{i}", 6 + i, device="DZ", ip=f"10.4.{i}.1", ai=0.9) for i in range(3)])
    out = stage.process([_env("p", 10, device="DY", ip="10.1.1.9", ai=0.9),
                         _env("q", 11, device="DZ", ip="10.2.2.9", ai=0.9)])
    assert out[0].cluster is not None and out[1].cluster is not None
    assert out[0].cluster.cluster_id == out[1].cluster.cluster_id
    assert out[1].cluster.size == 10
    members, stored, recount, kept = _recounted(engine)
    assert members == stored and len(stored) == 1
    assert recount == kept
    again = stage.process([_env("r", 12, device="DX", ip="10.9.9.9", ai=0.9)])
    assert again[0].cluster is not None and again[0].cluster.size == 11
