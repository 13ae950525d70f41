"""Consent changes from `consent.changes`.

A change is partial: a field absent from the input is not changed, a field present with
`null` is cleared (a cleared setting falls back to the region default, a cleared profile
field becomes unknown). `model_fields_set` tells the two apart.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from schemas import normalize
from schemas.events import MODEL_CONFIG, AttStatus, Identifier

CountryCode = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z]{2}$"), AfterValidator(normalize.country_code)
]
UnixMillis = Annotated[int, Field(ge=0, le=4_102_444_800_000)]
BirthYear = Annotated[int, Field(ge=1900, le=2100)]
Platform = Annotated[str, StringConstraints(min_length=1, max_length=32)]


class SettingsChange(BaseModel):
    """Account privacy settings; `None` means "back to the region default"."""

    model_config = MODEL_CONFIG

    personalization: bool | None = None
    ads_from_partner_info: bool | None = None
    partner_sharing: bool | None = None


class ProfileChange(BaseModel):
    """Profile facts the policy reads; `None` means unknown."""

    model_config = MODEL_CONFIG

    country: CountryCode | None = None
    birth_year: BirthYear | None = None


class DeviceChange(BaseModel):
    """Choices made on one of the user's devices."""

    model_config = MODEL_CONFIG

    device_id: Identifier
    platform: Platform | None = None
    att_status: AttStatus | None = None
    ads_opt_out: bool | None = None


class ConsentChange(BaseModel):
    """One change to a user's consent state, stamped with `changed_at` (unix ms).

    `deleted: true` marks the account deleted; deletion is final (see
    `pipeline.core.consent`), so `deleted: false` changes nothing.
    """

    model_config = MODEL_CONFIG

    user_id: Identifier
    changed_at: UnixMillis
    settings: SettingsChange | None = None
    profile: ProfileChange | None = None
    device: DeviceChange | None = None
    deleted: bool = False
