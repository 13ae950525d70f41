"""Meta custom audiences: `POST|DELETE /{api_version}/{custom_audience_id}/users`.

From Meta's Marketing API reference (custom audience `users`) and the Business SDK
(`CustomAudience.add_users` / `remove_users`): `payload` is `{"schema", "data",
"is_raw"?, "app_ids"?}`, a JSON string in the query or form (the SDK puts it in the form
of a POST and in the query of a DELETE) or an object in a JSON body; `session`
(`session_id`, `batch_seq`, `last_batch_flag`, `estimated_num_total`) is optional. A
single-key `schema` is `EMAIL_SHA256`, `PHONE_SHA256`, `MOBILE_ADVERTISER_ID` or `UID`
with `data` a list of values; a multi-key `schema` is a list of keys (`EMAIL`, `PHONE`,
`MADID`, `FN`, `ZIP`, ..., `DATA_PROCESSING_OPTIONS`) with `data` a list of rows. At most
10,000 rows per call. The answer is `{"audience_id", "session_id", "num_received",
"num_invalid_entries", "invalid_entry_samples"}`.

Only email, phone and advertising id match here: other keys are read past and
never written; `EXTERN_ID`, `UID` and `APPUID` are advertiser- or app-scoped and never
resolve. A blank cell (empty, or the digest of the empty string, which the SDK sends for
one) is skipped. A row with no key that can match is an invalid entry; its sample names the row
and the problem, never a value. `DATA_PROCESSING_OPTIONS` holding `LDU` asks for limited
data processing of that member.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pipeline.ingest.dialects import string_list
from pipeline.ingest.dialects.members import Member, email_key, is_blank, maid_key, phone_key
from pipeline.ingest.dialects.meta import GraphError, invalid_parameter, limited_data_use
from schemas import codec

SINGLE_KEYS: Final[Mapping[str, str]] = {
    "EMAIL_SHA256": "EMAIL",
    "PHONE_SHA256": "PHONE",
    "MOBILE_ADVERTISER_ID": "MADID",
    "UID": "UID",
}
"""Single-key schemas, as the multi-key column each one is."""
MULTI_KEYS: Final = frozenset(
    {
        "EXTERN_ID",
        "EMAIL",
        "PHONE",
        "GEN",
        "DOBY",
        "DOBM",
        "DOBD",
        "LN",
        "FN",
        "FI",
        "F5FIRST",
        "F5LAST",
        "CT",
        "ST",
        "ZIP",
        "MADID",
        "COUNTRY",
        "APPUID",
        "PAGEUID",
        "LOOKALIKE_VALUE",
        "DATA_PROCESSING_OPTIONS",
    }
)
MAX_ROWS: Final = 10_000
""""Only a maximum of 10000 at a time" (the `users` edge reference)."""
MAX_SAMPLES: Final = 10

Params = Mapping[str, Sequence[str]]


@dataclass(frozen=True, slots=True)
class UsersRequest:
    """The rows of a `users` call: a member per row that names one, the rest invalid."""

    members: tuple[Member, ...]
    received: int
    invalid: Mapping[int, str]
    """Row index -> why it names no one (never a value)."""
    session_id: str


def read_users(
    query: Params, form: Params, body: object, *, max_rows: int = MAX_ROWS
) -> UsersRequest | GraphError:
    """The members of a `users` call, from whichever part of the request has them."""
    payload = _param(query, form, body, "payload")
    if payload is None:
        return invalid_parameter("The parameter payload is required")
    if isinstance(payload, GraphError):
        return payload
    if not isinstance(payload, Mapping):
        return invalid_parameter("payload must be an object")
    columns = _schema(payload.get("schema"))
    if isinstance(columns, GraphError):
        return columns
    rows = _rows(payload.get("data"), len(columns))
    if isinstance(rows, GraphError):
        return rows
    if len(rows) > max_rows:
        return invalid_parameter(f"payload.data: at most {max_rows} rows per call")
    session = _session_id(_param(query, form, body, "session"))
    if isinstance(session, GraphError):
        return session
    members: list[Member] = []
    invalid: dict[int, str] = {}
    for index, row in enumerate(rows):
        member = _member(columns, row)
        if isinstance(member, str):
            invalid[index] = member
        else:
            members.append(member)
    return UsersRequest(tuple(members), len(rows), invalid, session)


def response(audience_id: str, request: UsersRequest) -> dict[str, Any]:
    """The `users` edge's answer; at most `MAX_SAMPLES` invalid entries are described."""
    samples = dict(list(request.invalid.items())[:MAX_SAMPLES])
    return {
        "audience_id": audience_id,
        "session_id": request.session_id,
        "num_received": request.received,
        "num_invalid_entries": len(request.invalid),
        "invalid_entry_samples": {str(index): why for index, why in samples.items()},
    }


def _param(query: Params, form: Params, body: object, name: str) -> object:
    """A JSON parameter: from a JSON body as is, else decoded from the form or query."""
    if isinstance(body, Mapping) and name in body:
        value = body[name]
    else:
        values = form.get(name) or query.get(name)
        if not values:
            return None
        value = values[0]
    if not isinstance(value, str):
        return value
    try:
        decoded: object = codec.loads(value)
    except codec.DecodeError:
        return invalid_parameter(f"{name} must be a JSON object")
    return decoded


def _schema(schema: object) -> list[str] | GraphError:
    if isinstance(schema, str):
        schema = [schema]
    names = string_list(schema)
    if not names:
        return invalid_parameter("payload.schema must be a key or a list of keys")
    if len(names) == 1 and names[0] in SINGLE_KEYS:
        return [SINGLE_KEYS[names[0]]]
    for index, name in enumerate(names):
        if name not in MULTI_KEYS:
            return invalid_parameter(f"payload.schema[{index}] is not a supported key")
    if len(set(names)) != len(names):
        return invalid_parameter("payload.schema names a key twice")
    return names


def _rows(data: object, width: int) -> list[list[object]] | GraphError:
    if not isinstance(data, list) or not data:
        return invalid_parameter("payload.data must be a non-empty list")
    rows: list[list[object]] = []
    for index, row in enumerate(data):
        if width == 1 and not isinstance(row, list):
            row = [row]
        if not isinstance(row, list) or len(row) != width:
            return invalid_parameter(
                f"payload.data[{index}] must be a row of {width} values, one per schema key"
            )
        rows.append(row)
    return rows


def _session_id(session: object) -> str | GraphError:
    if session is None:
        return str(10**14 + secrets.randbelow(9 * 10**14))  # 15 digits, like Meta's
    if isinstance(session, GraphError):
        return session
    if not isinstance(session, Mapping):
        return invalid_parameter("session must be an object")
    session_id = session.get("session_id")
    if isinstance(session_id, bool) or not isinstance(session_id, int | str):
        return invalid_parameter("session.session_id must be a number")
    text = str(session_id)
    if not (text.isascii() and text.isdigit() and len(text) <= 20):
        return invalid_parameter("session.session_id must be a number")
    return text


def _member(columns: list[str], row: list[object]) -> Member | str:
    em: list[str] = []
    ph: list[str] = []
    maid: list[str] = []
    limited = False
    unreadable: list[str] = []
    for column, value in zip(columns, row, strict=True):
        if column == "DATA_PROCESSING_OPTIONS":
            ldu = limited_data_use(value)
            if ldu is None:
                return "DATA_PROCESSING_OPTIONS must be a list of strings"
            limited = ldu
            continue
        if column not in ("EMAIL", "PHONE", "MADID") or is_blank(value):
            continue
        if not isinstance(value, str):
            unreadable.append(column)
            continue
        key = {"EMAIL": email_key, "PHONE": phone_key, "MADID": maid_key}[column](value)
        if key is None:
            unreadable.append(column)
            continue
        {"EMAIL": em, "PHONE": ph, "MADID": maid}[column].append(key)
    member = Member(tuple(em), tuple(ph), tuple(maid), limited)
    if member.named:
        return member
    if unreadable:
        return f"{', '.join(unreadable)}: not a valid value or SHA-256 digest"
    return "no EMAIL, PHONE or MADID value: nothing to match"
