"""Trusted producers: a raw record's `user_id` counts only when the record proves its origin.

An advertiser cannot attribute events to a person by naming them; `user_id` on a
raw record is honoured only from a trusted producer (the platform's own collectors,
internal producers holding a trusted token). Raw topics are open to advertisers'
producers, so trust travels with the record: a trusted producer adds the Kafka header
`pipeline-trust`, `v1:` and the hex HMAC-SHA256 of the record's value under the
deployment's trust key (`PIPELINE_TRUST_KEY`), which advertisers never hold. A record
without a valid header is resolved from its match keys as if it named nobody.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

TRUST_HEADER: Final = "pipeline-trust"
_VERSION: Final = b"v1:"


def trust_signature(key: bytes, value: bytes) -> bytes:
    """The `pipeline-trust` header value that marks `value` as from a trusted producer."""
    return _VERSION + hmac.new(key, value, hashlib.sha256).hexdigest().encode()


def is_trusted(key: bytes, value: bytes | None, header: bytes | None) -> bool:
    """Whether `header` is a valid trust signature of `value` under `key` (constant time)."""
    if value is None or header is None:
        return False
    return hmac.compare_digest(trust_signature(key, value), header)


REQUEST_HEADER: Final = "X-Pipeline-Signature"
"""The header a collector signs its requests to a worker's internal pages with."""
REQUEST_MAX_SKEW_S: Final = 60


def request_signature(key: bytes, method: str, target: str, timestamp: int) -> str:
    """`v1:<unix seconds>:<hex HMAC-SHA256>` of a request's method, path and query.

    Internal requests (the collector asking a worker what its consent table holds) carry
    it in `REQUEST_HEADER`, so a worker's web port serves personal data only to holders of
    the trust key.
    """
    message = f"{method.upper()}\n{target}\n{timestamp}".encode()
    digest = hmac.new(key, message, hashlib.sha256).hexdigest()
    return f"{_VERSION.decode()}{timestamp}:{digest}"


def is_signed_request(
    key: bytes, method: str, target: str, header: str | None, *, now: float
) -> bool:
    """Whether `header` signs this request under `key`, made within `REQUEST_MAX_SKEW_S`."""
    if header is None or not header.startswith(_VERSION.decode()):
        return False
    stamp, _, _ = header.removeprefix(_VERSION.decode()).partition(":")
    if not stamp.isdigit() or len(stamp) > 12 or abs(now - int(stamp)) > REQUEST_MAX_SKEW_S:
        return False
    expected = request_signature(key, method, target, int(stamp))
    return hmac.compare_digest(expected.encode(), header.encode("utf-8", "replace"))
