"""Customer-list changes from `raw.audience`: one record per list member.

An advertiser adds people to, or removes them from, one of its audiences (a Pinterest
customer list, a Meta custom audience), naming each member by hashed match keys only.
Each record is resolved like an event; a membership is allowed only under the member's
consent (`pipeline.core.audience`).
"""

from __future__ import annotations

from typing import Literal, TypeAlias

from pydantic import BaseModel, Field, model_validator

from schemas.events import MAX_LIST_ITEMS, MODEL_CONFIG, Identifier, Sha256Hex
from schemas.identity import UnixMillis

Operation: TypeAlias = Literal["add", "remove"]


class MemberKeys(BaseModel):
    """The member's match keys, hashed: emails, phones, advertising ids."""

    model_config = MODEL_CONFIG

    em: tuple[Sha256Hex, ...] = Field(default=(), max_length=MAX_LIST_ITEMS)
    ph: tuple[Sha256Hex, ...] = Field(default=(), max_length=MAX_LIST_ITEMS)
    maid: tuple[Sha256Hex, ...] = Field(default=(), max_length=MAX_LIST_ITEMS)


class AudienceMember(BaseModel):
    """One member added to or removed from an advertiser's audience."""

    model_config = MODEL_CONFIG

    advertiser_id: Identifier
    audience_id: Identifier
    operation: Operation
    match_keys: MemberKeys
    uploaded_at: UnixMillis
    opt_out_type: Literal["LDP"] | None = None
    """Limited data processing requested for this upload (Meta's `data_processing_options`)."""

    @model_validator(mode="after")
    def _names_someone(self) -> AudienceMember:
        keys = self.match_keys
        if not (keys.em or keys.ph or keys.maid):
            raise ValueError("a member needs at least one match key")
        return self
