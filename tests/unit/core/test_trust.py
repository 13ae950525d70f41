"""Trusted producers sign the records that name a user; nothing else passes as trusted."""

from __future__ import annotations

from pipeline.core.trust import is_trusted, trust_signature

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
