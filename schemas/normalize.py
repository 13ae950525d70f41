"""Normalize and hash contact points (email, phone) and canonicalize small scalar values.

Hashed identifiers are lowercase hex SHA-256 of the normalized value:

- email: trimmed, lowercased;
- phone: digits only, with country code; separators, a leading `+` and the leading
  zeros of an international `00` prefix are removed (the Conversions API convention).

A value that is already a hex SHA-256 (either case) is kept, lowercased. A raw email or
phone is normalized and hashed, and the caller is told so it can record the fact. A
value that is neither is left to the schema to reject (see `schemas.events`).

Amounts (`custom_data.value`) may be numbers or decimal strings, as Pinterest's
Conversions API sends them ("Accepted as a string in the request; it will be parsed into
a double"); a string must be a plain decimal that parses to a finite number.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Callable, MutableMapping
from socket import AF_INET6, inet_ntop, inet_pton
from typing import Any, Final

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_SHA256_HEX_ANY_CASE = re.compile(r"[0-9a-fA-F]{64}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
_PHONE = re.compile(r"\+?[0-9 ()./-]+")
_PHONE_SEPARATORS = str.maketrans("", "", " ()./-+")
_IPV4: Final = re.compile(
    r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
)
DECIMAL_PATTERN: Final = r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"
"""A decimal number as text: digits, an optional fraction and exponent; no spaces, no NaN."""
_DECIMAL: Final = re.compile(DECIMAL_PATTERN)
_MAX_DECIMAL_LENGTH: Final = 64
_MAX_EMAIL_LENGTH: Final = 254
_MIN_PHONE_DIGITS: Final = 7
_MAX_PHONE_DIGITS: Final = 15  # E.164


def sha256_hex(value: str) -> str:
    """Lowercase hex SHA-256 of the UTF-8 encoding of `value`."""
    return hashlib.sha256(value.encode()).hexdigest()


def is_sha256_hex(value: str) -> bool:
    """Whether `value` is a lowercase hex SHA-256 digest."""
    return _SHA256_HEX.fullmatch(value) is not None


def normalize_email(value: str) -> str | None:
    """The trimmed, lowercased email, or None when `value` is not plausibly an email."""
    email = value.strip().lower()
    if len(email) > _MAX_EMAIL_LENGTH or _EMAIL.fullmatch(email) is None:
        return None
    return email


def normalize_phone(value: str) -> str | None:
    """The phone as digits with country code, or None when `value` is not plausibly one."""
    phone = value.strip()
    if _PHONE.fullmatch(phone) is None:
        return None
    digits = phone.translate(_PHONE_SEPARATORS).lstrip("0")
    if not (_MIN_PHONE_DIGITS <= len(digits) <= _MAX_PHONE_DIGITS and digits.isdigit()):
        return None
    return digits


def email_sha256(value: str) -> tuple[str, bool] | None:
    """`(hex digest, was raw)` for a hashed or raw email; None when it is neither."""
    if _SHA256_HEX_ANY_CASE.fullmatch(value):
        return value.lower(), False
    email = normalize_email(value)
    return None if email is None else (sha256_hex(email), True)


def phone_sha256(value: str) -> tuple[str, bool] | None:
    """`(hex digest, was raw)` for a hashed or raw phone; None when it is neither."""
    if _SHA256_HEX_ANY_CASE.fullmatch(value):
        return value.lower(), False
    phone = normalize_phone(value)
    return None if phone is None else (sha256_hex(phone), True)


def hash_raw_contact_points(user_data: MutableMapping[str, Any]) -> bool:
    """Replace, in place, each raw email in `em` and phone in `ph` by its digest.

    Digests in upper case are lowercased; anything that is neither a digest nor a
    plausible email/phone is left for validation to reject. Returns whether a raw
    email or phone was hashed.
    """
    hashed_raw = False
    to_digest: Callable[[str], tuple[str, bool] | None]
    for name, to_digest in (("em", email_sha256), ("ph", phone_sha256)):
        values = user_data.get(name)
        if not isinstance(values, list):
            continue
        for index, value in enumerate(values):
            digest = to_digest(value) if isinstance(value, str) else None
            if digest is not None:
                values[index], was_raw = digest
                hashed_raw = hashed_raw or was_raw
    return hashed_raw


def decimal_amount(value: object) -> object:
    """A decimal string as its float; anything else unchanged, for the schema to judge.

    Raises:
        ValueError: `value` is a string that is not a finite decimal number (the message
            never repeats it).
    """
    if not isinstance(value, str):
        return value
    if len(value) > _MAX_DECIMAL_LENGTH or _DECIMAL.fullmatch(value) is None:
        raise ValueError("not a decimal number")
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError("not a finite number")
    return number


def is_ipv4(value: str) -> bool:
    """Whether `value` is an IPv4 address in dotted-decimal canonical form."""
    return _IPV4.fullmatch(value) is not None


def canonical_ip(value: str) -> str:
    """The canonical text form of an IPv4 or IPv6 address.

    Raises:
        ValueError: `value` is not an IP address (the message never repeats it).
    """
    if _IPV4.fullmatch(value):
        return value
    packed = ipv6_packed(value)
    if packed is not None:
        text = inet_ntop(AF_INET6, packed)
        if "." not in text:  # the C library writes some forms with a dotted quad
            return text
    try:
        return ipaddress.ip_address(value).compressed
    except ValueError:
        raise ValueError("not an IP address") from None


def ipv6_packed(value: str) -> bytes | None:
    """The 16 bytes of an IPv6 address written in hex groups only, else None.

    The C library's parser, about 20 times faster than `ipaddress`; a dotted quad or a
    zone (`%eth0`) is left to `ipaddress`, which reads them its own way, and so is
    anything else. Both write the same canonical text (RFC 5952) of what this returns.
    """
    if "." in value or "%" in value:
        return None
    try:
        return inet_pton(AF_INET6, value)
    except (OSError, ValueError):  # ValueError: an embedded NUL
        return None


def country_code(value: str) -> str:
    """An ISO 3166-1 alpha-2 code, uppercased."""
    return value.upper()
