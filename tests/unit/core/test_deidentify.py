"""Pseudonymization and de-identification primitives."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from pipeline.core.deidentify import (
    Pseudonymizer,
    truncate_ip,
    truncate_to_hour,
    url_origin,
    user_agent_family,
)
from pipeline.errors import PolicyConfigError

KEY = b"k" * 32


def test_user_key_is_hmac_sha256_of_the_subject() -> None:
    expected = hmac.new(KEY, b"user-1", hashlib.sha256).hexdigest()

    assert Pseudonymizer(KEY, "k1").user_key("user-1") == expected


def test_user_key_depends_on_the_key_and_the_subject() -> None:
    one, other = Pseudonymizer(KEY, "k1"), Pseudonymizer(b"x" * 32, "k2")

    assert one.user_key("user-1") == one.user_key("user-1")
    assert one.user_key("user-1") != one.user_key("user-2")
    assert one.user_key("user-1") != other.user_key("user-1")
    assert one.user_key("user-1") != hashlib.sha256(b"user-1").hexdigest()


def test_pseudonymizer_refuses_short_keys_and_empty_key_ids() -> None:
    with pytest.raises(PolicyConfigError):
        Pseudonymizer(b"short", "k1")
    with pytest.raises(PolicyConfigError):
        Pseudonymizer(KEY, "")


def test_pseudonymizer_never_shows_its_key() -> None:
    pseudonymizer = Pseudonymizer(KEY, "k1")

    assert "kkkk" not in repr(pseudonymizer)
    assert "k1" in repr(pseudonymizer)


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("198.51.100.23", "198.51.100.0/24"),
        ("10.0.0.255", "10.0.0.0/24"),
        ("2001:db8:1234:5678::1", "2001:db8:1234::/48"),
        ("2001:0db8:abcd:0012:0000:0000:0000:0001", "2001:db8:abcd::/48"),
        ("::ffff:198.51.100.23", "198.51.100.0/24"),
        (None, None),
        ("", None),
        ("not an ip", None),
    ],
)
def test_truncate_ip(address: str | None, network: str | None) -> None:
    assert truncate_ip(address) == network


@pytest.mark.parametrize(
    ("user_agent", "families"),
    [
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/120.0.0.0 Safari/537.36",
            ("Chrome", "Windows"),
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91",
            ("Edge", "Windows"),
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
            ("Safari", "iOS"),
        ),
        (
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/120.0.6099.144 Mobile Safari/537.36",
            ("Chrome", "Android"),
        ),
        (
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
            ("Firefox", "Linux"),
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "Version/17.1 Safari/605.1.15",
            ("Safari", "macOS"),
        ),
        ("ShopApp/3.1 (iPhone; iOS 17.2)", ("Other", "iOS")),
        ("Googlebot/2.1 (+http://www.google.com/bot.html)", ("Bot", "Other")),
        ("", ("Other", "Other")),
        (None, ("Other", "Other")),
    ],
)
def test_user_agent_family(user_agent: str | None, families: tuple[str, str]) -> None:
    assert user_agent_family(user_agent) == families


def test_user_agent_family_never_returns_input_text() -> None:
    browser, system = user_agent_family("cookie=abc123; uid=42 Chrome/1 Windows")

    assert (browser, system) == ("Chrome", "Windows")


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://shop.example.com/p/42?email=a@b.c#top", "https://shop.example.com"),
        ("HTTP://User:Secret@Shop.Example.com:8080/x", "http://shop.example.com"),
        ("https://shop.example.com", "https://shop.example.com"),
        ("https://shop.example.com.:443/", "https://shop.example.com"),
        ("https://bücher.example/x", "https://xn--bcher-kva.example"),
        ("https://198.51.100.23/path", None),
        ("https://[2001:db8::1]/path", None),
        ("ftp://files.example.com/", None),
        ("javascript:alert(1)", None),
        ("shop.example.com/p/42", None),
        ("https://bad host.example/", None),
        ("", None),
        (None, None),
    ],
)
def test_url_origin_keeps_only_scheme_and_host(url: str | None, origin: str | None) -> None:
    assert url_origin(url) == origin


def test_truncate_to_hour() -> None:
    assert truncate_to_hour(1_700_000_000) == 1_699_999_200
    assert truncate_to_hour(1_699_999_200) == 1_699_999_200
