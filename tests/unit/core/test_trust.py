"""Trusted producers sign the records that name a user; nothing else passes as trusted."""

from __future__ import annotations

from pipeline.core.trust import (
    REQUEST_MAX_SKEW_S,
    is_signed_request,
    is_trusted,
    request_signature,
    trust_signature,
)

KEY = b"t" * 32
VALUE = b'{"user_id":"user-1"}'


def test_a_signed_record_is_trusted() -> None:
    assert is_trusted(KEY, VALUE, trust_signature(KEY, VALUE))


def test_another_value_another_key_or_no_header_is_not() -> None:
    signature = trust_signature(KEY, VALUE)

    assert not is_trusted(KEY, VALUE + b" ", signature)
    assert not is_trusted(b"u" * 32, VALUE, signature)
    assert not is_trusted(KEY, VALUE, None)
    assert not is_trusted(KEY, None, signature)
    assert not is_trusted(KEY, VALUE, signature[:-1])


def test_a_signed_request_verifies_within_the_allowed_skew() -> None:
    header = request_signature(KEY, "GET", "/internal/users/u%201/consent", 1_000)

    assert is_signed_request(KEY, "get", "/internal/users/u%201/consent", header, now=1_030)
    assert not is_signed_request(
        KEY, "GET", "/internal/users/u%201/consent", header, now=1_000 + REQUEST_MAX_SKEW_S + 1
    )


def test_another_target_method_key_or_a_mangled_header_does_not_verify() -> None:
    target = "/internal/users/u1/decisions?since=0"
    header = request_signature(KEY, "GET", target, 1_000)

    assert not is_signed_request(KEY, "GET", target + "&cursor=1", header, now=1_000)
    assert not is_signed_request(KEY, "PUT", target, header, now=1_000)
    assert not is_signed_request(b"u" * 32, "GET", target, header, now=1_000)
    for mangled in (None, "", "v1:", "v1:x:y", "v2:1000:" + header[-64:], header[:-1]):
        assert not is_signed_request(KEY, "GET", target, mangled, now=1_000)
