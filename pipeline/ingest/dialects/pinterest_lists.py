"""Pinterest customer lists v5: `PATCH|GET /v5/ad_accounts/{id}/customer_lists/{list_id}`.

From Pinterest's v5 OpenAPI description (`customer_lists/update`, `customer_lists/get`):
the body is `CustomerListUpdateRequest`, `{"records": "<comma-separated>",
"operation_type": "ADD" | "REMOVE"}`; "Records list. Can be any combination of emails,
MAIDs, or IDFAs. Emails must be lowercase and can be plain text or hashed using SHA1,
SHA256, or MD5. MAIDs and IDFAs must be hashed with SHA1, SHA256, or MD5." Both calls
answer a `CustomerList` (every field optional; `status` one of PROCESSING, READY,
TOO_SMALL, UPLOADING; `type` always `customerlist`). The SDK's `CustomerList` class reads
the list (GET) before and after each update.

Here a plain-text email is normalized and hashed; a SHA-256 digest, which may be an
email's or an advertising id's, is tried as both (only a key with a live identity link
resolves); a raw advertising id (UUID) is hashed as SDK events' are. SHA-1 and MD5
digests cannot be any match key: they are not written, and the answer's `exceptions`
says how many there were and where, as it does for records that are none of these.
Values are never echoed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, StrictStr, ValidationError

from pipeline.ingest.dialects import Invalid, location
from pipeline.ingest.dialects.members import (
    Member,
    email_key,
    is_blank,
    is_sha256,
    is_weak_hash,
    maid_key,
)
from pipeline.ingest.dialects.pinterest import INVALID_REQUEST
from schemas import codec
from schemas.audience import Operation

LIST_ID: Final = re.compile(r"\d{1,18}")
"""`customer_list_id`: `{type: string, maxLength: 18, pattern: "^\\d+$"}`."""
OPERATIONS: Final[dict[str, Operation]] = {"ADD": "add", "REMOVE": "remove"}
MAX_POSITIONS: Final = 10
"""How many record positions an `exceptions` message lists per problem."""


class _Update(BaseModel):
    # The OpenAPI schema sets no additionalProperties: unknown fields are ignored.
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    records: StrictStr
    operation_type: Literal["ADD", "REMOVE"]


@dataclass(frozen=True, slots=True)
class ListUpdate:
    """An update's operation, its members in order, and the records that named no one."""

    operation: Operation
    members: tuple[Member, ...]
    weak_hashes: tuple[int, ...] = ()
    """Positions (0-based) of SHA-1 and MD5 digests."""
    unreadable: tuple[int, ...] = ()
    """Positions of records that are no email, digest or advertising id."""

    @property
    def records(self) -> int:
        """How many records the call held."""
        return len(self.members) + len(self.weak_hashes) + len(self.unreadable)


def read_update(body: bytes, *, max_records: int) -> ListUpdate | Invalid:
    """The members of a `CustomerListUpdateRequest` body, or why it does not fit."""
    try:
        document = codec.loads(body)
    except codec.DecodeError:
        return Invalid("Invalid request: the body is not JSON")
    try:
        update = _Update.model_validate(document)
    except ValidationError as exc:
        return Invalid("Invalid request: " + _describe(exc))
    records = [record.strip() for record in update.records.split(",")]
    records = [record for record in records if record]
    if not records:
        return Invalid("Invalid request: records: must hold at least one record")
    if len(records) > max_records:
        return Invalid(f"Invalid request: records: at most {max_records} records per call")
    members: list[Member] = []
    weak: list[int] = []
    unreadable: list[int] = []
    for position, record in enumerate(records):
        member = _member(record)
        if member is not None:
            members.append(member)
        elif is_weak_hash(record):
            weak.append(position)
        else:
            unreadable.append(position)
    operation = OPERATIONS[update.operation_type]
    return ListUpdate(operation, tuple(members), tuple(weak), tuple(unreadable))


def customer_list(
    list_id: str,
    ad_account_id: str,
    *,
    status: Literal["PROCESSING", "READY"],
    updated_time: int | None = None,
    update: ListUpdate | None = None,
) -> dict[str, Any]:
    """A `CustomerList` answer; after an update, its `exceptions` name what was not added."""
    answer: dict[str, Any] = {
        "id": list_id,
        "ad_account_id": ad_account_id,
        "type": "customerlist",
        "status": status,
    }
    if updated_time is not None:
        answer["updated_time"] = updated_time
    if update is not None:
        exceptions = _exceptions(update)
        if exceptions is not None:
            answer["exceptions"] = exceptions
    return answer


def _member(record: str) -> Member | None:
    if is_blank(record):
        return None
    if "@" in record:
        email = email_key(record)
        return None if email is None else Member(em=(email,))
    if is_sha256(record):
        digest = record.lower()
        return Member(em=(digest,), maid=(digest,))
    maid = maid_key(record)
    return None if maid is None else Member(maid=(maid,))


def _exceptions(update: ListUpdate) -> dict[str, Any] | None:
    problems = []
    if update.weak_hashes:
        problems.append(
            f"{len(update.weak_hashes)} SHA-1 or MD5 digests, which cannot be matched: send "
            f"plain text or SHA-256 ({_positions(update.weak_hashes)})"
        )
    if update.unreadable:
        problems.append(
            f"{len(update.unreadable)} records that are no email, SHA-256 digest or "
            f"advertising id ({_positions(update.unreadable)})"
        )
    if not problems:
        return None
    skipped = len(update.weak_hashes) + len(update.unreadable)
    message = f"{skipped} of {update.records} records were not {_verb(update)}: " + "; ".join(
        problems
    )
    return {"code": INVALID_REQUEST, "message": message}


def _verb(update: ListUpdate) -> str:
    return "added" if update.operation == "add" else "removed"


def _positions(positions: tuple[int, ...]) -> str:
    shown = ", ".join(str(p) for p in positions[:MAX_POSITIONS])
    more = f" and {len(positions) - MAX_POSITIONS} more" if len(positions) > MAX_POSITIONS else ""
    return f"records at {shown}{more}"


def _describe(exc: ValidationError) -> str:
    described = []
    for item in exc.errors(include_url=False, include_context=False, include_input=False)[:3]:
        where = location(item["loc"])
        if item["type"] == "missing":
            described.append(f"{where}: is a required property")
        elif item["type"] == "literal_error":
            described.append(f"{where}: must be one of ADD, REMOVE")
        elif item["type"] == "model_type":
            described.append(f"{where}: must be an object")
        else:
            described.append(f"{where}: must be a string")
    return "; ".join(described)
