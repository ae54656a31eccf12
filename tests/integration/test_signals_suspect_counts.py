"""Suspect counts of the signals stage on PostgreSQL and SQLite: window buckets, late flags,
redelivery, and the avatar-pair bonus that depends on them, in the stage and the reconcile."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.settings import Settings
from pipeline.signals import repository as repo
from pipeline.signals.recluster import reconcile
from pipeline.signals.stage import POPULATION, SignalStage
from pipeline.signals.windows import DAY_SECONDS, window_range
from pipeline.store.signal_tables import signal_accounts, signal_counts, signal_suspect_counts
from pipeline.types import AccountEvent, AvatarResult, Envelope

T0 = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
S0 = int(T0.timestamp())
FINE = 600


def _env(account: str, minutes: float = 0, *, links: tuple[str, ...] = (),
         ai: float | None = None, update: bool = False, suffix: str = "c",
         username: str | None = None) -> Envelope:
    event = AccountEvent(
        event_type="profile.updated.v1" if update else "account.created.v1",
        event_id=f"evt-{account}-{suffix}", occurred_at=T0 + timedelta(minutes=minutes),
        account_id=account,
        display_name=None if update else f"Person {account}",
        username=None if update else (username or f"user_{account}"),
        email_domain=None if update else f"{account}-mail.example.org",
        signup_ip=None if update else f"198.51.{zlib.crc32(account.encode()) % 200}.9",
        device_id=None if update else f"dev-{account}",
        country=None if update else "US", bio=None if update else "", links=links,
    )
    avatar = AvatarResult(status="scored", score=ai) if ai is not None else None
    return Envelope(event=event, avatar=avatar, matches=())


def _rows(engine: Engine, table: sa.Table) -> dict[tuple[str, str, int, int], int]:
    with engine.connect() as conn:
        return {(r.kind, r.value, r.width_s, r.bucket_s): r.count
                for r in conn.execute(sa.select(table))}


def _suspect_values(engine: Engine) -> dict[tuple[str, int, int], int]:
    return {(v, w, b): n for (k, v, w, b), n in _rows(engine, signal_suspect_counts).items()
            if k == "link_domain"}


def test_suspect_values_counted_at_first_sight_also_when_the_flag_comes_later(
        engine: Engine) -> None:
    stage = SignalStage(engine, Settings())
    day = 24 * 60
    stage.process([_env("s", 0, links=("https://a-site.com/x",), ai=0.9),
                   _env("h", 0, links=("https://b-site.com/x",), ai=0.1)])
    assert _suspect_values(engine) == {("a-site.com", FINE, S0 - S0 % FINE): 1,
                                       ("a-site.com", DAY_SECONDS, S0 - S0 % DAY_SECONDS): 1}
    plain = _rows(engine, signal_counts)
    suspect = _rows(engine, signal_suspect_counts)
    assert set(suspect) < set(plain)
    assert all(suspect[k] <= plain[k] for k in suspect)

    late = [_env("h", 2 * day, links=("https://c-site.com/y",), ai=0.95, update=True, suffix="u"),
            _env("s", 2 * day, links=("https://d-site.com/z",), update=True, suffix="u")]
    stage.process(late)
    t2 = S0 + 2 * DAY_SECONDS
    want = {}
    for value, at in (("a-site.com", S0), ("b-site.com", S0), ("c-site.com", t2),
                      ("d-site.com", t2)):
        for width in (FINE, DAY_SECONDS):
            want[(value, width, at - at % width)] = 1
    assert _suspect_values(engine) == want
    h_rows = {k for k in _rows(engine, signal_suspect_counts) if k[3] == S0 - S0 % FINE}
    assert {k[0] for k in h_rows} >= {"device", "email_domain", "link_domain", "ip24"}

    before = (_rows(engine, signal_counts), _rows(engine, signal_suspect_counts))
    stage.process(late + [_env("s", 0, links=("https://a-site.com/x",), ai=0.9)])
    assert (_rows(engine, signal_counts), _rows(engine, signal_suspect_counts)) == before


def test_suspect_counts_read_over_a_window_and_deleted_by_retention(engine: Engine) -> None:
    stage = SignalStage(engine, Settings())
    stage.process([_env(f"w{i}", i * 24 * 60, links=("https://w-site.com/",), ai=0.9)
                   for i in range(10)])
    key = ("link_domain", "w-site.com")
    first, last = window_range(T0 + timedelta(days=9), 168.0, DAY_SECONDS)
    with engine.connect() as conn:
        week = repo.read_counts(conn, [key], DAY_SECONDS, first, last, signal_suspect_counts)
        fine = repo.read_counts(conn, [key], FINE, S0, S0 + 3600, signal_suspect_counts)
    assert week == {key: 8} and fine == {key: 1}
    repo_cut = S0 + 5 * DAY_SECONDS
    old = sum(1 for k in _rows(engine, signal_suspect_counts) if k[3] < repo_cut)
    assert old > 10
    with engine.begin() as conn:
        deleted = repo.delete_older_than(conn, repo_cut)
    assert deleted["suspect_counts"] == old
    assert min(b for _k, _v, _w, b in _rows(engine, signal_suspect_counts)) >= repo_cut


def _seed_window(engine: Engine, holders: dict[str, tuple[int, int]]) -> None:
    """Counts of a week of a large stream before T0: ``holders`` maps a link domain to (holders,
    suspect holders); 500,000 sign-ups. Put in the day bucket (the stage's week) and in a fine
    bucket an hour before T0 (the reconcile's fine-width week)."""
    earlier = S0 - 3600
    plain: dict[tuple[str, str, int, int], int] = {}
    suspect: dict[tuple[str, str, int, int], int] = {}
    for width in (FINE, DAY_SECONDS):
        bucket = earlier - earlier % width
        plain[(*POPULATION, width, bucket)] = 500_000
        for value, (n, s) in holders.items():
            plain[("link_domain", value, width, bucket)] = n
            suspect[("link_domain", value, width, bucket)] = s
    with engine.begin() as conn:
        repo.add_counts(conn, plain)
        repo.add_counts(conn, suspect, signal_suspect_counts)


def _clusters(engine: Engine) -> dict[str, str | None]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(signal_accounts.c.account_id,
                                           signal_accounts.c.cluster_id)).tuples().all())


@pytest.mark.parametrize("min_share", [0.25, 0.0])
def test_pair_bonus_on_a_concentrated_outlet_not_on_a_popular_domain(
        engine: Engine, min_share: float) -> None:
    settings = Settings()
    settings.signals.bonus_min_suspect_share = min_share
    _seed_window(engine, {"localnews-site.com": (1500, 22), "outlet-site.com": (300, 240)})
    stage = SignalStage(engine, settings)
    out = stage.process([
        _env("pa", 0, links=("https://localnews-site.com/1",), ai=0.9, username="anna.lee"),
        _env("pb", 1, links=("https://www.localnews-site.com/2",), ai=0.8, username="bobby77"),
        _env("ca", 2, links=("https://outlet-site.com/a",), ai=0.9, username="carol_k"),
        _env("cb", 3, links=("https://outlet-site.com/b",), ai=0.7, username="dave.x12"),
        _env("honest", 4, links=("https://outlet-site.com/c",), ai=0.1, username="erin"),
    ])
    by = {e.event.account_id: e.cluster for e in out}
    assert by["ca"] is not None and by["cb"] is not None and by["honest"] is not None
    assert by["ca"].cluster_id is not None and by["ca"].cluster_id == by["cb"].cluster_id
    assert by["honest"].cluster_id is None
    assert by["pa"] is not None and by["pb"] is not None
    assert [(x["account_id"], x["evidence"]) for x in by["cb"].account_evidence] == [("ca", 3.25)]
    assert "both avatars AI-generated or reused" in by["cb"].account_evidence[0]["shared"]
    popular_linked = by["pa"].cluster_id is not None and by["pa"].cluster_id == by["pb"].cluster_id
    assert popular_linked == (min_share == 0.0)

    streamed = _clusters(engine)
    report = reconcile(engine, settings)
    assert report.ran and report.accounts_moved == 0
    assert _clusters(engine) == streamed
