"""The avatar fetch against a misbehaving loopback server and hostile URLs: every refusal coded.

Private and link-local targets (169.254.169.254, 10.x, 192.168.x) are refused before any
connection is attempted, so these tests never send a packet anywhere but 127.0.0.1.
"""

from __future__ import annotations

import re
import ssl
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from hostile import corpus
from hostile.server import HostileServer, hostile_server

from pipeline.avatars.errors import AvatarRefused
from pipeline.avatars.fetch import AvatarFetcher, system_resolver
from pipeline.settings import AvatarSettings

FAKE_DNS = {
    "cdn.example.test": ["10.1.2.3"],
    "intranet.example.test": ["192.168.7.7"],
    "mixed.example.test": ["93.184.216.34", "127.0.0.1"],
    "v6.example.test": ["::ffff:127.0.0.1"],
    "meta.example.test": ["169.254.169.254"],
}


def resolver(host: str, port: int) -> list[str]:
    if host == "slow-dns.example.test":
        time.sleep(3.0)
        return ["127.0.0.1"]
    return FAKE_DNS.get(host) or system_resolver(host, port)


@pytest.fixture(scope="module")
def server() -> Iterator[HostileServer]:
    with hostile_server() as srv:
        srv.files["face.jpg"] = corpus.jpeg(32)
        yield srv


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "avatars"
    folder.mkdir()
    (folder / "ok.jpg").write_bytes(corpus.jpeg(16))
    (folder / "passwd-link.jpg").symlink_to("/etc/passwd")
    corpus.write_big_file(folder / "big.jpg")
    return folder


def settings(root: Path | None = None, **overrides: object) -> AvatarSettings:
    values: dict[str, object] = {
        "allowed_hosts": [
            "127.0.0.1",
            "localhost",
            "169.254.169.254",
            "10.0.0.8",
            "192.168.1.20",
            ".example.test",
        ],
        "allow_private_hosts": ["127.0.0.1"],
        "connect_timeout_s": 1.0,
        "read_timeout_s": 1.5,
        "max_bytes": 1_000_000,
        "max_redirects": 3,
        "file_root": root,
    }
    values.update(overrides)
    return AvatarSettings(**values)  # type: ignore[arg-type]


def refused(fetcher: AvatarFetcher, url: str) -> AvatarRefused:
    with pytest.raises(AvatarRefused) as info:
        fetcher.fetch(url)
    return info.value


def test_fetches_an_allowed_loopback_image(server: HostileServer) -> None:
    got = AvatarFetcher(settings(), resolver).fetch(f"{server.base}/file/face.jpg")
    assert got.data == server.files["face.jpg"]
    assert got.redirects == 0


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://127.0.0.2/x.jpg", "host_not_allowed"),
        ("http://evil.example.org/x.jpg", "host_not_allowed"),
        ("http://localhost/x.jpg", "private_address"),
        ("http://169.254.169.254/latest/meta-data/", "private_address"),
        ("http://10.0.0.8/a.jpg", "private_address"),
        ("http://192.168.1.20/a.jpg", "private_address"),
        ("https://cdn.example.test/a.jpg", "private_address"),
        ("http://intranet.example.test/a.jpg", "private_address"),
        ("http://meta.example.test/a.jpg", "private_address"),
        ("http://mixed.example.test/a.jpg", "private_address"),
        ("http://v6.example.test/a.jpg", "private_address"),
        ("ftp://127.0.0.1/a.jpg", "scheme_not_allowed"),
        ("gopher://127.0.0.1/", "scheme_not_allowed"),
        ("data:image/png;base64,AAAA", "scheme_not_allowed"),
        ("/etc/passwd", "scheme_not_allowed"),
        ("http://user:pw@127.0.0.1/a.jpg", "bad_url"),
        ("http://127.0.0.1:99999/a.jpg", "bad_url"),
        ("http://127.0.0.1/a b.jpg", "bad_url"),
    ],
)
def test_refuses_hosts_addresses_and_schemes(url: str, code: str) -> None:
    assert refused(AvatarFetcher(settings(), resolver), url).code == code


def test_http_status_and_not_found(server: HostileServer) -> None:
    fetcher = AvatarFetcher(settings(), resolver)
    assert refused(fetcher, f"{server.base}/status/500").code == "http_status"
    assert refused(fetcher, f"{server.base}/status/403").code == "http_status"
    assert refused(fetcher, f"{server.base}/file/missing.jpg").code == "not_found"


def test_redirects_are_followed_and_rechecked(server: HostileServer) -> None:
    fetcher = AvatarFetcher(settings(), resolver)
    got = fetcher.fetch(f"{server.base}/chain/3/face.jpg")
    assert got.data == server.files["face.jpg"] and got.redirects == 3
    assert refused(fetcher, f"{server.base}/chain/4/face.jpg").code == "too_many_redirects"
    into = {
        "http://169.254.169.254/latest/meta-data/iam": "private_address",
        "http://10.0.0.8/a.jpg": "private_address",
        "http://192.168.1.20/a.jpg": "private_address",
        "http://localhost/a.jpg": "private_address",
        "http://evil.example.org/a.jpg": "host_not_allowed",
        "file:///etc/passwd": "scheme_not_allowed",
    }
    for target, code in into.items():
        assert refused(fetcher, f"{server.base}/redirect?to={target}").code == code, target
    two_hops = f"{server.base}/redirect?to={server.base}/redirect?to=http://10.0.0.8/x"
    assert refused(fetcher, two_hops).code == "private_address"


@pytest.mark.parametrize("route", ["/drip-body", "/drip-headers"])
def test_slow_drip_is_cut_at_the_deadline(server: HostileServer, route: str) -> None:
    s = settings()
    deadline = s.connect_timeout_s + s.read_timeout_s
    before = server.sent_bytes[route]
    t0 = time.monotonic()
    error = refused(AvatarFetcher(s, resolver), f"{server.base}{route}")
    elapsed = time.monotonic() - t0
    assert error.code == "timeout"
    assert deadline - 0.1 <= elapsed < deadline + 0.5
    time.sleep(1.2)
    assert server.sent_bytes[route] - before < 6


def test_a_hanging_name_lookup_is_abandoned_at_the_connect_timeout() -> None:
    s = settings()
    fetcher = AvatarFetcher(s, resolver)
    t0 = time.monotonic()
    error = refused(fetcher, "http://slow-dns.example.test/a.jpg")
    elapsed = time.monotonic() - t0
    fetcher.close()
    assert error.code == "timeout"
    assert s.connect_timeout_s - 0.1 <= elapsed < s.connect_timeout_s + 0.5


def _rss_peak_kib() -> int:
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def _reset_rss_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


@pytest.mark.parametrize("route", ["/big-chunked", "/big-declared"])
def test_fifty_megabytes_over_http_is_refused_with_bounded_memory(
    server: HostileServer, route: str
) -> None:
    fetcher = AvatarFetcher(settings(), resolver)
    _reset_rss_peak()
    base_rss = _rss_peak_kib()
    tracemalloc.start()
    try:
        error = refused(fetcher, f"{server.base}{route}")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error.code == "too_large"
    assert peak < 4 * 1024 * 1024
    assert _rss_peak_kib() - base_rss < 32 * 1024


def test_file_urls_stay_below_the_root(root: Path) -> None:
    fetcher = AvatarFetcher(settings(root), resolver)
    assert fetcher.fetch((root / "ok.jpg").as_uri()).data == (root / "ok.jpg").read_bytes()
    cases = {
        "file:///etc/passwd": "file_outside_root",
        f"file://{root}/../../../etc/passwd": "file_outside_root",
        f"file://{root}/%2e%2e/%2e%2e/etc/passwd": "file_outside_root",
        (root / "passwd-link.jpg").as_uri(): "file_outside_root",
        "file://otherhost/etc/passwd": "file_outside_root",
        (root / "nope.jpg").as_uri(): "not_found",
        root.as_uri(): "not_found",
    }
    for url, code in cases.items():
        assert refused(fetcher, url).code == code, url
    no_root = AvatarFetcher(settings(None), resolver)
    assert refused(no_root, (root / "ok.jpg").as_uri()).code == "scheme_not_allowed"


def test_fifty_megabyte_file_is_refused_without_reading_it(root: Path) -> None:
    fetcher = AvatarFetcher(settings(root), resolver)
    tracemalloc.start()
    try:
        error = refused(fetcher, (root / "big.jpg").as_uri())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error.code == "too_large"
    assert peak < 1024 * 1024


def test_https_goes_to_the_pinned_address_and_checks_the_name() -> None:
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("avatars.example.test").configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    names = {"avatars.example.test": ["127.0.0.1"], "other.example.test": ["127.0.0.1"]}

    def pinned(host: str, port: int) -> list[str]:
        return names[host]

    s = settings(allowed_hosts=[".example.test"], allow_private_hosts=[".example.test"])
    with hostile_server(tls=server_tls) as srv:
        srv.files["face.jpg"] = corpus.jpeg(24)
        good = AvatarFetcher(s, pinned, client_tls)
        got = good.fetch(f"https://avatars.example.test:{srv.port}/file/face.jpg")
        assert got.data == srv.files["face.jpg"]
        wrong_name = refused(good, f"https://other.example.test:{srv.port}/file/face.jpg")
        assert wrong_name.code == "fetch_failed" and "CERTIFICATE" in wrong_name.detail.upper()
        untrusted = AvatarFetcher(s, pinned)
        error = refused(untrusted, f"https://avatars.example.test:{srv.port}/file/face.jpg")
        assert error.code == "fetch_failed"
        plain = refused(good, f"http://avatars.example.test:{srv.port}/file/face.jpg")
        assert plain.code in ("fetch_failed", "http_status")
