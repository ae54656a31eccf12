"""Pure rules of the avatar fetch: which hosts match the allow-list, which addresses are public."""

from __future__ import annotations

import pytest

from pipeline.avatars.errors import AvatarRefused
from pipeline.avatars.fetch import host_matches, is_public_address


@pytest.mark.parametrize(
    ("host", "patterns", "expected"),
    [
        ("cdn.example.com", ["cdn.example.com"], True),
        ("CDN.Example.com.", ["cdn.example.com"], True),
        ("a.cdn.example.com", ["cdn.example.com"], False),
        ("a.cdn.example.com", [".example.com"], True),
        ("example.com", [".example.com"], True),
        ("badexample.com", [".example.com"], False),
        ("example.com.evil.org", [".example.com"], False),
        ("anything", [], False),
    ],
)
def test_host_matches(host: str, patterns: list[str], expected: bool) -> None:
    assert host_matches(host, patterns) is expected


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.9.9.9",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "2002:7f00:1::1",
        "192.0.2.1",
        "198.18.0.1",
    ],
)
def test_special_purpose_addresses_are_not_public(address: str) -> None:
    assert not is_public_address(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_global_addresses_are_public(address: str) -> None:
    assert is_public_address(address)


def test_refusal_codes_are_checked() -> None:
    assert AvatarRefused("timeout", "x").code == "timeout"
    with pytest.raises(ValueError):
        AvatarRefused("no_such_code")
