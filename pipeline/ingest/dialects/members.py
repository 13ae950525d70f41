"""Customer-list members as `raw.audience` records, whichever platform's list call named them.

A member is named by match keys only, hashed before anything is written: plain-text
emails and phones are normalized and hashed here, as `user_data` contact points are;
SHA-256 digests are taken as they come; a raw advertising id (a UUID: IDFA or Android
advertising id) is hashed as the SDK events' are (`pipeline.core.identity`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from pipeline.core.identity import advertising_id_key
from schemas import normalize
from schemas.audience import Operation

_HEX_64: Final = re.compile(r"[0-9A-Fa-f]{64}")
_WEAK_HASH: Final = re.compile(r"[0-9A-Fa-f]{40}|[0-9A-Fa-f]{32}")
"""SHA-1 and MD5 digests: platforms take them, but no match key is one."""
EMPTY_SHA256: Final = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
"""The digest of the empty string: what a client that hashes every cell sends for a blank
one. It names no one, so it is read as blank."""
_UUID: Final = re.compile(r"[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}")


@dataclass(frozen=True, slots=True)
class Member:
    """One member's hashed match keys, and whether the upload asked for limited use."""

    em: tuple[str, ...] = ()
    ph: tuple[str, ...] = ()
    maid: tuple[str, ...] = ()
    limited_data_processing: bool = False

    @property
    def named(self) -> bool:
        """Whether the member has a key that can be matched at all."""
        return bool(self.em or self.ph or self.maid)


def is_blank(value: object) -> bool:
    """Whether a cell holds nothing: absent, empty, or the digest of the empty string."""
    return value is None or (isinstance(value, str) and value.strip().lower() in ("", EMPTY_SHA256))


def email_key(value: str) -> str | None:
    """The `em` digest of a plain or SHA-256 email, or None when it is neither."""
    found = normalize.email_sha256(value)
    return None if found is None else found[0]


def phone_key(value: str) -> str | None:
    """The `ph` digest of a plain or SHA-256 phone, or None when it is neither."""
    found = normalize.phone_sha256(value)
    return None if found is None else found[0]


def maid_key(value: str) -> str | None:
    """The `maid` digest of a SHA-256 or raw (UUID) advertising id; None for anything else
    and for a zeroed id (tracking limited)."""
    text = value.strip()
    if _HEX_64.fullmatch(text):
        return text.lower()
    if _UUID.fullmatch(text):
        return advertising_id_key(text)
    return None


def is_weak_hash(value: str) -> bool:
    """Whether `value` is a SHA-1 or MD5 digest, which no match key can be."""
    return _WEAK_HASH.fullmatch(value.strip()) is not None


def is_sha256(value: str) -> bool:
    """Whether `value` is a SHA-256 hex digest (any case)."""
    return _HEX_64.fullmatch(value.strip()) is not None


def member_document(
    advertiser_id: str, audience_id: str, operation: Operation, member: Member, uploaded_at: int
) -> dict[str, Any]:
    """The `raw.audience` record of one member; `uploaded_at` in unix ms."""
    keys = {
        kind: list(dict.fromkeys(values))
        for kind, values in (("em", member.em), ("ph", member.ph), ("maid", member.maid))
        if values
    }
    document: dict[str, Any] = {
        "advertiser_id": advertiser_id,
        "audience_id": audience_id,
        "operation": operation,
        "match_keys": keys,
        "uploaded_at": uploaded_at,
    }
    if member.limited_data_processing:
        document["opt_out_type"] = "LDP"
    return document
