"""A realistic stream of account events with ground truth (ordinary sign-ups plus campaigns).

Ordinary users collide honestly: mobile-carrier NAT addresses shared by thousands, popular
device fingerprints, common names, big email providers and link domains, families sharing
one device and home address, regional sites many people link to. Campaigns follow the
December 2019 case in DESIGN.md: hundreds of accounts in sub-networks with AI-generated or
stolen faces, all promoting one outlet; ``burst`` campaigns are created in bursts from a few
address ranges and device pools, ``stealth`` ones spread creation over days and rotate
infrastructure, ``stolen`` ones lean on a handful of reused (and edited) real photos. Some
campaign accounts add the outlet link later with ``profile.updated.v1``.

Deterministic for a seed. Events come out sorted by ``occurred_at``; the stream is produced
lazily from a compact plan, so a million accounts fit in memory.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

START = datetime(2026, 11, 1, tzinfo=UTC)
FIRST = [
    "anna",
    "maria",
    "john",
    "james",
    "li",
    "wei",
    "fatima",
    "ahmed",
    "olga",
    "ivan",
    "sara",
    "david",
    "emma",
    "lucas",
    "sofia",
    "mateo",
    "aisha",
    "omar",
    "chen",
    "yuki",
    "hana",
    "raj",
    "priya",
    "amit",
    "juan",
    "carlos",
    "ana",
    "pedro",
    "lena",
    "max",
    "noah",
    "mia",
    "leo",
    "zoe",
    "eva",
    "adam",
    "nina",
    "tom",
    "kate",
    "paul",
    "rosa",
    "ali",
    "sam",
    "ella",
    "ben",
    "lily",
    "jack",
    "grace",
    "ryan",
    "chloe",
]
LAST = [
    "smith",
    "johnson",
    "garcia",
    "martinez",
    "lee",
    "wang",
    "kim",
    "nguyen",
    "patel",
    "singh",
    "muller",
    "schmidt",
    "rossi",
    "silva",
    "santos",
    "ivanov",
    "novak",
    "kowalski",
    "brown",
    "jones",
    "miller",
    "davis",
    "lopez",
    "gonzalez",
    "wilson",
    "anderson",
    "thomas",
    "taylor",
    "moore",
    "jackson",
    "white",
    "harris",
    "martin",
    "thompson",
    "young",
    "allen",
    "king",
    "wright",
    "scott",
    "green",
    "baker",
    "adams",
    "nelson",
    "hill",
    "campbell",
    "mitchell",
    "roberts",
    "carter",
    "phillips",
    "evans",
]
PROVIDERS = [
    "gmail.com",
    "yahoo.com",
    "outlook.com",
    "hotmail.com",
    "icloud.com",
    "mail.ru",
    "gmx.de",
    "yandex.ru",
    "proton.me",
    "aol.com",
    "web.de",
    "qq.com",
    "naver.com",
    "live.com",
    "zoho.com",
]
SOCIAL = [
    "https://www.youtube.com/@{u}",
    "https://instagram.com/{u}",
    "https://www.tiktok.com/@{u}",
    "https://twitter.com/{u}",
    "https://www.facebook.com/{u}",
    "https://linktr.ee/{u}",
    "https://github.com/{u}",
    "https://www.twitch.tv/{u}",
]
COUNTRIES = ["US", "GB", "DE", "FR", "BR", "IN", "ID", "PH", "NG", "MX", "VN", "PL"]
WORDS = [
    "truth",
    "patriot",
    "voice",
    "liberty",
    "nation",
    "daily",
    "real",
    "free",
    "people",
    "news",
    "eagle",
    "heart",
    "proud",
    "awake",
    "wise",
    "pulse",
    "watch",
    "first",
]
STYLES = ("burst", "stealth", "stolen")
POPULAR_DEVICES = ["iphone15", "iphone14", "sm-s918b", "sm-a546b", "pixel8", "redmi-note12"]


@dataclass(frozen=True)
class TruthRow:
    """Ground truth of one account (TRUTH.csv row)."""

    account_id: str
    is_campaign: bool
    campaign_id: str
    style: str
    avatar_kind: str
    """``ai`` (generated face), ``stolen`` (a reused real photo), ``real`` or ``none``."""
    photo_key: str
    """Identity of the photo: equal keys are the same picture (possibly an edited copy)."""

    def as_csv(self) -> list[str]:
        return [
            self.account_id,
            "1" if self.is_campaign else "0",
            self.campaign_id,
            self.style,
            self.avatar_kind,
            self.photo_key,
        ]


@dataclass
class Campaign:
    campaign_id: str
    style: str
    size: int
    outlet: str
    start: float
    span_hours: float
    ranges: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    mail_domain: str = ""
    photos: list[int] = field(default_factory=list)


def _h(*parts: Any) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big")


def _zipf_index(rng: random.Random, n: int, s: float = 1.1) -> int:
    """Index in [0, n) with a Zipf-like bias towards 0 (inverse-CDF of a power law)."""
    u = rng.random()
    return min(n - 1, int(n ** (u**s) - 1) if u > 0 else 0)


class Simulation:
    """The plan of one simulated stream; ``events()`` and ``truth()`` are deterministic."""

    def __init__(
        self,
        n_accounts: int,
        days: float,
        seed: int,
        *,
        avatars: bool = True,
        faces_dir: Path | None = None,
        avatar_dir: Path | None = None,
        campaigns: int | None = None,
        start: datetime = START,
    ) -> None:
        self.n = n_accounts
        self.days = days
        self.seed = seed
        self.start = start
        self.avatars = avatars
        self.faces_dir = faces_dir
        self.avatar_dir = avatar_dir
        self._real: list[str] = []
        self._fake: list[str] = []
        if avatars and faces_dir is not None:
            self._real = sorted(p.name for p in (faces_dir / "real").glob("*.jpg"))
            self._fake = sorted(p.name for p in (faces_dir / "fake").glob("*.jpg"))
            random.Random(seed).shuffle(self._real)
        rng = random.Random(_h(seed, "plan"))
        self.campaigns = self._plan_campaigns(rng, campaigns)
        self.n_campaign = sum(c.size for c in self.campaigns)
        self.n_honest = max(0, n_accounts - self.n_campaign)
        self.n_family = int(self.n_honest * 0.03) // 3 * 3
        self._edited: dict[tuple[str, int, int], str] = {}

    # -- plan -----------------------------------------------------------------------------------

    def _plan_campaigns(self, rng: random.Random, count: int | None) -> list[Campaign]:
        total_s = self.days * 86400
        k = count if count is not None else (3 if self.n < 20_000 else 7)
        budget = max(30, int(self.n * 0.01))
        sizes = {"burst": 1.0, "stealth": 0.6, "stolen": 0.5}
        out = []
        for i in range(k):
            style = STYLES[i % 3]
            size = max(12, min(600, int(budget / k * 1.4 * sizes[style])))
            word = rng.choice(WORDS) + rng.choice(WORDS)
            outlet = (
                f"{word}-{rng.choice(['news', 'daily', 'times', 'post'])}{rng.randint(1, 99)}.com"
            )
            span = (
                rng.uniform(10, 40) if style == "burst" else rng.uniform(0.4, 0.9) * self.days * 24
            )
            begin = rng.uniform(0.05, 0.85) * total_s
            if begin + span * 3600 > total_s:
                begin = max(0.0, total_s - span * 3600 - 3600)
            c = Campaign(f"camp-{i:02d}-{style}", style, size, outlet, begin, span)
            n_ranges = 3 if style == "burst" else 10
            c.ranges = [
                f"{rng.choice([45, 91, 185, 193, 212])}.{rng.randint(0, 255)}.{rng.randint(0, 255)}"
                for _ in range(n_ranges)
            ]
            c.devices = [
                f"emu-{rng.getrandbits(48):012x}" for _ in range(6 if style == "burst" else 5)
            ]
            c.templates = [f"{rng.choice(WORDS)}_{rng.choice(WORDS)}_" for _ in range(3)]
            c.mail_domain = f"mail-{word}.com"
            c.photos = [rng.randrange(10**6) for _ in range(8 if style == "burst" else 5)]
            out.append(c)
        return out

    def _times(self) -> list[tuple[float, int, int]]:
        """(seconds from start, kind, index) of every event; kind 0 honest, 1 campaign, 2 update."""
        total_s = self.days * 86400
        rng = random.Random(_h(self.seed, "times"))
        slots: list[tuple[float, int, int]] = []
        for i in range(self.n_honest):
            if i < self.n_family:
                base = random.Random(_h(self.seed, "fam", i // 3)).uniform(0, total_s)
                t = min(total_s - 1, base + rng.uniform(0, 3 * 86400))
            else:
                day = rng.uniform(0, self.days)
                hour_shift = rng.gauss(0, 0.18) * 86400
                t = (day * 86400 + hour_shift) % total_s
            slots.append((t, 0, i))
            if rng.random() < 0.05:
                slots.append((min(total_s - 1, t + rng.uniform(3600, 10 * 86400)), 2, i))
        j = 0
        for c in self.campaigns:
            crng = random.Random(_h(self.seed, c.campaign_id, "times"))
            n_bursts = max(1, c.size // 80)
            for k in range(c.size):
                if c.style == "burst":
                    b = k % n_bursts
                    t = c.start + b * c.span_hours * 3600 / n_bursts + crng.uniform(0, 1800)
                else:
                    t = c.start + crng.uniform(0, c.span_hours * 3600)
                t = min(total_s - 1, t)
                slots.append((t, 1, j + k))
                later = 0.3 if c.style == "burst" else 0.6
                if crng.random() < later:
                    delay = crng.uniform(1800, 72 * 3600 if c.style == "burst" else 96 * 3600)
                    slots.append((min(total_s - 1, t + delay), 3, j + k))
            j += c.size
        slots.sort()
        return slots

    # -- accounts -------------------------------------------------------------------------------

    def _campaign_of(self, j: int) -> tuple[Campaign, int]:
        for c in self.campaigns:
            if j < c.size:
                return c, j
            j -= c.size
        raise IndexError(j)

    def account_id(self, kind: int, i: int) -> str:
        prefix = "h" if kind in (0, 2) else "c"
        return f"acc-{prefix}{_h(self.seed, prefix, i) % 16**12:012x}"

    def _honest(self, i: int) -> tuple[dict[str, Any], TruthRow]:
        rng = random.Random(_h(self.seed, "honest", i))
        first, last = rng.choice(FIRST), rng.choice(LAST)
        r = rng.random()
        if i < self.n_family:
            frng = random.Random(_h(self.seed, "fam", i // 3))
            last = frng.choice(LAST)
            octets = (frng.randint(1, 223), frng.randint(0, 255), frng.randint(0, 255))
            ip = "{}.{}.{}.".format(*octets) + str(frng.randint(2, 254))
            device = f"d-{frng.getrandbits(64):016x}"
        else:
            if r < 0.30:
                carrier = _zipf_index(rng, 40)
                ip = f"172.{56 + carrier % 8}.{carrier * 3 % 256}.{rng.randint(1, 254)}"
            elif r < 0.40:
                carrier = _zipf_index(rng, 20)
                ip = f"2607:fb90:{carrier:x}:{rng.getrandbits(16):x}::{rng.getrandbits(16):x}"
            else:
                ip = (
                    f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}."
                    f"{rng.randint(1, 254)}"
                )
            if rng.random() < 0.4:
                model = POPULAR_DEVICES[_zipf_index(rng, len(POPULAR_DEVICES))]
                device = f"fp-{model}-{_zipf_index(rng, 8)}"
            else:
                device = f"d-{rng.getrandbits(64):016x}"
        email = (
            PROVIDERS[_zipf_index(rng, len(PROVIDERS))]
            if rng.random() < 0.95
            else f"{last}{rng.randint(1, 9999)}.net"
        )
        style_u = rng.random()
        if style_u < 0.3:
            username = f"{first}.{last}"
        elif style_u < 0.6:
            username = f"{first}{last}{rng.randint(1, 99)}"
        elif style_u < 0.8:
            username = f"{first}_{rng.randint(1970, 2008)}"
        else:
            username = f"{first[0]}{last}{rng.randint(100, 9999)}"
        links: list[str] = []
        bio = rng.choice(
            [
                "",
                "",
                "coffee, books, travel",
                "proud parent",
                "music lover",
                "student",
                "photographer",
                "runner and cook",
            ]
        )
        lu = rng.random()
        if lu < 0.25:
            links.append(rng.choice(SOCIAL).format(u=username))
        elif lu < 0.28:
            links.append(f"https://{first}{last}{rng.randint(1, 999)}.com")
        elif lu < 0.31:
            links.append(
                f"https://www.localnews{_zipf_index(rng, 200)}.com/article/{rng.randint(1, 10**6)}"
            )
        if rng.random() < 2e-4 and self.campaigns:
            links.append(f"https://{rng.choice(self.campaigns).outlet}/story")
        avatar_kind, photo_key, url = "none", "", None
        if rng.random() < 0.7:
            avatar_kind, photo_key = "real", f"honest:{i}"
            if self._real:
                name = self._real[200 + i % max(1, len(self._real) - 200)]
                url = self._file_url("real", name)
        event = {
            "display_name": f"{first.title()} {last.title()}",
            "username": username,
            "email_domain": email,
            "signup_ip": ip,
            "device_id": device,
            "country": rng.choice(COUNTRIES),
            "avatar_url": url,
            "bio": bio,
            "links": links,
        }
        return event, TruthRow(self.account_id(0, i), False, "", "", avatar_kind, photo_key)

    def _campaign(self, j: int) -> tuple[dict[str, Any], TruthRow, bool]:
        c, k = self._campaign_of(j)
        rng = random.Random(_h(self.seed, c.campaign_id, k))
        first, last = rng.choice(FIRST), rng.choice(LAST)
        sub = k % len(c.templates)
        if c.style == "burst":
            rng_range = (
                c.ranges[sub % len(c.ranges)] if rng.random() < 0.85 else rng.choice(c.ranges)
            )
            ip = f"{rng_range}.{rng.randint(2, 254)}"
            device = c.devices[rng.randrange(len(c.devices))]
            username = f"{c.templates[sub]}{rng.randint(10, 9999)}"
            email = c.mail_domain if rng.random() < 0.4 else "gmail.com"
            ai_share = 0.75
        else:
            u = rng.random()
            if u < 0.3:
                ip = f"{rng.choice(c.ranges)}.{rng.randint(2, 254)}"
            elif u < 0.5:
                carrier = _zipf_index(rng, 40)
                ip = f"172.{56 + carrier % 8}.{carrier * 3 % 256}.{rng.randint(1, 254)}"
            else:
                ip = (
                    f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}."
                    f"{rng.randint(1, 254)}"
                )
            device = (
                rng.choice(c.devices) if rng.random() < 0.15 else f"d-{rng.getrandbits(64):016x}"
            )
            username = (
                f"{first}.{last}{rng.randint(1, 99)}"
                if rng.random() < 0.6
                else f"{c.templates[sub]}{rng.randint(10, 99)}"
            )
            email = rng.choice(["gmail.com", "outlook.com", "yahoo.com"])
            ai_share = 0.6 if c.style == "stealth" else 0.2
        link_now = rng.random() >= (0.3 if c.style == "burst" else 0.6)
        outlet_url = (
            f"https://{c.outlet}/{rng.choice(['story', 'world', 'opinion'])}/{rng.randint(1, 9999)}"
        )
        if rng.random() < ai_share:
            avatar_kind, photo_key = "ai", f"ai:{c.campaign_id}:{k}"
            url = (
                self._file_url("fake", self._fake[_h(c.campaign_id, k) % len(self._fake)])
                if self._fake
                else None
            )
        else:
            p = rng.randrange(len(c.photos))
            version = rng.randrange(3)
            avatar_kind, photo_key = "stolen", f"stolen:{c.campaign_id}:{p}"
            url = self._stolen_url(c, p, version) if self._real else None
        event = {
            "display_name": f"{first.title()} {last.title()}",
            "username": username,
            "email_domain": email,
            "signup_ip": ip,
            "device_id": device,
            "country": rng.choice(["US", "GB", "PH", "ID"]),
            "avatar_url": url,
            "bio": rng.choice(
                [
                    "Real news they won't show you",
                    "Patriot. Truth seeker.",
                    "Wake up!",
                    "Independent voice",
                ]
            ),
            "links": [outlet_url] if link_now else [],
        }
        truth = TruthRow(
            self.account_id(1, j), True, c.campaign_id, c.style, avatar_kind, photo_key
        )
        return event, truth, link_now

    def _file_url(self, sub: str, name: str) -> str:
        assert self.faces_dir is not None
        return (self.faces_dir / sub / name).resolve().as_uri()

    def _stolen_url(self, c: Campaign, p: int, version: int) -> str:
        name = self._real[c.photos[p] % min(200, len(self._real))]
        if self.avatar_dir is None or version == 0:
            return self._file_url("real", name)
        key = (c.campaign_id, p, version)
        if key not in self._edited:
            self._edited[key] = self._write_edited(name, c.campaign_id, p, version)
        return self._edited[key]

    def _write_edited(self, name: str, campaign_id: str, p: int, version: int) -> str:
        from PIL import Image, ImageOps

        assert self.faces_dir is not None and self.avatar_dir is not None
        self.avatar_dir.mkdir(parents=True, exist_ok=True)
        out = self.avatar_dir / f"{campaign_id}_{p}_{version}.jpg"
        if not out.exists():
            with Image.open(self.faces_dir / "real" / name) as im:
                img = im.convert("RGB")
                w, h = img.size
                img = img.crop((w // 20, h // 20, w - w // 20, h - h // 20)).resize(
                    (w * 9 // 10, h * 9 // 10)
                )
                if version == 2:
                    img = ImageOps.mirror(img)
                img.save(out, quality=80)
        return out.resolve().as_uri()

    # -- output ---------------------------------------------------------------------------------

    def truth(self) -> Iterator[TruthRow]:
        """One row per account: honest accounts first, then campaign accounts."""
        for i in range(self.n_honest):
            yield self._honest(i)[1]
        for j in range(self.n_campaign):
            yield self._campaign(j)[1]

    def events(self) -> Iterator[dict[str, Any]]:
        """Every event as a JSON-ready dict (the wire format), sorted by ``occurred_at``."""
        for t, kind, i in self._times():
            at = (self.start + timedelta(seconds=t)).isoformat().replace("+00:00", "Z")
            if kind in (0, 1):
                if kind == 0:
                    body, truth = self._honest(i)
                else:
                    body, truth, _ = self._campaign(i)
                yield {
                    "event_type": "account.created.v1",
                    "event_id": f"evt-{truth.account_id}-c",
                    "occurred_at": at,
                    "account_id": truth.account_id,
                    **body,
                }
            elif kind == 2:
                body, truth = self._honest(i)
                rng = random.Random(_h(self.seed, "upd", i))
                yield {
                    "event_type": "profile.updated.v1",
                    "event_id": f"evt-{truth.account_id}-u",
                    "occurred_at": at,
                    "account_id": truth.account_id,
                    "bio": rng.choice(["new here", "traveling", "hello world"]),
                    "links": [rng.choice(SOCIAL).format(u=body["username"])],
                }
            else:
                body, truth, link_now = self._campaign(i)
                c, _k = self._campaign_of(i)
                yield {
                    "event_type": "profile.updated.v1",
                    "event_id": f"evt-{truth.account_id}-u",
                    "occurred_at": at,
                    "account_id": truth.account_id,
                    "bio": "Read the real story",
                    "links": [f"https://{c.outlet}/read/{i}"],
                }


def generate(
    n_accounts: int,
    days: float,
    seed: int,
    *,
    avatars: bool = True,
    faces_dir: Path | None = None,
    avatar_dir: Path | None = None,
    campaigns: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Events of a simulated stream (see :class:`Simulation`), sorted by ``occurred_at``."""
    sim = Simulation(
        n_accounts,
        days,
        seed,
        avatars=avatars,
        faces_dir=faces_dir,
        avatar_dir=avatar_dir,
        campaigns=campaigns,
    )
    return sim.events()
