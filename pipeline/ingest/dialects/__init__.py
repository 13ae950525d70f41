"""Ingest dialects: what each platform's requests say, as raw records.

One module per dialect, each pure (no I/O, no web framework): request pieces in, plain
records or value-free errors out. The collector (`pipeline.ingest.collector`) reads the
HTTP request, authenticates it, calls a dialect, validates every record with the
pipeline's own parser, writes the valid ones and answers in the dialect's own shape.

- `native`: the platform's own `POST /v1/events`, `GET /v1/tag`, `POST /v1/widget`;
- `pinterest`: Pinterest Conversions API v5, `POST /v5/ad_accounts/{id}/events`;
- `meta`: Meta Conversions API, `POST /{api_version}/{pixel_id}/events`;
- `pinterest_tag`: the Pinterest tag's beacon, `GET /v3/`;
- `meta_pixel`: the Meta pixel's beacon, `GET /tr`;
- `browser`: the browser signals every beacon and widget post carries.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from schemas.events import Source

_FIELD_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


@dataclass(frozen=True, slots=True)
class Mapped:
    """A platform event as a raw record of `source`, not yet validated."""

    source: Source
    event: dict[str, Any]
    warnings: tuple[str, ...] = ()
    """Fields dropped or not understood, named (never their values)."""


@dataclass(frozen=True, slots=True)
class Invalid:
    """Why a request or an event cannot be mapped: the field and the problem, never a value."""

    detail: str


def location(parts: Iterable[object]) -> str:
    """A field path such as `data.2.user_data.em`; a part that is not a plain name or an
    index (input text, say) is left out, so a location never echoes a value."""
    kept = [
        str(part)
        for part in parts
        if isinstance(part, int) or (isinstance(part, str) and _FIELD_NAME.fullmatch(part))
    ]
    return ".".join(kept) or "body"


def safe_name(name: object) -> str | None:
    """`name` when it is a plain field name, else None (it may be input text)."""
    return name if isinstance(name, str) and _FIELD_NAME.fullmatch(name) else None


def string_list(value: object) -> list[str] | None:
    """A list of strings from one string or a list of strings; None for anything else."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    return None
