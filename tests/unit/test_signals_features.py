"""Feature extraction: IP prefixes, templates, public-suffix domains, HMAC of personal data."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

import pytest

from pipeline.signals.features import (
    digits_template,
    extract,
    ip_prefix,
    keyed_hash,
    link_domains,
    registered_domain,
    shape_template,
)
from pipeline.types import AccountEvent, AvatarResult

SECRET = b"test-secret"


def _event(**kw: object) -> AccountEvent:
    base: dict[str, object] = {
        "event_type": "account.created.v1", "event_id": "e1",
        "occurred_at": datetime(2026, 11, 1, tzinfo=UTC), "account_id": "a1",
    }
    base.update(kw)
    return AccountEvent(**base)  # type: ignore[arg-type]


def test_ipv4_prefix_is_the_slash_24() -> None:
    assert ip_prefix("203.0.113.77") == ("ip24", "203.0.113.0/24")


def test_ipv6_prefix_is_the_slash_48_and_mapped_v4_is_v4() -> None:
    assert ip_prefix("2001:db8:abcd:12::1") == ("ip48", "2001:db8:abcd::/48")
    assert ip_prefix("2001:db8:abcd:ffff:1::9") == ("ip48", "2001:db8:abcd::/48")
    assert ip_prefix("::ffff:198.51.100.4") == ("ip24", "198.51.100.0/24")
    assert ip_prefix("not an ip") is None
    assert ip_prefix(" 10.0.0.1 ") == ("ip24", "10.0.0.0/24")
    for bad in ("01.2.3.4", "1.2.3.256", "1.2.3", "1.2.3.4.5", "1..2.3", "\u0661.2.3.4"):
        assert ip_prefix(bad) is None, bad


def test_templates_replace_digit_runs_and_keep_shape() -> None:
    assert digits_template("John123") == "john#"
    assert digits_template("truenews_patriot_4821") == "truenews_patriot_#"
    assert digits_template("Anna  Smith 22") == "anna smith #"
    assert shape_template("john_smith1987") == "a_a9{4}"
    assert shape_template("Maria.K99") == "A.A9{2}"


@pytest.mark.parametrize(
    ("url", "domain"),
    [
        ("https://news.example.co.uk/a/b?c=1", "example.co.uk"),
        ("http://www.youtube.com/watch?v=x", "youtube.com"),
        ("https://user.github.io/page", "github.io"),
        ("www.example.com.au", "example.com.au"),
        ("not a url", None),
        ("https://localhost/x", None),
    ],
)
def test_registered_domain_is_public_suffix_aware(url: str, domain: str | None) -> None:
    assert registered_domain(url) == domain


def test_registered_domain_needs_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.signals import features

    features._extractor.cache_clear()

    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    assert registered_domain("https://a.b.example.co.uk/") == "example.co.uk"
    features._extractor.cache_clear()


def test_link_domains_from_bio_and_links() -> None:
    found = link_domains("read https://outlet-news.com/x and www.Blog.Example.org now",
                         ("https://youtube.com/@me", "https://m.outlet-news.com/y"))
    assert found == ["example.org", "outlet-news.com", "youtube.com"]


def test_personal_values_are_stored_as_hmac_only() -> None:
    event = _event(signup_ip="203.0.113.9", device_id="dev-42", email_domain="Corp.Example",
                   username="anna77", display_name="Anna", links=("https://x.example.com",))
    feats = {f.kind: f for f in extract(event, None, SECRET)}
    assert feats["ip24"].value == keyed_hash(SECRET, "ip24", "203.0.113.0/24")
    assert feats["device"].value == keyed_hash(SECRET, "device", "dev-42")
    assert feats["email_domain"].value == keyed_hash(SECRET, "email_domain", "corp.example")
    for kind in ("ip24", "device", "email_domain"):
        assert "203.0.113" not in feats[kind].value + feats[kind].label
        assert "dev-42" not in feats[kind].value + feats[kind].label
        assert "corp" not in feats[kind].label
    assert feats["link_domain"].label == "example.com"
    assert feats["user_tpl"].value == "anna#"
    other = {f.kind: f for f in extract(event, None, b"another-secret")}
    assert other["device"].value != feats["device"].value


def test_update_event_yields_only_the_fields_it_carries() -> None:
    event = _event(event_type="profile.updated.v1", links=("https://outlet-news.com/x",))
    avatar = AvatarResult(status="scored", score=0.9, hashes={"phash": "ffee00112233aabb"})
    kinds = sorted(f.kind for f in extract(event, avatar, SECRET))
    assert kinds == ["link_domain", "phash"]
