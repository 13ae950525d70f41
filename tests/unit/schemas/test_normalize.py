"""Hashed identifiers: normalization of emails and phones, then SHA-256."""

from __future__ import annotations

import hashlib

import pytest

from schemas import normalize


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("  Alice@Example.COM ", "alice@example.com"),
        ("bob.smith+ads@mail.example.co.uk", "bob.smith+ads@mail.example.co.uk"),
        ("not-an-email", None),
        ("two@@example.com", None),
        ("user@localhost", None),
        ("spaces in@example.com", None),
        ("a@" + "b" * 250 + ".com", None),
    ],
)
def test_normalize_email(raw: str, normalized: str | None) -> None:
    assert normalize.normalize_email(raw) == normalized


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("+1 (650) 555-1234", "16505551234"),
        ("0044 20 7946 0958", "442079460958"),
        ("49.30.1234567", "49301234567"),
        ("12345", None),
        ("1234567890123456", None),
        ("call me", None),
        ("+1 650 555 CALL", None),
    ],
)
def test_normalize_phone(raw: str, normalized: str | None) -> None:
    assert normalize.normalize_phone(raw) == normalized


def test_email_digest_of_a_raw_email_is_the_hash_of_its_normalized_form() -> None:
    assert normalize.email_sha256(" Alice@Example.com") == (sha("alice@example.com"), True)


def test_phone_digest_of_a_raw_phone_is_the_hash_of_its_digits() -> None:
    assert normalize.phone_sha256("+1 650-555-1234") == (sha("16505551234"), True)


def test_a_digest_is_kept_lowercased_and_not_counted_as_raw() -> None:
    digest = sha("alice@example.com")

    assert normalize.email_sha256(digest) == (digest, False)
    assert normalize.email_sha256(digest.upper()) == (digest, False)
    assert normalize.phone_sha256(digest.upper()) == (digest, False)


def test_neither_digest_nor_contact_point_is_none() -> None:
    assert normalize.email_sha256("abc123") is None
    assert normalize.phone_sha256("abc123") is None
    assert normalize.email_sha256("g" * 64) is None


def test_is_sha256_hex_accepts_only_lowercase_hex_of_64_chars() -> None:
    assert normalize.is_sha256_hex("0" * 64)
    assert normalize.is_sha256_hex(sha("x"))
    assert not normalize.is_sha256_hex(sha("x").upper())
    assert not normalize.is_sha256_hex("0" * 63)
    assert not normalize.is_sha256_hex("z" * 64)


def test_hash_raw_contact_points_rewrites_in_place_and_reports_raw() -> None:
    user_data = {"em": ["Alice@Example.com", sha("b").upper(), "junk"], "ph": ["+1 650 555 1234"]}

    assert normalize.hash_raw_contact_points(user_data) is True
    assert user_data == {
        "em": [sha("alice@example.com"), sha("b"), "junk"],
        "ph": [sha("16505551234")],
    }


def test_hash_raw_contact_points_with_only_digests_reports_no_raw() -> None:
    user_data = {"em": [sha("a").upper()], "ph": "not a list"}

    assert normalize.hash_raw_contact_points(user_data) is False


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("198.51.100.7", "198.51.100.7"),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
    ],
)
def test_canonical_ip(raw: str, canonical: str) -> None:
    assert normalize.canonical_ip(raw) == canonical


@pytest.mark.parametrize("raw", ["256.1.1.1", "1.2.3", "01.2.3.4", "example.com", ""])
def test_canonical_ip_rejects_non_addresses_without_echoing_them(raw: str) -> None:
    with pytest.raises(ValueError, match="not an IP address") as raised:
        normalize.canonical_ip(raw)
    assert raw not in str(raised.value) or not raw
