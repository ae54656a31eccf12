"""Features of one account event that other accounts may share.

Pure: no SQL, no network. Personal data (IP prefixes, device ids, email domains) leaves this
module only as a keyed HMAC; what a reviewer sees is a display-safe label (a registered link
domain, a template, or a short HMAC prefix). Link domains are reduced to their registered
domain with the public-suffix list shipped inside ``tldextract`` (never fetched).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from functools import cache, lru_cache
from operator import attrgetter
from typing import Any, NamedTuple

import tldextract
from tldextract.remote import lenient_netloc

from pipeline.types import AccountEvent, AvatarResult

PERSONAL_KINDS = frozenset({"ip24", "ip48", "device", "email_domain"})
"""Kinds whose raw value is personal data: stored and shown only as HMAC."""

FEATURE_KINDS = (
    "ip24",
    "ip48",
    "device",
    "email_domain",
    "name_tpl",
    "user_tpl",
    "user_shape",
    "link_domain",
    "phash",
)

_FEATURE_ORDER = attrgetter("kind", "value", "label")
"""The order of :class:`Feature` as a key."""
_URL_IN_TEXT = re.compile(r"(?i)\b(?:https?://|www\.)[^\s<>\"']+")
_DIGITS = re.compile(r"\d+")
_SPACES = re.compile(r"\s+")


class Feature(NamedTuple):
    """A shareable value of an account: ``kind``, stored ``value``, display-safe ``label``.

    A named tuple: hashed, compared and ordered as the tuple ``(kind, value, label)`` (what the
    frozen, ordered dataclass it replaces did, with the same hash), built and hashed in C."""

    kind: str
    value: str
    label: str


@cache
def _extractor() -> tldextract.TLDExtract:
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


@lru_cache(maxsize=65_536)
def keyed_hash(secret: bytes, kind: str, raw: str) -> str:
    """HMAC-SHA256 of ``kind:raw`` under ``secret``, as 32 hex characters (128 bits).

    Memoised (shared /24s, devices and email domains repeat across a stream)."""
    return hmac.new(secret, f"{kind}:{raw}".encode(), hashlib.sha256).hexdigest()[:32]


def _ipv4_prefix(address: str) -> str | None:
    parts = address.split(".")
    if len(parts) != 4:
        return None
    for p in parts:
        if not (p.isascii() and p.isdigit()) or len(p) > 3 or (len(p) > 1 and p[0] == "0"):
            return None
        if int(p) > 255:
            return None
    return f"{parts[0]}.{parts[1]}.{parts[2]}.0/24"


def ip_prefix(address: str) -> tuple[str, str] | None:
    """``("ip24", "a.b.c.0/24")`` for IPv4 (and mapped IPv6), ``("ip48", "x:y:z::/48")`` for v6."""
    fast = _ipv4_prefix(address.strip())
    if fast is not None:
        return "ip24", fast
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address):
        return "ip24", str(ipaddress.ip_network(f"{ip}/24", strict=False))
    return "ip48", str(ipaddress.ip_network(f"{ip}/48", strict=False))


def digits_template(text: str) -> str:
    """Lower-cased text with every run of digits replaced by ``#``: ``John123`` -> ``john#``."""
    return _DIGITS.sub("#", _SPACES.sub(" ", text.strip().lower()))


def shape_template(text: str) -> str:
    """Letters/digits shape with runs collapsed: ``john_smith1987`` -> ``a_a9{4}``.

    Letter runs become ``a`` (``A`` when the run starts upper-case), digit runs ``9{n}`` with
    their length, anything else is kept.
    """
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        j = i + 1
        if ch.isalpha():
            while j < len(text) and text[j].isalpha():
                j += 1
            out.append("A" if ch.isupper() else "a")
        elif ch.isdigit():
            while j < len(text) and text[j].isdigit():
                j += 1
            out.append(f"9{{{j - i}}}")
        else:
            out.append(ch)
        i = j
    return "".join(out)


_DOMAIN_OF_HOST: dict[str, str | None] = {}
_DOMAIN_CACHE_SIZE = 65_536


def registered_domain(url: str) -> str | None:
    """The registered domain of ``url`` (``news.example.co.uk`` -> ``example.co.uk``), or None.

    Memoised per host: ``tldextract`` reads nothing of a URL but its lenient host
    (``extract_str`` is ``_extract_netloc(lenient_netloc(url))``), and the public-suffix lookup
    dominates feature extraction while links to one outlet differ only in their paths."""
    candidate = url.strip()
    if not candidate:
        return None
    host = lenient_netloc(candidate)
    if host in _DOMAIN_OF_HOST:
        return _DOMAIN_OF_HOST[host]
    extracted = _extractor()(candidate)
    domain = None
    if extracted.suffix and extracted.domain:
        domain = f"{extracted.domain}.{extracted.suffix}".lower()
    if len(_DOMAIN_OF_HOST) >= _DOMAIN_CACHE_SIZE:
        _DOMAIN_OF_HOST.clear()
    _DOMAIN_OF_HOST[host] = domain
    return domain


def link_domains(bio: str | None, links: tuple[str, ...] | None) -> list[str]:
    """Registered domains of the URLs in ``links`` and in ``bio``, de-duplicated, sorted."""
    found: set[str] = set()
    for url in list(links or ()) + _URL_IN_TEXT.findall(bio or ""):
        domain = registered_domain(url)
        if domain:
            found.add(domain)
    return sorted(found)


@lru_cache(maxsize=65_536)
def _personal(secret: bytes, kind: str, raw: str) -> Feature:
    digest = keyed_hash(secret, kind, raw)
    return Feature(kind, digest, f"{kind}:{digest[:8]}")


def extract(event: AccountEvent, avatar: AvatarResult | None, secret: bytes) -> list[Feature]:
    """All features present in ``event`` (and its avatar's pHash), sorted, without duplicates.

    For ``profile.updated.v1`` only the fields the event carries contribute; the stage adds the
    account's stored features. Malformed values (an unparsable IP) are skipped, never raised.
    """
    features: set[Feature] = set()
    if event.signup_ip:
        prefix = ip_prefix(event.signup_ip)
        if prefix is not None:
            features.add(_personal(secret, prefix[0], prefix[1]))
    if event.device_id:
        features.add(_personal(secret, "device", event.device_id.strip()))
    if event.email_domain:
        features.add(_personal(secret, "email_domain", event.email_domain.strip().lower()))
    if event.display_name and event.display_name.strip():
        tpl = digits_template(event.display_name)[:200]
        features.add(Feature("name_tpl", tpl, tpl))
    if event.username:
        tpl = digits_template(event.username)[:100]
        features.add(Feature("user_tpl", tpl, tpl))
        shape = shape_template(event.username)[:100]
        features.add(Feature("user_shape", shape, shape))
    for domain in link_domains(event.bio, event.links):
        features.add(Feature("link_domain", domain, domain))
    if avatar is not None:
        phash = avatar.hashes.get("phash")
        if phash:
            features.add(Feature("phash", phash, f"phash:{phash[:8]}"))
    return sorted(features, key=_FEATURE_ORDER)


def is_ai_face(avatar: AvatarResult | None, threshold: float) -> bool:
    """True when the avatar was scored at or above ``threshold``."""
    return avatar is not None and avatar.score is not None and avatar.score >= threshold


def as_row(feature: Feature) -> dict[str, Any]:
    return {"kind": feature.kind, "value": feature.value, "label": feature.label}
