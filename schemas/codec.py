"""The project's only JSON codec: everything else encodes and decodes through here."""

from __future__ import annotations

from typing import Any

import orjson

DecodeError = orjson.JSONDecodeError
"""Raised by `loads` on malformed JSON or invalid UTF-8; a subclass of `ValueError`."""

EncodeError = orjson.JSONEncodeError
"""Raised by `dumps` on a value JSON cannot represent; a subclass of `TypeError`."""


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Decode one JSON document."""
    return orjson.loads(data)


def dumps(obj: Any) -> bytes:
    """Encode `obj` as compact UTF-8 JSON; dict keys must be strings."""
    return orjson.dumps(obj)
