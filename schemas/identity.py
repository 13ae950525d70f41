"""Identity links from `identity.links`: which user a match key belongs to.

A match key is `<kind>:<value>`: `em:`, `ph:` and `maid:` hold a lowercase hex SHA-256
(of the normalized email, the phone with country code, the lowercased advertising id),
`click:` a click id the platform issued, `session:` a session id of the platform's own
widgets. Links are last-writer-wins by `linked_at`; `deleted: true` (or a Kafka
tombstone) unlinks the key.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self, TypeAlias

from pydantic import BaseModel, Field, StringConstraints, model_validator

from schemas.events import MODEL_CONFIG, PLATFORM_ID_PATTERN, Identifier

MatchKind: TypeAlias = Literal["session", "click", "em", "ph", "maid"]
MATCH_KINDS: tuple[MatchKind, ...] = ("session", "click", "em", "ph", "maid")
"""Every match kind, in the order an event's keys are tried."""
IdentityMatch: TypeAlias = Literal["provided", "session", "click", "em", "ph", "maid", "none"]
"""How an event's subject was found: a trusted user id, a kind of key, or not at all."""
MatchKey = Annotated[
    str,
    StringConstraints(
        pattern=rf"^((em|ph|maid):[0-9a-f]{{64}}|(click|session):{PLATFORM_ID_PATTERN})$"
    ),
]
UnixMillis = Annotated[int, Field(ge=0, le=4_102_444_800_000)]


class IdentityLink(BaseModel):
    """One link (or unlink) of a match key to a user, stamped with `linked_at` (unix ms)."""

    model_config = MODEL_CONFIG

    match_key: MatchKey
    user_id: Identifier | None = None
    linked_at: UnixMillis
    deleted: bool = False

    @model_validator(mode="after")
    def _a_link_names_its_user(self) -> Self:
        if not self.deleted and self.user_id is None:
            raise ValueError("a link needs a user_id (or deleted: true)")
        return self

    @property
    def kind(self) -> MatchKind:
        """The match kind, the part of the key before `:`."""
        return self.match_key.partition(":")[0]  # type: ignore[return-value]
