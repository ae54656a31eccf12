"""The review app over real PostgreSQL: auth on every route, CSRF, decisions, labels, bank."""

from __future__ import annotations

import csv
import json
import re
import warnings
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.routing import APIRoute

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette >= 1.0 asks for httpx2, which is not packaged yet
    from fastapi.testclient import TestClient

from pipeline.review.app import PUBLIC_PATHS, create_app
from pipeline.review.auth import create_reviewer
from pipeline.review.labels import export_labels
from pipeline.review.sample import Showcase, seed_showcase
from pipeline.settings import Settings
from pipeline.store.db import make_engine
from pipeline.store.dedupe_tables import photos
from pipeline.store.images import ImageStore
from pipeline.store.migrate import upgrade
from pipeline.store.review_tables import review_audit, review_labels
from pipeline.store.tables import accounts, decisions, review_items

PASSWORD = "correct horse battery"


def faces(shared_dir: Path, kind: str, n: int) -> list[bytes]:
    files = sorted((shared_dir / "data" / "faces" / kind).glob("*.jpg"))[:n]
    assert len(files) == n
    return [f.read_bytes() for f in files]


@pytest.fixture
def world(fresh_database_url: str, shared_dir: Path, tmp_path: Path
          ) -> tuple[TestClient, sa.engine.Engine, Showcase]:
    upgrade(fresh_database_url)
    settings = Settings(database={"url": fresh_database_url},
                        review={"image_dir": tmp_path / "images"}, environment="test")
    engine = make_engine(fresh_database_url)
    show = seed_showcase(engine, ImageStore(tmp_path / "images"), faces(shared_dir, "fake", 8),
                         faces(shared_dir, "real", 1))
    create_reviewer(engine, "alice", PASSWORD, "reviewer", "Europe/Oslo")
    create_reviewer(engine, "lena", PASSWORD, "lead")
    return TestClient(create_app(settings, engine)), engine, show


def login(client: TestClient, user: str) -> str:
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token
    r = client.post("/login", data={"username": user, "password": PASSWORD,
                                    "csrf_token": token.group(1), "next": "/"},
                    follow_redirects=False)
    assert r.status_code == 303, r.text
    return str(client.get("/api/me").json()["csrf_token"])


def test_every_route_but_health_and_metrics_requires_sign_in(world) -> None:  # type: ignore[no-untyped-def]
    client, _engine, show = world
    app = client.app
    checked = 0
    for route in app.routes:  # type: ignore[attr-defined]
        if not isinstance(route, APIRoute):
            continue
        path = re.sub(r"\{[^}]+\}", "1", route.path)
        for method in route.methods:
            r = client.request(method, path, follow_redirects=False,
                               headers={"content-type": "application/json"}, content=b"{}")
            if route.path in PUBLIC_PATHS:
                continue
            checked += 1
            if method == "GET" and not path.startswith(("/api/", "/images/")):
                assert r.status_code == 303, (method, path, r.status_code)
                assert r.headers["location"].startswith("/login")
            else:
                assert r.status_code in (401, 403), (method, path, r.status_code)
    assert checked >= 18
    assert client.get("/healthz").status_code == 200
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and "unmask_review_queue_depth_items" in metrics.text
    assert client.get("/docs").status_code == 404
    assert client.get(f"/images/{show.stolen_sha256}").status_code == 401


def test_wrong_password_and_csrf_refusals(world) -> None:  # type: ignore[no-untyped-def]
    client, engine, _show = world
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
    assert token
    r = client.post("/login", data={"username": "alice", "password": "wrong password!",
                                    "csrf_token": token.group(1)})
    assert r.status_code == 401 and "Wrong user name or password" in r.text
    r = client.post("/login", data={"username": "alice", "password": PASSWORD})
    assert r.status_code == 403
    csrf = login(client, "alice")
    assert client.post("/api/queues/ai-avatars/claim").status_code == 403
    assert client.post("/api/queues/ai-avatars/claim",
                       headers={"X-CSRF-Token": "x" + csrf}).status_code == 403
    r = client.post("/queues/ai-avatars/claim", data={"csrf_token": "forged"},
                    follow_redirects=False)
    assert r.status_code == 403
    with engine.connect() as conn:
        claimed = conn.execute(sa.select(sa.func.count()).select_from(review_items)
                               .where(review_items.c.status == "claimed")).scalar_one()
        logins = conn.execute(sa.select(review_audit.c.action).where(
            review_audit.c.action.in_(["login", "login_failed"])).order_by(review_audit.c.id)
        ).scalars().all()
    assert claimed == 0
    assert logins == ["login_failed", "login"]
    r = client.post("/api/queues/ai-avatars/claim", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and r.json()["item"]["mine"]


def test_stolen_photo_decision_feeds_back(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client, engine, show = world
    csrf = login(client, "alice")
    h = {"X-CSRF-Token": csrf}
    queues = {q["queue"]: q for q in client.get("/api/queues").json()["queues"]}
    assert queues["stolen-photos"]["depth"] == 1 and "escalated" not in queues
    detail = client.post("/api/queues/stolen-photos/claim", headers=h).json()["item"]
    item_id = detail["item"]["id"]
    assert detail["avatar"]["face_box"] and detail["avatar"]["score"] == pytest.approx(0.12)
    assert detail["matches"][0]["distance"] == 2
    assert detail["matches"][0]["image_sha256"]
    assert detail["reasons"] and detail["policy_version"] == "sample-1"
    image = client.get(f"/images/{detail['avatar']['sha256']}")
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert image.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in image.headers["content-security-policy"]
    page = client.get(f"/items/{item_id}")
    assert page.status_code == 200
    assert 'id="face-box"' in page.text and "cdn.example/stolen.jpg" in page.text
    assert 'src="https://' not in page.text and 'href="https://' not in page.text
    r = client.post(f"/api/items/{item_id}/decide", headers=h, json={
        "outcome": "disable", "note": "portfolio photo", "avatar_label": "real",
        "photo_label": "stolen"})
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["decision_ids"] and result["decision_ids"][0].startswith(f"rev:{item_id}:")
    assert result["bank_entries"]
    with engine.connect() as conn:
        row = conn.execute(sa.select(decisions).where(
            decisions.c.decision_id == result["decision_ids"][0])).mappings().one()
        bank = conn.execute(sa.select(photos).where(
            photos.c.photo_id == result["bank_entries"][0])).mappings().one()
        labels = conn.execute(sa.select(review_labels.c.kind, review_labels.c.value)
                              .order_by(review_labels.c.id)).all()
        account = conn.execute(sa.select(accounts.c.last_action).where(
            accounts.c.account_id == show.stolen_account)).scalar_one()
    assert row["source"] == "reviewer" and row["action"] == "disable"
    assert row["published_at"] is None and row["event_id"] == f"ev-{show.stolen_account}"
    assert bank["source"] == "bank" and bank["added_by"] == "alice"
    assert bank["sha256"] == show.stolen_sha256
    assert [tuple(x) for x in labels] == [("account", "fake"), ("avatar", "real"),
                                          ("photo", "stolen")]
    assert account == "disable"
    again = client.post(f"/api/items/{item_id}/decide", headers=h, json={"outcome": "clear"})
    assert again.status_code == 409

    out = tmp_path / "labels.jsonl"
    assert export_labels(engine, out) == 3
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["kind"]: r["value"] for r in rows} == {"account": "fake", "avatar": "real",
                                                     "photo": "stolen"}
    assert all(r["reviewer"] == "alice" and r["avatar_sha256"] == show.stolen_sha256
               for r in rows)
    assert rows[0]["hashes"]["phash"]
    out_csv = tmp_path / "labels.csv"
    assert export_labels(engine, out_csv) == 3
    with open(out_csv, newline="") as fh:
        assert [r["value"] for r in csv.DictReader(fh)] == ["fake", "real", "stolen"]


def test_cluster_item_decides_every_member(world) -> None:  # type: ignore[no-untyped-def]
    client, engine, show = world
    csrf = login(client, "alice")
    h = {"X-CSRF-Token": csrf}
    detail = client.post("/api/queues/clusters/claim", headers=h).json()["item"]
    cluster = detail["cluster"]
    assert cluster["cluster_id"] == show.cluster_id
    assert len(cluster["members"]) == len(show.cluster_accounts)
    assert {b["kind"] for b in cluster["binding_features"]} >= {"ip_range", "link_domain"}
    assert len(cluster["graph"]["edges"]) == 3 * len(show.cluster_accounts)
    page = client.get(f"/items/{detail['item']['id']}")
    assert 'id="cluster-graph"' in page.text and "daily-outlet.example" in page.text
    assert "CET" in page.text or "CEST" in page.text
    r = client.post(f"/items/{detail['item']['id']}/decide",
                    data={"outcome": "disable", "note": "network", "csrf_token": csrf},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    with engine.connect() as conn:
        rows = conn.execute(sa.select(decisions.c.account_id, decisions.c.action)
                            .where(decisions.c.source == "reviewer")).all()
        last = conn.execute(sa.select(accounts.c.last_action).where(
            accounts.c.cluster_id == show.cluster_id)).scalars().all()
    assert sorted(a for a, _ in rows) == sorted(show.cluster_accounts)
    assert {act for _, act in rows} == {"disable"} and set(last) == {"disable"}
    hist = client.get("/api/history").json()["history"]
    assert hist[0]["action"] == "decide_cluster" and hist[0]["actor"] == "alice"
    assert client.get("/api/history?actor=lena").status_code == 403
    assert client.post("/api/clusters/x/decide", headers=h,
                       json={"outcome": "disable"}).status_code == 403


def test_lead_bulk_decides_a_cluster_and_closes_open_items(world) -> None:  # type: ignore[no-untyped-def]
    client, engine, show = world
    csrf = login(client, "lena")
    r = client.post(f"/api/clusters/{show.cluster_id}/decide",
                    headers={"X-CSRF-Token": csrf}, json={"outcome": "clear", "note": "family"})
    assert r.status_code == 200, r.text
    assert len(r.json()["decision_ids"]) == len(show.cluster_accounts)
    with engine.connect() as conn:
        open_cluster = conn.execute(sa.select(review_items.c.status).where(
            review_items.c.subject_id == show.cluster_id)).scalar_one()
    assert open_cluster == "decided"
    queues = {q["queue"]: q for q in client.get("/api/queues").json()["queues"]}
    assert queues["clusters"]["depth"] == 0 and "escalated" in queues


def test_repeated_wrong_passwords_lock_the_name_for_a_while(world) -> None:  # type: ignore[no-untyped-def]
    client, engine, _show = world
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
    assert token
    form = {"username": "lena", "csrf_token": token.group(1)}
    for _ in range(5):
        assert client.post("/login", data={**form, "password": "guess guess"}).status_code == 401
    r = client.post("/login", data={**form, "password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 429
    assert client.get("/api/me").status_code == 401
    with engine.connect() as conn:
        actions = conn.execute(sa.select(review_audit.c.action).where(
            review_audit.c.subject == "reviewer:lena").order_by(review_audit.c.id)
        ).scalars().all()
    assert actions[-6:] == ["login_failed"] * 5 + ["login_throttled"]
