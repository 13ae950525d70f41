"""The signals a browser request carries, and text-to-value helpers for beacon queries.

- `DNT: 1` sets `browser.dnt`;
- `Sec-GPC: 1` sets `browser.gpc`;
- the web opt-out cookie (`optout=1` by default; `PIPELINE_COLLECTOR_OPTOUT_COOKIE` names
  it) sets `browser.daa_opt_out`.

A signal the request carries can only switch a flag on, never off. Query values arrive as
text; numbers and booleans are converted when they parse and left as text otherwise, so
validation rejects them naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from schemas import codec

MAX_USER_AGENT: Final = 2048
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


def header_flag(value: str | None) -> bool:
    """Whether a `DNT` / `Sec-GPC` header (or the opt-out cookie) says yes."""
    return value is not None and value.strip().lower() in _TRUE


def browser_signals(
    headers: Mapping[str, str],
    cookies: Mapping[str, str],
    optout_cookie: str,
    cookie_id: str | None = None,
) -> dict[str, Any]:
    """The DNT, GPC and web opt-out signals a browser request carries, after the browser's
    `cookie_id` when the beacon names one."""
    signals = {
        "dnt": header_flag(headers.get("DNT")),
        "gpc": header_flag(headers.get("Sec-GPC")),
        "daa_opt_out": header_flag(cookies.get(optout_cookie)),
    }
    return {"cookie_id": cookie_id, **signals} if cookie_id else signals


def client_user_data(headers: Mapping[str, str], remote: str | None) -> dict[str, Any]:
    """The address and user agent of the browser that sent the request."""
    user_data: dict[str, Any] = {}
    if remote:
        user_data["client_ip_address"] = remote
    agent = headers.get("User-Agent")
    if agent:
        user_data["client_user_agent"] = agent[:MAX_USER_AGENT]
    return user_data


def comma_list(value: str) -> list[str]:
    """The non-empty, trimmed items of a comma-separated list."""
    return [part.strip() for part in value.split(",") if part.strip()]


def integer(value: str) -> int | str:
    """An integer from its text, or the text for validation to reject."""
    text = value.strip()
    return int(text) if text.isascii() and text.lstrip("-").isdigit() and len(text) < 20 else value


def number(value: str) -> float | str:
    """A finite number from its text, or the text for validation to reject."""
    try:
        parsed = float(value)
    except ValueError:
        return value
    return parsed if parsed == parsed and abs(parsed) != float("inf") else value


def boolean(value: str) -> bool | str:
    """A boolean from `1/0`, `true/false`, `yes/no`, `on/off`, or the text."""
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return value


def bracketed(params: Mapping[str, str], name: str) -> dict[str, str]:
    """The `name[key]=value` parameters of a beacon query, by key (`ud[em]` -> `em`)."""
    prefix = f"{name}["
    return {
        key[len(prefix) : -1]: value
        for key, value in params.items()
        if key.startswith(prefix) and key.endswith("]") and len(key) > len(prefix) + 1
    }


def json_object(text: str | None) -> dict[str, Any] | None:
    """A beacon parameter holding a JSON object (`ed={...}`): empty when absent, None when
    it is not a JSON object (the beacon is then rejected, never read in part)."""
    if not text:
        return {}
    try:
        value = codec.loads(text)
    except codec.DecodeError:
        return None
    return value if isinstance(value, dict) else None
