"""Sample review work: accounts, pipeline decisions and review items shaped like DecideStage's.

Used by the review tests, the claim benchmark and the screenshots, so they exercise the same
rows the pipeline writes. ``seed_items`` writes many plain items fast; ``seed_showcase`` writes a
small varied set (a cluster with shared features, a stolen photo matching a bank entry, AI
faces) with real pictures in the image store.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from PIL import Image
from sqlalchemy.engine import Connection, Engine

from pipeline.store.dedupe_tables import photos
from pipeline.store.images import ImageStore
from pipeline.store.signal_tables import signal_account_features
from pipeline.store.tables import accounts, decisions, review_items

POLICY_VERSION = "sample-1"
FFHQ_EYES = ((0.385, 0.48), (0.615, 0.48))


def _evidence(account_id: str, decision_id: str, avatar: dict[str, Any] | None,
              matches: list[dict[str, Any]], cluster: dict[str, Any] | None,
              reasons: list[str]) -> dict[str, Any]:
    return {
        "avatar": avatar, "matches": matches, "cluster": cluster,
        "signals": {"avatar_score": (avatar or {}).get("score"), "bank_matches":
                    sum(1 for m in matches if m["source"] == "bank"),
                    "cluster_size": (cluster or {}).get("size", 1)},
        "rules": [r.split(":")[0] for r in reasons], "reasons": reasons,
        "account_id": account_id, "decision_id": decision_id, "policy_version": POLICY_VERSION,
    }


def _rows(conn: Connection, account: dict[str, Any], item: dict[str, Any] | None,
          now: datetime, score: float, priority: int, evidence: dict[str, Any]) -> None:
    conn.execute(accounts.insert().values(**account))
    conn.execute(decisions.insert().values(
        decision_id=evidence["decision_id"], event_id=evidence["decision_id"][4:],
        account_id=account["account_id"], decided_at=now, event_time=now, action="review",
        score=score, priority=priority, reasons=evidence["reasons"],
        policy_version=POLICY_VERSION, source="pipeline", evidence=evidence, published_at=now))
    if item is not None:
        conn.execute(review_items.insert().values(**item))


def seed_items(engine: Engine, count: int, queue: str = "accounts", prefix: str = "acct",
               start: datetime | None = None, chunk: int = 5000) -> None:
    """``count`` pending account items in ``queue`` (priorities 0..99, ascending created_at)."""
    start = start or datetime.now(UTC) - timedelta(days=1)
    for lo in range(0, count, chunk):
        acc, dec, items = [], [], []
        for i in range(lo, min(count, lo + chunk)):
            aid = f"{prefix}-{i}"
            did = f"dec:ev-{prefix}-{i}"
            at = start + timedelta(milliseconds=i)
            priority = (i * 37) % 100
            evidence = _evidence(aid, did, {"status": "scored", "score": 0.8}, [], None,
                                 ["ai_face: avatar score 0.80"])
            acc.append({"account_id": aid, "updated_at": at, "username": aid,
                        "avatar_score": 0.8, "last_action": "review"})
            dec.append({"decision_id": did, "event_id": f"ev-{prefix}-{i}", "account_id": aid,
                        "decided_at": at, "event_time": at, "action": "review", "score": 0.8,
                        "priority": priority, "reasons": evidence["reasons"],
                        "policy_version": POLICY_VERSION, "source": "pipeline",
                        "evidence": {}, "published_at": at})
            items.append({"queue": queue, "subject_type": "account", "subject_id": aid,
                          "open_key": f"account:{aid}", "priority": priority,
                          "status": "pending", "evidence": evidence, "decision_id": did,
                          "created_at": at, "updated_at": at})
        with engine.begin() as conn:
            conn.execute(accounts.insert(), acc)
            conn.execute(decisions.insert(), dec)
            conn.execute(review_items.insert(), items)


@dataclass(frozen=True)
class Showcase:
    cluster_id: str
    cluster_accounts: tuple[str, ...]
    stolen_account: str
    stolen_sha256: str
    bank_photo_id: str
    ai_accounts: tuple[str, ...]


def _picture(data: bytes) -> tuple[int, int, dict[str, str]]:
    from pipeline.dedupe.hashes import compute_hashes

    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.width, image.height, compute_hashes(image)


def _avatar(store: ImageStore, data: bytes, score: float) -> dict[str, Any]:
    sha = store.put(data)
    width, height, hashes = _picture(data)
    face_box = [round(width * 0.24), round(height * 0.26), round(width * 0.52),
                round(height * 0.56)]
    return {"status": "scored", "error_code": None, "sha256": sha, "score": score,
            "face_found": True, "face_box": face_box, "eyes": [list(e) for e in FFHQ_EYES],
            "width": width, "height": height, "model_version": "sample-detector",
            "hashes": hashes, "latency_ms": 12.0, "eye_offset": 0.01}


def seed_showcase(engine: Engine, store: ImageStore, fake_faces: Sequence[bytes],
                  real_faces: Sequence[bytes], now: datetime | None = None) -> Showcase:
    """A cluster of len(fake_faces[:6]) accounts, one stolen-photo item, two AI-face items."""
    now = now or datetime.now(UTC)
    cid = "c-7f3a91"
    members = [f"acct-net-{i}" for i in range(min(6, len(fake_faces)))]
    shared = [("ip_range", "203.0.113.0/24"), ("link_domain", "daily-outlet.example"),
              ("name_template", "<first> <last> <dd>")]
    binding = [{"kind": k, "label": v, "count": len(members), "weight": w}
               for (k, v), w in zip(shared, (2.1, 3.4, 1.2), strict=True)]
    cluster = {"cluster_id": cid, "cluster_score": 0.91, "size": len(members),
               "binding_features": binding,
               "account_evidence": [{"account_id": m, "evidence": 4.2,
                                     "shared": [v for _k, v in shared]} for m in members[1:4]]}
    with engine.begin() as conn:
        for i, aid in enumerate(members):
            at = now - timedelta(hours=5, minutes=7 * i)
            avatar = _avatar(store, fake_faces[i], 0.9 - i * 0.03)
            did = f"dec:ev-{aid}"
            evidence = _evidence(aid, did, avatar, [], cluster,
                                 ["cluster: score 0.91 with 6 members",
                                  "ai_face: avatar score 0.90"])
            item = None
            if i == 0:
                item = {"queue": "clusters", "subject_type": "cluster", "subject_id": cid,
                        "open_key": f"cluster:{cid}", "priority": 90, "status": "pending",
                        "evidence": evidence, "decision_id": did, "created_at": at,
                        "updated_at": at}
            _rows(conn, {"account_id": aid, "created_at": at, "updated_at": at,
                         "display_name": f"Anna Berg {10 + i}", "username": f"anna.berg{10 + i}",
                         "country": "SE", "avatar_url": f"https://cdn.example/{aid}.jpg",
                         "avatar_sha256": avatar["sha256"], "avatar_score": avatar["score"],
                         "last_action": "review", "cluster_id": cid}, item, at, 0.91, 90,
                  evidence)
            conn.execute(signal_account_features.insert(), [
                {"account_id": aid, "kind": k, "value": hashlib.sha256(v.encode()).hexdigest(),
                 "label": v, "seen_s": int(at.timestamp())} for k, v in shared])
        original = real_faces[0]
        bank_sha = store.put(original)
        with Image.open(io.BytesIO(original)) as image:
            buf = io.BytesIO()
            image.convert("RGB").save(buf, format="JPEG", quality=70)
        reused = buf.getvalue()
        bank_id = "bank:sample0001"
        conn.execute(photos.insert().values(
            photo_id=bank_id, source="bank", label="photographer portfolio (reported)",
            origin="trust-and-safety report", added_by="seed", sha256=bank_sha, created_at=now))
        stolen = "acct-stolen-1"
        avatar = _avatar(store, reused, 0.12)
        matches = [{"source": "bank", "entry_id": bank_id, "distance": 2, "transform": "plain",
                    "hash_kind": "phash", "label": "photographer portfolio (reported)",
                    "account_id": None}]
        did = f"dec:ev-{stolen}"
        at = now - timedelta(hours=2)
        evidence = _evidence(stolen, did, avatar, matches, None,
                             ["bank_match: distance 2 to a known stolen photo"])
        _rows(conn, {"account_id": stolen, "created_at": at, "updated_at": at,
                     "display_name": "Maria Lund", "username": "maria_lund_official",
                     "country": "NO", "avatar_url": "https://cdn.example/stolen.jpg",
                     "avatar_sha256": avatar["sha256"], "avatar_score": 0.12,
                     "last_action": "review"},
              {"queue": "stolen-photos", "subject_type": "account", "subject_id": stolen,
               "open_key": f"account:{stolen}", "priority": 70, "status": "pending",
               "evidence": evidence, "decision_id": did, "created_at": at, "updated_at": at},
              at, 0.7, 70, evidence)
        ai_accounts = []
        for j, data in enumerate(fake_faces[6:8]):
            aid = f"acct-ai-{j}"
            ai_accounts.append(aid)
            avatar = _avatar(store, data, 0.83 + j * 0.05)
            did = f"dec:ev-{aid}"
            at = now - timedelta(minutes=40 + j * 15)
            evidence = _evidence(aid, did, avatar, [], None,
                                 [f"ai_face: avatar score {avatar['score']:.2f}"])
            _rows(conn, {"account_id": aid, "created_at": at, "updated_at": at,
                         "display_name": f"Jon Park {j}", "username": f"jpark{j}",
                         "country": "US", "avatar_url": f"https://cdn.example/{aid}.jpg",
                         "avatar_sha256": avatar["sha256"], "avatar_score": avatar["score"],
                         "last_action": "review"},
                  {"queue": "ai-avatars", "subject_type": "account", "subject_id": aid,
                   "open_key": f"account:{aid}", "priority": 60 + j, "status": "pending",
                   "evidence": evidence, "decision_id": did, "created_at": at,
                   "updated_at": at}, at, avatar["score"], 60 + j, evidence)
    return Showcase(cid, tuple(members), stolen, avatar_sha(store, reused), bank_id,
                    tuple(ai_accounts))


def avatar_sha(_store: ImageStore, data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
